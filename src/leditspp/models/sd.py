"""Stable Diffusion 1.x/2.x: one CLIP text encoder, last hidden state, no added conditions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .base import Conditioning, runs_on, tokenize
from .components import Fit, TextInput, config_int
from .families import Parts, refuse
from .text import warn_if_truncated, word_positions
from .unet import UNetFamily


@dataclass(frozen=True, kw_only=True)
class ClipText:
    """SD's text stack: one CLIP's last hidden states, (n, 77, D)."""

    tokenizer: Any
    text_encoder: Any
    condition_keys: tuple[str, ...] = ("embeds",)
    zeros_for_empty: bool = False

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """CLIP last hidden states for ``prompts``: embeds (n, L, D)."""
        warn_if_truncated(self.tokenizer, prompts)
        tokens = tokenize(
            self.tokenizer,
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = runs_on(self.text_encoder)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(device)
        return Conditioning.of(self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0])

    def token_positions(self, prompt: str) -> list[int]:
        """Positions of the prompt's real word tokens in the padded sequence (SPEC B §6.1.4)."""
        return word_positions(self.tokenizer, prompt)


@dataclass(frozen=True, kw_only=True)
class StableDiffusion(UNetFamily):
    """Adapter for SD 1.x/2.x components in diffusers format (ε-, v- or x₀-prediction), and
    their few-step distillations (SD-Turbo, LCM, …)."""

    family: str = "sd"
    title: ClassVar[str] = (
        "Stable Diffusion 1.x/2.x (UNet2DConditionModel + one CLIP text encoder) and their few-step "
        "distillations (SD-Turbo, LCM, LCM-LoRA)"
    )

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        unet = parts.get("unet")
        return unet is not None and unet.config.get("addition_embed_type") is None and "text_encoder_2" not in parts

    text_inputs: ClassVar[tuple[TextInput, ...]] = (TextInput("text_encoder", "tokenizer"),)

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The UNet's cross-attention reads CLIP's last hidden states."""
        dim = config_int(parts, "unet", "cross_attention_dim")
        return [Fit(("text_encoder",), "width", dim, f"the unet's cross_attention_dim is {dim}")]

    @classmethod
    def from_components(
        cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any
    ) -> StableDiffusion:
        if components.get("text_encoder") is None:
            raise refuse("the model lacks text_encoder")
        return cls(
            text=ClipText(tokenizer=components["tokenizer"], text_encoder=components["text_encoder"]),
            **cls.unet_parts(components, **options),
        )
