"""Stable Diffusion 3/3.5: an MMDiT on a rectified-flow path (issue 14).

The loops are the same as for SD; this adapter changes what they are given:

* conditioning as ``StableDiffusion3Pipeline`` builds it: the penultimate hidden states of
  CLIP-L and CLIP-G concatenated (77 tokens), zero-padded to T5's width, followed by T5's
  tokens (zeros without T5); pooled = both CLIPs' projected embeddings. c_∅ encodes the negative
  prompt ("" by default; SD3 does not zero it);
* the estimate is the velocity ``v ≈ ε − x0`` at the time ``σ·T``, and ``x̂0 = x − σ·v``;
* the attention mask M¹ comes from the joint attention of every transformer block: each image
  query's softmax over all (image and text) keys, kept for the concept's T5 token columns, on the
  patch grid (1/2 of the latents: ``mask_level`` 1 for patch size 2).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..attention import AttentionRecorder
from ..errors import LeditsError
from ..solvers import FlowPath, NoiseLevel
from .base import Conditioning, decode_latents, encode_pixels, encode_text, runs_on, warn_if_truncated
from .capture import capture_layers, text_last
from .components import Fit, TextInput, config_int
from .families import Part, Parts, SizeLimit, parts_of, refuse
from .sd import _word_positions

#: Peak activation elements of one transformer row per token per channel of its width: an
#: estimate (q, k, v, the 4× MLP and the residual stream, fused attention), not a measurement.
TRANSFORMER_ACTIVATION_ELEMENTS = 16


@dataclass(kw_only=True)
class TransformerModel:
    """What the flow transformers share: the velocity estimate, x̂0, memory, compile, the VAE."""

    transformer: Any
    vae: Any
    path: FlowPath

    @property
    def device(self) -> torch.device:
        """Where the transformer runs (its parameters may wait elsewhere under a memory plan)."""
        return runs_on(self.transformer)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    #: What a flow family's ``from_components`` accepts (see :mod:`.families`).
    options: ClassVar[frozenset[str]] = frozenset({"max_sequence_length"})

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

    @property
    def patch_size(self) -> int:
        return self.patch(parts_of({"transformer": self.transformer}))

    @property
    def mask_level(self) -> int:
        """The joint attention runs on the patch grid: 1/patch of the latents."""
        return int(math.log2(self.patch_size))

    @property
    def size_multiple(self) -> int:
        return self.size_rule(parts_of(self.components()), {})

    def components(self) -> dict[str, Any]:
        raise NotImplementedError

    def mask_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def noise_path(self, height: int, width: int) -> FlowPath:
        """The path for a latent grid: a dynamic shift depends on the image's token count."""
        return self.path.for_tokens((height // self.patch_size) * (width // self.patch_size))

    def to_data(self, v: torch.Tensor, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """``x̂0 = x − σ·v`` for a (guided) velocity (B, C, h, w); ``level`` (B,) each."""
        return x - level.s.to(v)[:, None, None, None] * v

    def row_bytes(self, height: int, width: int) -> int:
        """Estimated peak activation bytes of one row: tokens × width × the factor above."""
        config = self.transformer.config
        tokens = (height // self.patch_size) * (width // self.patch_size) + self.text_tokens
        inner = int(config.num_attention_heads) * int(config.attention_head_dim)
        return TRANSFORMER_ACTIVATION_ELEMENTS * tokens * inner * self.transformer.dtype.itemsize

    @property
    def text_tokens(self) -> int:
        """Text tokens of one row of the joint sequence."""
        raise NotImplementedError

    def compile(self, **options: Any) -> None:
        self.transformer.compile(**options)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return encode_pixels(self.vae, pixels).to(self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae, latents)


@dataclass(kw_only=True)
class StableDiffusion3(TransformerModel):
    """Adapter for SD3/3.5 components in diffusers format (large, medium, large-turbo)."""

    text_encoder: Any
    text_encoder_2: Any
    text_encoder_3: Any | None
    tokenizer: Any
    tokenizer_2: Any
    tokenizer_3: Any | None
    max_sequence_length: int = 256
    family: str = "sd3"
    title: ClassVar[str] = "Stable Diffusion 3/3.5 (SD3Transformer2DModel, flow matching; with or without T5)"
    condition_keys: ClassVar[tuple[str, ...]] = ("embeds", "pooled")

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        return parts.get("transformer", Part("", {})).kind == "SD3Transformer2DModel"

    text_inputs: ClassVar[tuple[TextInput, ...]] = (
        TextInput("text_encoder", "tokenizer"),
        TextInput("text_encoder_2", "tokenizer_2"),
        TextInput("text_encoder_3", "tokenizer_3"),
    )

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The joint attention reads both CLIPs' states side by side, zero-padded to T5's width, then
        T5's; the pooled projection both CLIPs' projections."""
        joint = config_int(parts, "transformer", "joint_attention_dim")
        pooled = config_int(parts, "transformer", "pooled_projection_dim")
        clips = ("text_encoder", "text_encoder_2")
        reason = f"the transformer's joint_attention_dim is {joint}"
        return [
            Fit(clips, "width", joint, f"{reason} (the CLIP states are zero-padded up to it)", "<="),
            Fit(("text_encoder_3",), "width", joint, reason),
            Fit(clips, "projection", pooled, f"the transformer's pooled_projection_dim is {pooled}"),
        ]

    @classmethod
    def size_limit(cls, parts: Parts) -> SizeLimit | None:
        """The learned position grid: ``pos_embed_max_size`` tokens per side (diffusers refuses a
        larger latent grid inside the network)."""
        grid = config_int(parts, "transformer", "pos_embed_max_size")
        if grid is None:
            return None
        side = grid * cls.size_rule(parts, {})
        reason = f"the transformer's pos_embed_max_size is {grid} positions of {cls.size_rule(parts, {})} pixels"
        return SizeLimit(side, side, reason)

    @classmethod
    def from_components(
        cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any
    ) -> StableDiffusion3:
        """``max_sequence_length``: T5's tokens (the pipeline's default 256; 0 for a model trained
        without T5, such as the flow demo model)."""
        if components.get("text_encoder") is None or components.get("text_encoder_2") is None:
            raise refuse("this SD3 model lacks its CLIP text encoders (text_encoder, text_encoder_2)")
        return cls(
            transformer=components["transformer"],
            vae=components["vae"],
            path=cls.flow_path(components),
            text_encoder=components["text_encoder"],
            text_encoder_2=components["text_encoder_2"],
            text_encoder_3=components.get("text_encoder_3"),
            tokenizer=components["tokenizer"],
            tokenizer_2=components.get("tokenizer_2") or components["tokenizer"],
            tokenizer_3=components.get("tokenizer_3"),
            **check_sequence_length(options, "SD3"),
        )

    @property
    def text_tokens(self) -> int:
        return int(self.tokenizer.model_max_length) + self.max_sequence_length

    def components(self) -> dict[str, Any]:
        named = {
            "transformer": self.transformer,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
            "text_encoder_3": self.text_encoder_3,
        }
        return {k: v for k, v in named.items() if v is not None}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, 77 + L₃, D₃) and pooled (n, P₁ + P₂), in the transformer's dtype."""
        warn_if_truncated(self.tokenizer, prompts)
        outs = [encode_text(self.tokenizer, self.text_encoder, prompts)]
        outs.append(encode_text(self.tokenizer_2, self.text_encoder_2, prompts))
        pooled = [out[0] for out in outs]  # both CLIPs' projected embeddings
        clip = torch.cat([out.hidden_states[-2] for out in outs], dim=-1)
        t5 = self._t5(prompts, clip)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        dtype = self.transformer.dtype
        return Conditioning.of(torch.cat([clip, t5.to(clip)], dim=-2).to(dtype), torch.cat(pooled, dim=-1).to(dtype))

    def _t5(self, prompts: list[str], clip: torch.Tensor) -> torch.Tensor:
        """T5's last hidden states (n, L₃, D₃), or zeros where the checkpoint has no T5."""
        if self.text_encoder_3 is None or self.tokenizer_3 is None:
            width = int(self.transformer.config.joint_attention_dim)
            return clip.new_zeros(len(prompts), self.max_sequence_length, width)
        warn_if_truncated(self.tokenizer_3, prompts, self.max_sequence_length)
        t5 = encode_text(self.tokenizer_3, self.text_encoder_3, prompts, self.max_sequence_length, all_layers=False)
        return t5[0]

    def unconditional(self, negative_prompt: str, count: int) -> Conditioning:
        """c_∅: the encoded negative prompt ("" by default), ``count`` rows."""
        return self.encode_prompts([negative_prompt]).repeat_rows(count)

    def token_positions(self, prompt: str) -> list[int]:
        """The prompt's word tokens in the joint sequence: T5's (after CLIP's 77), else CLIP-L's."""
        if self.tokenizer_3 is None:
            return _word_positions(self.tokenizer, prompt)
        offset = self.tokenizer.model_max_length
        return [offset + p for p in _word_positions(self.tokenizer_3, prompt, self.max_sequence_length)]

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The velocity for rows ``latents`` (R, C, h, w) at ``level`` (R,) each, fp32."""
        out = self.transformer(
            hidden_states=latents.to(self.transformer.dtype),
            timestep=level.t.to(latents.device),
            encoder_hidden_states=cond.embeds,
            pooled_projections=cond.pooled,
            return_dict=False,
        )[0]
        return out.float()

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        """Record every joint block's attention from the image queries to the concept's text keys
        ([image; text] in the kernel call, as ``JointAttnProcessor2_0`` joins them)."""
        layers = [block.attn for block in self.transformer.transformer_blocks]
        with capture_layers(self.transformer, layers, text_last) as recorder:
            yield recorder


def check_sequence_length(options: Mapping[str, Any], family: str, low: int = 0, high: int = 512) -> dict[str, Any]:
    """``max_sequence_length`` (if given) checked: an integer in [low, high], the text tokens
    ``family``'s pipeline can take (0 where the family runs without that encoder: SD3 without T5)."""
    if "max_sequence_length" not in options:
        return {}
    value = options["max_sequence_length"]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise LeditsError(
            f"max_sequence_length must be an integer in [{low}, {high}] for {family} (text tokens); got {value!r}"
        )
    return {"max_sequence_length": value}
