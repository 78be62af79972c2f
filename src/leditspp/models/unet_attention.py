"""Scoped capture of a UNet's cross-attention at the mask level (paper Eq. 13; SPEC A3, A8).

Only the cross-attention layers (``attn2``) of the down and up blocks at 1/2^level of the latent
resolution are wrapped (level 2, the paper's ¼: SD 1.5 @ 512² → 16×16, 5 layers; the mid block
is excluded). The wrapper leaves the layer's own processor (fused SDPA, xFormers, LoRA, …) to
compute the output and, for the armed rows only, hands the queries and keys to the calling
thread's :class:`~leditspp.attention.AttentionRecorder`. Processors are restored on exit, also on
errors; concurrent callers on one UNet each get their own recorder (thread-local).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .. import defaults
from ..attention import AttentionRecorder
from ..errors import LeditsError

#: A family's recording of one layer: (recorder, attention module, image hidden states, text
#: hidden states, rotary embedding or None) → feeds ``recorder.record``.
Record = Callable[[AttentionRecorder, Any, torch.Tensor, torch.Tensor, Any], None]


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


class _CaptureProcessor:
    """Delegates the attention output to the layer's own processor; records on the side (with the
    family's ``record``) for the recorder of the calling thread, if it has one."""

    def __init__(self, inner: Any, slot: threading.local, record: Record) -> None:
        self.inner = inner
        self.slot = slot
        self.record = record

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        temb: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        """The layer's own call, passed through as it came (FLUX passes its rotary embedding as
        the fifth positional argument, UNets may pass ``temb`` by name)."""
        rotary = args[0] if args else image_rotary_emb
        recorder = getattr(self.slot, "recorder", None)
        if encoder_hidden_states is not None and recorder is not None and recorder.armed:
            self.record(recorder, attn, hidden_states, encoder_hidden_states, rotary)
        extra = {k: v for k, v in (("temb", temb), ("image_rotary_emb", image_rotary_emb)) if v is not None}
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **extra)


def _record(
    recorder: AttentionRecorder, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor, rotary: Any
) -> None:
    """Queries and keys of the armed rows with the layer's own projections (diffusers ``Attention``)."""
    hs, ctx = hidden_states[recorder.rows], context[recorder.rows]
    if attn.norm_cross:
        ctx = attn.norm_encoder_hidden_states(ctx)
    rows, heads = hs.shape[0], attn.heads
    q = attn.to_q(hs).view(rows, hs.shape[1], heads, -1).transpose(1, 2)
    k = attn.to_k(ctx).view(rows, ctx.shape[1], heads, -1).transpose(1, 2)
    recorder.record(q, k, attn.scale)


@dataclass
class _Installation:
    """The capture processors on one network: installed by the first caller, restored by the last."""

    saved: list[tuple[Any, Any]]
    slot: threading.local
    users: int = 0


_installations: dict[int, _Installation] = {}  # id(network) → installation, while any caller captures
_installations_lock = threading.Lock()


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


@contextlib.contextmanager
def capture_layers(network: Any, layers: list[Any], record: Record) -> Iterator[AttentionRecorder]:
    """Wrap ``layers`` of ``network`` so that ``record`` feeds the calling thread's recorder.

    Safe for concurrent callers on one network: each thread records into its own recorder, the
    wrappers are installed once while any caller is inside, and the original processors are
    back when the last one leaves (also on errors).
    """
    with _installations_lock:
        inst = _installations.get(id(network))
        if inst is not None and [layer for layer, _ in inst.saved] != layers:
            raise LeditsError("attention is being captured at another mask level on this model; one level at a time")
        if inst is None:
            inst = _Installation([(layer, layer.processor) for layer in layers], threading.local())
            for layer, processor in inst.saved:
                layer.set_processor(_CaptureProcessor(processor, inst.slot, record))
            _installations[id(network)] = inst
        inst.users += 1
    outer = getattr(inst.slot, "recorder", None)  # a capture nested in the same thread
    recorder = AttentionRecorder(len(layers))
    inst.slot.recorder = recorder
    try:
        yield recorder
    finally:
        inst.slot.recorder = outer
        with _installations_lock:
            inst.users -= 1
            if inst.users == 0:
                for layer, processor in inst.saved:
                    layer.set_processor(processor)
                del _installations[id(network)]
