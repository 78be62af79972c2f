"""ComfyUI's ``MODEL``, ``CLIP`` and ``VAE`` behind leditspp's seam, as the parts of a model adapter.

The loops (:mod:`leditspp.inversion`, :mod:`leditspp.editing`) see noise estimates and noise
paths only. :func:`comfy_adapter` composes a :class:`~leditspp.models.base.ModelAdapter` of
ComfyUI's own objects: :class:`ComfyDenoiser` (the ``MODEL``), :class:`ComfyTap` (its attention
hook), :class:`~.text.ComfyText` (the ``CLIP``) and :class:`ComfyAutoencoder` (the ``VAE``). The
network call is
``BaseModel.apply_model`` on the user's ``ModelPatcher`` (its LoRAs, weight casts and
``transformer_options`` patches stay in force; ``comfy.model_management`` loads the weights), and
the noise levels are the model's ``model_sampling`` sigmas.

Variance-preserving families (ε- and v-prediction) live in ComfyUI's space ``x = x0 + σ·ε`` with
``σ = s/a``; leditspp's latents are ``y = a·x0 + s·ε`` (paper Eq. 6), so ``x = y/a``. ComfyUI's
``apply_model`` returns the data prediction ``D``; the estimate the guidance acts on is
``ε = (x − D)/σ`` (paper Eq. 8's ε_θ), whatever the network's prediction type. FLUX.1, Chroma,
SD3 and Qwen-Image are on ComfyUI's flow path ``x = (1 − σ)·x0 + σ·ε`` (CONST), which is leditspp's
``y`` itself; there ``(x − D)/σ`` is the velocity v the flow solvers take. Qwen-Image's latents
carry a frame axis (B, C, 1, h, w) in ComfyUI, which the loops do not see.
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

from .attention import JointAttentionTap, UNetAttentionTap, text_mask_options
from .text import ComfyText

#: The model families of ComfyUI this pack edits, by ComfyUI's model-config class name.
SUPPORTED: dict[str, str] = {
    "SD15": "Stable Diffusion 1.x",
    "SD20": "Stable Diffusion 2.x (ε and v-prediction)",
    "SDXL": "Stable Diffusion XL",
    "Flux": "FLUX.1 [dev]",
    "FluxSchnell": "FLUX.1 [schnell]",
    "SD3": "Stable Diffusion 3 and 3.5",
    "Chroma": "Chroma",
    "QwenImage": "Qwen-Image",
}
#: The families on a rectified-flow path (ComfyUI's CONST parameterisation); the rest are VP.
FLOW_FAMILIES = frozenset({"Flux", "FluxSchnell", "SD3", "Chroma", "QwenImage"})
#: The families whose prompts keep their own token counts: prompts of different counts are padded
#: to one and the pads masked out (see :func:`.text.pad_to_common_length`).
TEXT_MASK_FAMILIES = frozenset({"Chroma", "QwenImage"})
#: Of those, the ones whose network in this ComfyUI drops a text mask (Qwen-Image's attention never
#: passes it on): the pads are masked in the attention kernel instead (:func:`.attention.text_mask_options`).
KERNEL_MASK_FAMILIES = frozenset({"QwenImage"})


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
    """The attention part: M¹ from ComfyUI's own attention hook (:mod:`.attention`) at ``mask_level``
    (the patch grid on a transformer). While a capture is open, the denoiser's calls carry its
    override (:meth:`options`)."""

    network: Any  # the ModelPatcher's diffusion_model
    mask_level: int
    flow: bool
    _active: UNetAttentionTap | JointAttentionTap | None = field(default=None, init=False)

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        """Record the concept rows' attention for the calls made inside (see :mod:`.attention`)."""
        tap = JointAttentionTap.of(self.network) if self.flow else UNetAttentionTap.of(self.network, self.mask_level)
        self._active = tap
        try:
            yield tap.recorder
        finally:
            self._active = None

    def options(self, transformer_options: dict[str, Any], text_tokens: int) -> dict[str, Any]:
        """``transformer_options`` for a call whose text has ``text_tokens`` tokens, with the open
        capture's override and markers."""
        return transformer_options if self._active is None else self._active.options(transformer_options, text_tokens)


@dataclass(frozen=True, eq=False)
class ComfyDenoiser:
    """The denoiser part of a ComfyUI model (SD 1.x/2.x, SDXL, SD3, FLUX.1, Chroma, Qwen-Image):
    estimates, data predictions and the noise path from its ``ModelPatcher``; its calls carry
    ``tap``'s override while a capture is open."""

    patcher: Any  # comfy.model_patcher.ModelPatcher
    tap: ComfyTap

    @property
    def sampling(self) -> Any:
        return self.patcher.get_model_object("model_sampling")

    @property
    def flow(self) -> bool:
        """Whether the model is on a rectified-flow path (FLUX.1, Chroma, SD3, Qwen-Image) rather than a VP one."""
        return model_name(self.patcher) in FLOW_FAMILIES

    @property
    def text_mask(self) -> bool:
        """Whether padded prompts stack in one call with their pads masked (Chroma, Qwen-Image)."""
        return model_name(self.patcher) in TEXT_MASK_FAMILIES

    @property
    def kernel_mask(self) -> bool:
        """Whether the pads are masked in the attention kernel, the network dropping a text mask (Qwen-Image)."""
        return model_name(self.patcher) in KERNEL_MASK_FAMILIES

    @property
    def frames(self) -> bool:
        """Whether the model's latents have a frame axis (B, C, T, h, w) (Qwen-Image's Wan 2.1 latents)."""
        return self.patcher.model.latent_format.latent_dimensions == 3

    def latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        """A ``LATENT``'s samples in the model's space, as the loops take them: (B, C, h, w).
        A frame-axis model's latents (B, C, 1, h, w) lose their one frame (a 4-D latent gets one
        first, as ComfyUI's samplers give it)."""
        if self.frames and latent.dim() == 4:
            latent = latent[:, :, None]
        x0 = self.patcher.model.process_latent_in(latent)
        return x0[:, :, 0] if self.frames else x0

    def latent_out(self, latents: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Model-space latents (B, C, h, w) as samples shaped like the user's ``like`` (4-D, or 5-D
        with one frame)."""
        if self.frames:
            latents = latents[:, :, None]
        return self.patcher.model.process_latent_out(latents).reshape(like.shape)

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

    def compile(self, **options: Any) -> None:
        raise LeditsError("compile the model with ComfyUI's own nodes (TorchCompileModel) before LEDITS++")

    def row_bytes(self, height: int, width: int) -> int:
        """ComfyUI's own estimate of one row's activation memory (``BaseModel.memory_required``)."""
        channels = self.patcher.model.latent_format.latent_channels
        return int(self.patcher.model.memory_required([1, channels, height, width]))

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
        the model's ``model_function_wrapper`` when a patch set one (as its samplers do). Rows whose
        text is zero-padded (a ``mask`` (R, L), 0 on the padding) have the padded keys masked in every
        attention kernel call where the network drops the mask (Qwen-Image)."""
        model = self.patcher.model
        options = dict(self.patcher.model_options.get("transformer_options", {}))
        options["sigmas"] = sigmas
        options = self.tap.options(options, cond.embeds.shape[1])
        mask = cond.get("mask")
        if mask is not None and self.kernel_mask and not bool(mask.all()):
            options = text_mask_options(options, mask)
        if self.frames:
            return self._call(model, x[:, :, None], sigmas, cond, options)[:, :, 0]
        return self._call(model, x, sigmas, cond, options)

    def _call(
        self, model: Any, x: torch.Tensor, sigmas: torch.Tensor, cond: Conditioning, options: dict[str, Any]
    ) -> torch.Tensor:
        """``apply_model`` on ``x`` in the model's own layout with the call's ``transformer_options``."""
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
        the pooled vector and its guidance input (3.5, as ComfyUI's default; Chroma's is 0), and
        where some row's text is padded and the network masks text itself (Chroma), the joint
        attention's mask (:meth:`_joint_mask`); one per row (Qwen-Image: the embeddings alone)."""
        height, width = (8 * side for side in x.shape[-2:])
        masked = {}
        text_mask = cond.get("mask")
        if text_mask is not None and not bool(text_mask.all()) and not self.kernel_mask:
            grid = (x.shape[-2] >> self.tap.mask_level, x.shape[-1] >> self.tap.mask_level)
            masked = {"attention_mask": self._joint_mask(text_mask, grid), "attention_mask_img_shape": grid, "noise": x}
        return self.patcher.model.extra_conds(
            cross_attn=cond.embeds, pooled_output=cond.pooled, width=width, height=height, device=x.device, **masked
        )

    @staticmethod
    def _joint_mask(text_mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The additive key mask (R, 1, L + h'·w') of a joint [text; image] attention for text masks
        (R, L) (1: a token, 0: a pad): −inf on the pads' keys, 0 on the rest, the same for every
        query (ComfyUI's kernels broadcast a mask of one query). Every query keeps its image keys,
        so no softmax row is empty, and a padded row's image output is the unpadded row's."""
        bias = torch.zeros(text_mask.shape[0], 1, text_mask.shape[1] + grid[0] * grid[1], device=text_mask.device)
        bias[:, 0, : text_mask.shape[1]].masked_fill_(text_mask <= 0, float("-inf"))
        return bias

    def load(self, latent_shape: tuple[int, ...], rows: int) -> None:
        """Have ComfyUI's memory manager load the weights (with their patches) for calls of
        ``rows`` rows on latents of ``latent_shape`` (B, C, h, w)."""
        memory = self.patcher.model.memory_required([rows, *latent_shape[1:]])
        comfy.model_management.load_models_gpu([self.patcher], memory_required=memory)


@dataclass(frozen=True, eq=False)
class ComfyAutoencoder:
    """The autoencoder part: ComfyUI's ``VAE`` (None where a node has none connected) and the model's
    latent format (``denoiser``'s: the loops run in the model's space)."""

    vae: Any  # comfy.sd.VAE
    denoiser: ComfyDenoiser

    def _connected(self) -> Any:
        if self.vae is None:
            raise LeditsError("this LEDITS++ node has no VAE connected")
        return self.vae

    @property
    def factor(self) -> int:
        return int(self._connected().spacial_compression_encode())

    def latent(self, image: torch.Tensor) -> torch.Tensor:
        """An ``IMAGE`` (B, H, W, 3) in [0, 1] as ComfyUI's ``VAE`` encodes it: (B, C, h, w), or
        (B, C, 1, h, w) from a video VAE (Qwen-Image's Wan 2.1), which would take a batch as the
        frames of one video, so there each image is encoded on its own."""
        vae = self._connected()
        if vae.latent_dim == 3:
            return torch.cat([vae.encode(one) for one in image.split(1)])
        return vae.encode(image)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [−1, 1] → the model's latents (B, C, h, w)."""
        return self.denoiser.latent_in(self.latent(((pixels + 1) / 2).permute(0, 2, 3, 1)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The model's latents (B, C, h, w) → images (B, 3, H, W) in [−1, 1], fp32."""
        samples = self.denoiser.latent_out(latents, latents[:, :, None] if self.denoiser.frames else latents)
        image = self._connected().decode(samples)  # (B, H, W, 3); a video VAE's (B, 1, H, W, 3)
        return image.reshape(-1, *image.shape[-3:])[..., :3].permute(0, 3, 1, 2).float() * 2 - 1

    def modules(self) -> dict[str, Any]:
        return {}


def comfy_adapter(patcher: Any, clip: Any = None, vae: Any = None) -> ModelAdapter:
    """leditspp's adapter of a ComfyUI model, composed of ComfyUI's own parts: the ``MODEL``'s
    denoiser and attention tap, the ``CLIP``'s text stack and the ``VAE`` (either None where a node
    has none connected). Refused (:class:`LeditsError`) for a model it cannot edit."""
    check_supported(patcher)
    network = patcher.model.diffusion_model
    flow = model_name(patcher) in FLOW_FAMILIES
    tap = ComfyTap(network, int(math.log2(network.patch_size)) if flow else defaults.MASK_LEVEL, flow)
    denoiser = ComfyDenoiser(patcher, tap)
    return ModelAdapter(
        family=f"comfyui-{model_name(patcher).lower()}",
        text=ComfyText(clip, padded=denoiser.text_mask),
        denoiser=denoiser,
        autoencoder=ComfyAutoencoder(vae, denoiser),
        attention=tap,
    )
