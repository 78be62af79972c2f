"""ComfyUI's ``MODEL``, ``CLIP`` and ``VAE`` behind leditspp's seam, as the parts of a model adapter.

The loops (:mod:`leditspp.inversion`, :mod:`leditspp.editing`) see noise estimates and noise
paths only. :func:`comfy_adapter` composes a :class:`~leditspp.models.base.ModelAdapter` of
ComfyUI's own objects: :class:`ComfyDenoiser` (the ``MODEL``), :class:`ComfyTap` (its attention
hook), :class:`~.text.ComfyText` (the ``CLIP``) and :class:`ComfyAutoencoder` (the ``VAE``). The network call is
``BaseModel.apply_model`` on the user's ``ModelPatcher`` (its LoRAs, weight casts and
``transformer_options`` patches stay in force; ``comfy.model_management`` loads the weights), and
the noise levels are the model's ``model_sampling`` sigmas.

Variance-preserving families (ε- and v-prediction) live in ComfyUI's space ``x = x0 + σ·ε`` with
``σ = s/a``; leditspp's latents are ``y = a·x0 + s·ε`` (paper Eq. 6), so ``x = y/a``. ComfyUI's
``apply_model`` returns the data prediction ``D``; the estimate the guidance acts on is
``ε = (x − D)/σ`` (paper Eq. 8's ε_θ), whatever the network's prediction type. FLUX.1 and SD3 are on
ComfyUI's flow path ``x = (1 − σ)·x0 + σ·ε`` (CONST), which is leditspp's ``y`` itself; there
``(x − D)/σ`` is the velocity v the flow solvers take.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import comfy.model_sampling
import torch

from leditspp import defaults
from leditspp.attention import AttentionRecorder
from leditspp.errors import LeditsError
from leditspp.models.base import Conditioning, ModelAdapter
from leditspp.solvers import FlowPath, NoiseLevel, NoisePath, Path

from .attention import JointAttentionTap, UNetAttentionTap
from .text import ComfyText

#: The model families of ComfyUI this pack edits, by ComfyUI's model-config class name.
SUPPORTED: dict[str, str] = {
    "SD15": "Stable Diffusion 1.x",
    "SD20": "Stable Diffusion 2.x (ε and v-prediction)",
    "SDXL": "Stable Diffusion XL",
    "Flux": "FLUX.1 [dev]",
    "FluxSchnell": "FLUX.1 [schnell]",
    "SD3": "Stable Diffusion 3 and 3.5",
}
#: The families on a rectified-flow path (ComfyUI's CONST parameterisation); the rest are VP.
FLOW_FAMILIES = frozenset({"Flux", "FluxSchnell", "SD3"})


def model_name(patcher: Any) -> str:
    """The name ComfyUI gave the loaded model (its model-config class, e.g. ``SD15``, ``Flux``)."""
    return type(patcher.model.model_config).__name__


#: ComfyUI's parameterisations (``model_sampling``'s mix-ins), most derived first.
PARAMETERISATIONS = tuple(
    getattr(comfy.model_sampling, name)
    for name in ("IMG_TO_IMG", "X0", "EDM", "V_PREDICTION", "EPS", "CONST", "COSMOS_RFLOW")
)


def check_supported(patcher: Any) -> None:
    """Refuse a model this pack cannot edit exactly, naming it and listing the supported ones."""
    name = model_name(patcher)
    supported = ", ".join(f"{k} ({v})" for k, v in SUPPORTED.items())
    if name not in SUPPORTED:
        raise LeditsError(f"LEDITS++ cannot edit with the model ComfyUI loaded as {name}; supported: {supported}")
    sampling = patcher.get_model_object("model_sampling")
    ms = comfy.model_sampling
    kind = next((c.__name__ for c in type(sampling).__mro__ if c in PARAMETERISATIONS), "an unknown parameterisation")
    if name in FLOW_FAMILIES:
        flow = isinstance(sampling, ms.ModelSamplingFlux | ms.ModelSamplingDiscreteFlow)
        ok, wanted = flow and kind == "CONST", "flow (CONST) schedule"
    else:
        discrete = isinstance(sampling, ms.ModelSamplingDiscrete) and not isinstance(
            sampling, ms.ModelSamplingDiscreteEDM
        )
        ok, wanted = discrete and kind in ("EPS", "V_PREDICTION"), "discrete ε (EPS) or v-prediction schedule"
    if not ok:
        raise LeditsError(
            f"the {name} model predicts with {kind} on {type(sampling).__name__}; LEDITS++ here needs its "
            f"{wanted} — remove the node that changed its sampling (e.g. ModelSamplingDiscrete set to lcm or x0)"
        )


def vp_path(sampling: Any) -> NoisePath:
    """The VP noise path of a ``ModelSamplingDiscrete``: ``ᾱ_t = 1/(1 + σ_t²)`` at its T training
    times, leading spacing with offset 1 (what SD 1.x/2.x's and SDXL's scheduler configs declare)."""
    sigmas = sampling.sigmas.detach().double().cpu()
    return NoisePath(alphas_cumprod=1.0 / (1.0 + sigmas**2), spacing="leading", steps_offset=1)


def flow_path(sampling: Any) -> FlowPath:
    """The flow path of ComfyUI's flow sampling: a ``ModelSamplingFlux`` ([dev]) shifts σ by
    ``e^μ/(e^μ + 1/σ − 1)`` with μ its ``shift`` (ComfyUI's ModelSamplingFlux node sets it from the
    image size), a ``ModelSamplingDiscreteFlow`` ([schnell], SD3 with shift 3) by ``shift·σ/(1 + (shift − 1)·σ)``."""
    if isinstance(sampling, comfy.model_sampling.ModelSamplingFlux):
        return FlowPath(dynamic=True, mu=float(sampling.shift))
    return FlowPath(shift=float(sampling.shift))


@dataclass(eq=False)
class ComfyTap:
    """The attention part: M¹ from ComfyUI's own attention hook (:mod:`.attention`), at
    ``mask_level`` (the patch grid on FLUX.1 and SD3). While a capture is open, the denoiser's calls
    carry its override (:meth:`options`)."""

    network: Any  # the ModelPatcher's diffusion_model
    mask_level: int
    flow: bool
    _active: UNetAttentionTap | JointAttentionTap | None = field(default=None, init=False)

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        """Record the concept rows' attention for the calls made inside."""
        tap = JointAttentionTap.of(self.network) if self.flow else UNetAttentionTap.of(self.network, self.mask_level)
        self._active = tap
        try:
            yield tap.recorder
        finally:
            self._active = None

    def options(self, transformer_options: dict[str, Any], text_tokens: int) -> dict[str, Any]:
        """``transformer_options`` for a call whose text has ``text_tokens`` tokens: with the capture's
        override while one is open."""
        return transformer_options if self._active is None else self._active.options(transformer_options, text_tokens)


@dataclass(frozen=True, eq=False)
class ComfyDenoiser:
    """The denoiser part of a ComfyUI model (SD 1.x/2.x, SDXL, SD3, FLUX.1): estimates, data
    predictions and the noise path from its ``ModelPatcher``; its calls carry ``tap``'s override."""

    patcher: Any  # comfy.model_patcher.ModelPatcher
    tap: ComfyTap

    @property
    def sampling(self) -> Any:
        return self.patcher.get_model_object("model_sampling")

    @property
    def flow(self) -> bool:
        """Whether the model is on a rectified-flow path (FLUX.1, SD3) rather than a VP one."""
        return model_name(self.patcher) in FLOW_FAMILIES

    @property
    def path(self) -> Path:
        return flow_path(self.sampling) if self.flow else vp_path(self.sampling)

    def noise_path(self, height: int, width: int) -> Path:
        """The same path for every latent size (a FLUX.1 model's μ is set on the model)."""
        return self.path

    @property
    def device(self) -> torch.device:
        return torch.device(self.patcher.load_device)

    @property
    def dtype(self) -> torch.dtype:
        return self.patcher.model_dtype()

    def modules(self) -> dict[str, Any]:
        return {"diffusion_model": self.patcher.model.diffusion_model}

    def row_bytes(self, height: int, width: int) -> int:
        """ComfyUI's own estimate of one row's activation memory (``BaseModel.memory_required``)."""
        channels = self.patcher.model.latent_format.latent_channels
        return int(self.patcher.model.memory_required([1, channels, height, width]))

    def compile(self, **options: Any) -> None:
        raise LeditsError("compile the model with ComfyUI's own nodes (TorchCompileModel) before LEDITS++")

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The estimate for rows ``latents`` (R, C, h, w) at ``level`` (R,), fp32: ``(x − D)/σ`` —
        ε on a VP path at ``x = y/a`` with ComfyUI's own sigma at each row's training time (so its
        ``timestep(σ)`` is that time), the velocity v on a flow path at ``x = y``, σ = s."""
        if self.flow:
            sigmas, x = level.s.to(latents), latents.float()
        else:
            sigmas = self.sampling.sigmas.to(latents.device)[level.t.long()]
            x = latents.float() / level.a.to(latents)[:, None, None, None]
        denoised = self._apply(x, sigmas, cond).float()
        return (x - denoised) / sigmas[:, None, None, None]

    def to_data(self, estimate: torch.Tensor, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """The data prediction of a (guided) estimate (B, C, h, w) at ``x``; ``level`` (B,):
        ``(x − s·ε)/a`` on a VP path, ``x − σ·v`` on a flow path."""
        a, s = (v.to(estimate)[:, None, None, None] for v in (level.a, level.s))
        return x - s * estimate if self.flow else (x - s * estimate) / a

    def _apply(self, x: torch.Tensor, sigmas: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """ComfyUI's data prediction for ``x`` (R, C, h, w) in its space at ``sigmas`` (R,), through
        the model's ``model_function_wrapper`` when a patch set one (as its samplers do)."""
        model = self.patcher.model
        options = dict(self.patcher.model_options.get("transformer_options", {}))
        options["sigmas"] = sigmas
        options = self.tap.options(options, cond.embeds.shape[1])
        rows = x.shape[0]
        c = {
            name: value.process_cond(batch_size=rows, area=None).cond
            for name, value in self._conditions(x, cond).items()
        }
        c["transformer_options"] = options
        wrapper = self.patcher.model_options.get("model_function_wrapper")
        if wrapper is not None:
            return wrapper(model.apply_model, {"input": x, "timestep": sigmas, "c": c, "cond_or_uncond": [0]})
        return model.apply_model(x, sigmas, **c)

    def _conditions(self, x: torch.Tensor, cond: Conditioning) -> dict[str, Any]:
        """The model's inputs beside the latents, as ComfyUI's samplers make them
        (``BaseModel.extra_conds``; the image size is the latent's times 8, as theirs): the text
        embeddings, for SDXL the added conditions from the pooled vector and the size, for FLUX.1
        the pooled vector and its guidance input (3.5, as ComfyUI's default); one per row."""
        height, width = (8 * side for side in x.shape[-2:])
        return self.patcher.model.extra_conds(
            cross_attn=cond.embeds, pooled_output=cond.pooled, width=width, height=height, device=x.device
        )

    def load(self, latent_shape: tuple[int, ...], rows: int) -> None:
        """Have ComfyUI's memory manager load the weights (with their patches) for calls of
        ``rows`` rows on latents of ``latent_shape`` (B, C, h, w)."""
        memory = self.patcher.model.memory_required([rows, *latent_shape[1:]])
        comfy.model_management.load_models_gpu([self.patcher], memory_required=memory)


@dataclass(frozen=True, eq=False)
class ComfyAutoencoder:
    """The autoencoder part: ComfyUI's ``VAE`` and the model's latent format. The loops run in the
    model's latent space, ``process_latent_in`` of what the VAE encodes."""

    vae: Any  # comfy.sd.VAE; None where a node has none connected
    model: Any  # the ModelPatcher's BaseModel

    def _connected(self) -> Any:
        if self.vae is None:
            raise LeditsError("this LEDITS++ node has no VAE connected")
        return self.vae

    @property
    def factor(self) -> int:
        return int(self._connected().downscale_ratio)

    def latent(self, image: torch.Tensor) -> torch.Tensor:
        """ComfyUI's ``LATENT`` samples (B, C, h, w) of an ``IMAGE`` (B, H, W, C) in [0, 1], as VAEEncode gives them."""
        return self._connected().encode(image[..., :3])

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [−1, 1] → the model's latents (B, C, h, w), fp32."""
        image = ((pixels + 1) / 2).permute(0, 2, 3, 1)
        return self.model.process_latent_in(self.latent(image)).float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The model's latents (B, C, h, w) → images (B, 3, H, W) in [−1, 1], fp32."""
        image = self._connected().decode(self.model.process_latent_out(latents))
        return (image[..., :3].permute(0, 3, 1, 2).float() * 2 - 1).clamp(-1, 1)

    def modules(self) -> dict[str, Any]:
        return {}


def comfy_adapter(patcher: Any, clip: Any = None, vae: Any = None) -> ModelAdapter:
    """leditspp's adapter of a ComfyUI model, composed of ComfyUI's own parts: the ``MODEL``'s
    denoiser and attention tap, the ``CLIP``'s text stack, the ``VAE`` (either may be None where a
    node has none). Refused (:class:`LeditsError`) for a model it cannot edit."""
    check_supported(patcher)
    network = patcher.model.diffusion_model
    flow = model_name(patcher) in FLOW_FAMILIES
    level = int(math.log2(network.patch_size)) if flow else defaults.MASK_LEVEL
    tap = ComfyTap(network, level, flow)
    return ModelAdapter(
        family=f"comfyui-{model_name(patcher).lower()}",
        text=ComfyText(clip),
        denoiser=ComfyDenoiser(patcher, tap),
        autoencoder=ComfyAutoencoder(vae, patcher.model),
        attention=tap,
    )
