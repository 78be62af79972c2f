"""Stable Diffusion 1.x/2.x: one CLIP text encoder, last hidden state, no added conditions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .base import Conditioning, runs_on, tokenize, warn_if_truncated
from .components import Fit, TextInput, config_int
from .families import Parts, refuse
from .unet import UNetModel


@dataclass(kw_only=True)
class StableDiffusion(UNetModel):
    """Adapter for SD 1.x/2.x components in diffusers format (ε-, v- or x₀-prediction), and
    their few-step distillations (SD-Turbo, LCM, …)."""

    text_encoder: Any
    tokenizer: Any
    family: str = "sd"
    title: ClassVar[str] = (
        "Stable Diffusion 1.x/2.x (UNet2DConditionModel + one CLIP text encoder) and their few-step "
        "distillations (SD-Turbo, LCM, LCM-LoRA)"
    )
    condition_keys: ClassVar[tuple[str, ...]] = ("embeds",)

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
            **cls.unet_parts(components, **options),
            text_encoder=components["text_encoder"],
            tokenizer=components["tokenizer"],
        )

    def components(self) -> dict[str, Any]:
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """CLIP last hidden states for ``prompts``: embeds (n, L, D) in the UNet's dtype."""
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
        hidden = self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
        return Conditioning.of(hidden.to(self.unet.dtype))

    def unconditional(self, negative_prompt: str, count: int) -> Conditioning:
        """c_∅: the encoding of the negative prompt ("" by default), ``count`` rows."""
        return self.encode_prompts([negative_prompt]).repeat_rows(count)

    def token_positions(self, prompt: str) -> list[int]:
        """Positions of the prompt's real word tokens in the padded sequence (SPEC B §6.1.4).

        Counted from the un-padded ids, ignoring special tokens, so neither the tokenizer's
        ``length`` field nor the pad token (``!`` in SD 2.x) can change it.
        """
        return _word_positions(self.tokenizer, prompt)


def _word_positions(tokenizer: Any, prompt: str, max_length: int | None = None) -> list[int]:
    """Positions of everything but the start/end tokens of the un-padded tokenization — a "!" the
    user typed counts even where "!" is also the pad token (SD 2.x, SDXL's second tokenizer)."""
    ids = tokenize(tokenizer, prompt, truncation=True, max_length=max_length or tokenizer.model_max_length).input_ids
    ends = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    return [i for i, t in enumerate(ids) if t not in ends]
