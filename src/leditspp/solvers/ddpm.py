"""DDPM-form step (DDIM with η = 1) as a coefficient table (SPEC B §4.5).

This is the edit-friendly DDPM inversion of Huberman-Spiegelglas et al. Timesteps follow
diffusers' "leading" spacing for ``DDIMScheduler``: ``r' = floor(T/M)``, ``t_k = (M−1−k)·r' + offset``,
last N kept. Step ``j`` goes from ``ᾱ = ᾱ_{t_j}`` to ``ᾱ' = ᾱ_{t_{j+1}}`` (the last to training index 0):

    var = (1−ᾱ')/(1−ᾱ)·(1 − ᾱ/ᾱ'),   μ = √ᾱ'·x̂₀ + √(1−ᾱ'−var)·ε̂,   σ = √var,

rewritten in the shared form with ``ε̂ = (x − a·x̂₀)/s``: ``c_x = k/s``, ``c_d = a' − k·a/s``,
``k = √(1−ᾱ'−var)``, ``c_2 = 0``. Prediction types are handled before the step (ε is converted),
so v-prediction models work here too (unlike the port, SPEC P18).
"""

from __future__ import annotations

import torch

from .base import NoiseSchedule, StepTable, check_table, full_schedule_length, leading_timesteps

NAME = "ddpm"


def ddpm_table(schedule: NoiseSchedule, steps: int, skip: float) -> StepTable:
    """Coefficients for N = ``steps`` DDPM steps; all tensors (N,) float64."""
    T = schedule.num_train_timesteps
    M = full_schedule_length(steps, skip)
    # An offset of 0 would make the last step go from index 0 to index 0 (σ = 0, nothing to
    # invert); models trained like SD use offset 1, and we never go below it.
    offset = max(schedule.steps_offset, 1)
    timesteps = leading_timesteps(M, T // M, offset)[-steps:]
    abar = schedule.alphas_cumprod
    src = abar[timesteps]
    dst = torch.cat([abar[timesteps[1:]], abar[:1]])
    a, s, a_next = src.sqrt(), (1 - src).sqrt(), dst.sqrt()
    var = (1 - dst) / (1 - src) * (1 - src / dst)
    k = (1 - dst - var).clamp_min(0).sqrt()
    table = StepTable(
        timesteps=timesteps,
        alpha=a,
        sigma=s,
        coef_x=k / s,
        coef_d=a_next - k * a / s,
        coef_2=torch.zeros_like(a),
        noise=var.clamp_min(0).sqrt(),
    )
    return check_table(table, NAME, steps, skip)
