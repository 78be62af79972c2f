"""Scoped capture of a UNet's cross-attention at the mask level (paper Eq. 13; SPEC A3, A8).

Only the cross-attention layers (``attn2``) of the down and up blocks at 1/2^level of the latent
resolution are wrapped (level 2, the paper's ¼: SD 1.5 @ 512² → 16×16, 5 layers; the mid block
is excluded). The wrapper leaves the layer's own processor (fused SDPA, xFormers, LoRA, …) to
compute the output and, for the armed rows only, hands the queries and keys to the calling
thread's :class:`~leditspp.attention.AttentionRecorder` (the wrapping: :mod:`.capture`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .. import defaults
from ..attention import AttentionRecorder
from ..errors import LeditsError
from .capture import capture_layers


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


def _record(recorder: AttentionRecorder, attn: Any, args: dict[str, Any]) -> None:
    """Queries and keys of the armed rows with the layer's own projections (diffusers ``Attention``)."""
    hs, ctx = args["hidden_states"][recorder.rows], args["encoder_hidden_states"][recorder.rows]
    if attn.norm_cross:
        ctx = attn.norm_encoder_hidden_states(ctx)
    rows, heads = hs.shape[0], attn.heads
    q = attn.to_q(hs).view(rows, hs.shape[1], heads, -1).transpose(1, 2)
    k = attn.to_k(ctx).view(rows, ctx.shape[1], heads, -1).transpose(1, 2)
    recorder.record(q, k, attn.scale)


@contextlib.contextmanager
def capture_unet_attention(unet: Any, level: int = defaults.MASK_LEVEL) -> Iterator[AttentionRecorder]:
    """Wrap the cross-attention layers of ``unet`` at mask ``level`` (see
    :func:`mask_attention_layers`); restore their processors on exit."""
    layers = mask_attention_layers(unet, level)
    if not layers:
        raise LeditsError(
            f"this UNet has no cross-attention at 1/{2**level} of the latent resolution, so the "
            "attention mask M¹ is unavailable; use mask_mode='noise' or 'none'"
        )
    with capture_layers(unet, layers, _record) as recorder:
        yield recorder
