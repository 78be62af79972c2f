"""Qwen-Image: a double-stream MMDiT on packed 16-channel latents and a rectified-flow path.

What this family adds to the shared flow transformer (:class:`~leditspp.models.transformer.FlowTransformer`):

* conditioning as ``QwenImagePipeline._get_qwen_prompt_embeds`` builds it: the prompt in the
  pipeline's chat template through Qwen2.5-VL, its last hidden states (final norm applied) with
  the template's first :data:`DROP` tokens dropped. Prompts have different lengths, and the loops
  stack conditionings of separate calls (c_∅, the source prompt, the concepts), so every encoding
  is zero-padded to one length, ``max_sequence_length`` (the pipeline's 512), with its text mask
  (n, L) bool as the key ``mask``: the transformer gets it as ``encoder_hidden_states_mask``, the
  padded keys get no attention, and the text RoPE positions of the real tokens do not move, so
  the image stream is the unpadded pipeline's;
* latents: ``AutoencoderKLQwenImage`` has a frame axis (B, 16, 1, h, w), squeezed here to
  (B, 16, h, w), normalised per channel with ``latents_mean``/``latents_std``; 2×2 packing as
  FLUX (:func:`~leditspp.models.flux.pack`); the time input is σ;
* the schedule is the pipeline's: ``sigmas = linspace(1, 1/N, N)``, an exponential dynamic shift
  with μ from the token count and ``shift_terminal`` (0.02) from the scheduler config
  (``grid="pipeline"``; the N+1 points the inversion uses keep the stretch finite at N = 1,
  where the pipeline's own divides 0 by 0);
* the pipeline's true-CFG norm rescale (``comb·‖cond‖/‖comb‖``) is not LEDITS++'s guidance and is
  not used: the loops combine the velocities as for every family;
* M¹ from every block's joint attention: image queries against [text; image] keys as the
  attention kernel receives them, softmax over all keys with the text mask the kernel gets, on
  the 2×2 patch grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..solvers import NoiseLevel
from .autoencoder import vae_precision
from .base import Conditioning, runs_on, tokenize
from .capture import text_first
from .components import Fit, TextInput
from .families import Parts, refuse
from .flux import pack, unpack
from .sd3 import joint_blocks
from .text import warn_long
from .transformer import FlowTransformer, TransformerFamily, kernel_tap, sequence_length

#: ``QwenImagePipeline.prompt_template_encode``: the prompt goes where ``{}`` is.
TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
#: ``prompt_template_encode_start_idx``: the template tokens before the prompt, dropped.
DROP = 34
#: ``tokenizer_max_length``: the tokenizer keeps this many tokens after the dropped ones.
TOKENIZER_MAX_LENGTH = 1024
#: ``QwenImagePipeline.__call__``'s ``max_sequence_length``: the text tokens the transformer sees.
MAX_SEQUENCE_LENGTH = 512


@dataclass(frozen=True, kw_only=True)
class QwenVLText:
    """Qwen-Image's text stack: the prompt in the pipeline's template through Qwen2.5-VL, the last
    hidden states after the template's first :data:`DROP` tokens, zero-padded to
    ``max_sequence_length`` with ``mask`` (n, L) bool True on the real ones."""

    tokenizer: Any
    text_encoder: Any
    max_sequence_length: int
    condition_keys: tuple[str, ...] = ("embeds", "mask")
    zeros_for_empty: bool = False

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, L, D) zero-padded to L = ``max_sequence_length``, and mask (n, L) bool, True on
        each prompt's tokens after the template prefix."""
        tokens = tokenize(
            self.tokenizer,
            [TEMPLATE.format(p) for p in prompts],
            max_length=TOKENIZER_MAX_LENGTH + DROP,
            padding=True,
            truncation=True,
            return_tensors="pt",
        ).to(runs_on(self.text_encoder))
        hidden = self.text_encoder(
            input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True
        ).hidden_states[-1]
        length = self.max_sequence_length
        embeds = hidden.new_zeros(len(prompts), length, hidden.shape[-1])
        mask = torch.zeros(len(prompts), length, dtype=torch.bool, device=hidden.device)
        for i, (states, valid) in enumerate(zip(hidden, tokens.attention_mask.bool(), strict=True)):
            kept = states[valid][DROP:]
            warn_long(prompts[i], kept.shape[0], length)
            kept = kept[:length]
            embeds[i, : kept.shape[0]] = kept
            mask[i, : kept.shape[0]] = True
        return Conditioning.of(embeds, mask=mask)

    def token_positions(self, prompt: str) -> list[int]:
        """The prompt's own tokens in the transformer's text sequence: the template's tokens whose
        characters lie in the prompt, shifted by the :data:`DROP` dropped ones."""
        text = TEMPLATE.format(prompt)
        start = TEMPLATE.index("{}")
        end = start + len(prompt)
        offsets = tokenize(self.tokenizer, text, return_offsets_mapping=True).offset_mapping
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
        return [i - DROP for i in inside if 0 <= i - DROP < self.max_sequence_length]


@dataclass(frozen=True, kw_only=True)
class QwenImageTransformer(FlowTransformer):
    """Qwen-Image's MMDiT on 2×2 packed latents, σ as the time, the text mask as its input."""

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The velocity for rows ``latents`` (R, C, h, w) at ``level`` (R,) each, fp32."""
        rows, _, height, width = latents.shape
        out = self.transformer(
            hidden_states=pack(latents).to(self.transformer.dtype),
            timestep=(level.t / self.path.num_train_timesteps).to(latents.device, torch.float32),
            encoder_hidden_states=cond.embeds,
            encoder_hidden_states_mask=cond.get("mask"),
            img_shapes=[[(1, height // 2, width // 2)]] * rows,
            return_dict=False,
        )[0]
        return unpack(out.float(), height, width)


@dataclass(frozen=True)
class QwenImageVAE:
    """``AutoencoderKLQwenImage``: a frame axis, squeezed here, and per-channel normalisation."""

    vae: Any

    @property
    def factor(self) -> int:
        """2 per temporal-downsample entry, as the pipeline computes it."""
        return 2 ** len(self.vae.config.temperal_downsample)

    def modules(self) -> dict[str, Any]:
        return {"vae": self.vae}

    def _normalisation(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's per-channel ``latents_mean`` and 1/``latents_std``, (1, C, 1, 1, 1)."""
        config = self.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(device, dtype)
        inv_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(device, dtype)
        return mean, inv_std

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [−1, 1] → normalised posterior-mode latents (B, 16, H/8, W/8), fp32
        (``QwenImageImg2ImgPipeline._encode_vae_image``: ``(z − mean)·(1/std)``)."""
        with vae_precision(self.vae) as dtype:
            z = self.vae.encode(pixels[:, :, None].to(runs_on(self.vae), dtype)).latent_dist.mode().float()
        mean, inv_std = self._normalisation(z.device, z.dtype)
        return ((z - mean) * inv_std)[:, :, 0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, h, w) → images (B, 3, H, W) in [−1, 1], fp32 (the pipeline's
        ``latents / (1/std) + mean``, then the first frame)."""
        with vae_precision(self.vae) as dtype:
            z = latents[:, :, None].to(runs_on(self.vae), torch.float32)
            mean, inv_std = self._normalisation(z.device, z.dtype)
            frames = self.vae.decode((z / inv_std + mean).to(dtype)).sample
            return frames[:, :, 0].float().clamp(-1, 1)


@dataclass(frozen=True, kw_only=True)
class QwenImage(TransformerFamily):
    """Adapter for Qwen-Image components in diffusers format (``QwenImagePipeline``)."""

    family: str = "qwenimage"
    title: ClassVar[str] = "Qwen-Image (QwenImageTransformer2DModel, flow matching, Qwen2.5-VL)"

    @classmethod
    def patch(cls, parts: Parts) -> int:
        return 2  # the pipeline's 2×2 packing

    @classmethod
    def size_rule(cls, parts: Parts, options: Mapping[str, Any]) -> int:
        """The VAE's factor (2 per temporal-downsample entry, as the pipeline computes it) × 2."""
        return 2 ** len(parts["vae"].config["temperal_downsample"]) * cls.patch(parts)

    @classmethod
    def recommended(cls, parts: Parts, pipeline_config: Mapping[str, Any]) -> dict[str, Any]:
        """Qwen-Image's pipeline samples in 50 steps."""
        return {"steps": 50}

    transformer_class: ClassVar[str] = "QwenImageTransformer2DModel"

    text_inputs: ClassVar[tuple[TextInput, ...]] = (TextInput("text_encoder", "tokenizer"),)

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The joint attention reads Qwen2.5-VL's last hidden states."""
        return [cls.joint_width(parts, "text_encoder")]

    @classmethod
    def from_components(
        cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any
    ) -> QwenImage:
        """``max_sequence_length``: text tokens after the template prefix (the pipeline's 512; at most 1024)."""
        if components.get("text_encoder") is None:
            raise refuse("this Qwen-Image model lacks its text encoder (text_encoder)")
        config = components["transformer"].config
        for flag, what in (("guidance_embeds", "a guidance input"), ("zero_cond_t", "reference-image timesteps")):
            if config.get(flag):
                raise refuse(f"this Qwen-Image transformer sets {flag} ({what}), which QwenImagePipeline does not run")
        length = sequence_length(options, "Qwen-Image", MAX_SEQUENCE_LENGTH, low=1, high=TOKENIZER_MAX_LENGTH)
        text = QwenVLText(
            tokenizer=components["tokenizer"], text_encoder=components["text_encoder"], max_sequence_length=length
        )
        parts = cls.flow_parts(
            components,
            QwenImageTransformer,
            tap=kernel_tap(joint_blocks, text_first),
            path=cls.flow_path(components, grid="pipeline"),
            autoencoder=QwenImageVAE(components["vae"]),
            text_tokens=length,
        )
        return cls(text=text, **parts)
