"""Argument checks shared by the API, the command line, the web UI and recipe files: a seed, a
device, the inversion's options. Each refuses bad input with a :class:`LeditsError` that names the
argument, the value and the allowed range; ``check_seed`` and ``check_device`` return the checked value.
The façade (:mod:`leditspp.editor`) and its front ends import them from here."""

from __future__ import annotations

from typing import Any

import torch

from . import defaults
from .errors import LeditsError, is_int, is_number

#: Seeds torch's generators accept: 0 ≤ seed < 2**64.
SEED_LIMIT = 2**64


def check_seed(seed: Any) -> int:
    """A seed as an int in [0, 2**64), or a :class:`LeditsError` naming the range."""
    if not is_int(seed) or not 0 <= seed < SEED_LIMIT:
        raise LeditsError(f"seed must be an integer in [0, 2**64); got {seed!r}")
    return int(seed)


def default_dtype(device: torch.device) -> torch.dtype:
    """The network precision where none is given: fp16 on CUDA, fp32 elsewhere (fp16 is slow on a CPU)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def check_device(device: str | torch.device | None) -> torch.device:
    """The device to run on (default: CUDA if available, else CPU), checked to exist in this build."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise LeditsError(f"unknown device {device!r}; use cpu, cuda, cuda:1, mps …") from exc
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }.get(dev.type, True)
    if not available:
        raise LeditsError(
            f"device {str(device)!r} is not available in this PyTorch build ({torch.__version__}); "
            "use --device cpu, or install a PyTorch build for that device"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise LeditsError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def check_invert_arguments(
    inversion_batch: Any, source_prompt: Any, negative_prompt: Any, source_guidance: Any, noise_shift: Any
) -> None:
    """Refuse (:class:`LeditsError`) the arguments of :meth:`Editor.invert` that no other check covers."""
    if inversion_batch is not None and (not is_int(inversion_batch) or inversion_batch < 1):
        raise LeditsError(f"inversion_batch must be an integer ≥ 1 (steps per network call); got {inversion_batch!r}")
    if not isinstance(source_prompt, str) or not isinstance(negative_prompt, str):
        raise LeditsError("source_prompt and negative_prompt must be strings")
    if not (is_number(source_guidance) and 0 <= source_guidance <= defaults.MAX_GUIDANCE):
        raise LeditsError(
            f"source_guidance must be a number in [0, {defaults.MAX_GUIDANCE:g}] (classifier-free guidance "
            f"of the source prompt, e.g. {defaults.SOURCE_GUIDANCE}); got {source_guidance!r}"
        )
    if not (is_number(noise_shift) and 0.0 <= noise_shift <= 1.0):
        raise LeditsError(f"noise_shift is a fraction of a step in [0, 1] (TurboEdit uses 1); got {noise_shift!r}")
