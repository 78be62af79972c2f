"""Scoped capture of a UNet's cross-attention at the mask level (paper Eq. 13).

Only the cross-attention layers (``attn2``) of the down and up blocks at 1/2^level of the latent
resolution are armed (level 2, the paper's ¼: SD 1.5 @ 512² → 16×16, 5 layers; the mid block is
excluded). Their queries are the image cells and their keys the text tokens, as the attention
kernel receives them (:mod:`.capture`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import defaults
from ..attention import AttentionRecorder
from ..errors import LeditsError
from .capture import CROSS_ATTENTION, capture_layers


def mask_attention_layers(unet: Any, level: int = defaults.MASK_LEVEL) -> list[Any]:
    """The cross-attention modules (``attn2``) of the down and up blocks at ``1/2^level`` of the
    latent resolution (``level`` 2: ¼, the paper's choice).

    Down block ``i`` runs at ``1/2^i`` of the latents, up block ``i`` at ``1/2^(n−1−i)``.
    """
    n = len(unet.down_blocks)
    if not 0 <= level < n:
        return []
    blocks = [unet.down_blocks[level], unet.up_blocks[n - 1 - level]]
    return [m for b in blocks for name, m in b.named_modules() if name.endswith("attn2")]


@contextlib.contextmanager
def capture_unet_attention(unet: Any, level: int = defaults.MASK_LEVEL) -> Iterator[AttentionRecorder]:
    """Arm the cross-attention layers of ``unet`` at mask ``level`` (see
    :func:`mask_attention_layers`); restore their processors on exit."""
    layers = mask_attention_layers(unet, level)
    if not layers:
        raise LeditsError(
            f"this UNet has no cross-attention at 1/{2**level} of the latent resolution, so the "
            "attention mask M¹ is unavailable; use mask_mode='noise' or 'none'"
        )
    with capture_layers(unet, layers, CROSS_ATTENTION) as recorder:
        yield recorder


@dataclass(frozen=True)
class UNetTap:
    """The attention tap of a UNet family: its cross-attention at ``mask_level``."""

    unet: Any
    mask_level: int = defaults.MASK_LEVEL

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        with capture_unet_attention(self.unet, self.mask_level) as recorder:
            yield recorder
