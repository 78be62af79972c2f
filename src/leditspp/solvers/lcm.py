"""The LCM consistency step as a coefficient table (Luo et al. 2023; diffusers' ``LCMScheduler``).

A latent consistency model maps ``x_j`` straight to a clean estimate with the boundary scalings

    f_θ(x_j) = c_skip·x_j + c_out·x̂₀,   c_skip = σ_d²/(τ² + σ_d²),   c_out = τ/√(τ² + σ_d²),

``τ = t_j·timestep_scaling``, ``σ_d = 0.5``, ``x̂₀ = (x_j − s_j·ε)/a_j``; the next latent is
``x_{j+1} = a_{j+1}·f_θ(x_j) + s_{j+1}·z_j`` — our ``μ + σ·z`` form with ``c_x = a'·c_skip``,
``c_d = a'·c_out``, ``c_2 = 0``, ``σ = s'``. Times follow the path's spacing (``lcm`` for LCM
checkpoints: LCM's skipping schedule). Unlike the sampler, the last step does not stop at
``f_θ``: it goes to training index 0 with noise ``s_0 > 0``, so that it can be inverted exactly.
"""

from __future__ import annotations

import torch

from ..errors import LeditsError
from .base import StepTable, check_table, endpoints, full_schedule_length
from .flow import FlowPath
from .path import NoisePath

NAME = "lcm"
SIGMA_DATA = 0.5


def lcm_table(path: NoisePath | FlowPath, steps: int, skip: float) -> StepTable:
    """Coefficients for N = ``steps`` LCM steps; all tensors (N,) float64."""
    if path.kind != "vp":
        raise LeditsError("the lcm solver is for LCM-distilled DDPM models; use dpmsolver++ or ddpm on a flow model")
    M = full_schedule_length(steps, skip)
    timesteps = path.times(M, M)[-steps:]
    a, s, a_next, s_next = endpoints(path, timesteps, M)
    tau = timesteps * path.timestep_scaling
    c_skip = SIGMA_DATA**2 / (tau**2 + SIGMA_DATA**2)
    c_out = tau / (tau**2 + SIGMA_DATA**2).sqrt()
    table = StepTable(
        timesteps=timesteps,
        alpha=a,
        sigma=s,
        coef_x=a_next * c_skip,
        coef_d=a_next * c_out,
        coef_2=torch.zeros_like(a),
        noise=s_next,
        end=path.end(M),
    )
    return check_table(table, NAME, steps, skip)
