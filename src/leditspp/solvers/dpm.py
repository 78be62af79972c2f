"""SDE-DPM-Solver++(2M) as a coefficient table (paper Eq. 5; SPEC B §4.4).

Times follow the path's spacing with diffusers' ``DPMSolverMultistepScheduler`` convention
(leading: ``M = floor(N·(1+skip))``, ``r = floor(T/(M+1))``, ``t_k = (M−k)·r + offset``), last N
kept (SPEC A2). Step ``j`` goes from ``u = t_j`` to ``v = t_{j+1}`` (the last to
the path's end: training index 0 on a VP path, the smallest σ on a flow path):

    h = λ_v − λ_u,   c_x = (s_v/s_u)·e^{−h},   c_d = a_v·(1 − e^{−2h}),   σ = s_v·√(1 − e^{−2h}),
    c_2 = c_d / (2ρ) with ρ = (λ_u − λ_{t_{j−1}})/h  (second order, midpoint form), 0 at j = 0.

The first step is first order (no history); every later step is second order, the last one
included, in inversion and editing alike.
"""

from __future__ import annotations

import torch

from .base import StepTable, check_table, endpoints, full_schedule_length
from .flow import FlowPath
from .path import NoisePath

NAME = "dpmsolver++"


def dpm_table(path: NoisePath | FlowPath, steps: int, skip: float) -> StepTable:
    """Coefficients for N = ``steps`` SDE-DPM-Solver++(2M) steps; all tensors (N,) float64."""
    M = full_schedule_length(steps, skip)
    timesteps = path.times(M, M + 1)[-steps:]
    a_u, s_u, a_v, s_v = endpoints(path, timesteps, M)
    lam_u, lam_v = a_u.log() - s_u.log(), a_v.log() - s_v.log()
    h = lam_v - lam_u
    coef_x = s_v / s_u * torch.exp(-h)
    coef_d = a_v * (1 - torch.exp(-2 * h))
    noise = s_v * torch.sqrt(1 - torch.exp(-2 * h))
    coef_2 = torch.zeros_like(coef_d)
    if steps > 1:
        rho = (lam_u[1:] - lam_u[:-1]) / h[1:]
        coef_2[1:] = coef_d[1:] / (2 * rho)
    table = StepTable(timesteps, a_u, s_u, coef_x, coef_d, coef_2, noise, path.end(M))
    return check_table(table, NAME, steps, skip)
