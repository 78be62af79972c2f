"""Z-Image / Z-Image-Turbo: a single-stream S3-DiT on a rectified-flow path.

What this adapter adds to the shared flow transformer (:class:`~leditspp.models.sd3.TransformerModel`):

* conditioning as ``ZImagePipeline._encode_prompt`` builds it: the prompt in Qwen3's chat template
  (``<|im_start|>user\\n{p}<|im_end|>\\n<|im_start|>assistant\\n``), ``hidden_states[-2]`` of the
  real tokens. Captions differ in length, and the transformer takes a **list** of unpadded
  (Lᵢ, D) tensors; here every caption is zero-padded to ``max_sequence_length`` rows (one length
  for every call, so base, source and concept rows stack) and ``mask`` (n, L) bool marks the real
  tokens: :meth:`estimate` hands the transformer ``embeds[i][mask[i]]``. c_∅ encodes the negative
  prompt ("" by default) through the same template; a Turbo checkpoint, sampled without CFG,
  still gets these rows, since LEDITS++ needs v(c_e) − v(c_∅);
* latents (B, 16, h, w), FLUX.1's VAE with its shift and scale; the transformer patchifies 2×2
  itself and takes a list of (C, 1, h, w). Its time input is ``(1000 − t)/1000 = 1 − σ`` and its
  output is **−v** (x0 − noise): the pipeline negates it before the Euler step, and so do we;
* the σ grid is the pipeline's ``linspace(1, 1/N, N)`` with the config's static shift (3 for Turbo);
* M¹ from the main (unified-sequence) layers: the image queries' softmax over all keys of the
  sequence [image (padded to 32), caption (padded to 32)] as the attention kernel receives them,
  batch-padding keys masked; caption token j of each row sits at key ``image_len_padded + j``. The
  refiners see image or caption alone and are not recorded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..attention import AttentionRecorder
from ..errors import LeditsError
from ..solvers import NoiseLevel
from .base import Conditioning, runs_on, tokenize, vae_scale_factor, warn_if_truncated
from .capture import Layout, capture_layers
from .components import Fit, TextInput, config_int
from .families import Part, Parts, SizeLimit, refuse
from .sd3 import TRANSFORMER_ACTIVATION_ELEMENTS, TransformerModel, check_sequence_length

#: The transformer pads the image and the caption each to a multiple of this many tokens
#: (``SEQ_MULTI_OF`` in diffusers' ``transformer_z_image.py``).
SEQ_MULTI_OF = 32


def chat_text(tokenizer: Any, prompt: str) -> str:
    """The text ``ZImagePipeline`` feeds Qwen3 for ``prompt`` (its chat template, thinking on)."""
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)


def padded(count: int) -> int:
    """``count`` tokens padded to the transformer's multiple."""
    return count + (-count) % SEQ_MULTI_OF


@dataclass(kw_only=True)
class ZImage(TransformerModel):
    """Adapter for Z-Image / Z-Image-Turbo components in diffusers format (``ZImagePipeline``)."""

    text_encoder: Any
    tokenizer: Any
    max_sequence_length: int = 512
    family: str = "zimage"
    title: ClassVar[str] = "Z-Image / Z-Image-Turbo (ZImageTransformer2DModel, flow matching, Qwen3)"
    condition_keys: ClassVar[tuple[str, ...]] = ("embeds", "mask")
    _grid: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    @classmethod
    def recommended(cls, parts: Parts, pipeline_config: Mapping[str, Any]) -> dict[str, Any]:
        """Z-Image's pipeline samples in 50 steps. Z-Image-Turbo ships the same configs, so its
        8 steps come from its name (``models.settings.CHECKPOINT_RECOMMENDED``) or its ``leditspp.json``."""
        return {"steps": 50}

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        return parts.get("transformer", Part("", {})).kind == "ZImageTransformer2DModel"

    text_inputs: ClassVar[tuple[TextInput, ...]] = (TextInput("text_encoder", "tokenizer", chat_template=True),)

    @classmethod
    def fits(cls, parts: Parts) -> list[Fit]:
        """The caption embedder reads Qwen3's penultimate hidden states."""
        dim = config_int(parts, "transformer", "cap_feat_dim")
        return [
            Fit(("text_encoder",), "width", dim, f"the transformer's cap_feat_dim is {dim}"),
            Fit(("text_encoder",), "layers", 2, "the pipeline reads the penultimate layer's states", ">="),
        ]

    @classmethod
    def patch(cls, parts: Parts) -> int:
        """The pipeline's patch (2, the forward's default); the config lists the sizes it has."""
        sizes = parts["transformer"].config.get("all_patch_size") or (2,)
        if 2 not in sizes:
            raise refuse(f"this Z-Image transformer has patch sizes {list(sizes)}; ZImagePipeline uses 2")
        return 2

    @classmethod
    def size_limit(cls, parts: Parts) -> SizeLimit | None:
        """The rotary tables: ``axes_lens`` positions along the height and the width axes."""
        lens = parts["transformer"].config.get("axes_lens")
        if not isinstance(lens, (list, tuple)) or len(lens) != 3:
            return None
        pixels = cls.size_rule(parts, {})
        reason = f"the transformer's axes_lens give {lens[1]}×{lens[2]} positions of {pixels} pixels"
        return SizeLimit(int(lens[1]) * pixels, int(lens[2]) * pixels, reason)

    @classmethod
    def from_components(cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any) -> ZImage:
        """``max_sequence_length``: caption tokens (template included) read, the pipeline's 512."""
        if components.get("text_encoder") is None:
            raise refuse("this Z-Image model lacks its Qwen3 text encoder (text_encoder)")
        length = check_sequence_length(options, "Z-Image", low=1)  # its caption is never empty
        return cls(
            transformer=components["transformer"],
            vae=components["vae"],
            path=cls.flow_path(components, grid="pipeline"),
            text_encoder=components["text_encoder"],
            tokenizer=components["tokenizer"],
            **length,
        )

    @property
    def text_tokens(self) -> int:
        return padded(self.max_sequence_length)

    def row_bytes(self, height: int, width: int) -> int:
        """Estimated peak activation bytes of one row of the unified sequence (image + caption)."""
        tokens = padded((height // 2) * (width // 2)) + self.text_tokens
        width_ = int(self.transformer.config.dim)
        return TRANSFORMER_ACTIVATION_ELEMENTS * tokens * width_ * self.transformer.dtype.itemsize

    @property
    def size_multiple(self) -> int:
        return vae_scale_factor(self.vae) * 2

    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, L, D): Qwen3's ``hidden_states[-2]`` of each templated prompt, zero after its
        real tokens; mask (n, L) bool, True on them (L = ``max_sequence_length``)."""
        texts = [chat_text(self.tokenizer, p) for p in prompts]  # new strings: the pipeline's list is not touched
        warn_if_truncated(self.tokenizer, texts, self.max_sequence_length)
        inputs = tokenize(
            self.tokenizer,
            texts,
            padding="longest",
            max_length=self.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )
        device = runs_on(self.text_encoder)
        mask = inputs.attention_mask.to(device).bool()
        states = self.text_encoder(
            input_ids=inputs.input_ids.to(device), attention_mask=mask, output_hidden_states=True
        ).hidden_states[-2]
        states = states * mask[..., None]  # right padding of a causal model: the real rows are the pipeline's
        pad = self.max_sequence_length - states.shape[1]
        embeds = torch.nn.functional.pad(states, (0, 0, 0, pad)).to(self.transformer.dtype)
        return Conditioning.of(embeds, mask=torch.nn.functional.pad(mask, (0, pad)).to(self.device))

    def unconditional(self, negative_prompt: str, count: int) -> Conditioning:
        """c_∅: the encoded negative prompt ("" by default, as the pipeline's CFG rows), ``count`` rows."""
        return self.encode_prompts([negative_prompt]).repeat_rows(count)

    def token_positions(self, prompt: str) -> list[int]:
        """The prompt's tokens inside the chat template: those whose character offsets fall in
        the prompt's span of the rendered text (index j = row j of the caption)."""
        text = chat_text(self.tokenizer, prompt)
        prefix = chat_text(self.tokenizer, "")
        start = text.index(prompt, prefix.index("\n") + 1) if prompt else 0
        end = start + len(prompt)
        offsets = tokenize(
            self.tokenizer, text, truncation=True, max_length=self.max_sequence_length, return_offsets_mapping=True
        ).offset_mapping
        return [j for j, (a, b) in enumerate(offsets) if prompt and b > a and a >= start and b <= end]

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The velocity v = −(transformer output) for rows ``latents`` (R, C, h, w) at ``level``
        (R,) each, fp32; the transformer sees ``(T − t)/T`` and each row's unpadded caption."""
        mask = cond.get("mask")
        if mask is None:
            raise LeditsError("a Z-Image conditioning needs 'mask' (n, L) bool; make it with model.encode_prompts")
        captions = [e[m] for e, m in zip(cond.embeds, mask.to(cond.embeds.device), strict=True)]
        T = self.path.num_train_timesteps
        t = ((T - level.t.to(latents.device, torch.float32)) / T).to(latents.device)
        x = list(latents.to(self.transformer.dtype).unsqueeze(2).unbind(0))
        out = self.transformer(x, t, captions, return_dict=False)[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        """Record the main layers' attention from the image queries to the concept's caption keys."""
        layers = [layer.attention for layer in self.transformer.layers]

        def image_grid(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["x"]  # list of (C, 1, h, w), one size per call
            self._grid.tokens = (x[0].shape[-2] // 2) * (x[0].shape[-1] // 2)

        hook = self.transformer.register_forward_pre_hook(image_grid, with_kwargs=True)
        try:
            with capture_layers(self.transformer, layers, self._layout) as recorder:
                yield recorder
        finally:
            hook.remove()

    def _layout(self, tokens: int) -> Layout:
        """This call's unified sequence: its image queries first, then caption token j of every
        row at key ``padded(image tokens) + j`` (``tokens`` of them)."""
        image = self._grid.tokens
        return Layout(image=slice(0, image), text=slice(padded(image), padded(image) + tokens))
