"""Scoped wrapping of a network's attention layers for the mask M¹ (paper Eq. 13; SPEC A8).

The family says which layers and how one layer's queries and keys are read (a :data:`Record`:
``models.unet_attention`` for UNet cross-attention, ``models.sd3`` / ``models.flux`` for the
joint attention of MMDiTs); this module owns the rest. The wrapper leaves each layer's own
processor (fused SDPA, xFormers, LoRA, …) to compute the output and, for the armed rows only,
records on the side into the calling thread's :class:`~leditspp.attention.AttentionRecorder`.
Processors are restored on exit, also on errors; concurrent callers on one network each get
their own recorder (thread-local), and the wrappers are installed once while any caller is in.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..attention import AttentionRecorder
from ..errors import LeditsError

#: A family's recording of one layer: (recorder, attention module, image hidden states, text
#: hidden states, rotary embedding or None) → feeds ``recorder.record``.
Record = Callable[[AttentionRecorder, Any, torch.Tensor, torch.Tensor, Any], None]


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


@dataclass
class _Installation:
    """The capture processors on one network: installed by the first caller, restored by the last."""

    saved: list[tuple[Any, Any]]
    slot: threading.local
    users: int = 0


_installations: dict[int, _Installation] = {}  # id(network) → installation, while any caller captures
_installations_lock = threading.Lock()


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
