"""M¹ from ComfyUI's own attention hook (paper Eq. 13): q and k as the kernel gets them.

ComfyUI routes every attention kernel call that carries ``transformer_options`` to
``transformer_options["optimized_attention_override"](func, q, k, v, heads, …)``. The tap sets
that override for the calls leditspp makes, and two of ComfyUI's block patches around each
cross-attention (``attn2_patch`` before it, ``attn2_output_patch`` after it) mark which kernel
call is a cross-attention, so that a self-attention is never taken for one (their key counts can
be equal). A call at the mask level (1/2^level of the latent grid, in an input or output block:
the middle block is left out, as leditspp's diffusers UNets do) hands the armed rows' q and k to
an :class:`~leditspp.attention.AttentionRecorder`; the kernel (or an override another node set)
then computes the output as it would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, Upsample

from leditspp.attention import AttentionRecorder
from leditspp.errors import LeditsError

BLOCKS = ("input", "output")  # the middle block is not read (as leditspp's diffusers UNets)
#: The kernel's parameters after ``heads``, in order: a call may pass them positionally
#: (Qwen-Image passes its mask so).
KERNEL_PARAMETERS = ("mask", "attn_precision", "skip_reshape", "skip_output_reshape")


def by_name(rest: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A kernel call's arguments after ``heads`` (``rest`` positional, then ``kwargs``) all by name."""
    return {**dict(zip(KERNEL_PARAMETERS, rest, strict=False)), **kwargs}


def text_mask_options(transformer_options: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
    """A copy of ``transformer_options`` whose kernel override masks zero-padded text keys: ``mask``
    (R, L), 0 on padding (:func:`.text.pad_to_common_length`), for [text; image] joint keys (text
    first). The kernel gets an additive bias (R, 1, 1, K), ``−max`` on the padded keys (every ComfyUI
    kernel takes that shape), added to a mask the call already has; the override that was set runs
    next (a tap sees the mask)."""
    inner = transformer_options.get("optimized_attention_override")

    def masked(
        func: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, *rest: Any, **kwargs: Any
    ) -> Any:
        named = by_name(rest, kwargs)
        keys = k.shape[-2] if named.get("skip_reshape", False) else k.shape[1]
        bias = torch.zeros(mask.shape[0], 1, 1, keys, dtype=q.dtype, device=q.device)
        bias[:, 0, 0, : mask.shape[1]].masked_fill_(mask.to(q.device) <= 0, -torch.finfo(q.dtype).max)
        given = named.get("mask")
        named["mask"] = bias if given is None else given + bias
        return (inner or call_kernel)(func, q, k, v, heads, **named)

    return {**transformer_options, "optimized_attention_override": masked}


def call_kernel(func: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, **kwargs: Any) -> Any:
    """The kernel itself, as an override calls it."""
    return func(q, k, v, heads, **kwargs)


def blocks_at_level(unet: Any, level: int) -> list[Any]:
    """The input and output blocks of a ComfyUI ``UNetModel`` that run at 1/2^level of the latents.

    Input blocks go one level down after each ``Downsample``; output blocks start at the lowest
    level and go one up after each ``Upsample``.
    """
    found, depth = [], 0
    for block in unet.input_blocks:
        found += [block] if depth == level else []
        depth += any(isinstance(m, Downsample) for m in block)
    for block in unet.output_blocks:
        found += [block] if depth == level else []
        depth -= any(isinstance(m, Upsample) for m in block)
    return found


def cross_attention_count(unet: Any, level: int) -> int:
    """How many cross-attentions (``attn2`` of a transformer block) run at mask ``level``."""
    blocks = blocks_at_level(unet, level)
    return sum(
        t.attn2 is not None
        for b in blocks
        for m in b
        if isinstance(m, SpatialTransformer)
        for t in m.transformer_blocks
    )


@dataclass(eq=False)
class UNetAttentionTap:
    """The override and marker patches of one capture, and its recorder."""

    recorder: AttentionRecorder
    level: int
    _in_cross: bool = field(default=False, init=False)
    _text: int = field(default=0, init=False)

    @classmethod
    def of(cls, unet: Any, level: int) -> UNetAttentionTap:
        layers = cross_attention_count(unet, level)
        if layers == 0:
            raise LeditsError(
                f"this UNet has no cross-attention at 1/{2**level} of the latent resolution, so the "
                "attention mask is unavailable; set mask mode to noise or none"
            )
        return cls(AttentionRecorder(layers), level)

    def options(self, transformer_options: dict[str, Any], text_tokens: int) -> dict[str, Any]:
        """A copy of ``transformer_options`` with the override and the markers added for a call whose
        text has ``text_tokens`` tokens (a kernel override another node set is called in turn; the
        model's own options are not touched)."""
        self._text = text_tokens
        patches = dict(transformer_options.get("patches", {}))
        patches["attn2_patch"] = [*patches.get("attn2_patch", []), self._enter_cross]
        patches["attn2_output_patch"] = [*patches.get("attn2_output_patch", []), self._leave_cross]
        inner = transformer_options.get("optimized_attention_override")
        return {
            **transformer_options,
            "patches": patches,
            "optimized_attention_override": lambda func, *args, **kwargs: self._kernel(inner, func, *args, **kwargs),
        }

    def _enter_cross(self, n: Any, context: Any, value: Any, extra_options: dict[str, Any]) -> tuple[Any, Any, Any]:
        self._in_cross = True
        return n, context, value

    def _leave_cross(self, n: Any, extra_options: dict[str, Any]) -> Any:
        self._in_cross = False
        return n

    def _kernel(
        self, inner: Any, func: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, **kwargs: Any
    ) -> Any:
        options = kwargs.get("transformer_options") or {}
        if self._in_cross and self.recorder.armed and k.shape[-2] == self._text and self._at_level(q, options, kwargs):
            self._record(q, k, heads, kwargs)
        if inner is not None:
            return inner(func, q, k, v, heads, **kwargs)
        return func(q, k, v, heads, **kwargs)

    def _at_level(self, q: torch.Tensor, options: dict[str, Any], kwargs: dict[str, Any]) -> bool:
        """Whether this kernel call is in an input/output block at the mask level."""
        block = options.get("block")
        _, _, height, width = options["original_shape"]
        tokens = q.shape[2] if kwargs.get("skip_reshape", False) else q.shape[1]
        return block is not None and block[0] in BLOCKS and tokens == (height >> self.level) * (width >> self.level)

    def _record(self, q: torch.Tensor, k: torch.Tensor, heads: int, kwargs: dict[str, Any]) -> None:
        """The armed rows' q (R, heads, Q, d) and k (R, heads, L, d), with the kernel's own scale d^−½."""
        rows = self.recorder.rows
        if not kwargs.get("skip_reshape", False):
            q, k = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k))
        q, k = q[rows], k[rows]
        self.recorder.record(q, k, q.shape[-1] ** -0.5, text=slice(None))  # cross-attention: every key is text


@dataclass(eq=False)
class JointAttentionTap:
    """M¹ of a two-stream transformer: the joint attention of each FLUX.1 or Chroma double block, SD3
    joint block or Qwen-Image transformer block ([text; image] keys, text first after SD3's register
    tokens, after q/k norms and rotary positions; padded text keys masked), as leditspp's diffusers
    FLUX, Chroma, SD3 and Qwen-Image adapters read it.

    ComfyUI's calls there do not say which block they are in, so each block is wrapped with
    ComfyUI's per-block patch (``patches_replace["dit"][("double_block", i)]``, chaining one another
    node set) to mark its first kernel call (an SD3.5 block's second one is the image's own
    self-attention); the override records the armed rows' image queries against every key, keeping
    the text columns.
    """

    recorder: AttentionRecorder
    offset: int = 0  # tokens before the text in the joint sequence (SD3's registers)
    _in_block: bool = field(default=False, init=False)
    _text: int = field(default=0, init=False)

    @classmethod
    def of(cls, network: Any) -> JointAttentionTap:
        """The tap of a ComfyUI ``Flux`` or ``Chroma`` (their ``double_blocks``), ``MMDiT`` (its
        ``joint_blocks``) or ``QwenImageTransformer2DModel`` (its ``transformer_blocks``)."""
        if getattr(network, "flipped_img_txt", False):
            raise LeditsError("this FLUX-like model puts the image before the text; set mask mode to noise or none")
        name = next(n for n in ("joint_blocks", "transformer_blocks", "double_blocks") if hasattr(network, n))
        return cls(AttentionRecorder(len(getattr(network, name))), int(getattr(network, "register_length", 0)))

    def options(self, transformer_options: dict[str, Any], text_tokens: int) -> dict[str, Any]:
        """A copy of ``transformer_options`` with the block markers and the override, for a call whose
        text has ``text_tokens`` tokens."""
        self._text = text_tokens
        replace = {kind: dict(patches) for kind, patches in transformer_options.get("patches_replace", {}).items()}
        dit = replace.setdefault("dit", {})
        for i in range(self.recorder.num_layers):
            dit[("double_block", i)] = self._marking(dit.get(("double_block", i)))
        inner = transformer_options.get("optimized_attention_override")
        return {
            **transformer_options,
            "patches_replace": replace,
            "optimized_attention_override": lambda func, *args, **kwargs: self._kernel(inner, func, *args, **kwargs),
        }

    def _marking(self, inner: Any) -> Any:
        """A block patch that marks the block's first kernel call and runs ``inner`` (another node's
        patch) or the block itself."""

        def block(args: dict[str, Any], extra: dict[str, Any]) -> Any:
            self._in_block = True
            try:
                return inner(args, extra) if inner is not None else extra["original_block"](args)
            finally:
                self._in_block = False

        return block

    def _kernel(
        self,
        inner: Any,
        func: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        heads: int,
        *rest: Any,
        **kwargs: Any,
    ) -> Any:
        named = by_name(rest, kwargs)
        if self._in_block and self.recorder.armed:
            self._record(q, k, heads, named)
        self._in_block = False
        return (inner or call_kernel)(func, q, k, v, heads, **named)

    def _record(self, q: torch.Tensor, k: torch.Tensor, heads: int, kwargs: dict[str, Any]) -> None:
        """The armed rows' image queries (R, heads, Q, d) against all keys (R, heads, K, d), with the
        kernel's scale d^−½ and its mask (Chroma's and Qwen-Image's padded text), keeping the text columns."""
        rows, start, end = self.recorder.rows, self.offset, self.offset + self._text
        if not kwargs.get("skip_reshape", False):  # SD3 and Qwen-Image give (B, tokens, heads·d)
            q, k = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k))
        bias = image_query_mask(kwargs.get("mask"), rows, end)
        self.recorder.record(q[rows][:, :, end:], k[rows], q.shape[-1] ** -0.5, text=slice(start, end), mask=bias)


def image_query_mask(mask: torch.Tensor | None, rows: Any, start: int) -> torch.Tensor | None:
    """A kernel's ``mask`` — (Q or 1, K), (B or 1, Q or 1, K) or with heads, as ComfyUI's kernels read
    it (a batch, then heads, added where missing) — for the recorder: (R or 1, heads or 1, Q' or 1,
    K), the ``rows`` and the queries from ``start`` on (the image's)."""
    if mask is None:
        return None
    mask = mask[None] if mask.dim() == 2 else mask
    mask = mask[:, None] if mask.dim() == 3 else mask
    mask = mask[rows] if mask.shape[0] > 1 else mask
    return mask if mask.shape[2] == 1 else mask[:, :, start:]
