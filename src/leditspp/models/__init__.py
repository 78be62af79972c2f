"""Model families: the built-in adapters registered in the order they are tried, and the public names
of the package (the parts an adapter is composed of in ``base.py``, detection in ``families.py``,
settings in ``settings.py``, loading in ``loading.py``)."""

from __future__ import annotations

from .base import AttentionTap, Autoencoder, Conditioning, Denoiser, ModelAdapter, TextStack, fingerprint
from .chroma import Chroma
from .deepfloyd import DeepFloydIF
from .families import FAMILIES, adapter_from_components, register, registered, supported
from .flux import Flux
from .klein import Klein
from .loading import (
    DEMO_FLOW_NAME,
    DEMO_FLOW_PATH,
    DEMO_NAME,
    DEMO_PATH,
    load_pipeline,
    resolve_model,
    source_name,
)
from .qwenimage import QwenImage
from .sd import StableDiffusion
from .sd3 import StableDiffusion3
from .sdxl import StableDiffusionXL
from .settings import (
    CHECKPOINT_RECOMMENDED,
    FEW_STEP_RECOMMENDED,
    RECOMMENDABLE,
    is_flow_model,
    model_settings,
    recommendation_sources,
    size_multiple_hint,
)
from .zimage import ZImage

# The built-in families, in the order they are tried (models/families.py; a family defined
# elsewhere joins with families.register).
for _family in (
    StableDiffusion,
    StableDiffusionXL,
    StableDiffusion3,
    Flux,
    Chroma,
    Klein,
    ZImage,
    QwenImage,
    DeepFloydIF,
):
    register(_family)

__all__ = [
    "CHECKPOINT_RECOMMENDED",
    "DEMO_FLOW_NAME",
    "DEMO_FLOW_PATH",
    "DEMO_NAME",
    "DEMO_PATH",
    "FAMILIES",
    "FEW_STEP_RECOMMENDED",
    "RECOMMENDABLE",
    "AttentionTap",
    "Autoencoder",
    "Chroma",
    "Conditioning",
    "DeepFloydIF",
    "Denoiser",
    "Flux",
    "Klein",
    "ModelAdapter",
    "QwenImage",
    "StableDiffusion",
    "StableDiffusion3",
    "StableDiffusionXL",
    "TextStack",
    "ZImage",
    "adapter_from_components",
    "fingerprint",
    "is_flow_model",
    "load_pipeline",
    "model_settings",
    "recommendation_sources",
    "register",
    "registered",
    "resolve_model",
    "size_multiple_hint",
    "source_name",
    "supported",
]
