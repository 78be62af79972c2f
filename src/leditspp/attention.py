"""Scoped capture of the cross-attention the mask M¹ needs (paper Eq. 13; SPEC A3, A8, B §6.1).

Only the cross-attention layers of the down and up blocks at the mask level are wrapped: a
quarter of the latent resolution by default (SD 1.5 @ 512²: 16×16, 5 layers; the mid block is
excluded); a model adapter may declare another level (``ModelAdapter.mask_level``). The wrapper leaves the
layer's own processor (fused SDPA, xFormers, LoRA, …) to compute the output, and additionally
computes the softmax probabilities for the concept rows only, reduced on the fly to the
head-mean of the concept's token columns: one (R, Q) sum per step instead of a per-head store.
Processors are restored on exit, also on errors; concurrent callers on one UNet each get their
own recorder (thread-local), so one editor serves many threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from . import defaults
from .errors import LeditsError


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


class AttentionRecorder:
    """Accumulates, over the wrapped layers of one network call, the concept rows' attention.

    Before a call, :meth:`arm` names the rows (a slice of the batch) and their token weights
    (R, L) — 1 on each concept's word tokens. After it, :meth:`take` returns the layer mean.
    """

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self._rows: slice | None = None
        self._weights: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._count = 0

    def arm(self, rows: slice, token_weights: torch.Tensor) -> None:
        self._rows, self._weights = rows, token_weights.float()
        self._sum, self._count = None, 0

    def disarm(self) -> None:
        self._rows = self._weights = self._sum = None
        self._count = 0

    @property
    def armed(self) -> bool:
        return self._rows is not None

    @torch.no_grad()
    def record(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        """Head-mean of the token-summed softmax(QKᵀ·scale) for the armed rows: adds (R, Q)."""
        assert self._rows is not None and self._weights is not None
        hs = hidden_states[self._rows]
        ctx = encoder_hidden_states[self._rows]
        if attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        rows, q_len = hs.shape[0], hs.shape[1]
        heads = attn.heads
        q = attn.to_q(hs).view(rows, q_len, heads, -1).transpose(1, 2).float()
        k = attn.to_k(ctx).view(rows, ctx.shape[1], heads, -1).transpose(1, 2).float()
        probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)  # (R, heads, Q, L)
        weights = self._weights.to(probs.device)[:, None, :, None]  # (R, 1, L, 1)
        maps = (probs @ weights)[..., 0].mean(dim=1)  # (R, Q)
        self._sum = maps if self._sum is None else self._sum + maps
        self._count += 1

    def take(self, size: tuple[int, int]) -> torch.Tensor:
        """The mean over layers, shaped (R, h', w') for ``size = (h', w')``; resets the sum."""
        if self._sum is None or self._count != self.num_layers:
            raise RuntimeError(f"attention capture saw {self._count} of {self.num_layers} layers in the last call")
        if self._sum.shape[1] != size[0] * size[1]:
            raise RuntimeError(f"captured attention has {self._sum.shape[1]} cells; expected {size}")
        out = (self._sum / self._count).view(-1, *size)
        self._sum, self._count = None, 0
        return out


class _CaptureProcessor:
    """Delegates the attention output to the layer's own processor; records on the side for the
    recorder of the calling thread, if it has one."""

    def __init__(self, inner: Any, slot: threading.local) -> None:
        self.inner = inner
        self.slot = slot

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        recorder = getattr(self.slot, "recorder", None)
        if encoder_hidden_states is not None and recorder is not None and recorder.armed:
            recorder.record(attn, hidden_states, encoder_hidden_states)
        kwargs = {} if temb is None else {"temb": temb}
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)


@dataclass
class _Installation:
    """The capture processors on one UNet: installed by the first caller, restored by the last."""

    saved: list[tuple[Any, Any]]
    slot: threading.local
    users: int = 0


_installations: dict[int, _Installation] = {}  # id(unet) → installation, while any caller captures
_installations_lock = threading.Lock()


@contextlib.contextmanager
def capture_attention(unet: Any, level: int = defaults.MASK_LEVEL) -> Iterator[AttentionRecorder]:
    """Wrap the cross-attention layers of ``unet`` at mask ``level`` (see
    :func:`mask_attention_layers`); restore their processors on exit.

    Safe for concurrent callers on one UNet: each thread records into its own recorder, the
    wrappers are installed once while any caller is inside, and the original processors are
    back when the last one leaves (also on errors).
    """
    layers = mask_attention_layers(unet, level)
    if not layers:
        raise LeditsError(
            f"this UNet has no cross-attention at 1/{2**level} of the latent resolution, so the "
            "attention mask M¹ is unavailable; use mask_mode='noise' or 'none'"
        )
    with _installations_lock:
        inst = _installations.get(id(unet))
        if inst is not None and [layer for layer, _ in inst.saved] != layers:
            raise LeditsError("attention is being captured at another mask level on this UNet; one level at a time")
        if inst is None:
            inst = _Installation([(layer, layer.processor) for layer in layers], threading.local())
            for layer, processor in inst.saved:
                layer.set_processor(_CaptureProcessor(processor, inst.slot))
            _installations[id(unet)] = inst
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
                del _installations[id(unet)]
