"""A ComfyUI ``MODEL`` behind leditspp's seam: the denoiser part of a model family.

The loops (:mod:`leditspp.inversion`, :mod:`leditspp.editing`) see noise estimates and noise
paths only. :class:`ComfyDenoiser` gives them both from ComfyUI's own objects: the network call is
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import comfy.model_management
import comfy.model_sampling
import torch

from leditspp import defaults
from leditspp.attention import AttentionRecorder
from leditspp.errors import LeditsError
from leditspp.models.base import Conditioning
from leditspp.solvers import FlowPath, NoiseLevel, NoisePath, Path

from .attention import JointAttentionTap, UNetAttentionTap, text_mask_options

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
class ComfyDenoiser:
    """The denoiser of a ComfyUI model (SD 1.x/2.x, SDXL, SD3, FLUX.1, Chroma, Qwen-Image) for the
    loops: estimates, data predictions, the noise path and the attention tap for M¹ — the part of
    :class:`~leditspp.models.base.ModelAdapter` the loops call. The text and the autoencoder parts
    are ComfyUI's ``CLIP`` (:mod:`.text`) and ``VAE`` (:mod:`.run`)."""

    patcher: Any  # comfy.model_patcher.ModelPatcher
    mask_level: int = defaults.MASK_LEVEL
    condition_keys: ClassVar[tuple[str, ...]] = ("embeds", "pooled")
    _tap: UNetAttentionTap | JointAttentionTap | None = field(default=None, init=False)

    @classmethod
    def of(cls, patcher: Any) -> ComfyDenoiser:
        """The denoiser of ``patcher``, refused (:class:`LeditsError`) for an unsupported model."""
        check_supported(patcher)
        return cls(patcher)

    @property
    def family(self) -> str:
        return f"comfyui-{model_name(self.patcher).lower()}"

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

    @property
    def cell(self) -> int:
        """Latent cells per side of one M¹ cell: 2^mask_level on a UNet, the patch size on a transformer."""
        return self.patcher.model.diffusion_model.patch_size if self.flow else 2**self.mask_level

    def mask_grid(self, height: int, width: int) -> tuple[int, int]:
        """M¹'s grid for an ``height × width`` latent grid (see :attr:`cell`)."""
        return height // self.cell, width // self.cell

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
        if self._tap is not None:
            options = self._tap.options(options, cond.embeds.shape[1])
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
            grid = self.mask_grid(*x.shape[-2:])
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

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        """Record the concept rows' cross-attention at the mask level for the calls made inside
        (see :class:`~.attention.UNetAttentionTap`)."""
        network = self.patcher.model.diffusion_model
        tap = JointAttentionTap.of(network) if self.flow else UNetAttentionTap.of(network, self.mask_level)
        self._tap = tap
        try:
            yield tap.recorder
        finally:
            self._tap = None

    def load(self, latent_shape: tuple[int, ...], rows: int) -> None:
        """Have ComfyUI's memory manager load the weights (with their patches) for calls of
        ``rows`` rows on latents of ``latent_shape`` (B, C, h, w)."""
        memory = self.patcher.model.memory_required([rows, *latent_shape[1:]])
        comfy.model_management.load_models_gpu([self.patcher], memory_required=memory)
