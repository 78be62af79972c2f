"""The noise path of a model: ``x_t = a(t)·x0 + s(t)·ε`` and the times a schedule visits.

A :class:`NoisePath` is what the solver tables are built from: the noise levels ``a(t)``, ``s(t)``
at the model's times ``t`` (its time input, a float), and the spacing the checkpoint's scheduler
config declares for an ``M``-step schedule. DDPM-trained models (SD 1.x/2.x, SDXL and their
few-step distillations) have ``a = √ᾱ_t``, ``s = √(1−ᾱ_t)`` at training indices ``t = 0 … T−1``.

Spacings (diffusers' ``set_timesteps``; ``r`` the ratio, ``o`` the config's ``steps_offset``):

* ``leading`` (SPEC A2, the port's): ``t_k = (P−1−k)·⌊T/P⌋ + o`` with ``P`` grid points — ``M`` for
  DDIM-style solvers, ``M + 1`` (the last, 0, dropped) for DPM-Solver;
* ``trailing`` (Turbo, Lightning): ``round(T − k·T/M) − 1`` — 999, 749, 499, 249 for M = 4;
* ``linspace``: ``M + 1`` evenly spaced points from ``T − 1`` to 0, rounded, the 0 dropped;
* ``lcm``: LCM's skipping schedule — of the ``original_steps`` times ``k·⌊T/original⌋ − 1``,
  the ``M`` at evenly spaced indices, noisiest first (999, 759, 499, 259 for M = 4).

Every schedule then ends at training index 0 (the smallest noise, never zero), so that every
step has noise to invert (SPEC A1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import torch

from ..errors import LeditsError

SPACINGS: Final = ("leading", "trailing", "linspace", "lcm")

#: Scheduler options that change the noise levels away from the training schedule; we refuse
#: them instead of silently ignoring them (SPEC A7).
_UNSUPPORTED_FLAGS = (
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_flow_sigmas",
    "thresholding",
)


@dataclass(frozen=True)
class NoisePath:
    """A DDPM-trained model's noise levels over its training times ``t = 0 … T−1``.

    ``spacing``: one of :data:`SPACINGS`; ``original_steps`` and ``timestep_scaling``: the LCM
    schedule's distillation grid and boundary-condition scaling (``LCMScheduler``'s config).
    """

    alphas_cumprod: torch.Tensor  # (T,) float64
    spacing: str = "leading"
    steps_offset: int = 0
    original_steps: int = 50
    timestep_scaling: float = 10.0
    kind: str = "vp"  # variance preserving: a² + s² = 1 (flow paths: solvers/flow.py)

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def describe(self) -> str:
        """One line for an inversion's metadata, e.g. ``vp leading offset 1``."""
        return f"vp {self.spacing} offset {self.steps_offset}"

    def levels(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a(t), s(t))`` at integer-valued times ``t`` (n,), float64 each."""
        abar = self.alphas_cumprod[t.long()]
        return abar.sqrt(), (1 - abar).sqrt()

    def end(self, count: int = 1) -> torch.Tensor:
        """The time the last step of every schedule (any ``count``) goes to: training index 0, (1,) float64."""
        return torch.zeros(1, dtype=torch.float64)

    def times(self, count: int, grid_points: int) -> torch.Tensor:
        """The ``count`` times of a ``count``-step schedule, descending, (count,) float64.

        ``grid_points`` is the number of points the leading spacing divides ``T`` into: ``count``
        for DDIM-style solvers, ``count + 1`` for DPM-Solver (diffusers' two conventions).
        """
        T = self.num_train_timesteps
        if self.spacing == "leading":
            r = T // grid_points
            t = torch.arange(grid_points - 1, grid_points - 1 - count, -1, dtype=torch.float64) * r
            return t + self.steps_offset
        if self.spacing == "trailing":
            return torch.arange(T, 0, -T / count, dtype=torch.float64).round()[:count] - 1
        if self.spacing == "linspace":
            return torch.linspace(0, T - 1, count + 1, dtype=torch.float64).round().flip(0)[:count]
        return self._lcm_times(count)

    def _lcm_times(self, count: int) -> torch.Tensor:
        if count > self.original_steps:
            raise LeditsError(
                f"this LCM model's schedule has {self.original_steps} times (original_inference_steps); "
                f"{count} steps (steps·(1+skip)) cannot be picked from it — use at most {self.original_steps}"
            )
        k = self.num_train_timesteps // self.original_steps
        origin = (torch.arange(self.original_steps, 0, -1, dtype=torch.float64) * k) - 1
        index = [math.floor(i * (self.original_steps / count)) for i in range(count)]  # numpy's linspace
        return origin[index]

    @classmethod
    def from_scheduler_config(cls, config: Any, spacing: str | None = None) -> NoisePath:
        """Read the path from any diffusers scheduler config (beta schedule, offset, spacing).

        The scheduler class the checkpoint ships (PNDM, DDIM, DPM, Euler, LCM …) only matters for
        the spacing: ``LCMScheduler`` → ``lcm``, a config that declares ``trailing`` (Turbo,
        Lightning) → ``trailing``, anything else → ``leading``, the port's spacing, so that
        SD/SDXL inversions equal the port's (SPEC A2; a ``linspace`` config is read as leading,
        as the port does). ``spacing`` overrides that choice. Configs that cannot be inverted
        exactly are refused.
        """
        from diffusers import DDPMScheduler

        cfg = dict(config)
        name = cfg.get("_class_name", "scheduler")
        if "beta_schedule" not in cfg and "trained_betas" not in cfg:
            raise LeditsError(
                f"the model's {name} has no DDPM noise schedule (no beta_schedule); LEDITS++ "
                "inversion here supports DDPM-trained models (Stable Diffusion 1.x/2.x, SDXL and their "
                "few-step distillations), not flow-matching ones"
            )
        for flag in _UNSUPPORTED_FLAGS:
            if cfg.get(flag):
                raise LeditsError(
                    f"the model's {name} sets {flag}=True, which the exact inversion cannot "
                    f"reproduce; save the scheduler config with {flag}=False"
                )
        spacing = declared_spacing(cfg) if spacing is None else spacing
        if spacing not in SPACINGS:
            raise LeditsError(f"timestep spacing must be one of {SPACINGS}; got {spacing!r}")
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
        ddpm = DDPMScheduler(
            **{k: cfg[k] for k in keys if cfg.get(k) is not None},
            rescale_betas_zero_snr=bool(cfg.get("rescale_betas_zero_snr", False)),
        )
        return cls(
            alphas_cumprod=ddpm.alphas_cumprod.to(torch.float64),
            spacing=spacing,
            steps_offset=int(cfg.get("steps_offset", 0)),
            original_steps=int(cfg.get("original_inference_steps") or 50),
            timestep_scaling=float(cfg.get("timestep_scaling") or 10.0),
        )


def declared_spacing(config: Any) -> str:
    """The spacing a scheduler config declares, as :meth:`NoisePath.from_scheduler_config` reads
    it: ``lcm`` for an ``LCMScheduler``, ``trailing`` where the config says so, else ``leading``."""
    cfg = dict(config)
    if cfg.get("_class_name") == "LCMScheduler":
        return "lcm"
    return "trailing" if cfg.get("timestep_spacing") == "trailing" else "leading"
