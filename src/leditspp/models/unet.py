"""What the UNet families (SD 1.x/2.x, SDXL and their few-step distillations) share behind the seam.

:class:`UNetDenoiser` is their denoiser part; :class:`UNetFamily` builds it, the VAE and the
attention tap of the mask level from the components. A family adds its text stack and the UNet's
extra inputs (:meth:`UNetDenoiser.added_inputs`). Nothing outside ``models/`` touches the UNet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import defaults
from ..errors import LeditsError
from ..solvers import NoiseLevel, NoisePath
from .autoencoder import ScaledVAE
from .base import Conditioning, ModelAdapter, runs_on
from .families import Parts, parts_of
from .unet_attention import UNetTap

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def to_epsilon(output: torch.Tensor, x: torch.Tensor, a: Any, s: Any, prediction: str) -> torch.Tensor:
    """Convert a network output to a noise estimate ε at ``x = a·x0 + s·ε``.

    ``a``, ``s`` broadcast against ``x`` (e.g. (R, 1, 1, 1)). The map is affine in the output
    with the same offset for every row, so guidance on ε equals guidance on the raw output up to
    a constant factor (masks are scale-invariant).
    """
    if prediction == "epsilon":
        return output
    if prediction == "v_prediction":
        return a * output + s * x
    return (x - a * output) / s  # "sample": the network predicts x0


def check_mask_level(level: Any) -> None:
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        raise LeditsError(
            f"mask_level must be an integer ≥ 0 (the mask's grid is 1/2^level of the latents); got {level!r}"
        )


def prediction_type(config: Any) -> str:
    """The scheduler config's ``prediction_type`` (default ε), refused if unknown."""
    prediction = dict(config).get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise LeditsError(f"prediction_type={prediction!r} is not supported; expected one of {PREDICTION_TYPES}")
    return prediction


@dataclass(frozen=True, kw_only=True)
class UNetDenoiser:
    """The denoiser part of a UNet family (:class:`~.base.Denoiser`): the UNet on stacked rows, its
    time and prediction type (ε, v or x₀) turned into a noise estimate ε (as k-diffusion's
    ``DiscreteEpsDDPMDenoiser`` does), a row's activation memory and compile. A family whose UNet
    takes more inputs adds them in :meth:`added_inputs`."""

    unet: Any
    path: NoisePath
    prediction: str = "epsilon"

    @property
    def device(self) -> torch.device:
        """Where the UNet runs (its parameters may wait elsewhere under a memory plan)."""
        return runs_on(self.unet)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def modules(self) -> dict[str, Any]:
        return {"unet": self.unet}

    def noise_path(self, height: int, width: int) -> NoisePath:
        """The path for a latent grid (the same for every size here)."""
        return self.path

    def added_inputs(self, latents: torch.Tensor, cond: Conditioning) -> dict[str, Any]:
        """Extra keyword inputs of the UNet for these rows (SD: none)."""
        return {}

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The noise estimate ε for rows ``latents`` (R, C, h, w) at ``level`` (R,) each, fp32."""
        out = self.unet(
            latents.to(self.unet.dtype),
            level.t.to(latents.device),
            encoder_hidden_states=cond.embeds,
            **self.added_inputs(latents, cond),
        ).sample.float()
        a, s = (v.to(out)[:, None, None, None] for v in (level.a, level.s))
        return to_epsilon(out, latents.float(), a, s, self.prediction)

    def to_data(self, eps: torch.Tensor, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """The data prediction ``x̂0 = (x − s·ε)/a`` of a (guided) noise estimate (B, C, h, w) at
        ``x``; ``level`` (B,) each."""
        a, s = (v.to(eps)[:, None, None, None] for v in (level.a, level.s))
        return (x - s * eps) / a

    def row_bytes(self, height: int, width: int) -> int:
        """Estimated peak activation bytes of one UNet row on an ``height × width`` latent grid.

        ``ACTIVATION_ELEMENTS`` · h·w · c₀ elements of the UNet's dtype, c₀ being the width of
        its first level, where the largest activations live (skip connections, the
        feed-forward's 8c₀ GEGLU projection). With fused attention (SDPA) there is no quadratic
        term.
        """
        width0 = int(self.unet.config.block_out_channels[0])
        return defaults.ACTIVATION_ELEMENTS * height * width * width0 * self.unet.dtype.itemsize

    def compile(self, **options: Any) -> None:
        """``torch.compile`` the UNet in place (``options`` go to ``torch.compile``)."""
        self.unet.compile(**options)


@dataclass(frozen=True, kw_only=True)
class UNetFamily(ModelAdapter):
    """What the UNet families share in their detection and construction: the options they take,
    the size rule, and the denoiser, autoencoder and attention tap built from the components."""

    #: What a UNet family's ``from_components`` accepts (see :mod:`.families`).
    options: ClassVar[frozenset[str]] = frozenset({"mask_level", "spacing"})

    @classmethod
    def size_rule(cls, parts: Parts, options: Mapping[str, Any]) -> int:
        """Image sides must be multiples of the VAE's factor times 2^mask_level, so that the
        attention level's grid is exactly (h/2^level) × (w/2^level)."""
        level = options.get("mask_level", defaults.MASK_LEVEL)
        return 2 ** (len(parts["vae"].config["block_out_channels"]) - 1) * 2**level

    @staticmethod
    def unet_parts(
        components: dict[str, Any],
        mask_level: int = defaults.MASK_LEVEL,
        spacing: str | None = None,
        denoiser: type[UNetDenoiser] = UNetDenoiser,
        **more: Any,
    ) -> dict[str, Any]:
        """The ``denoiser`` (with ``more`` of its fields), autoencoder and attention tap every UNet
        family is built from."""
        check_mask_level(mask_level)
        config = parts_of({"scheduler": components["scheduler"]})["scheduler"].config
        unet = components["unet"]
        path = NoisePath.from_scheduler_config(config, spacing)
        return {
            "denoiser": denoiser(unet=unet, path=path, prediction=prediction_type(config), **more),
            "autoencoder": ScaledVAE(components["vae"]),
            "attention": UNetTap(unet, mask_level),
        }
