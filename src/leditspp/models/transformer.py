"""What the flow-transformer families (SD3, FLUX.1, Chroma, FLUX.2 [klein], Z-Image, Qwen-Image) share.

:class:`FlowTransformer` is the base of their denoiser parts: a transformer on a rectified-flow
path, whose estimate is the velocity ``v ≈ ε − x0`` (a family writes :meth:`FlowTransformer.estimate`,
the call of its network). :class:`TransformerFamily` builds the parts of such a family from its
components: the denoiser, the VAE and the attention tap of its blocks on the patch grid.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import LeditsError
from ..solvers import FlowPath, NoiseLevel
from .autoencoder import ScaledVAE
from .base import AttentionTap, Autoencoder, Conditioning, ModelAdapter, runs_on
from .capture import KernelTap, Layouts
from .components import Fit, config_int
from .families import Part, Parts, SizeLimit, parts_of, refuse

#: Peak activation elements of one transformer row per token per channel of its width: an
#: estimate (q, k, v, the 4× MLP and the residual stream, fused attention), not a measurement.
TRANSFORMER_ACTIVATION_ELEMENTS = 16


@dataclass(frozen=True, kw_only=True)
class FlowTransformer(ABC):
    """The denoiser part of a flow family (:class:`~.base.Denoiser`): ``patch`` latent cells per
    token side, ``text_tokens`` text tokens in each row's sequence (for its memory estimate)."""

    transformer: Any
    path: FlowPath
    patch: int
    text_tokens: int

    @property
    def device(self) -> torch.device:
        """Where the transformer runs (its parameters may wait elsewhere under a memory plan)."""
        return runs_on(self.transformer)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def modules(self) -> dict[str, Any]:
        return {"transformer": self.transformer}

    def image_tokens(self, height: int, width: int) -> int:
        """Tokens of an ``height × width`` latent grid."""
        return (height // self.patch) * (width // self.patch)

    def noise_path(self, height: int, width: int) -> FlowPath:
        """The path for a latent grid: a dynamic shift depends on the image's token count."""
        return self.path.for_tokens(self.image_tokens(height, width))

    @abstractmethod
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The velocity for rows ``latents`` (R, C, h, w) at ``level`` (R,) each, fp32: the call of
        the family's transformer."""

    def to_data(self, v: torch.Tensor, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """``x̂0 = x − σ·v`` for a (guided) velocity (B, C, h, w); ``level`` (B,) each."""
        return x - level.s.to(v)[:, None, None, None] * v

    def width(self) -> int:
        """The channels of the transformer's token stream."""
        config = self.transformer.config
        return int(config.num_attention_heads) * int(config.attention_head_dim)

    def row_bytes(self, height: int, width: int) -> int:
        """Estimated peak activation bytes of one row: tokens × width × the factor above."""
        tokens = self.image_tokens(height, width) + self.text_tokens
        return TRANSFORMER_ACTIVATION_ELEMENTS * tokens * self.width() * self.transformer.dtype.itemsize

    def compile(self, **options: Any) -> None:
        self.transformer.compile(**options)


@dataclass(frozen=True, kw_only=True)
class TransformerFamily(ModelAdapter):
    """What the flow families share in their detection and construction (see :mod:`.families`)."""

    #: What a flow family's ``from_components`` accepts.
    options: ClassVar[frozenset[str]] = frozenset({"max_sequence_length"})
    #: The class of the transformer a model of this family holds: its detection (:meth:`matches`).
    transformer_class: ClassVar[str]

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        return parts.get("transformer", Part("", {})).kind == cls.transformer_class

    @staticmethod
    def joint_width(parts: Parts, *encoders: str) -> Fit:
        """``encoders`` as wide as the transformer's ``joint_attention_dim``: its joint attention reads their states."""
        joint = config_int(parts, "transformer", "joint_attention_dim")
        return Fit(encoders, "width", joint, f"the transformer's joint_attention_dim is {joint}")

    @classmethod
    def patch(cls, parts: Parts) -> int:
        """The side of one transformer token in latent cells (the transformer's ``patch_size``)."""
        return int(parts["transformer"].config.get("patch_size") or 2)

    @classmethod
    def size_rule(cls, parts: Parts, options: Mapping[str, Any]) -> int:
        """Image sides must be multiples of the VAE's factor times the patch: whole tokens."""
        return 2 ** (len(parts["vae"].config["block_out_channels"]) - 1) * cls.patch(parts)

    @classmethod
    def size_limit(cls, parts: Parts) -> SizeLimit | None:
        """None: positions are computed for any size (rotary embeddings)."""
        return None

    @staticmethod
    def flow_path(components: dict[str, Any], **kwargs: Any) -> FlowPath:
        """The flow path of the model's scheduler (``kwargs``: the pipeline's grid and μ rule)."""
        scheduler = parts_of({"scheduler": components["scheduler"]})["scheduler"]
        if scheduler.kind != "FlowMatchEulerDiscreteScheduler":
            network = type(components["transformer"]).__name__
            raise refuse(f"this {network} model's scheduler is {scheduler.kind}, not a flow-matching one")
        return FlowPath.from_scheduler_config(scheduler.config, **kwargs)

    @classmethod
    def flow_parts(
        cls,
        components: dict[str, Any],
        denoiser: type[FlowTransformer],
        *,
        tap: Callable[[Any, int], AttentionTap],
        path: FlowPath | None = None,
        autoencoder: Autoencoder | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The ``denoiser`` (with its other ``fields``), the autoencoder (default: the scaled VAE) and
        the attention tap (``tap(transformer, mask_level)``, on the patch grid) of a flow family,
        on ``path`` (default: the scheduler's, :meth:`flow_path`)."""
        transformer = components["transformer"]
        patch = cls.patch(parts_of({"transformer": transformer, "vae": components["vae"]}))
        return {
            "denoiser": denoiser(
                transformer=transformer, path=path or cls.flow_path(components), patch=patch, **fields
            ),
            "autoencoder": autoencoder or ScaledVAE(components["vae"]),
            "attention": tap(transformer, int(math.log2(patch))),
        }


def kernel_tap(layers: Callable[[Any], list[Any]], layout: Layouts) -> Callable[[Any, int], KernelTap]:
    """A ``tap`` for :meth:`TransformerFamily.flow_parts`: ``layers`` of the transformer read with ``layout``."""
    return lambda transformer, mask_level: KernelTap(transformer, layers, layout, mask_level)


def sequence_length(options: Mapping[str, Any], family: str, default: int, low: int = 0, high: int = 512) -> int:
    """``max_sequence_length`` (``default`` where not given) checked: an integer in [low, high], the
    text tokens ``family``'s pipeline can take (0 where the family runs without that encoder: SD3
    without T5)."""
    value = options.get("max_sequence_length", default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise LeditsError(
            f"max_sequence_length must be an integer in [{low}, {high}] for {family} (text tokens); got {value!r}"
        )
    return value
