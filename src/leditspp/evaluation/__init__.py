"""Evaluation: benchmark suites (the demo world's ``shapes``, TEdBench++, PIE-Bench), their metrics,
the resumable runner and the report; :func:`evaluate` runs one from Python (``leditspp eval``).

``suites`` (the protocol a suite follows), ``shapes_suite`` and ``photo_suite`` (the suites),
``manifests`` (parsing the benchmarks' folders), ``metrics`` (image metrics, CLIP and LPIPS),
``runner`` (items → ``metrics.csv``, ``summary.json``), ``report`` (``report.html``), ``compare``
(runs side by side), ``session`` (:func:`evaluate`, :func:`evaluate_models`). ``import leditspp``
does not import this package.
"""

from .session import SUITES, Evaluation, evaluate, evaluate_models
from .suites import Suite

__all__ = ["SUITES", "Evaluation", "Suite", "evaluate", "evaluate_models"]
