"""The one place the conformance suite reaches into a family adapter.

Every check in :mod:`.conformance` talks to a model through these functions, so a change of the
adapter's shape (its methods moved into parts, renamed) is one edit here, not one per test.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from leditspp import Conditioning, Edit, Editor
from leditspp.attention import AttentionRecorder
from leditspp.solvers import NoiseLevel, Path


def estimate(model: Any, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
    """The estimate guidance acts on (ε or the velocity), (R, C, h, w) fp32."""
    return model.estimate(latents, level, cond)


def to_data(model: Any, guided: torch.Tensor, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
    """The data prediction x̂0 of an estimate at ``x``, (B, C, h, w)."""
    return model.to_data(guided, x, level)


def encode_prompts(model: Any, prompts: list[str]) -> Conditioning:
    return model.encode_prompts(prompts)


def unconditional(model: Any, negative_prompt: str, count: int) -> Conditioning:
    """c_∅: ``count`` rows of the negative prompt's conditioning."""
    return model.unconditional(negative_prompt, count)


def token_positions(model: Any, prompt: str) -> list[int]:
    """Where the prompt's word tokens sit in the conditioning's text sequence."""
    return model.token_positions(prompt)


def capture(model: Any) -> contextlib.AbstractContextManager[AttentionRecorder]:
    return model.capture_attention()


def noise_path(model: Any, height: int, width: int) -> Path:
    return model.noise_path(height, width)


def mask_grid(model: Any, height: int, width: int) -> tuple[int, int]:
    return model.mask_grid(height, width)


def encode(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [−1, 1] → latents (B, C, h, w)."""
    return model.encode(pixels)


def decode(model: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents (B, C, h, w) → pixels (B, 3, H, W) in [−1, 1]."""
    return model.decode(latents)


def text_tokens(model: Any) -> int:
    """Text tokens of one conditioning row."""
    return model.denoiser.text_tokens


def components(model: Any) -> dict[str, Any]:
    return model.components()


def network(model: Any) -> torch.nn.Module:
    """The denoiser: a UNet or a transformer."""
    denoiser = model.denoiser
    return denoiser.unet if hasattr(denoiser, "unet") else denoiser.transformer


def levels(model: Any, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, s)`` of the model's path at times ``t`` (n,)."""
    return model.path.levels(t)


def concept_weights(editor: Editor, prompts: list[str]) -> torch.Tensor:
    """The token weights (E, L) the editor gives the concepts ``prompts`` for their attention masks."""
    return editor._concepts(tuple(Edit(p) for p in prompts), use_attention=True).token_weights
