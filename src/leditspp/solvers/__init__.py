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
from .flow import FlowPath
from .lcm import lcm_table
from .path import SPACINGS, NoisePath

#: A model's noise path: variance-preserving (DDPM-trained) or rectified flow.
Path = NoisePath | FlowPath

#: The solvers by name: the API, the CLI, the web UI and recipes read their choices from here.
SOLVERS: dict[str, Callable[[Path, int, float], StepTable]] = {
    "dpmsolver++": dpm_table,
    "ddpm": ddpm_table,
    "lcm": lcm_table,
}


def check_solver(solver: str, steps: int, skip: float) -> None:
    """Refuse an unknown solver or impossible step settings (:class:`LeditsError`)."""
    validate_steps(steps, skip)
    if solver not in SOLVERS:
        raise LeditsError(f"solver must be one of {sorted(SOLVERS)}; got {solver!r}")


def step_table(solver: str, path: Path, steps: int, skip: float) -> StepTable:
    """The coefficient table of ``solver`` for ``steps`` steps after skipping ``skip``."""
    check_solver(solver, steps, skip)
    return SOLVERS[solver](path, steps, float(skip))


__all__ = [
    "SOLVERS",
    "SPACINGS",
    "FlowPath",
    "NoiseLevel",
    "NoisePath",
    "Path",
    "StepTable",
    "add_noise_map",
    "check_solver",
    "extract_noise",
    "step_mean",
    "step_table",
    "validate_steps",
]
