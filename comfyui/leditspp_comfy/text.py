"""The text part of a ComfyUI family: a ``CLIP`` turns prompts into leditspp's
:class:`~leditspp.models.base.Conditioning` and finds each concept's tokens.

Token positions are read from ComfyUI's own tokenization (``CLIP.tokenize(…, return_word_ids=True)``):
every token that belongs to a word (word id > 0) of the prompt, across ComfyUI's 77-token chunks,
so a prompt's weights syntax, embeddings and long prompts count as ComfyUI counts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from leditspp.errors import LeditsError
from leditspp.models.base import Conditioning


def encode(clip: Any, text: str) -> Conditioning:
    """``text`` through ``clip``: embeds (1, L, D) fp32, L = 77 per ComfyUI chunk, and the pooled
    vector (1, P) (SDXL's added conditions read it)."""
    embeds, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return Conditioning.of(embeds.float(), pooled.float())


def token_positions(clip: Any, text: str) -> tuple[int, ...]:
    """Positions of ``text``'s word tokens in its encoding's L tokens (start, end and padding
    excluded). Where a T5 gives the sequence (FLUX.1; CLIP-L only its pooled vector) its tokens
    count; otherwise every text encoder of the CLIP (SDXL: CLIP-L and CLIP-G) must agree on them."""
    tokenized = clip.tokenize(text, return_word_ids=True)
    sequences = [tokenized["t5xxl"]] if "t5xxl" in tokenized else tokenized.values()
    found = {
        tuple(i for i, (_, _, word) in enumerate(token for chunk in chunks for token in chunk) if word > 0)
        for chunks in sequences
    }
    if len(found) != 1:
        raise LeditsError(f"the text encoders of this CLIP tokenize {text!r} differently; cannot place its tokens")
    return found.pop()


def from_conditioning(conditioning: Sequence[Sequence[Any]], name: str) -> Conditioning:
    """A ComfyUI ``CONDITIONING`` of one entry ``[[cond (1, L, D), {"pooled_output": (1, P), …}]]``."""
    if len(conditioning) != 1 or conditioning[0][0].shape[0] != 1:
        raise LeditsError(
            f"{name} must be one text conditioning (as CLIPTextEncode gives); got {len(conditioning)} entries — "
            "connect a single CLIPTextEncode, not a combine or a batch"
        )
    pooled = conditioning[0][1].get("pooled_output")
    return Conditioning.of(conditioning[0][0].float(), None if pooled is None else pooled.float())


def to_common_length(conds: Sequence[Conditioning]) -> list[Conditioning]:
    """``conds`` with their embeddings repeated to one token count, the least common multiple of
    theirs (as ComfyUI batches conditionings of different lengths, ``CONDCrossAttn.concat``), so
    that one network call can stack them (a long prompt has 77 tokens per chunk)."""
    length = math.lcm(*(c.embeds.shape[1] for c in conds))
    return [repeat_tokens(c, length) for c in conds]


def repeat_tokens(cond: Conditioning, length: int) -> Conditioning:
    """``cond`` (n, l, D) with its l tokens repeated to ``length`` (a multiple of l): attention over
    the repeated keys gives every output the same value, and each copy 1/k of the probability."""
    return Conditioning({**cond.tensors, "embeds": cond.embeds.repeat(1, length // cond.embeds.shape[1], 1)})


def repeated_positions(positions: Sequence[int], own: int, length: int) -> list[int]:
    """``positions`` among ``own`` tokens, in every copy of them when repeated to ``length``."""
    return [p + copy * own for copy in range(length // own) for p in positions]


def token_weights(positions: Sequence[Sequence[int]], lengths: Sequence[int], length: int) -> torch.Tensor:
    """(E, length) weights, 1 on each concept's word tokens in its repeated conditioning."""
    weights = torch.zeros(len(positions), length)
    for i, (own_positions, own) in enumerate(zip(positions, lengths, strict=True)):
        weights[i, repeated_positions(own_positions, own, length)] = 1.0
    return weights
