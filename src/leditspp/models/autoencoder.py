"""The autoencoder part: pixels in and out of a family's latent space (see :class:`~.base.Autoencoder`).

:class:`ScaledVAE` is the diffusers VAE of most families (scaled and shifted posterior-mode
latents); a family whose latents are normalised otherwise (FLUX.2 [klein]'s BatchNorm, Qwen-Image's
per-channel statistics) has its own part beside it, built on :func:`vae_precision`.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .base import runs_on


def vae_scale_factor(vae: Any) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


_locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def vae_lock(vae: Any) -> threading.RLock:
    """The lock of one VAE: callers of the same VAE wait for each other, other models' VAEs don't."""
    with _locks_guard:
        lock = _locks.get(vae)
        if lock is None:
            lock = _locks[vae] = threading.RLock()
        return lock


@contextlib.contextmanager
def vae_precision(vae: Any) -> Iterator[torch.dtype]:
    """Run the VAE in fp32 when it is fp16 and its config asks for ``force_upcast``; restore after.

    Holds the VAE's own lock for the whole call, so concurrent callers never see it mid-cast."""
    with vae_lock(vae):
        dtype = vae.dtype
        upcast = dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        if upcast:
            vae.to(torch.float32)
        try:
            yield torch.float32 if upcast else dtype
        finally:
            if upcast:
                vae.to(dtype)


@torch.no_grad()
def encode_pixels(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [−1, 1] → scaled posterior-mean latents (B, C, H/f, W/f), fp32."""
    with vae_precision(vae) as dtype:
        dist = vae.encode(pixels.to(runs_on(vae), dtype)).latent_dist
        latents = dist.mode().float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B, C, h, w) → images (B, 3, H, W) in [−1, 1], fp32."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with vae_precision(vae) as dtype:
        z = (latents / vae.config.scaling_factor + shift).to(runs_on(vae), dtype)
        return vae.decode(z).sample.float().clamp(-1, 1)


@dataclass(frozen=True)
class ScaledVAE:
    """A diffusers VAE whose latents are ``(mode − shift_factor)·scaling_factor``."""

    vae: Any

    @property
    def factor(self) -> int:
        return vae_scale_factor(self.vae)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return encode_pixels(self.vae, pixels)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae, latents)

    def modules(self) -> dict[str, Any]:
        return {"vae": self.vae}
