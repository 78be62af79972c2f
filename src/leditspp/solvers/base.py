"""The stochastic solver step shared by inversion and editing (paper Eqs. 3, 5, 7).

Every solver here takes the form ``x_{j+1} = μ_j + σ_j·z_j`` with a deterministic mean

    μ_j = c_x·x_j + c_d·D_j + c_2·(D_j − D_{j−1}),

where ``D_j`` is the data prediction (x̂₀) of the guided estimate at ``x_j`` (the model adapter
converts: ``D = (x − s·ε)/a`` for a noise estimate, ``D = x − σ·v`` for a flow velocity). A solver is
therefore nothing but a table of per-step coefficients (:class:`StepTable`). Inversion solves
``z_j = (y_{j+1} − μ_j)/σ_j`` (Eq. 7); editing adds ``σ_j·z_j`` back. Because both loops call
:func:`step_mean` with the same table, the order used at every step is the same in both, and
with no edit the edit loop lands on the inversion's latents exactly (SPEC A1).

Glossary: ``a_t = √ᾱ_t``, ``s_t = √(1−ᾱ_t)``, ``λ_t = ln a_t − ln s_t`` (log-SNR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import LeditsError, fraction_hint, is_int, is_number
from .path import NoisePath


@dataclass(frozen=True)
class NoiseLevel:
    """The noise level of each row of one network call: time input ``t``, ``a``, ``s`` (R,) each."""

    t: torch.Tensor
    a: torch.Tensor
    s: torch.Tensor

    def at(self, step: int, rows: int) -> NoiseLevel:
        """Step ``step`` of a per-step level (N,) for ``rows`` rows (views, no copy)."""
        return NoiseLevel(self.t[step].expand(rows), self.a[step].expand(rows), self.s[step].expand(rows))

    def select(self, steps: torch.Tensor) -> NoiseLevel:
        """The per-step level (N,) at ``steps`` (R,): one step index per row."""
        return NoiseLevel(self.t[steps], self.a[steps], self.s[steps])


@dataclass(frozen=True)
class StepTable:
    """Per-step coefficients of one run of ``N`` solver steps (index ``j = 0 … N−1``).

    ``timesteps[j]`` is the network's time input at step ``j``; ``alpha``/``sigma`` are ``a, s``
    at that time. The step moves to the next entry, and the last one to the path's end (``path.end``: training
    index 0 on a VP path, the smallest σ on a flow path — never a zero noise level, so every
    ``noise[j] > 0`` and every noise map is determined).
    """

    timesteps: torch.Tensor  # (N,) float64, descending
    alpha: torch.Tensor  # (N,) float64, a_t at timesteps[j]
    sigma: torch.Tensor  # (N,) float64, s_t at timesteps[j]
    coef_x: torch.Tensor  # (N,) float64
    coef_d: torch.Tensor  # (N,) float64
    coef_2: torch.Tensor  # (N,) float64, 0 where the step is first order
    noise: torch.Tensor  # (N,) float64, σ_j > 0
    end: torch.Tensor  # (1,) float64, the time the last step goes to (the path's end)

    def __len__(self) -> int:
        return len(self.timesteps)

    def levels(self, device: torch.device | str) -> NoiseLevel:
        """Every step's noise level on ``device`` in fp32, (N,) each: index it per step
        (``NoiseLevel(t[j], …)``) without a host-to-device copy in the loop."""
        return NoiseLevel(*(v.to(device, torch.float32) for v in (self.timesteps, self.alpha, self.sigma)))


def endpoints(path: NoisePath, times: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    """``(a_u, s_u, a_v, s_v)`` for the steps ``u = times[j] → v = times[j+1]`` (the last to the
    end of the path's ``count``-step schedule), (N,) float64 each."""
    a_u, s_u = path.levels(times)
    a_v, s_v = path.levels(torch.cat([times[1:], path.end(count)]))
    return a_u, s_u, a_v, s_v


def full_schedule_length(steps: int, skip: float) -> int:
    """``M = floor(N·(1+skip))``: the length of the schedule whose last N steps are run (B §3)."""
    return int(steps * (1 + skip))


def validate_steps(steps: int, skip: float) -> None:
    if not is_int(steps) or not 1 <= steps <= 1000:
        raise LeditsError(f"steps must be an integer in [1, 1000]; got {steps!r}")
    if not (is_number(skip) and 0.0 <= skip < 1.0):
        hint = fraction_hint(skip, "skip 1 would skip the whole schedule; e.g. 0.15 skips its noisiest 15 %")
        raise LeditsError(f"skip is a fraction in [0, 1); got {skip!r}{hint}")


def step_mean(
    x: torch.Tensor,
    x0: torch.Tensor,
    prev_x0: torch.Tensor | None,
    table: StepTable,
    j: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic part of step ``j``: returns ``(μ_j, D_j)``, both shaped like ``x``.

    ``x``: (B, C, h, w) latents at ``timesteps[j]``; ``x0``: the data prediction ``D_j`` there;
    ``prev_x0``: ``D_{j−1}`` from the previous step (None at ``j = 0``).
    """
    mean = float(table.coef_x[j]) * x + float(table.coef_d[j]) * x0
    if prev_x0 is not None and float(table.coef_2[j]) != 0.0:
        mean = mean + float(table.coef_2[j]) * (x0 - prev_x0)
    return mean, x0


def extract_noise(target: torch.Tensor, mean: torch.Tensor, table: StepTable, j: int) -> torch.Tensor:
    """Eq. 7: the noise map ``z_j = (y_{j+1} − μ_j)/σ_j`` that lands exactly on ``target``."""
    return (target - mean) / float(table.noise[j])


def add_noise_map(mean: torch.Tensor, z: torch.Tensor, table: StepTable, j: int) -> torch.Tensor:
    """The sampler's update ``x_{j+1} = μ_j + σ_j·z_j`` with the stored noise map."""
    return mean + float(table.noise[j]) * z


def check_table(table: StepTable, name: str, steps: int, skip: float) -> StepTable:
    """Refuse schedules with repeated timesteps or a zero noise weight (too many steps)."""
    t = table.timesteps
    if (len(t) > 1 and bool((t[:-1] <= t[1:]).any())) or not bool((table.noise > 0).all()):
        raise LeditsError(
            f"{name}: steps={steps}, skip={skip} gives repeated timesteps on this model's "
            "training schedule; use fewer steps"
        )
    if not all(math.isfinite(float(v)) for v in table.coef_d):
        raise LeditsError(f"{name}: the schedule gives non-finite coefficients; use fewer steps")
    return table
