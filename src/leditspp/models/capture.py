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
import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..attention import AttentionRecorder
from ..errors import LeditsError

#: A family's recording of one layer: (recorder, attention module, the layer call's arguments by
#: name — ``hidden_states``, ``encoder_hidden_states``, ``image_rotary_emb``, ``freqs_cis``, … as
#: the layer's own processor names them) → feeds ``recorder.record``.
Record = Callable[[AttentionRecorder, Any, dict[str, Any]], None]


class _CaptureProcessor:
    """Delegates the attention output to the layer's own processor, with the call's arguments
    untouched; records on the side (with the family's ``record``) for the calling thread's
    recorder, if it has one armed.

    diffusers' ``Attention.forward`` passes on only the keyword arguments named in
    ``inspect.signature(processor.__call__)``, so each wrapper presents its inner processor's
    signature: :func:`_wrapping` makes, once per processor class, a subclass whose ``__call__``
    carries that signature. Whatever a family's blocks hand their processor (FLUX's rotary
    embedding, Qwen-Image's text mask, Z-Image's ``freqs_cis``) reaches it as if no wrapper were
    there, and a compiled network traces through the wrapper (no graph break).
    """

    def __init__(self, inner: Any, slot: threading.local, record: Record) -> None:
        self.inner = inner
        self.slot = slot
        self.record = record
        parameters = inspect.signature(inner.__call__).parameters.values()
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.positional = tuple(p.name for p in parameters if p.kind in positional)

    def _call(self, attn: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = getattr(self.slot, "recorder", None)
        if recorder is not None and recorder.armed:
            self.record(recorder, attn, self.arguments(attn, args, kwargs))
        return self.inner(attn, *args, **kwargs)

    def arguments(self, attn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by the inner processor's parameter names (positional ones named,
        keywords as given; plain dict work, so a compiled network traces through it)."""
        return dict(zip(self.positional, (attn, *args), strict=False)) | kwargs


_wrappers: dict[type, type[_CaptureProcessor]] = {}


def _wrapping(inner: Any, slot: threading.local, record: Record) -> _CaptureProcessor:
    """A capture processor around ``inner`` whose ``__call__`` has the signature of ``inner``'s."""
    kind = type(inner)
    if kind not in _wrappers:

        def __call__(self: _CaptureProcessor, attn: Any, *args: Any, **kwargs: Any) -> Any:
            return self._call(attn, *args, **kwargs)

        __call__.__signature__ = inspect.signature(kind.__call__)  # type: ignore[attr-defined]
        _wrappers[kind] = type(f"Capturing{kind.__name__}", (_CaptureProcessor,), {"__call__": __call__})
    return _wrappers[kind](inner, slot, record)


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
                layer.set_processor(_wrapping(processor, inst.slot, record))
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
