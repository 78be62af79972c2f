"""The flow-matching noise path of SD3/3.5 and FLUX: ``x_σ = (1−σ)·x0 + σ·ε``, σ ∈ (0, 1].

``a = 1 − σ``, ``s = σ``; the network sees the time ``t = σ·T`` (T = 1000; FLUX's adapter divides
by T again) and predicts the velocity ``v ≈ ε − x0``, so ``x̂0 = x − σ·v``.

Times follow the checkpoint's ``FlowMatchEulerDiscreteScheduler`` config: its ``M + 1``-step
schedule (evenly spaced from σ = 1 to its ``sigma_min``, then shifted — statically (SD3's ``shift = 3``:
``σ' = shift·σ / (1 + (shift − 1)·σ)``) or, with ``use_dynamic_shifting`` (FLUX.1 [dev]), by
``σ' = e^μ / (e^μ + 1/σ − 1)`` with μ linear in the image's token count). Its first ``M`` times
are the steps' times; its last, the smallest σ of the schedule (never 0), is where the last step
goes, so that every step has noise to invert (SPEC A1) — the sampler instead ends at σ = 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import LeditsError

_UNSUPPORTED = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas")

#: σ grids before the shift: the scheduler's own (``set_timesteps(P)``: 1 → its ``sigma_min``) or
#: the one pipelines pass as ``sigmas`` (``linspace(1, 1/P, P)``: FLUX.1's, FLUX.2's, Qwen-Image's).
GRIDS = ("scheduler", "pipeline")
#: How a dynamic shift's μ depends on the image: FLUX.1's line in the token count, or FLUX.2's
#: ``compute_empirical_mu(tokens, steps)``, which also depends on the schedule's length.
MU_RULES = ("linear", "empirical")


def empirical_mu(tokens: int, steps: int) -> float:
    """FLUX.2's μ (``compute_empirical_mu`` of diffusers' Flux2 pipelines): linear in the step count
    between fits at 10 and 200 steps, each linear in the token count; steps-independent above 4300
    tokens."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if tokens > 4300:
        return a2 * tokens + b2
    m_200, m_10 = a2 * tokens + b2, a1 * tokens + b1
    slope = (m_200 - m_10) / 190.0
    return slope * steps + (m_200 - 200.0 * slope)


@dataclass(frozen=True)
class FlowPath:
    """A rectified-flow path with the shift of its scheduler config.

    ``mu`` is the dynamic shift for one image size (:meth:`for_tokens`; None where the shift is
    static or depends on the step count too, ``mu_rule="empirical"``, which keeps ``tokens``);
    ``grid`` the σ grid before the shift (:data:`GRIDS`); ``shift_terminal`` stretches the shifted
    schedule so that it ends at that σ (Qwen-Image's 0.02; the scheduler's ``stretch_shift_to_terminal``).
    """

    num_train_timesteps: int = 1000
    shift: float = 1.0
    dynamic: bool = False
    mu: float | None = None
    time_shift_type: str = "exponential"
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096
    shift_terminal: float | None = None
    grid: str = "scheduler"
    mu_rule: str = "linear"
    tokens: int | None = None
    spacing: str = "flow"
    kind: str = "flow"

    def describe(self) -> str:
        """One line for an inversion's metadata, e.g. ``flow shift 3.0``, ``flow mu 0.7031`` or
        ``flow empirical-mu tokens 4096 pipeline-grid terminal 0.02``: what the times depend on."""
        if not self.dynamic:
            text = f"flow shift {self.shift:g}"
        elif self.mu_rule == "empirical":
            text = f"flow empirical-mu tokens {self.tokens}"
        else:
            text = f"flow mu {self.mu:.6g}"
        if self.grid != "scheduler":
            text += f" {self.grid}-grid"
        return text + (f" terminal {self.shift_terminal:g}" if self.shift_terminal else "")

    def shifted(self, sigma: torch.Tensor, mu: float | None = None) -> torch.Tensor:
        """σ → the shifted σ of this path (float64); ``mu`` overrides the path's own."""
        if not self.dynamic:
            return self.shift * sigma / (1 + (self.shift - 1) * sigma)
        mu = self.mu if mu is None else mu
        if mu is None:
            raise LeditsError(
                "a dynamically shifted flow path needs the image's token count: get it from the model "
                "(model.noise_path(height, width)) or FlowPath.for_tokens"
            )
        if self.time_shift_type == "linear":
            return mu / (mu + (1 / sigma - 1))
        return math.exp(mu) / (math.exp(mu) + (1 / sigma - 1))

    def for_tokens(self, tokens: int) -> FlowPath:
        """The path for an image of ``tokens`` transformer tokens (FLUX.1: μ linear in the count;
        FLUX.2: μ of the count and of each schedule's length, see :meth:`times`)."""
        if not self.dynamic:
            return self
        if self.mu_rule == "empirical":
            return dataclasses.replace(self, tokens=tokens)
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return dataclasses.replace(self, mu=tokens * slope + self.base_shift - slope * self.base_seq_len)

    def levels(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, s) = (1 − σ, σ)`` at model times ``t = σ·T``, float64."""
        sigma = t.double() / self.num_train_timesteps
        return 1 - sigma, sigma

    def _grid(self, count: int) -> torch.Tensor:
        """The times (σ·T) of the ``count + 1``-step schedule a pipeline would sample, descending:
        the grid (scheduler: evenly spaced from σ = 1 to ``sigma_min`` — the shifted 1/T, or 1/T
        where the shift is dynamic; pipeline: ``linspace(1, 1/P, P)``), shifted, then stretched
        to ``shift_terminal`` where the config sets it."""
        T, points = self.num_train_timesteps, count + 1
        if self.grid == "pipeline":
            low = torch.tensor(1.0 / points, dtype=torch.float64)
        else:
            low = torch.tensor(1.0 / T, dtype=torch.float64)
            if not self.dynamic:
                low = self.shifted(low)
        mu = None
        if self.dynamic and self.mu_rule == "empirical":
            if self.tokens is None:
                raise LeditsError("FLUX.2's flow path needs the image's token count (model.noise_path(height, width))")
            mu = empirical_mu(self.tokens, points)
        sigmas = self.shifted(torch.linspace(1.0, float(low), points, dtype=torch.float64), mu)
        if self.shift_terminal:
            one_minus = 1 - sigmas
            sigmas = 1 - one_minus / (one_minus[-1] / (1 - self.shift_terminal))
        return sigmas * T

    def end(self, count: int = 1) -> torch.Tensor:
        """The smallest σ (as a model time) of the ``count``-step schedule, where its last step
        goes: (1,). The same for every count on the scheduler grid without an empirical μ."""
        return self._grid(count)[count:]

    def times(self, count: int, grid_points: int) -> torch.Tensor:
        """The ``count`` step times (σ·T), descending, (count,) float64: the first ``count`` of
        the ``count + 1``-step schedule; ``grid_points`` is unused (one convention for every solver)."""
        return self._grid(count)[:count]

    @classmethod
    def from_scheduler_config(cls, config: Any, *, grid: str = "scheduler", mu_rule: str = "linear") -> FlowPath:
        """Read a ``FlowMatchEulerDiscreteScheduler`` config; refuse settings the inversion cannot
        follow. ``grid`` and ``mu_rule`` are the pipeline's (the config does not say them)."""
        cfg = dict(config)
        for flag in _UNSUPPORTED:
            if cfg.get(flag):
                raise LeditsError(
                    f"the model's flow scheduler sets {flag}={cfg[flag]!r}, which this inversion does not "
                    f"follow; save the scheduler config without it"
                )
        shift_type = cfg.get("time_shift_type") or "exponential"
        if shift_type not in ("exponential", "linear"):
            raise LeditsError(f"time_shift_type={shift_type!r} is not supported (exponential or linear)")
        terminal = cfg.get("shift_terminal")
        if terminal is not None and not (isinstance(terminal, (int, float)) and 0 < terminal < 1):
            raise LeditsError(f"the flow scheduler's shift_terminal must be in (0, 1); got {terminal!r}")
        if grid not in GRIDS or mu_rule not in MU_RULES:
            raise ValueError(f"grid must be one of {GRIDS} and mu_rule one of {MU_RULES}")
        return cls(
            num_train_timesteps=int(cfg.get("num_train_timesteps") or 1000),
            shift=float(cfg.get("shift") or 1.0),
            dynamic=bool(cfg.get("use_dynamic_shifting", False)),
            time_shift_type=shift_type,
            base_shift=float(cfg.get("base_shift") or 0.5),
            max_shift=float(cfg.get("max_shift") or 1.15),
            base_seq_len=int(cfg.get("base_image_seq_len") or 256),
            max_seq_len=int(cfg.get("max_image_seq_len") or 4096),
            shift_terminal=float(terminal) if terminal else None,
            grid=grid,
            mu_rule=mu_rule,
        )
