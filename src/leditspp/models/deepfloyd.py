"""DeepFloyd IF, the paper's third model: LEDITS++ on its pixel-space stage I, then its stage II.

Stage I (IF-I-*) denoises RGB pixels directly, 64×64 (the UNet's ``sample_size``): there is no
autoencoder, so ``encode`` and ``decode`` are the identity on [−1, 1] pixels, and an image is
centre-cropped to a square and resized to 64² (:attr:`DeepFloydIF.native_size`), as the authors'
IF pipeline does.

* Text: T5's last hidden states of the lower-cased, stripped prompt, 77 tokens, padding masked
  inside T5, as IF's pipelines encode it; c_∅ is the encoded negative prompt ("" by default).
* Attention: IF's UNet runs diffusers' added-KV attention (``AttnAddedKVProcessor2_0``): the text
  is projected to keys and values placed *before* the image's own keys, under one softmax. M¹
  reads the text columns [0, L) of that softmax (:func:`text_before_image`) in the attention of the
  down and up blocks at 1/2^level of the image; level 3 by default, the authors' 8×8 maps of 64².
* Output: 6 channels, the noise ε and a learned variance (the scheduler's ``learned_range``). The
  loops use ε only: the solvers' variances are fixed (the DDPM posterior's, DPM-Solver++'s SDE
  noise), as in the authors' pipeline, which also turns off the scheduler's clipping and dynamic
  thresholding of x̂0.

Stage II (IF-II-*, diffusers' ``IFSuperResolutionPipeline``) is optional: the ``upscaler`` option
(a hub id or folder, or a loaded pipeline). Given, ``decode`` samples the 4× image from the edited
64² one with the empty prompt and ``noise_level`` 0 (a fixed seed, so equal pixels decode to equal
images); without it, results are stage I's 64² pixels. Stage II never touches the inversion: an
inversion made with or without it edits with either.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import LeditsError
from ..solvers import NoiseLevel, NoisePath
from .base import Conditioning, runs_on, tokenize
from .capture import KernelTap, Layout
from .components import Fit, TextInput, config_int
from .families import Parts, parts_of, refuse
from .text import warn_if_truncated, word_positions
from .unet import UNetDenoiser, UNetFamily, check_mask_level, prediction_type, to_epsilon

#: The attention maps M¹ reads: 1/2^3 of stage I's 64² pixels, the authors' 8×8.
MASK_LEVEL = 3
#: T5 tokens IF's pipelines encode a prompt to.
MAX_LENGTH = 77
#: The seed of stage II's sampling noise: the same 64² pixels always decode to the same image.
UPSCALER_SEED = 0
#: Stage II's sampling steps unless the ``upscaler_steps`` option says otherwise (its pipeline's default).
UPSCALER_STEPS = 50


def prepared(prompt: str) -> str:
    """A prompt as IF's pipelines give it to T5 without caption cleaning: lower-cased, stripped."""
    return prompt.lower().strip()


def text_before_image(tokens: int) -> Layout:
    """Added-KV attention: every query an image cell, the keys [text (``tokens``); image]."""
    return Layout(image=slice(None), text=slice(0, tokens))


def mask_attention_layers(unet: Any, level: int) -> list[Any]:
    """The added-KV attention modules of the down and up blocks at ``1/2^level`` of the image
    (down block ``i`` runs at ``1/2^i``, up block ``i`` at ``1/2^(n−1−i)``; the middle block is
    left out, as the authors do); refused where there are none."""
    n = len(unet.down_blocks)
    blocks = [unet.down_blocks[level], unet.up_blocks[n - 1 - level]] if 0 <= level < n else []
    layers = [m for b in blocks for m in b.modules() if getattr(m, "add_k_proj", None) is not None]
    if not layers:
        raise LeditsError(
            f"this UNet has no text attention at 1/{2**level} of the image, so the attention mask M¹ is "
            "unavailable; use another mask_level, or mask_mode='noise' or 'none'"
        )
    return layers


@dataclass(frozen=True, kw_only=True)
class T5Text:
    """IF's text stack: T5's last hidden states (n, 77, D) of the prepared prompts, padding masked
    inside T5."""

    tokenizer: Any
    text_encoder: Any
    condition_keys: tuple[str, ...] = ("embeds",)
    zeros_for_empty: bool = False

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        texts = [prepared(p) for p in prompts]
        warn_if_truncated(self.tokenizer, texts, MAX_LENGTH)
        tokens = tokenize(
            self.tokenizer, texts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
        )
        device = runs_on(self.text_encoder)
        return Conditioning.of(
            self.text_encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))[0]
        )

    def token_positions(self, prompt: str) -> list[int]:
        """Positions of the prepared prompt's tokens but T5's end token (T5 has no start token)."""
        return word_positions(self.tokenizer, prepared(prompt), MAX_LENGTH)


@dataclass(frozen=True, kw_only=True)
class IFDenoiser(UNetDenoiser):
    """Stage I's UNet: ε is the first half of its 6 output channels (the second, its learned
    variance, is not used)."""

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The noise estimate ε (R, 3, h, w) fp32 for pixel rows ``latents`` (R, 3, h, w)."""
        out = self.unet(latents.to(self.unet.dtype), level.t.to(latents.device), encoder_hidden_states=cond.embeds)
        eps = out.sample.float()[:, : latents.shape[1]]
        a, s = (v.to(eps)[:, None, None, None] for v in (level.a, level.s))
        return to_epsilon(eps, latents.float(), a, s, self.prediction)


@dataclass(frozen=True, kw_only=True)
class StageTwo:
    """IF's stage II (an ``IFSuperResolutionPipeline``, its text encoder not needed) run on stage I's
    pixels: the empty prompt (encoded by stage I's ``text``), ``noise_level`` 0, no guidance (with one
    prompt it would change nothing), ``steps`` sampling steps, a fixed seed."""

    pipeline: Any
    text: T5Text
    stage_one: Any  # stage I's UNet: where stage II runs, and the upscaling factor
    steps: int = UPSCALER_STEPS

    @torch.no_grad()
    def upscale(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) pixels in [−1, 1] → (B, 3, f·h, f·w) in [−1, 1], fp32 (f = 4 for IF-II)."""
        stage = self.pipeline
        device = runs_on(self.stage_one)
        if runs_on(stage.unet) != device:
            stage.to(device)
        factor = int(stage.unet.config.sample_size) // int(self.stage_one.config.sample_size)
        empty = self.text.encode_prompts([""]).repeat_rows(pixels.shape[0]).embeds
        out = stage(
            image=pixels.to(device, stage.unet.dtype),
            prompt_embeds=empty.to(device, stage.unet.dtype),
            guidance_scale=1.0,
            noise_level=0,
            num_inference_steps=self.steps,
            height=pixels.shape[-2] * factor,
            width=pixels.shape[-1] * factor,
            generator=torch.Generator("cpu").manual_seed(UPSCALER_SEED),
            output_type="pt",
        ).images
        return out.float().clamp(-1, 1)


@dataclass(frozen=True)
class Pixels:
    """Stage I's autoencoder: none — its data are the pixels; decoded through stage II where given.
    Stage II is not part of the inversion's model (no modules: not fingerprinted, not planned)."""

    stage_two: StageTwo | None = None
    factor: int = 1

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [−1, 1] → stage I's data, the same pixels, fp32."""
        return pixels.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Stage I pixels (B, 3, h, w) → images in [−1, 1], fp32: as they are, or stage II's."""
        pixels = latents.float().clamp(-1, 1)
        return pixels if self.stage_two is None else self.stage_two.upscale(pixels)

    def modules(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, kw_only=True)
class DeepFloydIF(UNetFamily):
    """Adapter for DeepFloyd IF stage I components in diffusers format (``IFPipeline``: IF-I-M,
    IF-I-L, IF-I-XL), with an optional stage II ``IFSuperResolutionPipeline`` as ``upscaler``."""

    family: str = "deepfloyd-if"
    title: ClassVar[str] = (
        "DeepFloyd IF stage I (pixel-space UNet, T5, addition_embed_type='text'), with its stage II "
        "upscaler as the option upscaler"
    )
    options: ClassVar[frozenset[str]] = frozenset({"mask_level", "spacing", "upscaler", "upscaler_steps"})
    #: What it needs beside its UNet: no autoencoder.
    required: ClassVar[tuple[str, ...]] = ("tokenizer", "scheduler")
    text_inputs: ClassVar[tuple[TextInput, ...]] = (TextInput("text_encoder", "tokenizer"),)

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        """A UNet with T5 states in its time embedding (``addition_embed_type="text"``) and no VAE."""
        unet = parts.get("unet")
        return unet is not None and unet.config.get("addition_embed_type") == "text" and "vae" not in parts

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The UNet projects T5's states from ``encoder_hid_dim``."""
        dim = config_int(parts, "unet", "encoder_hid_dim")
        return [Fit(("text_encoder",), "width", dim, f"the unet's encoder_hid_dim is {dim}")]

    @classmethod
    def size_rule(cls, parts: Parts, options: Mapping[str, Any]) -> int:
        """Pixel space: sides must be multiples of 2^mask_level, so the attention grid is exact."""
        return 2 ** options.get("mask_level", MASK_LEVEL)

    @classmethod
    def recommended(cls, parts: Parts, pipeline_config: Mapping[str, Any]) -> dict[str, Any]:
        """The authors' IF settings: 100 steps (also ``IFPipeline``'s), skip 0.15 (their ``invert``
        defaults)."""
        return {"steps": 100, "skip": 0.15}

    @classmethod
    def from_components(
        cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any
    ) -> DeepFloydIF:
        """``upscaler``: stage II, a hub id, a folder or a loaded ``IFSuperResolutionPipeline``;
        ``upscaler_steps``: its sampling steps (default 50, its pipeline's)."""
        unet = components["unet"]
        if unet.config.in_channels * 2 != unet.config.out_channels:
            raise refuse(
                "this is a DeepFloyd IF super-resolution stage (its unet takes the upsampled image beside the "
                "noisy one); give stage I (IF-I-*) as the model and this one as its upscaler option"
            )
        if components.get("text_encoder") is None:
            raise refuse("this DeepFloyd IF model lacks its T5 text encoder")
        level = options.get("mask_level", MASK_LEVEL)
        check_mask_level(level)
        config = parts_of({"scheduler": components["scheduler"]})["scheduler"].config
        sampler = {**config, "thresholding": False}  # x̂0 as the network gives it, as the authors sample IF
        path = NoisePath.from_scheduler_config(sampler, options.get("spacing"))
        text = T5Text(tokenizer=components["tokenizer"], text_encoder=components["text_encoder"])
        upscaler = upscaler_for(unet, text.text_encoder, options.get("upscaler"))
        steps = check_upscaler_steps(options.get("upscaler_steps", UPSCALER_STEPS))
        return cls(
            text=text,
            denoiser=IFDenoiser(unet=unet, path=path, prediction=prediction_type(config)),
            autoencoder=Pixels(
                None if upscaler is None else StageTwo(pipeline=upscaler, text=text, stage_one=unet, steps=steps)
            ),
            attention=KernelTap(unet, functools.partial(mask_attention_layers, level=level), text_before_image, level),
        )

    @property
    def native_size(self) -> tuple[int, int]:
        """(height, width) stage I was trained at: the default processing size; every image is
        centre-cropped to the processing size's aspect, then resized to it (never stretched)."""
        side = int(self.denoiser.unet.config.sample_size)
        return side, side


def check_upscaler_steps(steps: Any) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise LeditsError(f"upscaler_steps must be an integer ≥ 1 (stage II's sampling steps); got {steps!r}")
    return steps


def upscaler_for(stage_one: Any, text_encoder: Any, upscaler: Any) -> Any:
    """Stage II for the UNet ``stage_one`` and its T5: None, a loaded pipeline, or one loaded from a
    hub id or folder in the UNet's dtype, without its text encoder; refused where it does not fit."""
    if upscaler is None:
        return None
    if isinstance(upscaler, str):
        upscaler = load_upscaler(upscaler, stage_one.dtype)
    unet = getattr(upscaler, "unet", None)
    if unet is None or not hasattr(upscaler, "image_noising_scheduler"):
        raise LeditsError(
            f"upscaler must be a DeepFloyd IF stage II model (IFSuperResolutionPipeline); got {type(upscaler).__name__}"
        )
    width, channels = text_encoder.config.d_model, 2 * stage_one.config.in_channels
    if unet.config.in_channels != channels or unet.config.encoder_hid_dim != width:
        raise LeditsError(
            f"the upscaler's unet takes {unet.config.in_channels} channels and T5 states of width "
            f"{unet.config.encoder_hid_dim}; stage I needs {channels} and {width} — give "
            "the IF stage II model made for this stage I (e.g. DeepFloyd/IF-II-L-v1.0)"
        )
    upscaler.set_progress_bar_config(disable=True)
    return upscaler


def load_upscaler(name: str, dtype: torch.dtype) -> Any:
    """An ``IFSuperResolutionPipeline`` from a hub id or folder, without text encoder, safety
    checker and watermarker (stage I's T5 encodes its prompt)."""
    from diffusers import IFSuperResolutionPipeline

    from .loading import check_reachable

    check_reachable(name)
    try:
        return IFSuperResolutionPipeline.from_pretrained(
            name,
            text_encoder=None,
            safety_checker=None,
            feature_extractor=None,
            watermarker=None,
            requires_safety_checker=False,
            dtype=dtype,
        )
    except (OSError, ValueError) as exc:
        raise LeditsError(
            f"cannot load the upscaler {name!r}: {str(exc).splitlines()[0]} — give a DeepFloyd IF stage II model "
            "(a hub id such as DeepFloyd/IF-II-L-v1.0, whose licence is accepted on the hub, or a local folder)"
        ) from exc
