"""A model family defined outside the package: everything a new family's file holds.

A network (here a toy one), its text stack and denoiser parts, and an adapter class with its
detection, size rule and construction composing them with the shared VAE part and an attention tap
on the layer to arm (a cross-attention). Registered with ``leditspp.models.registered``, it joins
the conformance suite (``test_toy.py``) with no line of the package changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.attention_processor import Attention

from leditspp import Conditioning
from leditspp.models.capture import CROSS_ATTENTION
from leditspp.models.families import Part, Parts
from leditspp.models.transformer import FlowTransformer, TransformerFamily, kernel_tap
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


@dataclass(frozen=True)
class ToyText:
    """The toy text stack: token embeddings, 16 tokens."""

    tokenizer: Any
    text_encoder: Any
    condition_keys: tuple[str, ...] = ("embeds",)
    zeros_for_empty: bool = False

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        ids = self.tokenizer(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        return Conditioning.of(self.text_encoder(ids.input_ids))

    def token_positions(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, truncation=True, max_length=16).input_ids
        return list(range(1, len(ids) - 1))


@dataclass(frozen=True, kw_only=True)
class ToyNet(FlowTransformer):
    """The toy denoiser: the network's velocity on the shared flow base."""

    def row_bytes(self, height: int, width: int) -> int:
        return 16 * (self.image_tokens(height, width) + self.text_tokens) * 32 * 4

    @torch.no_grad()
    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        return self.transformer(latents, level.t.float(), cond.embeds).float()


def the_attention(network: ToyDenoiser) -> list[Any]:
    return [network.attn]


@dataclass(frozen=True, kw_only=True)
class Toy(TransformerFamily):
    """The toy family: its parts composed, a flow path, masks from the one attention layer."""

    family: str = "toy"
    title: ClassVar[str] = "Toy (tests/families/toy.py)"
    options: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def matches(cls, parts: Parts) -> bool:
        return parts.get("transformer", Part("", {})).kind == "ToyDenoiser"

    @classmethod
    def patch(cls, parts: Parts) -> int:
        return 2

    @classmethod
    def from_components(cls, components: dict[str, Any], pipeline_config: Mapping[str, Any], **options: Any) -> Toy:
        text = ToyText(components["tokenizer"], components["text_encoder"])
        parts = cls.flow_parts(components, ToyNet, tap=kernel_tap(the_attention, CROSS_ATTENTION), text_tokens=16)
        return cls(text=text, **parts)


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
