"""Evaluation: benchmark manifests (TEdBench++, PIE-Bench), metrics and the ``leditspp eval`` runner.

Submodules are imported where they are used, so ``import leditspp`` does not load metric models
or plotting libraries: ``manifests`` (parsing), ``metrics`` (image metrics, CLIP and LPIPS).
"""
