"""Solvers: each builds a :class:`StepTable` from a :class:`NoisePath`; one step function serves
inversion and editing."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import LeditsError
from .base import (
    NoiseLevel,
    StepTable,
    add_noise_map,
    extract_noise,
    step_mean,
    validate_steps,
)
from .ddpm import ddpm_table
from .dpm import dpm_table
from .lcm import lcm_table
from .path import SPACINGS, NoisePath

#: The solvers by name: the API, the CLI, the web UI and recipes read their choices from here.
SOLVERS: dict[str, Callable[[NoisePath, int, float], StepTable]] = {
    "dpmsolver++": dpm_table,
    "ddpm": ddpm_table,
    "lcm": lcm_table,
}


def step_table(solver: str, path: NoisePath, steps: int, skip: float) -> StepTable:
    """The coefficient table of ``solver`` for ``steps`` steps after skipping ``skip``."""
    validate_steps(steps, skip)
    if solver not in SOLVERS:
        raise LeditsError(f"solver must be one of {sorted(SOLVERS)}; got {solver!r}")
    return SOLVERS[solver](path, steps, float(skip))


__all__ = [
    "SOLVERS",
    "SPACINGS",
    "NoiseLevel",
    "NoisePath",
    "StepTable",
    "add_noise_map",
    "extract_noise",
    "step_mean",
    "step_table",
    "validate_steps",
]
