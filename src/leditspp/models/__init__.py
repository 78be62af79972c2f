"""Model families: detection from loaded components, and loading from the hub or disk."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import LeditsError
from ..solvers import NoiseSchedule
from .base import Conditioning, ModelAdapter, decode_latents, encode_pixels, fingerprint, vae_scale_factor
from .sd import StableDiffusion

SUPPORTED_FAMILIES = ("Stable Diffusion 1.x/2.x (UNet2DConditionModel + one CLIP text encoder)",)


def adapter_from_components(components: dict[str, Any]) -> ModelAdapter:
    """Pick the family adapter from loaded diffusers components (a pipeline's ``components``)."""
    unet = components.get("unet")
    missing = [k for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if components.get(k) is None]
    if missing:
        raise LeditsError(f"the model lacks {', '.join(missing)}; supported families: {'; '.join(SUPPORTED_FAMILIES)}")
    added = getattr(unet.config, "addition_embed_type", None)
    if components.get("text_encoder_2") is not None or added is not None:
        raise LeditsError(
            f"this model uses addition_embed_type={added!r} and/or a second text encoder (SDXL-like), "
            f"which this version does not support yet; supported families: {'; '.join(SUPPORTED_FAMILIES)}"
        )
    schedule = NoiseSchedule.from_scheduler_config(components["scheduler"].config)
    return StableDiffusion(
        unet=unet,
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        schedule=schedule,
    )


def load_pipeline(model: str, torch_dtype: torch.dtype | None) -> Any:
    """Load a diffusers pipeline from a hub id or a local folder, without a safety checker."""
    from diffusers import DiffusionPipeline

    kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    try:
        return DiffusionPipeline.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        raise LeditsError(
            f"cannot load model {model!r}: {str(exc).splitlines()[0]} — pass a Hugging Face hub id "
            "(e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) or a local folder in diffusers format "
            "(with model_index.json)"
        ) from exc


__all__ = [
    "Conditioning",
    "ModelAdapter",
    "StableDiffusion",
    "adapter_from_components",
    "decode_latents",
    "encode_pixels",
    "fingerprint",
    "load_pipeline",
    "vae_scale_factor",
]
