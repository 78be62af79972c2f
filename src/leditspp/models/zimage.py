"""Z-Image / Z-Image-Turbo: a single-stream S3-DiT on a rectified-flow path.

What this family adds to the shared flow transformer (:class:`~leditspp.models.transformer.FlowTransformer`):

* conditioning as ``ZImagePipeline._encode_prompt`` builds it (the Qwen3 text stack it shares with
  FLUX.2 [klein], :class:`~leditspp.models.text.Qwen3ChatText`): the prompt in Qwen3's chat template
  (``<|im_start|>user\\n{p}<|im_end|>\\n<|im_start|>assistant\\n``), ``hidden_states[-2]`` of the
  real tokens. Captions differ in length, and the transformer takes a **list** of unpadded
  (Lᵢ, D) tensors; here every caption is zero-padded to ``max_sequence_length`` rows (one length
  for every call, so base, source and concept rows stack) and ``mask`` (n, L) bool marks the real
  tokens: :meth:`estimate` hands the transformer ``embeds[i][mask[i]]``. c_∅ encodes the negative
  prompt ("" by default) through the same template; a Turbo checkpoint, sampled without CFG,
  still gets these rows, since LEDITS++ needs v(c_e) − v(c_∅);
* latents (B, 16, h, w), FLUX.1's VAE with its shift and scale; the transformer patchifies 2×2
  itself and takes a list of (C, 1, h, w). Its time input is ``(1000 − t)/1000 = 1 − σ`` and its
  output is **−v** (x0 − noise): the pipeline negates it before the Euler step, and so do we;
* the σ grid is the pipeline's ``linspace(1, 1/N, N)`` with the config's static shift (3 for Turbo);
* M¹ from the main (unified-sequence) layers: the image queries' softmax over all keys of the
  sequence [image (padded to 32), caption (padded to 32)] as the attention kernel receives them,
  batch-padding keys masked; caption token j of each row sits at key ``image_len_padded + j``. The
  refiners see image or caption alone and are not recorded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..attention import AttentionRecorder
from ..errors import LeditsError
from ..solvers import NoiseLevel
from .base import Conditioning
from .capture import Layout, capture_layers
from .components import Fit, TextInput, config_int
from .families import Parts, SizeLimit, refuse
from .text import Qwen3ChatText
from .transformer import TRANSFORMER_ACTIVATION_ELEMENTS, FlowTransformer, TransformerFamily, sequence_length

#: The transformer pads the image and the caption each to a multiple of this many tokens
#: (``SEQ_MULTI_OF`` in diffusers' ``transformer_z_image.py``).
SEQ_MULTI_OF = 32


def padded(count: int) -> int:
    """``count`` tokens padded to the transformer's multiple."""
    return count + (-count) % SEQ_MULTI_OF


@dataclass(frozen=True, kw_only=True)
class ZImageTransformer(FlowTransformer):
    """Z-Image's S3-DiT: a list of (C, 1, h, w) latents and of unpadded captions, the time
    ``(T − t)/T``, and −v as its output."""

    def width(self) -> int:
        return int(self.transformer.config.dim)

    def row_bytes(self, height: int, width: int) -> int:
        """Estimated peak activation bytes of one row of the unified sequence (image + caption)."""
        tokens = padded(self.image_tokens(height, width)) + self.text_tokens
        return TRANSFORMER_ACTIVATION_ELEMENTS * tokens * self.width() * self.transformer.dtype.itemsize

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The velocity v = −(transformer output) for rows ``latents`` (R, C, h, w) at ``level``
        (R,) each, fp32; the transformer sees ``(T − t)/T`` and each row's unpadded caption."""
        mask = cond.get("mask")
        if mask is None:
            raise LeditsError("a Z-Image conditioning needs 'mask' (n, L) bool; make it with model.encode_prompts")
        captions = [e[m] for e, m in zip(cond.embeds, mask.to(cond.embeds.device), strict=True)]
        T = self.path.num_train_timesteps
        t = ((T - level.t.to(latents.device, torch.float32)) / T).to(latents.device)
        x = list(latents.to(self.transformer.dtype).unsqueeze(2).unbind(0))
        out = self.transformer(x, t, captions, return_dict=False)[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)


@dataclass(frozen=True)
class ZImageTap:
    """Z-Image's attention tap: the main layers, image queries first, then caption token j of every
    row at key ``padded(image tokens) + j`` — the image size read from each transformer call."""

    transformer: Any
    mask_level: int
    _grid: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        """Record the main layers' attention from the image queries to the concept's caption keys."""
        layers = [layer.attention for layer in self.transformer.layers]

        def image_grid(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["x"]  # list of (C, 1, h, w), one size per call
            self._grid.tokens = (x[0].shape[-2] // 2) * (x[0].shape[-1] // 2)

        hook = self.transformer.register_forward_pre_hook(image_grid, with_kwargs=True)
        try:
            with capture_layers(self.transformer, layers, self._layout) as recorder:
                yield recorder
        finally:
            hook.remove()

    def _layout(self, tokens: int) -> Layout:
        """This call's unified sequence: its image queries first, then caption token j of every
        row at key ``padded(image tokens) + j`` (``tokens`` of them)."""
        image = self._grid.tokens
        return Layout(image=slice(0, image), text=slice(padded(image), padded(image) + tokens))


@dataclass(frozen=True, kw_only=True)
class ZImage(TransformerFamily):
    """Adapter for Z-Image / Z-Image-Turbo components in diffusers format (``ZImagePipeline``)."""

    family: str = "zimage"
    title: ClassVar[str] = "Z-Image / Z-Image-Turbo (ZImageTransformer2DModel, flow matching, Qwen3)"

    @classmethod
    def recommended(cls, parts: Parts, pipeline_config: Mapping[str, Any]) -> dict[str, Any]:
        """Z-Image's pipeline samples in 50 steps. Z-Image-Turbo ships the same configs, so its
        8 steps come from its name (``models.settings.CHECKPOINT_RECOMMENDED``) or its ``leditspp.json``."""
        return {"steps": 50}

    transformer_class: ClassVar[str] = "ZImageTransformer2DModel"

    text_inputs: ClassVar[tuple[TextInput, ...]] = (TextInput("text_encoder", "tokenizer", chat_template=True),)

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The caption embedder reads Qwen3's penultimate hidden states."""
        dim = config_int(parts, "transformer", "cap_feat_dim")
        return [
            Fit(("text_encoder",), "width", dim, f"the transformer's cap_feat_dim is {dim}"),
            Fit(("text_encoder",), "layers", 2, "the pipeline reads the penultimate layer's states", ">="),
        ]

    @classmethod
    def patch(cls, parts: Parts) -> int:
        """The pipeline's patch (2, the forward's default); the config lists the sizes it has."""
        sizes = parts["transformer"].config.get("all_patch_size") or (2,)
        if 2 not in sizes:
            raise refuse(f"this Z-Image transformer has patch sizes {list(sizes)}; ZImagePipeline uses 2")
        return 2

    @classmethod
    def size_limit(cls, parts: Parts) -> SizeLimit | None:
        """The rotary tables: ``axes_lens`` positions along the height and the width axes."""
        lens = parts["transformer"].config.get("axes_lens")
        if not isinstance(lens, (list, tuple)) or len(lens) != 3:
            return None
        pixels = cls.size_rule(parts, {})
        reason = f"the transformer's axes_lens give {lens[1]}×{lens[2]} positions of {pixels} pixels"
        return SizeLimit(int(lens[1]) * pixels, int(lens[2]) * pixels, reason)

    @classmethod
    def from_components(cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any) -> ZImage:
        """``max_sequence_length``: caption tokens (template included) read, the pipeline's 512."""
        if components.get("text_encoder") is None:
            raise refuse("this Z-Image model lacks its Qwen3 text encoder (text_encoder)")
        length = sequence_length(options, "Z-Image", 512, low=1)  # its caption is never empty
        text = Qwen3ChatText(
            tokenizer=components["tokenizer"],
            text_encoder=components["text_encoder"],
            max_sequence_length=length,
            thinking=True,
            layers=(-2,),
            masked=True,
        )
        parts = cls.flow_parts(
            components,
            ZImageTransformer,
            tap=ZImageTap,
            path=cls.flow_path(components, grid="pipeline"),
            text_tokens=padded(length),
        )
        return cls(text=text, **parts)
