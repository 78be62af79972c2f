"""How far apart fp32 rounding lets two runs of the tiny models land: the bound replay tests use."""

from __future__ import annotations

import torch

#: Replays (a scale-0 concept re-runs the network at every step) and batch-vs-alone comparisons
#: stack the network's rows differently from the run they are compared with; fp32 kernels then
#: differ in the last bits (≈1e-7 relative per call) and the solver's steps carry that along.
#: Measured on the tiny test models: up to 1.0e-4 with latents of max |x| ≈ 2–4. The bound is
#: 1e-3 of the reference's largest magnitude: ≥ 20× that noise floor, and far below what a real
#: defect gives (another image's noise maps: ≈ 1, see tests/test_exactness.py).
FP32_REPLAY_RTOL = 1e-3


def replay_tolerance(reference: torch.Tensor) -> float:
    """The largest difference fp32 rounding explains between two runs near ``reference``."""
    return FP32_REPLAY_RTOL * reference.abs().max().item()
