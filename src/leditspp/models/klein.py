"""FLUX.2 [klein] (distilled and Base): an MMDiT on patchified, BatchNorm-normalised latents.

What this family adds to the shared flow transformer (:class:`~leditspp.models.transformer.FlowTransformer`),
each as ``Flux2KleinPipeline`` (diffusers 0.42) does it:

* text: the prompt in Qwen3's chat template (one user turn, ``add_generation_prompt``,
  ``enable_thinking=False``), padded to 512 tokens, the hidden states of layers (9, 18, 27)
  concatenated per token, (n, 512, 3·D); all 512 positions reach the transformer, with no mask.
  c_∅ is ``""`` through the same template (the pipeline's only negative);
* latents: the VAE's 32 channels patchified 2×2 into 128 (channel ``c·4 + 2·dy + dx``) and
  normalised by the VAE's BatchNorm running statistics — the space the pipeline samples in,
  (B, 128, H/16, W/16). Tokens are its cells row-major, with 4-axis position ids (t, h, w, l):
  image ``(0, h, w, 0)``, text ``(0, 0, 0, l)``; the time input is σ (``t/1000``), no guidance;
* the path: the pipeline's σ grid ``linspace(1, 1/N, N)`` shifted with FLUX.2's empirical μ of
  (tokens, N) (:func:`leditspp.solvers.flow.empirical_mu`): times depend on the size and the steps;
* the step-distilled [klein] samples without CFG, but LEDITS++ needs ``v(c_e) − v(c_∅)``: its
  unconditional rows run as for the Turbo models (the model sees the empty prompt as any other);
  Base runs true CFG rows as the pipeline does for ``guidance_scale > 1``;
* M¹ from every block, double- and single-stream: the image queries' attention to the text keys
  as the attention kernel receives them (text first); on the token grid (mask level 0 of these
  latents).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..solvers import NoiseLevel
from .autoencoder import vae_precision, vae_scale_factor
from .base import Conditioning, bound_cache, runs_on
from .capture import text_first
from .components import Fit, TextInput, config_int
from .families import Part, Parts, refuse
from .text import Qwen3ChatText
from .transformer import FlowTransformer, TransformerFamily, kernel_tap, sequence_length

#: The Qwen3 layers whose hidden states the pipeline stacks (``text_encoder_out_layers``).
KLEIN_TEXT_LAYERS = (9, 18, 27)


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, 4C, h/2, w/2), channel ``c·4 + 2·dy + dx`` (``_patchify_latents``)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unpatchify(latents: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`patchify`: (B, 4C, h, w) → (B, C, 2h, 2w)."""
    b, c4, h, w = latents.shape
    x = latents.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c4 // 4, h * 2, w * 2)


@dataclass(frozen=True, kw_only=True)
class KleinTransformer(FlowTransformer):
    """FLUX.2's transformer on the normalised patchified latents: their cells are its tokens,
    with 4-axis position ids, σ as the time input and no guidance."""

    _ids: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = field(  # (text ids, image ids) by size
        default_factory=dict, repr=False, compare=False
    )

    def _positions(self, height: int, width: int, text: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Text ids (L, 4) ``(0, 0, 0, l)`` and image ids (h·w, 4) ``(0, h, w, 0)``, once per size."""
        key = (height, width, text, str(device))
        if key not in self._ids:
            bound_cache(self._ids)
            zero = torch.arange(1)
            image = torch.cartesian_prod(zero, torch.arange(height), torch.arange(width), zero)
            words = torch.cartesian_prod(zero, zero, zero, torch.arange(text))
            self._ids[key] = (words.to(device), image.to(device))
        return self._ids[key]

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The velocity for rows ``latents`` (R, 128, h, w) at ``level`` (R,) each, fp32."""
        rows, channels, height, width = latents.shape
        text_ids, image_ids = self._positions(height, width, cond.embeds.shape[1], latents.device)
        out = self.transformer(
            hidden_states=latents.flatten(2).transpose(1, 2).to(self.transformer.dtype),  # (R, h·w, 128)
            timestep=(level.t / self.path.num_train_timesteps).to(latents.device),
            guidance=None,
            encoder_hidden_states=cond.embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        return out.float().transpose(1, 2).reshape(rows, channels, height, width)


@dataclass(frozen=True)
class KleinVAE:
    """FLUX.2's VAE: 32 channels patchified 2×2 into 128 and normalised by its BatchNorm's
    running statistics, (B, 128, H/16, W/16)."""

    vae: Any

    @property
    def factor(self) -> int:
        return vae_scale_factor(self.vae) * 2

    def modules(self) -> dict[str, Any]:
        return {"vae": self.vae}

    def _bn(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The BatchNorm's running mean and std (1, 128, 1, 1) the pipeline normalises with."""
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [−1, 1] → normalised patchified latents (B, 128, H/16, W/16), fp32."""
        with vae_precision(self.vae) as dtype:
            z = self.vae.encode(pixels.to(runs_on(self.vae), dtype)).latent_dist.mode().float()
        z = patchify(z)
        mean, std = self._bn(z)
        return (z - mean) / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised patchified latents (B, 128, h, w) → images (B, 3, 16h, 16w) in [−1, 1], fp32."""
        latents = latents.float()
        mean, std = self._bn(latents)
        z = unpatchify(latents * std + mean)
        with vae_precision(self.vae) as dtype:
            return self.vae.decode(z.to(runs_on(self.vae), dtype)).sample.float().clamp(-1, 1)


def every_block(transformer: Any) -> list[Any]:
    """The attention of every double- and single-stream block (both call the kernel on [text; image])."""
    double = [block.attn for block in transformer.transformer_blocks]
    return double + [block.attn for block in transformer.single_transformer_blocks]


@dataclass(frozen=True, kw_only=True)
class Klein(TransformerFamily):
    """Adapter for FLUX.2 [klein] components in diffusers format (4B/9B, distilled and Base)."""

    #: The pipeline's ``is_distilled`` (model_index.json): the 4-step, CFG-free checkpoint.
    distilled: bool = False
    family: str = "klein"
    title: ClassVar[str] = "FLUX.2 [klein] (Flux2Transformer2DModel, flow matching, Qwen3 text encoder)"

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        """A ``Flux2Transformer2DModel`` with a Qwen3 text encoder (FLUX.2 [dev] has Mistral's)."""
        kinds = {name: parts.get(name, Part("", {})).kind for name in ("transformer", "text_encoder")}
        return kinds == {"transformer": "Flux2Transformer2DModel", "text_encoder": "Qwen3ForCausalLM"}

    text_inputs: ClassVar[tuple[TextInput, ...]] = (TextInput("text_encoder", "tokenizer", chat_template=True),)

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The joint attention reads Qwen3's states of layers (9, 18, 27) side by side."""
        joint = config_int(parts, "transformer", "joint_attention_dim")
        width = joint / len(KLEIN_TEXT_LAYERS) if joint is not None else None
        layers = f"the pipeline reads the hidden states of layers {KLEIN_TEXT_LAYERS}"
        return [
            Fit(("text_encoder",), "width", width, f"the transformer's joint_attention_dim {joint} is 3 × its width"),
            Fit(("text_encoder",), "layers", max(KLEIN_TEXT_LAYERS) + 1, layers, ">="),
        ]

    @classmethod
    def size_rule(cls, parts: Parts, options: Mapping[str, Any]) -> int:
        """Whole tokens: the VAE's factor times the 2×2 patchify times the transformer's patch."""
        return 2 ** (len(parts["vae"].config["block_out_channels"]) - 1) * 2 * cls.patch(parts)

    @classmethod
    def recommended(cls, parts: Parts, pipeline_config: Mapping[str, Any]) -> dict[str, Any]:
        """The distilled checkpoint (``is_distilled``): its 4 steps, no skip, no source guidance
        (it samples CFG-free); [klein] Base: its pipeline's 50 steps."""
        if pipeline_config.get("is_distilled") is True:
            return {"steps": 4, "skip": 0.0, "source_guidance": 0.0}
        return {"steps": 50}

    @classmethod
    def from_components(cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any) -> Klein:
        """``max_sequence_length``: text tokens, 1 … 512 (the pipeline's 512 by default)."""
        if components.get("text_encoder") is None or components.get("tokenizer") is None:
            raise refuse("this FLUX.2 [klein] model lacks its Qwen3 text encoder or tokenizer")
        length = sequence_length(options, "FLUX.2 [klein]", 512, low=1)
        text = Qwen3ChatText(
            tokenizer=components["tokenizer"],
            text_encoder=components["text_encoder"],
            max_sequence_length=length,
            thinking=False,
            layers=KLEIN_TEXT_LAYERS,
            masked=False,
        )
        parts = cls.flow_parts(
            components,
            KleinTransformer,
            tap=kernel_tap(every_block, text_first),
            path=cls.flow_path(components, grid="pipeline", mu_rule="empirical"),
            autoencoder=KleinVAE(components["vae"]),
            text_tokens=length,
        )
        return cls(text=text, distilled=bool(pipeline_config.get("is_distilled", False)), **parts)


__all__ = ["KLEIN_TEXT_LAYERS", "Klein", "patchify", "unpatchify"]
