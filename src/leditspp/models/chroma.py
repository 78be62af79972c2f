"""Chroma: a FLUX.1 [schnell]-derived MMDiT conditioned on T5 alone, with a text attention mask.

Chroma runs FLUX.1's transformer interface (:class:`~leditspp.models.flux.PackedTransformer`: 2×2
packed latents, (0, row, column) ids, text first, σ as the time, M¹ from the double-stream blocks'
``FluxAttnProcessor`` attention) and FLUX.1's VAE scaling and shift. What this adapter adds, as
``ChromaPipeline`` (diffusers 0.42) builds it:

* T5's last hidden states, encoded *with* the tokenizer's attention mask; no pooled text and no
  guidance input; c_∅ encodes the negative prompt ("" by default) — true CFG rows;
* a text mask per row (``Conditioning`` key ``mask``, (n, L)): 1 on the prompt's tokens, its
  ``</s>`` and the first pad, 0 after; the transformer gets ``[mask ‖ 1 … 1]`` over the joint
  sequence, and each block forms ``m mᵀ``.

The mask, as the pipeline passes it, is **float** 0/1, which SDPA *adds* to the logits
(huggingface/diffusers#12116): pairs of attended tokens get +1 and pairs with a later pad +0. So
the pads are down-weighted by e⁻¹, not removed. We pass the pipeline's mask unchanged, because an
edit must run the network the pipeline runs (a generation with ``ChromaPipeline`` and our estimate
agree), and M¹ applies it the same way (it is read from the attention kernel's inputs, mask
included). A bool mask would be the intended masking, but another network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .base import Conditioning, runs_on, tokenize
from .components import Fit, TextInput
from .families import Parts, refuse
from .flux import PackedFamily, PackedTransformer
from .text import warn_if_truncated, word_positions
from .transformer import sequence_length


@dataclass(frozen=True, kw_only=True)
class ChromaText:
    """Chroma's text stack: T5 run with the tokenizer's mask, and the pipeline's text mask."""

    tokenizer: Any
    text_encoder: Any  # T5
    max_sequence_length: int
    condition_keys: tuple[str, ...] = ("embeds", "mask")
    zeros_for_empty: bool = False

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, L, D): T5 run with the tokenizer's mask; mask (n, L) float: 1 up to and
        including the first pad (``ChromaPipeline._get_t5_prompt_embeds``)."""
        warn_if_truncated(self.tokenizer, prompts, self.max_sequence_length)
        tokens = tokenize(
            self.tokenizer,
            prompts,
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )
        device = runs_on(self.text_encoder)
        attended = tokens.attention_mask.to(device)
        embeds = self.text_encoder(tokens.input_ids.to(device), attention_mask=attended, output_hidden_states=False)[0]
        positions = torch.arange(attended.shape[1], device=device)[None, :]
        mask = positions <= attended.sum(dim=1, keepdim=True)  # the first pad stays attended
        return Conditioning.of(embeds, mask=mask.to(embeds.dtype))

    def token_positions(self, prompt: str) -> list[int]:
        """The prompt's word tokens in T5's sequence (the text part of the joint attention)."""
        return word_positions(self.tokenizer, prompt, self.max_sequence_length)


@dataclass(frozen=True, kw_only=True)
class ChromaTransformer(PackedTransformer):
    """Chroma's transformer: FLUX.1's inputs, no pooled text or guidance, the text mask."""

    def conditioning_inputs(self, cond: Conditioning, latents: torch.Tensor) -> dict[str, Any]:
        """The pipeline's ``attention_mask`` (R, L + h/2·w/2): each row's text mask, then 1 on every
        image token (``ChromaPipeline._prepare_attention_mask``), float as the pipeline makes it."""
        text = cond.tensors["mask"]
        image = text.new_ones(text.shape[0], self.image_tokens(*latents.shape[-2:]))
        return {"attention_mask": torch.cat([text, image], dim=1).to(latents.device, self.transformer.dtype)}


@dataclass(frozen=True, kw_only=True)
class Chroma(PackedFamily):
    """Adapter for Chroma components in diffusers format (``ChromaTransformer2DModel`` + T5)."""

    family: str = "chroma"
    title: ClassVar[str] = "Chroma (ChromaTransformer2DModel, flow matching, T5 with a text mask)"

    @classmethod
    def recommended(cls, parts: Parts, pipeline_config: Mapping[str, Any]) -> dict[str, Any]:
        """Chroma's pipeline samples in 35 steps."""
        return {"steps": 35}

    transformer_class: ClassVar[str] = "ChromaTransformer2DModel"

    text_inputs: ClassVar[tuple[TextInput, ...]] = (TextInput("text_encoder", "tokenizer"),)

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The joint attention reads T5's states."""
        return [cls.joint_width(parts, "text_encoder")]

    @classmethod
    def from_components(cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any) -> Chroma:
        """``max_sequence_length``: T5's tokens (the pipeline's default 512)."""
        if components.get("text_encoder") is None:
            raise refuse("this Chroma model lacks its T5 text_encoder")
        length = sequence_length(options, "Chroma", 512, low=1)
        text = ChromaText(
            tokenizer=components["tokenizer"], text_encoder=components["text_encoder"], max_sequence_length=length
        )
        return cls(text=text, **cls.packed_parts(components, ChromaTransformer, length))
