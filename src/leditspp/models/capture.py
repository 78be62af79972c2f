"""The attention for the mask M¹, read where the attention kernel is called (paper Eq. 13).

A family says which attention layers to arm and where, in their kernel call, its image queries and
text keys sit (a :class:`Layout`); this module does the rest, with no copy of any processor. Each
armed layer keeps its own processor. While it runs for a thread whose recorder is armed, a
:class:`~torch.overrides.TorchFunctionMode` sees its call of
``torch.nn.functional.scaled_dot_product_attention`` (diffusers' ``AttnProcessor2_0`` calls it, and
``dispatch_attention_fn`` does through its native backends): the queries and keys after every
projection, norm and rotary embedding, and the mask, exactly as the kernel receives them. The
armed rows' image queries, the keys and the mask go to that thread's
:class:`~leditspp.attention.AttentionRecorder`; the kernel's own arguments are passed on untouched.

An armed layer that computes its attention some other way (xFormers, flash-attn, another
diffusers backend) is refused with a :class:`~leditspp.errors.LeditsError`, never read as an
empty mask. Processors are restored on exit, also on errors; concurrent callers on one network
each get their own recorder (thread-local), and the wrappers are installed once while any caller
is in.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..attention import AttentionRecorder
from ..errors import LeditsError

#: The attention kernel whose inputs M¹ is read from.
KERNEL = torch.nn.functional.scaled_dot_product_attention


@dataclass(frozen=True)
class Layout:
    """Where an armed layer's kernel call holds what M¹ needs, in its sequence dimensions.

    ``image``: the image queries among the call's queries, row-major on the mask grid (all of
    them in a cross-attention; one part of a joint sequence). ``text``: the keys of the text
    tokens 0, 1, … in order (the positions the concept's token weights name); a slice running
    past the call's last key leaves the tokens it does not reach without probability.
    """

    image: slice
    text: slice


#: A family's layout: one for every call, or a function of L, the text tokens of the armed token
#: weights (the conditioning's width), giving the current call's.
Layouts = Layout | Callable[[int], Layout]

#: A cross-attention: every query is an image cell, every key a text token.
CROSS_ATTENTION = Layout(image=slice(None), text=slice(None))


def text_first(tokens: int) -> Layout:
    """A joint sequence [text; image] of ``tokens`` text tokens (FLUX.1, FLUX.2, Qwen-Image, Chroma)."""
    return Layout(image=slice(tokens, None), text=slice(0, tokens))


def text_last(tokens: int) -> Layout:
    """A joint sequence [image; text] of ``tokens`` text tokens (SD3)."""
    return Layout(image=slice(0, -tokens), text=slice(-tokens, None))


def _kernel_inputs(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float | None, bool]:
    """The kernel's arguments the attention probabilities depend on, by the kernel's own names."""
    return query, key, attn_mask, scale, is_causal


def _armed_mask(mask: torch.Tensor, rows: slice, image: slice) -> torch.Tensor:
    """The kernel's ``attn_mask`` (broadcastable to (B, heads, S, K)) for the armed rows and the
    image queries: (R or 1, heads or 1, Q or 1, K)."""
    mask = mask[(None,) * (4 - mask.dim())]
    mask = mask[rows] if mask.shape[0] > 1 else mask
    return mask[:, :, image] if mask.shape[2] > 1 else mask


def _read_kernel_call(recorder: AttentionRecorder, layout: Layout, *args: Any, **kwargs: Any) -> None:
    """Hand one kernel call's armed rows to ``recorder``: its image queries (R, heads, Q, d), every
    key (R, heads, K, d), the mask and the scale (the kernel's default 1/√d where none is given)."""
    query, key, mask, scale, causal = _kernel_inputs(*args, **kwargs)
    if causal:
        raise LeditsError(
            "an armed attention layer runs causal attention; the attention mask reads image-to-text attention"
        )
    rows = recorder.rows
    recorder.record(
        query[rows][:, :, layout.image],
        key[rows],
        query.shape[-1] ** -0.5 if scale is None else scale,
        layout.text,
        None if mask is None else _armed_mask(mask, rows, layout.image),
    )


class _KernelTap(TorchFunctionMode):
    """While one armed layer runs: records each attention kernel call it makes, and counts them."""

    def __init__(self, recorder: AttentionRecorder, layout: Layout) -> None:
        super().__init__()
        self.recorder, self.layout, self.calls = recorder, layout, 0

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is KERNEL:
            self.calls += 1
            _read_kernel_call(self.recorder, self.layout, *args, **kwargs)
        return func(*args, **kwargs)


def _unseen(processor: Any, calls: int) -> LeditsError:
    """The error for an armed layer that made ``calls`` ≠ 1 kernel calls."""
    name = type(processor).__name__
    if calls == 0:
        return LeditsError(
            f"the attention mask is read from torch's scaled_dot_product_attention, which this model's attention "
            f"({name}) does not call: xFormers, flash-attn and diffusers' attention backends other than 'native' "
            "compute attention where it cannot be seen. Switch the denoiser back with "
            "transformer.set_attention_backend('native') (a UNet: unet.set_attn_processor(AttnProcessor2_0()) from "
            "diffusers.models.attention_processor), or edit with mask_mode='noise' or 'none'"
        )
    return LeditsError(
        f"an attention layer ({name}) made {calls} attention kernel calls (extra image or reference tokens?); the "
        "attention mask reads one per layer — remove the adapter, or edit with mask_mode='noise' or 'none'"
    )


class _CaptureProcessor:
    """Delegates the attention output to the layer's own processor, with the call's arguments
    untouched; while the calling thread's recorder is armed, taps the kernel call it makes.

    diffusers' ``Attention.forward`` passes on only the keyword arguments named in
    ``inspect.signature(processor.__call__)``, so each wrapper presents its inner processor's
    signature: :func:`_wrapping` makes, once per processor class, a subclass whose ``__call__``
    carries that signature. Whatever a family's blocks hand their processor (FLUX's rotary
    embedding, Qwen-Image's text mask, Z-Image's ``freqs_cis``) reaches it as if no wrapper were
    there, and a compiled network traces through the wrapper and the tap (no graph break).
    """

    def __init__(self, inner: Any, slot: threading.local, layout: Layouts) -> None:
        self.inner = inner
        self.slot = slot
        self.layout = layout

    def _call(self, attn: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = getattr(self.slot, "recorder", None)
        if recorder is None or not recorder.armed:
            return self.inner(attn, *args, **kwargs)
        layout = self.layout(recorder.tokens) if callable(self.layout) else self.layout
        tap = _KernelTap(recorder, layout)
        with tap:
            out = self.inner(attn, *args, **kwargs)
        if tap.calls != 1:
            raise _unseen(self.inner, tap.calls)
        return out


_wrappers: dict[type, type[_CaptureProcessor]] = {}


def _wrapping(inner: Any, slot: threading.local, layout: Layouts) -> _CaptureProcessor:
    """A capture processor around ``inner`` whose ``__call__`` has the signature of ``inner``'s."""
    kind = type(inner)
    if kind not in _wrappers:

        def __call__(self: _CaptureProcessor, attn: Any, *args: Any, **kwargs: Any) -> Any:
            return self._call(attn, *args, **kwargs)

        __call__.__signature__ = inspect.signature(kind.__call__)  # type: ignore[attr-defined]
        _wrappers[kind] = type(f"Capturing{kind.__name__}", (_CaptureProcessor,), {"__call__": __call__})
    return _wrappers[kind](inner, slot, layout)


@dataclass
class _Installation:
    """The capture processors on one network: installed by the first caller, restored by the last."""

    saved: list[tuple[Any, Any]]
    slot: threading.local
    users: int = 0


_installations: dict[int, _Installation] = {}  # id(network) → installation, while any caller captures
_installations_lock = threading.Lock()


@contextlib.contextmanager
def capture_layers(network: Any, layers: list[Any], layout: Layouts) -> Iterator[AttentionRecorder]:
    """Arm ``layers`` of ``network``: their kernel calls, read with ``layout``, feed the calling
    thread's recorder (one :meth:`~leditspp.attention.AttentionRecorder.record` per layer call).

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
                layer.set_processor(_wrapping(processor, inst.slot, layout))
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


@dataclass(frozen=True)
class KernelTap:
    """The attention tap of a family whose M¹ is read at the kernel (:class:`~.base.AttentionTap`):
    ``layers(network)`` gives the layers to arm, ``layout`` where their kernel calls hold the image
    queries and the text keys, on a grid of 1/2^``mask_level`` of the latents."""

    network: Any
    layers: Callable[[Any], list[Any]]
    layout: Layouts
    mask_level: int

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        with capture_layers(self.network, self.layers(self.network), self.layout) as recorder:
            yield recorder
