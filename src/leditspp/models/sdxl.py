"""Stable Diffusion XL: two CLIP text encoders, pooled embeddings and micro-conditioning (SPEC B §8, A6).

The loops are the same as for SD; this adapter only changes how text becomes :class:`Conditioning`
and what the UNet is given besides it:

* embeds (n, 77, D₁+D₂): the **penultimate** hidden states of both encoders, concatenated;
* pooled (n, P): the projected ``text_embeds`` of encoder 2;
* c_∅ is all zeros (embeds and pooled) for an empty negative prompt when the pipeline's
  ``force_zeros_for_empty_prompt`` says so;
* ``time_ids`` = [H, W, crop_top, crop_left, H, W] for the processed image size, in
  (height, width) order — diffusers' port passes (W, H), which differs for non-square images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .autoencoder import vae_scale_factor
from .base import Conditioning, bound_cache
from .components import Fit, TextInput, config_int
from .families import Parts, refuse
from .text import encode_text, warn_if_truncated, word_positions
from .unet import UNetDenoiser, UNetFamily


@dataclass(frozen=True, kw_only=True)
class DualClipText:
    """SDXL's text stack: both CLIPs' penultimate states side by side, the second's projection pooled."""

    tokenizer: Any
    text_encoder: Any
    tokenizer_2: Any
    text_encoder_2: Any
    zeros_for_empty: bool = True  # the pipeline's force_zeros_for_empty_prompt
    condition_keys: tuple[str, ...] = ("embeds", "pooled")

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, L, D₁+D₂) and pooled (n, P)."""
        warn_if_truncated(self.tokenizer, prompts)
        outs = [encode_text(self.tokenizer, self.text_encoder, prompts)]
        outs.append(encode_text(self.tokenizer_2, self.text_encoder_2, prompts))
        hidden = torch.cat([out.hidden_states[-2] for out in outs], dim=-1)
        return Conditioning.of(hidden, outs[1][0])  # encoder 2 (with projection): text_embeds

    def token_positions(self, prompt: str) -> list[int]:
        """Word-token positions from the second tokenizer (SPEC B §8)."""
        return word_positions(self.tokenizer_2, prompt)


@dataclass(frozen=True, kw_only=True)
class SDXLDenoiser(UNetDenoiser):
    """SDXL's UNet: besides the text, the pooled vector and the micro-conditioning time ids."""

    vae_factor: int
    crops_coords_top_left: tuple[int, int] = (0, 0)
    _time_ids: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def time_ids(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, 6): original size, crop top-left, target size — (height, width) of the processed image.

        Built once per latent size and device (no host-to-device copy in the loops); the cache
        keeps at most :data:`~leditspp.models.base.SIZE_CACHE` sizes (a long-running service sees many)."""
        key = (*latents.shape[-2:], str(latents.device), self.unet.dtype)
        if key not in self._time_ids:
            bound_cache(self._time_ids)
            h, w = latents.shape[-2] * self.vae_factor, latents.shape[-1] * self.vae_factor
            top, left = self.crops_coords_top_left
            self._time_ids[key] = torch.tensor([[h, w, top, left, h, w]], dtype=self.unet.dtype, device=latents.device)
        return self._time_ids[key]

    def added_inputs(self, latents: torch.Tensor, cond: Conditioning) -> dict[str, Any]:
        """Pooled text embeddings and the micro-conditioning time ids of every row."""
        time_ids = self.time_ids(latents).expand(latents.shape[0], -1)
        return {"added_cond_kwargs": {"text_embeds": cond.pooled, "time_ids": time_ids}}


@dataclass(frozen=True, kw_only=True)
class StableDiffusionXL(UNetFamily):
    """Adapter for SDXL base-style components in diffusers format (and SDXL-Turbo, Lightning, LCM)."""

    family: str = "sdxl"
    title: ClassVar[str] = (
        "Stable Diffusion XL base and fine-tunes (two CLIP text encoders, addition_embed_type='text_time') "
        "and their few-step distillations (SDXL-Turbo, SDXL-Lightning, Hyper-SD, LCM)"
    )

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        unet = parts.get("unet")
        return unet is not None and unet.config.get("addition_embed_type") == "text_time"

    text_inputs: ClassVar[tuple[TextInput, ...]] = (
        TextInput("text_encoder", "tokenizer"),
        TextInput("text_encoder_2", "tokenizer_2"),
    )

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The UNet's cross-attention reads both CLIPs' states side by side; its added embedding,
        the second CLIP's projection and the 6 time ids."""
        dim = config_int(parts, "unet", "cross_attention_dim")
        added = config_int(parts, "unet", "projection_class_embeddings_input_dim")
        time = config_int(parts, "unet", "addition_time_embed_dim")
        pooled = added - 6 * time if added is not None and time is not None else None
        return [
            Fit(("text_encoder", "text_encoder_2"), "width", dim, f"the unet's cross_attention_dim is {dim}"),
            Fit(
                ("text_encoder_2",),
                "projection",
                pooled,
                f"the unet's projection_class_embeddings_input_dim ({added}) holds it and 6 time ids of {time}",
            ),
        ]

    @classmethod
    def from_components(
        cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any
    ) -> StableDiffusionXL:
        if components.get("text_encoder") is None or components.get("text_encoder_2") is None:
            raise refuse("this SDXL-type model has only one text encoder (an SDXL refiner?), which is not supported")
        text = DualClipText(
            tokenizer=components["tokenizer"],
            text_encoder=components["text_encoder"],
            tokenizer_2=components.get("tokenizer_2") or components["tokenizer"],
            text_encoder_2=components["text_encoder_2"],
            zeros_for_empty=bool(pipeline_config.get("force_zeros_for_empty_prompt", True)),
        )
        vae_factor = vae_scale_factor(components["vae"])
        return cls(text=text, **cls.unet_parts(components, **options, denoiser=SDXLDenoiser, vae_factor=vae_factor))
