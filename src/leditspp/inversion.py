"""Edit-friendly inversion (paper Eqs. 6–7; SPEC A1, A2, B §4).

1. Noise the input latent ``x0`` independently at every step's time (Eq. 6):
   ``y_j = a_j·x0 + s_j·ε̃_j``, the noises drawn in the port's order (least noisy step first).
2. Run the network on every ``y_j`` — the calls are independent, so they go in batched chunks.
3. Walk the steps once, solving ``z_j = (y_{j+1} − μ_j)/σ_j`` with ``y_N = x0`` (Eq. 7).

The result is an :class:`Inversion` value: the auxiliary latents ``y_j``, the data predictions
``D_j`` made at them, and the noise maps ``z_j``. The edit loop starts from ``y_0``; while no edit
concept is active its trajectory *is* ``y_j`` (γ = 0 replays the inversion), so it resumes from
the stored ``y_j``/``D_{j−1}`` at the first active step, and returns ``x0`` itself when no concept
is ever active (SPEC A1 exactly, with no network call).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import LeditsError
from .guidance import base_estimate
from .models.base import Conditioning
from .solvers import StepTable, extract_noise, step_mean, to_epsilon

FORMAT = "leditspp-inversion"
FORMAT_VERSION = 1
TENSORS = ("noisy_latents", "denoised", "noise_maps", "timesteps", "source_latents")


@dataclass(frozen=True)
class InversionInfo:
    """Everything about an inversion that is not a tensor (saved as JSON metadata)."""

    model: str  # fingerprint of the model's weights and configs
    family: str
    solver: str
    steps: int
    skip: float
    source_prompt: str
    source_guidance: float
    negative_prompt: str
    height: int
    width: int
    dtype: str
    version: str


@dataclass(frozen=True)
class Inversion:
    """An inverted batch of images: a value that can be saved, loaded and edited many times.

    Tensors (fp32, on the CPU or the editor's device), in sampling order ``j = 0 … N−1``:
      ``noisy_latents`` (N, B, C, h, w): the auxiliary latents ``y_j`` (``y_0`` starts editing);
      ``denoised`` (N, B, C, h, w): the data predictions ``D_j`` of the base estimate at ``y_j``;
      ``noise_maps`` (N, B, C, h, w): ``z_j``;
      ``timesteps`` (N,): the network time of each step;
      ``source_latents`` (B, C, h, w): the encoded input ``x0`` (what no edit reproduces).
    """

    noisy_latents: torch.Tensor
    denoised: torch.Tensor
    noise_maps: torch.Tensor
    timesteps: torch.Tensor
    source_latents: torch.Tensor
    info: InversionInfo
    images: list[Any] = field(default_factory=list, compare=False, repr=False)

    def select(self, i: int) -> Inversion:
        """The inversion of image ``i`` of the batch alone (B = 1): edits it exactly as in the batch."""
        one = slice(i, i + 1)
        images = self.images[one] if self.images else []
        return Inversion(
            self.noisy_latents[:, one],
            self.denoised[:, one],
            self.noise_maps[:, one],
            self.timesteps,
            self.source_latents[one],
            self.info,
            images,
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
            self.images,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write safetensors with JSON metadata; atomic (temp file, then rename)."""
        path = Path(path)
        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in TENSORS}
        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "info": json.dumps(asdict(self.info))}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Inversion:
        """Read a file written by :meth:`save`; corrupt or foreign files get a clear error."""
        meta = read_metadata(path)
        try:
            tensors = load_file(str(path))
            info = InversionInfo(**json.loads(meta["info"]))
            return cls(*(tensors[name] for name in TENSORS), info=info)
        except (SafetensorError, KeyError, TypeError, ValueError, OSError) as exc:
            raise LeditsError(f"{path}: not a readable inversion file ({exc}); re-run `leditspp invert`") from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The JSON metadata of an inversion file, checked for the format marker."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise LeditsError(f"inversion file {str(path)!r} does not exist; create it with `leditspp invert`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise LeditsError(f"{path}: not a readable safetensors inversion file ({exc})") from exc
    if meta.get("format") != FORMAT or "info" not in meta:
        raise LeditsError(f"{path}: a safetensors file, but not a leditspp inversion")
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise LeditsError(f"{path}: written by a newer leditspp (format {meta['format_version']}); upgrade")
    return meta


def draw_auxiliary_noise(shape: tuple[int, ...], steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """``ε̃_j`` for every step, (N, *shape) fp32, drawn from the last step to the first (B §4.2)."""
    device = generator.device if generator is not None else torch.device("cpu")
    draws = [torch.randn(shape, generator=generator, device=device, dtype=torch.float32) for _ in range(steps)]
    return torch.stack(draws[::-1])


def auxiliary_latents(x0: torch.Tensor, noise: torch.Tensor, table: StepTable) -> torch.Tensor:
    """Eq. 6: ``y_j = a_j·x0 + s_j·ε̃_j`` for every step, (N, B, C, h, w) fp32."""
    a = table.alpha.to(x0.device, torch.float32)[:, None, None, None, None]
    s = table.sigma.to(x0.device, torch.float32)[:, None, None, None, None]
    return a * x0[None] + s * noise.to(x0.device)


def noise_maps(
    x0: torch.Tensor, ys: torch.Tensor, eps: torch.Tensor, table: StepTable
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7 for every step, from ``ys`` and the estimates ``eps`` at them.

    Returns the noise maps ``z`` and the data predictions ``D``, both (N, B, C, h, w).
    """
    zs = torch.empty_like(ys)
    denoised = torch.empty_like(ys)
    prev_x0 = None
    for j in range(len(table)):
        mean, prev_x0 = step_mean(ys[j], eps[j], prev_x0, table, j)
        target = ys[j + 1] if j + 1 < len(table) else x0
        zs[j] = extract_noise(target, mean, table, j)
        denoised[j] = prev_x0
    return zs, denoised


def estimate_all(
    predict: Any,
    ys: torch.Tensor,
    table: StepTable,
    base: list[Conditioning],
    source_guidance: float,
    prediction_type: str,
    chunk: int,
) -> torch.Tensor:
    """The base noise estimate at every ``y_j``: (N, B, C, h, w) fp32, ``chunk`` steps per call.

    ``base`` is ``[c_∅]`` or ``[c_∅, c_src]`` (B rows each); rows of one call are laid out
    step-major, then condition, then image.
    """
    steps, batch = ys.shape[0], ys.shape[1]
    out = torch.empty_like(ys)
    k = len(base)
    for start in range(0, steps, chunk):
        idx = list(range(start, min(start + chunk, steps)))
        latents = torch.cat([ys[j] for j in idx for _ in range(k)])
        t = torch.cat([table.timesteps[j].repeat(k * batch) for j in idx])
        cond = Conditioning.cat([c for _ in idx for c in base])
        raw = predict(latents, t, cond)
        a = torch.cat([table.alpha[j].repeat(k * batch) for j in idx]).float().to(raw.device)
        s = torch.cat([table.sigma[j].repeat(k * batch) for j in idx]).float().to(raw.device)
        eps = to_epsilon(raw, latents.float(), a[:, None, None, None], s[:, None, None, None], prediction_type)
        eps = eps.view(len(idx), k, batch, *ys.shape[2:])
        for n, j in enumerate(idx):
            out[j] = base_estimate(eps[n, 0], eps[n, 1] if k > 1 else None, source_guidance)
    return out
