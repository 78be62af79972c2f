"""FLUX.2 [klein] (distilled and Base): an MMDiT on patchified, BatchNorm-normalised latents.

What this adapter adds to the shared flow transformer (:class:`~leditspp.models.sd3.TransformerModel`),
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

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..attention import AttentionRecorder
from ..solvers import NoiseLevel
from .base import Conditioning, _vae_precision, bound_cache, logger, runs_on, tokenize
from .capture import capture_layers, text_first
from .components import Fit, TextInput, config_int
from .families import Part, Parts, refuse
from .sd3 import TransformerModel, check_sequence_length

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


@dataclass(kw_only=True)
class Klein(TransformerModel):
    """Adapter for FLUX.2 [klein] components in diffusers format (4B/9B, distilled and Base)."""

    text_encoder: Any
    tokenizer: Any
    max_sequence_length: int = 512
    #: The pipeline's ``is_distilled`` (model_index.json): the 4-step, CFG-free checkpoint.
    distilled: bool = False
    family: str = "klein"
    title: ClassVar[str] = "FLUX.2 [klein] (Flux2Transformer2DModel, flow matching, Qwen3 text encoder)"
    condition_keys: ClassVar[tuple[str, ...]] = ("embeds",)
    _ids: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = field(  # (text ids, image ids) by size
        default_factory=dict, repr=False, compare=False
    )

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
        length = check_sequence_length(options, "FLUX.2 [klein]", low=1)
        return cls(
            transformer=components["transformer"],
            vae=components["vae"],
            path=cls.flow_path(components, grid="pipeline", mu_rule="empirical"),
            text_encoder=components["text_encoder"],
            tokenizer=components["tokenizer"],
            distilled=bool(pipeline_config.get("is_distilled", False)),
            **length,
        )

    @property
    def text_tokens(self) -> int:
        return self.max_sequence_length

    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder}

    # -- text ------------------------------------------------------------------------------------

    def _template(self, prompt: str) -> str:
        """The text the pipeline encodes for ``prompt``: one user turn, thinking switched off."""
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, L, 3·D): per token ``[h₉ ‖ h₁₈ ‖ h₂₇]`` of Qwen3, in the transformer's dtype."""
        texts = [self._template(p) for p in prompts]
        for prompt, text in zip(prompts, texts, strict=True):
            count = len(tokenize(self.tokenizer, text, truncation=False, verbose=False).input_ids)
            if count > self.max_sequence_length:
                logger.warning(
                    "prompt %r is %d tokens in the chat template; the text encoder reads the first %d — shorten it",
                    prompt if len(prompt) <= 60 else prompt[:57] + "…",
                    count,
                    self.max_sequence_length,
                )
        inputs = tokenize(
            self.tokenizer,
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_sequence_length,
            return_tensors="pt",
        )
        device = runs_on(self.text_encoder)
        out = self.text_encoder(
            input_ids=inputs.input_ids.to(device),
            attention_mask=inputs.attention_mask.to(device),
            output_hidden_states=True,
            use_cache=False,
        )
        embeds = torch.cat([out.hidden_states[k] for k in KLEIN_TEXT_LAYERS], dim=-1)
        return Conditioning.of(embeds.to(self.device, self.transformer.dtype))

    def unconditional(self, negative_prompt: str, count: int) -> Conditioning:
        """c_∅: the encoded negative prompt ("" by default, the pipeline's), ``count`` rows."""
        return self.encode_prompts([negative_prompt]).repeat_rows(count)

    def token_positions(self, prompt: str) -> list[int]:
        """The prompt's own tokens inside the chat template (the text stream, first in the joint
        sequence): those whose characters lie in the prompt's span of the rendered text."""
        text, empty, n = self._template(prompt), self._template(""), len(prompt)
        # where the template put the prompt: the span whose removal leaves the empty prompt's text
        # (a word that is also in the template, such as "user", is found at its own place only)
        start = next(i for i in range(len(text) - n + 1) if text[:i] + text[i + n :] == empty)
        end = start + n
        enc = tokenize(
            self.tokenizer, text, truncation=True, max_length=self.max_sequence_length, return_offsets_mapping=True
        )
        return [i for i, (a, b) in enumerate(enc.offset_mapping) if b > a and a >= start and b <= end]

    # -- the network -----------------------------------------------------------------------------

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

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        """Record every block's attention from the image queries to the concept's text keys: the
        double- and the single-stream blocks both call the kernel on [text; image]."""
        double = [block.attn for block in self.transformer.transformer_blocks]
        single = [block.attn for block in self.transformer.single_transformer_blocks]
        with capture_layers(self.transformer, double + single, text_first) as recorder:
            yield recorder

    # -- the VAE ---------------------------------------------------------------------------------

    def _bn(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The BatchNorm's running mean and std (1, 128, 1, 1) the pipeline normalises with."""
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [−1, 1] → normalised patchified latents (B, 128, H/16, W/16), fp32."""
        with _vae_precision(self.vae) as dtype:
            z = self.vae.encode(pixels.to(runs_on(self.vae), dtype)).latent_dist.mode().float()
        z = patchify(z)
        mean, std = self._bn(z)
        return ((z - mean) / std).to(self.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised patchified latents (B, 128, h, w) → images (B, 3, 16h, 16w) in [−1, 1], fp32."""
        latents = latents.float()
        mean, std = self._bn(latents)
        z = unpatchify(latents * std + mean)
        with _vae_precision(self.vae) as dtype:
            return self.vae.decode(z.to(runs_on(self.vae), dtype)).sample.float().clamp(-1, 1)


__all__ = ["KLEIN_TEXT_LAYERS", "Klein", "patchify", "unpatchify"]
