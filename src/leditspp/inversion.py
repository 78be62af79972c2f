"""Edit-friendly inversion (paper Eqs. 6–7; SPEC A1, A2, B §4).

1. Noise the input latent ``x0`` independently at every step's time (Eq. 6):
   ``y_j = a_j·x0 + s_j·ε̃_j``, the noises drawn in the port's order (least noisy step first).
2. Run the network on every ``y_j`` — the calls are independent, so they go in batched chunks.
3. Walk the steps once, solving ``z_j = (y_{j+1} − μ_j)/σ_j`` with ``y_N = x0`` (Eq. 7).

:func:`invert_latents` runs the three; the result is an :class:`Inversion` value: the auxiliary
latents ``y_j``, the data predictions ``D_j`` made at them, and the noise maps ``z_j``. The edit
loop starts from ``y_0``; while no edit concept is active its trajectory *is* ``y_j`` (γ = 0
replays the inversion), so it resumes from the stored ``y_j``/``D_{j−1}`` at the first active
step, and returns ``x0`` itself when no concept is ever active (SPEC A1 exactly, with no network call).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import inversion_file
from .guidance import base_estimate
from .inversion_file import InversionInfo
from .models.base import Conditioning, ModelAdapter
from .rows import RowLayout
from .solvers import NoisePath, StepTable, extract_noise, step_mean


@dataclass(frozen=True)
class Inversion:
    """An inverted batch of images: a value that can be saved, loaded and edited many times.

    Tensors (fp32, on the CPU or the editor's device), in sampling order ``j = 0 … N−1``:
      ``noisy_latents`` (N, B, C, h, w): the auxiliary latents ``y_j`` (``y_0`` starts editing);
      ``denoised`` (N, B, C, h, w): the data predictions ``D_j`` of the base estimate at ``y_j``;
      ``noise_maps`` (N, B, C, h, w): ``z_j``;
      ``timesteps`` (N,) float64: the network's time input at each step;
      ``source_latents`` (B, C, h, w): the encoded input ``x0`` (what no edit reproduces).
    """

    noisy_latents: torch.Tensor
    denoised: torch.Tensor
    noise_maps: torch.Tensor
    timesteps: torch.Tensor
    source_latents: torch.Tensor
    info: InversionInfo

    def select(self, i: int) -> Inversion:
        """The inversion of image ``i`` of the batch alone (B = 1): edits it exactly as in the batch."""
        one = slice(i, i + 1)
        return Inversion(
            self.noisy_latents[:, one],
            self.denoised[:, one],
            self.noise_maps[:, one],
            self.timesteps,
            self.source_latents[one],
            self.info,
        )

    @property
    def latents(self) -> torch.Tensor:
        """``y_0`` (B, C, h, w): the start latent of the edit loop."""
        return self.noisy_latents[0]

    @property
    def batch_size(self) -> int:
        return self.source_latents.shape[0]

    def to(self, device: torch.device | str) -> Inversion:
        return Inversion(
            self.noisy_latents.to(device),
            self.denoised.to(device),
            self.noise_maps.to(device),
            self.timesteps.to(device),
            self.source_latents.to(device),
            self.info,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write safetensors with JSON metadata and a content hash, atomically
        (:func:`leditspp.inversion_file.write`)."""
        return inversion_file.write(path, {name: getattr(self, name) for name in inversion_file.TENSORS}, self.info)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Inversion:
        """Read a file written by :meth:`save`, refusing (:class:`LeditsError`) anything it cannot trust
        (the checks: :func:`leditspp.inversion_file.read`)."""
        tensors, info = inversion_file.read(path)
        return cls(*(tensors[name] for name in inversion_file.TENSORS), info=info)


def draw_auxiliary_noise(shape: tuple[int, ...], steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """``ε̃_j`` for every step, (N, *shape) fp32, drawn from the last step to the first (B §4.2)."""
    device = generator.device if generator is not None else torch.device("cpu")
    draws = [torch.randn(shape, generator=generator, device=device, dtype=torch.float32) for _ in range(steps)]
    return torch.stack(draws[::-1])


def auxiliary_latents(x0: torch.Tensor, noise: torch.Tensor, levels: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Eq. 6: ``y_j = a_j·x0 + s_j·ε̃_j`` for every step, (N, B, C, h, w) fp32; ``levels`` are
    ``(a, s)`` (N,) each — the table's, or the shifted ones of :func:`noising_levels`."""
    a = levels[0].to(x0.device, torch.float32)[:, None, None, None, None]
    s = levels[1].to(x0.device, torch.float32)[:, None, None, None, None]
    return a * x0[None] + s * noise.to(x0.device)


def noising_levels(path: NoisePath, table: StepTable, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, s)`` (N,) at which Eq. 6 noises ``x0``: the table's own, or with ``shift`` = δ > 0
    TurboEdit's shifted times ``t_j − ⌊δ·(t_0 − t_1)⌋`` (less noise than the network is told;
    ``t_1`` is the path's end when N = 1), and ``y_j = x0`` where that time is ≤ 0.

    Deutch et al. (2024) found that with 3–4 steps the noise maps of the unshifted inversion drift
    from N(0, I) on distilled models. Exactness is unaffected: the noise maps are solved against
    whichever ``y_j`` were drawn.
    """
    if shift == 0:
        return table.alpha, table.sigma
    t = table.timesteps
    gap = float(t[0] - (t[1] if len(t) > 1 else table.end[0]))
    shifted = t - math.floor(shift * gap)
    a, s = path.levels(shifted.clamp_min(0))
    clean = shifted <= 0
    return torch.where(clean, torch.ones_like(a), a), torch.where(clean, torch.zeros_like(s), s)


def noise_maps(x0: torch.Tensor, ys: torch.Tensor, denoised: torch.Tensor, table: StepTable) -> torch.Tensor:
    """Eq. 7 for every step, from ``ys`` and the data predictions ``D`` at them: the noise maps
    ``z``, (N, B, C, h, w)."""
    zs = torch.empty_like(ys)
    for j in range(len(table)):
        mean, _ = step_mean(ys[j], denoised[j], denoised[j - 1] if j > 0 else None, table, j)
        target = ys[j + 1] if j + 1 < len(table) else x0
        zs[j] = extract_noise(target, mean, table, j)
    return zs


def estimate_all(
    model: ModelAdapter,
    ys: torch.Tensor,
    table: StepTable,
    base: list[Conditioning],
    source_guidance: float,
    chunk: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> torch.Tensor:
    """The data prediction ``D_j`` of the base estimate at every ``y_j``: (N, B, C, h, w) fp32,
    ``chunk`` steps per call; ``progress("inversion", done, N)`` after each call.

    ``base`` is ``[c_∅]`` or ``[c_∅, c_src]`` (B rows each); a call's groups are its steps, then
    the base conditions (:class:`~leditspp.rows.RowLayout`). Each call's estimates are used up
    before the next call (a CUDA-graphed network's next replay overwrites them).
    """
    steps, batch = ys.shape[0], ys.shape[1]
    out = torch.empty_like(ys)
    k = len(base)
    levels = table.levels(ys.device)
    step_ids = torch.arange(steps, device=ys.device)  # made once: no host-to-device copy per call
    for start in range(0, steps, chunk):
        idx = list(range(start, min(start + chunk, steps)))
        layout = RowLayout(len(idx) * k, batch)
        latents = layout.stack([ys[j] for j in idx for _ in range(k)])
        rows_step = layout.per_row(step_ids[idx[0] : idx[-1] + 1].repeat_interleave(k))
        cond = layout.conditions([c for _ in idx for c in base])
        eps = layout.split(model.estimate(latents, levels.select(rows_step), cond)).view(len(idx), k, *ys.shape[1:])
        for n, j in enumerate(idx):
            guided = base_estimate(eps[n, 0], eps[n, 1] if k > 1 else None, source_guidance)
            out[j] = model.to_data(guided, ys[j], levels.at(j, batch))
        if progress is not None:
            progress("inversion", idx[-1] + 1, steps)
    return out


def invert_latents(
    model: ModelAdapter,
    x0: torch.Tensor,
    table: StepTable,
    base: list[Conditioning],
    source_guidance: float,
    generator: torch.Generator | None,
    chunk: int,
    noising: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inversion of latents ``x0`` (B, C, h, w): Eq. 6, the estimates, Eq. 7.

    ``noising``: the levels of Eq. 6 (default: the table's; see :func:`noising_levels`);
    ``progress``: told after each network call (see :func:`estimate_all`).
    Returns ``(y, D, z)``, each (N, B, C, h, w) fp32 — the fields of an :class:`Inversion`.
    """
    noise = draw_auxiliary_noise(tuple(x0.shape), len(table), generator)
    ys = auxiliary_latents(x0, noise, noising or (table.alpha, table.sigma))
    denoised = estimate_all(model, ys, table, base, source_guidance, chunk, progress)
    return ys, denoised, noise_maps(x0, ys, denoised, table)
