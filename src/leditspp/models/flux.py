"""FLUX.1 [dev]/[schnell]: an MMDiT on packed latents and a rectified-flow path.

What this family adds to the shared flow transformer (:class:`~leditspp.models.transformer.FlowTransformer`):

* conditioning as ``FluxPipeline`` builds it: T5's last hidden states (the sequence) and CLIP-L's
  pooled output; c_∅ encodes the negative prompt (true classifier-free guidance rows, as the
  community ``pipeline_flux_with_cfg.py`` runs them);
* latents (B, 16, h, w) are packed into 2×2 patches, (B, h·w/4, 64), with their position ids,
  and unpacked after the call; the time input is σ (diffusers' ``t/1000``);
* a guidance-distilled checkpoint ([dev]) gets the same ``guidance`` input on every row, so
  LEDITS++'s differences ``v(c_e) − v(c_∅)`` compare like with like;
* M¹ from the double-stream blocks' joint attention (text first), on the 2×2 patch grid.

:class:`PackedTransformer` is the denoiser FLUX.1-shaped transformers share (Chroma's, in
:mod:`.chroma`, is one too) and :class:`PackedFamily` their construction; :class:`Flux` adds
CLIP-L + T5 (:class:`FluxText`) and the guidance input.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..solvers import NoiseLevel
from .base import Conditioning, bound_cache
from .capture import text_first
from .components import Fit, TextInput, config_int
from .families import Parts, refuse
from .sd3 import joint_blocks
from .text import encode_text, warn_if_truncated, word_positions
from .transformer import FlowTransformer, TransformerFamily, kernel_tap, sequence_length

#: The guidance input of a guidance-distilled FLUX.1 [dev] (FluxPipeline's default).
FLUX_GUIDANCE = 3.5


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, h/2·w/2, 4C): 2×2 patches, row-major (``FluxPipeline._pack_latents``)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack`: (B, h/2·w/2, 4C) → (B, C, h, w)."""
    b, _, d = tokens.shape
    x = tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


@dataclass(frozen=True, kw_only=True)
class PackedTransformer(FlowTransformer):
    """The denoiser of FLUX.1-shaped transformers (FLUX.1, Chroma): latents packed into 2×2 patches
    with (0, row, column) position ids, text first in the joint sequence with zero ids, σ as the
    time input. A family adds the transformer inputs its conditioning gives (:meth:`conditioning_inputs`)."""

    _ids: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    @abstractmethod
    def conditioning_inputs(self, cond: Conditioning, latents: torch.Tensor) -> dict[str, Any]:
        """The transformer's inputs besides the latents, the time, the text sequence and the ids."""

    def _image_ids(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(h/2·w/2, 3) position ids [0, row, column] of the packed tokens, built once per size."""
        key = (height, width, str(device))
        if key not in self._ids:
            bound_cache(self._ids)  # a long-running service sees many sizes
            rows = torch.arange(height // 2)[:, None].expand(-1, width // 2)
            cols = torch.arange(width // 2)[None, :].expand(height // 2, -1)
            ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
            self._ids[key] = ids.to(device, self.transformer.dtype)
        return self._ids[key]

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The velocity for rows ``latents`` (R, C, h, w) at ``level`` (R,) each, fp32."""
        _, _, height, width = latents.shape
        device, dtype = latents.device, self.transformer.dtype
        out = self.transformer(
            hidden_states=pack(latents).to(dtype),
            timestep=(level.t / self.path.num_train_timesteps).to(device),
            encoder_hidden_states=cond.embeds,
            txt_ids=torch.zeros(cond.embeds.shape[1], 3, device=device, dtype=dtype),
            img_ids=self._image_ids(height, width, device),
            return_dict=False,
            **self.conditioning_inputs(cond, latents),
        )[0]
        return unpack(out.float(), height, width)


@dataclass(frozen=True, kw_only=True)
class FluxTransformer(PackedTransformer):
    """FLUX.1's transformer: CLIP's pooled vector, and on a guidance-distilled checkpoint ([dev])
    the same ``guidance`` on every row."""

    guidance: float = FLUX_GUIDANCE

    def conditioning_inputs(self, cond: Conditioning, latents: torch.Tensor) -> dict[str, Any]:
        guidance = None
        if getattr(self.transformer.config, "guidance_embeds", False):
            guidance = torch.full((latents.shape[0],), self.guidance, device=latents.device, dtype=torch.float32)
        return {"guidance": guidance, "pooled_projections": cond.pooled}


@dataclass(frozen=True, kw_only=True)
class FluxText:
    """FLUX.1's text stack: T5's last hidden states (the sequence), CLIP-L's pooled output."""

    tokenizer: Any  # CLIP-L
    text_encoder: Any
    tokenizer_2: Any  # T5
    text_encoder_2: Any
    max_sequence_length: int
    condition_keys: tuple[str, ...] = ("embeds", "pooled")
    zeros_for_empty: bool = False

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, L, D) from T5, pooled (n, P) from CLIP-L."""
        warn_if_truncated(self.tokenizer, prompts)
        warn_if_truncated(self.tokenizer_2, prompts, self.max_sequence_length)
        pooled = encode_text(self.tokenizer, self.text_encoder, prompts, all_layers=False).pooler_output
        t5 = encode_text(self.tokenizer_2, self.text_encoder_2, prompts, self.max_sequence_length, all_layers=False)
        return Conditioning.of(t5[0], pooled)

    def token_positions(self, prompt: str) -> list[int]:
        """The prompt's word tokens in T5's sequence (the text part of the joint attention)."""
        return word_positions(self.tokenizer_2, prompt, self.max_sequence_length)


class PackedFamily(TransformerFamily):
    """What FLUX.1-shaped families share in their construction: 2×2 packing, M¹ from the
    double-stream blocks' joint attention ([text; image] in the kernel call)."""

    @classmethod
    def patch(cls, parts: Parts) -> int:
        return 2  # the packing; the transformer itself has patch_size 1

    @classmethod
    def packed_parts(
        cls, components: dict[str, Any], denoiser: type[PackedTransformer], text_tokens: int, **fields: Any
    ) -> dict[str, Any]:
        return cls.flow_parts(
            components, denoiser, tap=kernel_tap(joint_blocks, text_first), text_tokens=text_tokens, **fields
        )


@dataclass(frozen=True, kw_only=True)
class Flux(PackedFamily):
    """Adapter for FLUX.1 components in diffusers format ([dev], [schnell] and fine-tunes)."""

    family: str = "flux"
    title: ClassVar[str] = "FLUX.1 [dev]/[schnell] (FluxTransformer2DModel, flow matching, CLIP-L + T5)"

    transformer_class: ClassVar[str] = "FluxTransformer2DModel"

    text_inputs: ClassVar[tuple[TextInput, ...]] = (
        TextInput("text_encoder", "tokenizer"),
        TextInput("text_encoder_2", "tokenizer_2"),
    )

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The joint attention reads T5's states; the pooled projection CLIP's pooled output."""
        pooled = config_int(parts, "transformer", "pooled_projection_dim")
        return [
            cls.joint_width(parts, "text_encoder_2"),
            Fit(("text_encoder",), "width", pooled, f"the transformer's pooled_projection_dim is {pooled}"),
        ]

    @classmethod
    def from_components(cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any) -> Flux:
        if components.get("text_encoder") is None or components.get("text_encoder_2") is None:
            raise refuse("this FLUX model lacks its text encoders (CLIP text_encoder, T5 text_encoder_2)")
        length = sequence_length(options, "FLUX.1", 512)
        text = FluxText(
            tokenizer=components["tokenizer"],
            text_encoder=components["text_encoder"],
            tokenizer_2=components["tokenizer_2"],
            text_encoder_2=components["text_encoder_2"],
            max_sequence_length=length,
        )
        return cls(text=text, **cls.packed_parts(components, FluxTransformer, length))
