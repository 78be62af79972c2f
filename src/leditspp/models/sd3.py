"""Stable Diffusion 3/3.5: an MMDiT on a rectified-flow path.

The loops are the same as for SD; this adapter changes what they are given:

* conditioning as ``StableDiffusion3Pipeline`` builds it: the penultimate hidden states of
  CLIP-L and CLIP-G concatenated (77 tokens), zero-padded to T5's width, followed by T5's
  tokens (zeros without T5); pooled = both CLIPs' projected embeddings. c_∅ encodes the negative
  prompt ("" by default; SD3 does not zero it);
* the estimate is the velocity ``v ≈ ε − x0`` at the time ``σ·T``, and ``x̂0 = x − σ·v``;
* the attention mask M¹ comes from the joint attention of every transformer block: each image
  query's softmax over all (image and text) keys, kept for the concept's T5 token columns, on the
  patch grid (1/2 of the latents: ``mask_level`` 1 for patch size 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..solvers import NoiseLevel
from .base import Conditioning
from .capture import text_last
from .components import Fit, TextInput, config_int
from .families import Parts, SizeLimit, refuse
from .text import encode_text, warn_if_truncated, word_positions
from .transformer import FlowTransformer, TransformerFamily, kernel_tap, sequence_length


@dataclass(frozen=True, kw_only=True)
class SD3Text:
    """SD3's text stack: CLIP-L's and CLIP-G's penultimate states side by side (77 tokens),
    zero-padded to T5's width, then T5's ``max_sequence_length`` tokens (zeros without T5);
    pooled both CLIPs' projected embeddings."""

    tokenizer: Any
    text_encoder: Any
    tokenizer_2: Any
    text_encoder_2: Any
    tokenizer_3: Any | None
    text_encoder_3: Any | None
    max_sequence_length: int
    t5_width: int  # the transformer's joint_attention_dim: the width of T5's zeros without T5
    condition_keys: tuple[str, ...] = ("embeds", "pooled")
    zeros_for_empty: bool = False

    @property
    def text_tokens(self) -> int:
        """Tokens of the joint text: CLIP's window, then T5's."""
        return int(self.tokenizer.model_max_length) + self.max_sequence_length

    def modules(self) -> dict[str, Any]:
        named = {
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
            "text_encoder_3": self.text_encoder_3,
        }
        return {k: v for k, v in named.items() if v is not None}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, 77 + L₃, D₃) and pooled (n, P₁ + P₂)."""
        warn_if_truncated(self.tokenizer, prompts)
        outs = [encode_text(self.tokenizer, self.text_encoder, prompts)]
        outs.append(encode_text(self.tokenizer_2, self.text_encoder_2, prompts))
        pooled = [out[0] for out in outs]  # both CLIPs' projected embeddings
        clip = torch.cat([out.hidden_states[-2] for out in outs], dim=-1)
        t5 = self._t5(prompts, clip)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return Conditioning.of(torch.cat([clip, t5.to(clip)], dim=-2), torch.cat(pooled, dim=-1))

    def _t5(self, prompts: list[str], clip: torch.Tensor) -> torch.Tensor:
        """T5's last hidden states (n, L₃, D₃), or zeros where the checkpoint has no T5."""
        if self.text_encoder_3 is None or self.tokenizer_3 is None:
            return clip.new_zeros(len(prompts), self.max_sequence_length, self.t5_width)
        warn_if_truncated(self.tokenizer_3, prompts, self.max_sequence_length)
        t5 = encode_text(self.tokenizer_3, self.text_encoder_3, prompts, self.max_sequence_length, all_layers=False)
        return t5[0]

    def token_positions(self, prompt: str) -> list[int]:
        """The prompt's word tokens in the joint sequence: T5's (after CLIP's 77), else CLIP-L's."""
        if self.tokenizer_3 is None:
            return word_positions(self.tokenizer, prompt)
        offset = self.tokenizer.model_max_length
        return [offset + p for p in word_positions(self.tokenizer_3, prompt, self.max_sequence_length)]


@dataclass(frozen=True, kw_only=True)
class SD3Transformer(FlowTransformer):
    """SD3's MMDiT: latents as they are (it patchifies itself), the time ``σ·T``, pooled text."""

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The velocity for rows ``latents`` (R, C, h, w) at ``level`` (R,) each, fp32."""
        out = self.transformer(
            hidden_states=latents.to(self.transformer.dtype),
            timestep=level.t.to(latents.device),
            encoder_hidden_states=cond.embeds,
            pooled_projections=cond.pooled,
            return_dict=False,
        )[0]
        return out.float()


def joint_blocks(transformer: Any) -> list[Any]:
    """The joint attention of every (double-stream) transformer block."""
    return [block.attn for block in transformer.transformer_blocks]


@dataclass(frozen=True, kw_only=True)
class StableDiffusion3(TransformerFamily):
    """Adapter for SD3/3.5 components in diffusers format (large, medium, large-turbo)."""

    family: str = "sd3"
    title: ClassVar[str] = "Stable Diffusion 3/3.5 (SD3Transformer2DModel, flow matching; with or without T5)"

    transformer_class: ClassVar[str] = "SD3Transformer2DModel"

    text_inputs: ClassVar[tuple[TextInput, ...]] = (
        TextInput("text_encoder", "tokenizer"),
        TextInput("text_encoder_2", "tokenizer_2"),
        TextInput("text_encoder_3", "tokenizer_3"),
    )

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The joint attention reads both CLIPs' states side by side, zero-padded to T5's width, then
        T5's; the pooled projection both CLIPs' projections."""
        joint = config_int(parts, "transformer", "joint_attention_dim")
        pooled = config_int(parts, "transformer", "pooled_projection_dim")
        clips = ("text_encoder", "text_encoder_2")
        reason = f"the transformer's joint_attention_dim is {joint}"
        return [
            Fit(clips, "width", joint, f"{reason} (the CLIP states are zero-padded up to it)", "<="),
            Fit(("text_encoder_3",), "width", joint, reason),
            Fit(clips, "projection", pooled, f"the transformer's pooled_projection_dim is {pooled}"),
        ]

    @classmethod
    def size_limit(cls, parts: Parts) -> SizeLimit | None:
        """The learned position grid: ``pos_embed_max_size`` tokens per side (diffusers refuses a
        larger latent grid inside the network)."""
        grid = config_int(parts, "transformer", "pos_embed_max_size")
        if grid is None:
            return None
        side = grid * cls.size_rule(parts, {})
        reason = f"the transformer's pos_embed_max_size is {grid} positions of {cls.size_rule(parts, {})} pixels"
        return SizeLimit(side, side, reason)

    @classmethod
    def from_components(
        cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any
    ) -> StableDiffusion3:
        """``max_sequence_length``: T5's tokens (the pipeline's default 256; 0 for a model trained
        without T5, such as the flow demo model)."""
        if components.get("text_encoder") is None or components.get("text_encoder_2") is None:
            raise refuse("this SD3 model lacks its CLIP text encoders (text_encoder, text_encoder_2)")
        text = SD3Text(
            tokenizer=components["tokenizer"],
            text_encoder=components["text_encoder"],
            tokenizer_2=components.get("tokenizer_2") or components["tokenizer"],
            text_encoder_2=components["text_encoder_2"],
            tokenizer_3=components.get("tokenizer_3"),
            text_encoder_3=components.get("text_encoder_3"),
            max_sequence_length=sequence_length(options, "SD3", 256),
            t5_width=int(components["transformer"].config.joint_attention_dim),
        )
        return cls(
            text=text,
            **cls.flow_parts(
                components, SD3Transformer, tap=kernel_tap(joint_blocks, text_last), text_tokens=text.text_tokens
            ),
        )
