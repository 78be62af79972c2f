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

_UNSUPPORTED = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas", "shift_terminal")


@dataclass(frozen=True)
class FlowPath:
    """A rectified-flow path with the shift of its scheduler config.

    ``mu`` is the dynamic shift for one image size (:meth:`for_tokens`); None where the shift
    is static.
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
    spacing: str = "flow"
    kind: str = "flow"

    def describe(self) -> str:
        """One line for an inversion's metadata, e.g. ``flow shift 3.0`` or ``flow mu 0.7031``."""
        return f"flow mu {self.mu:.6g}" if self.dynamic else f"flow shift {self.shift:g}"

    def shifted(self, sigma: torch.Tensor) -> torch.Tensor:
        """σ → the shifted σ of this path (float64)."""
        if not self.dynamic:
            return self.shift * sigma / (1 + (self.shift - 1) * sigma)
        if self.mu is None:
            raise ValueError("a dynamically shifted flow path needs mu: use FlowPath.for_tokens")
        if self.time_shift_type == "linear":
            return self.mu / (self.mu + (1 / sigma - 1))
        return math.exp(self.mu) / (math.exp(self.mu) + (1 / sigma - 1))

    def for_tokens(self, tokens: int) -> FlowPath:
        """The path for an image of ``tokens`` transformer tokens (μ linear in the count, FLUX)."""
        if not self.dynamic:
            return self
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return dataclasses.replace(self, mu=tokens * slope + self.base_shift - slope * self.base_seq_len)

    def levels(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, s) = (1 − σ, σ)`` at model times ``t = σ·T``, float64."""
        sigma = t.double() / self.num_train_timesteps
        return 1 - sigma, sigma

    def _grid(self, count: int) -> torch.Tensor:
        """diffusers' ``set_timesteps(count + 1)``: evenly spaced from σ = 1 to the scheduler's
        ``sigma_min`` (the shifted 1/T, or 1/T where the shift is dynamic), then shifted."""
        T = self.num_train_timesteps
        low = torch.tensor(1.0 / T, dtype=torch.float64)
        if not self.dynamic:
            low = self.shifted(low)
        base = torch.linspace(1.0, float(low), count + 1, dtype=torch.float64)
        return self.shifted(base) * T

    def end(self) -> torch.Tensor:
        """The scheduler's smallest σ (as a model time), where every schedule's last step goes: (1,)."""
        return self._grid(1)[1:]

    def times(self, count: int, grid_points: int) -> torch.Tensor:
        """The ``count`` step times (σ·T), descending, (count,) float64; ``grid_points`` is unused
        (one convention for every solver)."""
        return self._grid(count)[:count]

    @classmethod
    def from_scheduler_config(cls, config: Any) -> FlowPath:
        """Read a ``FlowMatchEulerDiscreteScheduler`` config; refuse settings the inversion cannot follow."""
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
        return cls(
            num_train_timesteps=int(cfg.get("num_train_timesteps") or 1000),
            shift=float(cfg.get("shift") or 1.0),
            dynamic=bool(cfg.get("use_dynamic_shifting", False)),
            time_shift_type=shift_type,
            base_shift=float(cfg.get("base_shift") or 0.5),
            max_shift=float(cfg.get("max_shift") or 1.15),
            base_seq_len=int(cfg.get("base_image_seq_len") or 256),
            max_seq_len=int(cfg.get("max_image_seq_len") or 4096),
        )
