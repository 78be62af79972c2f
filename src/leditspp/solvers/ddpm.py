"""DDPM-form step (DDIM with η = 1) as a coefficient table (SPEC B §4.5).

This is the edit-friendly DDPM inversion of Huberman-Spiegelglas et al. Times follow the path's
spacing with diffusers' ``DDIMScheduler`` convention (leading: ``r' = floor(T/M)``,
``t_k = (M−1−k)·r' + offset``), last N kept. Step ``j`` goes from ``ᾱ = a_u²`` to ``ᾱ' = a_v²``
(the last to the path's end: training index 0 on a VP path, the smallest σ on a flow path):

    var = (1−ᾱ')/(1−ᾱ)·(1 − ᾱ/ᾱ'),   μ = √ᾱ'·x̂₀ + √(1−ᾱ'−var)·ε̂,   σ = √var,

rewritten in the shared form with ``ε̂ = (x − a·x̂₀)/s``: ``c_x = k/s``, ``c_d = a' − k·a/s``,
``k = √(1−ᾱ'−var)``, ``c_2 = 0``. Written for any path as the posterior
``μ = a'·x̂₀ + √(s'² − c²)·ε̂``, ``c = s'·√(1 − (a·s' / (a'·s))²)``, ``k = a·s'²/(a'·s)`` — on a VP
path (a² + s² = 1) exactly the DDIM expressions above, on a flow path (``a = 1 − σ``, ``s = σ``) the
flow posterior: Euler at ``c = 0``, a full re-noise at ``c = s'`` (σ = 1). Prediction
types are handled by the model adapter (it gives x̂₀), so v-prediction models work here too
(unlike the port, SPEC P18).
"""

from __future__ import annotations

import dataclasses

import torch

from .base import StepTable, check_table, endpoints, full_schedule_length
from .flow import FlowPath
from .path import NoisePath

NAME = "ddpm"


def ddpm_table(path: NoisePath | FlowPath, steps: int, skip: float) -> StepTable:
    """Coefficients for N = ``steps`` DDPM steps; all tensors (N,) float64."""
    M = full_schedule_length(steps, skip)
    # An offset of 0 would make the last leading step go from index 0 to index 0 (σ = 0, nothing
    # to invert); models trained like SD use offset 1, and we never go below it.
    if path.kind == "vp":
        path = dataclasses.replace(path, steps_offset=max(path.steps_offset, 1))
    timesteps = path.times(M, M)[-steps:]
    a, s, a_next, s_next = endpoints(path, timesteps, M)
    # One formula for every path: the posterior variance c² = s'²·(1 − (a·s' / (a'·s))²) and
    # k = a·s'²/(a'·s). On a VP path (a² + s² = 1) they are DDIM's (1−ᾱ')/(1−ᾱ)·(1 − ᾱ/ᾱ') and
    # √(1 − ᾱ' − var) exactly; on a flow path, the flow posterior (tests/test_solvers.py).
    var = s_next**2 * (1 - (a * s_next / (a_next * s)) ** 2)
    k = a * s_next**2 / (a_next * s)
    table = StepTable(
        timesteps=timesteps,
        alpha=a,
        sigma=s,
        coef_x=k / s,
        coef_d=a_next - k * a / s,
        coef_2=torch.zeros_like(a),
        noise=var.clamp_min(0).sqrt(),
        end=path.end(M),
    )
    return check_table(table, NAME, steps, skip)
