"""Solvers: each builds a :class:`StepTable`; one step function serves inversion and editing."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import LeditsError
from .base import (
    NoiseSchedule,
    StepTable,
    add_noise_map,
    extract_noise,
    step_mean,
    to_epsilon,
    validate_steps,
)
from .ddpm import ddpm_table
from .dpm import dpm_table

SOLVERS: dict[str, Callable[[NoiseSchedule, int, float], StepTable]] = {
    "dpmsolver++": dpm_table,
    "ddpm": ddpm_table,
}


def step_table(solver: str, schedule: NoiseSchedule, steps: int, skip: float) -> StepTable:
    """The coefficient table of ``solver`` for ``steps`` steps after skipping ``skip``."""
    validate_steps(steps, skip)
    if solver not in SOLVERS:
        raise LeditsError(f"solver must be one of {sorted(SOLVERS)}; got {solver!r}")
    return SOLVERS[solver](schedule, steps, float(skip))


__all__ = [
    "SOLVERS",
    "NoiseSchedule",
    "StepTable",
    "add_noise_map",
    "extract_noise",
    "step_mean",
    "step_table",
    "to_epsilon",
]
