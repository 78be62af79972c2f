"""A model family defined outside the package: everything a new family's file holds.

A network (here a toy one), an adapter class with its detection, size rule and construction, and
which attention layer to arm (a cross-attention). Registered with ``leditspp.models.registered``, it
joins the conformance suite (``test_toy.py``) with no line of the package changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.attention_processor import Attention

from leditspp import Conditioning
from leditspp.attention import AttentionRecorder
from leditspp.models.capture import CROSS_ATTENTION, capture_layers
from leditspp.models.families import Part, Parts
from leditspp.models.sd3 import TransformerModel
from leditspp.solvers import NoiseLevel
from leditspp.testing import tiny_vae


class ToyDenoiser(torch.nn.Module):
    """A velocity network on 2×2 patches with one cross-attention layer to the text."""

    def __init__(self, channels: int = 4, width: int = 32, text: int = 16) -> None:
        super().__init__()
        self.patchify = torch.nn.Conv2d(channels, width, 2, stride=2)
        self.time = torch.nn.Linear(1, width)
        self.attn = Attention(query_dim=width, cross_attention_dim=text, heads=2, dim_head=16)
        self.unpatchify = torch.nn.ConvTranspose2d(width, channels, 2, stride=2)

    @property
    def device(self) -> torch.device:
        return self.time.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.time.weight.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.patchify(x)
        b, c, hh, ww = h.shape
        tokens = h.flatten(2).transpose(1, 2) + self.time(t[:, None] / 1000)[:, None]
        tokens = tokens + self.attn(tokens, encoder_hidden_states=text)
        return self.unpatchify(tokens.transpose(1, 2).reshape(b, c, hh, ww))


@dataclass(kw_only=True)
class Toy(TransformerModel):
    """The toy family: token embeddings as text, a flow path, masks from the one attention layer."""

    text_encoder: Any
    tokenizer: Any
    family: str = "toy"
    title: ClassVar[str] = "Toy (tests/families/toy.py)"
    condition_keys: ClassVar[tuple[str, ...]] = ("embeds",)
    options: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        return parts.get("transformer", Part("", {})).kind == "ToyDenoiser"

    @classmethod
    def patch(cls, parts: Parts) -> int:
        return 2

    @classmethod
    def from_components(cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any) -> Toy:
        return cls(
            transformer=components["transformer"],
            vae=components["vae"],
            path=cls.flow_path(components),
            text_encoder=components["text_encoder"],
            tokenizer=components["tokenizer"],
        )

    @property
    def text_tokens(self) -> int:
        return 16

    def row_bytes(self, height: int, width: int) -> int:
        return 16 * (height * width // 4 + self.text_tokens) * 32 * 4

    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        ids = self.tokenizer(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        return Conditioning.of(self.text_encoder(ids.input_ids))

    def unconditional(self, negative_prompt: str, count: int) -> Conditioning:
        return self.encode_prompts([negative_prompt]).repeat_rows(count)

    def token_positions(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, truncation=True, max_length=16).input_ids
        return list(range(1, len(ids) - 1))

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        return self.transformer(latents, level.t.float(), cond.embeds).float()

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecorder]:
        with capture_layers(self.transformer, [self.transformer.attn], CROSS_ATTENTION) as recorder:
            yield recorder


def toy_components(tokenizer: Any) -> dict[str, Any]:
    """The toy family's components: a pipeline's worth, without a pipeline class."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {
            "transformer": ToyDenoiser(),
            "vae": tiny_vae(0),
            "text_encoder": torch.nn.Embedding(len(tokenizer), 16),
            "tokenizer": tokenizer,
            "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0),
        }
