"""The text part of a ComfyUI family: a ``CLIP`` turns prompts into leditspp's
:class:`~leditspp.models.base.Conditioning` and finds each concept's tokens.

Token positions are read from ComfyUI's own tokenization (``CLIP.tokenize(…, return_word_ids=True)``):
every token that belongs to a word (word id > 0) of the prompt, across ComfyUI's 77-token chunks,
so a prompt's weights syntax, embeddings and long prompts count as ComfyUI counts them.
Qwen-Image's text encoder reads the prompt inside a chat template, as one word, and the transformer
sees the tokens after the template's prefix: there the prompt's tokens are those that differ from
the template's own, counted from where the prefix ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from comfy.text_encoders.qwen_image import QwenImageTEModel
from comfy.text_encoders.sd3_clip import SD3ClipModel

from leditspp.errors import LeditsError
from leditspp.models.base import Conditioning


def encode(clip: Any, text: str) -> Conditioning:
    """``text`` through ``clip``: embeds (1, L, D) fp32 (L = 77 per ComfyUI chunk for a CLIP; the
    prompt's own tokens and its end token for Chroma's T5; the prompt's own count after the chat
    template's prefix on Qwen-Image) and the pooled vector (1, P) where the CLIP has one (SDXL's
    added conditions read it)."""
    embeds, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return Conditioning.of(embeds.float(), None if pooled is None else pooled.float())


def token_positions(clip: Any, text: str, length: int | None = None) -> tuple[int, ...]:
    """Positions of ``text``'s word tokens in its encoding's L tokens (start, end and padding
    excluded). SD3's sequence is [CLIP-L ⊕ CLIP-G; T5]: the CLIPs' tokens (the two must agree) and
    T5's after them, each part where its encoder is loaded. Where a T5 gives the sequence alone
    (FLUX.1; CLIP-L only its pooled vector) its tokens count; otherwise every text encoder of the
    CLIP (SDXL: CLIP-L and CLIP-G) must agree on them. Qwen-Image: see :func:`template_positions`
    (``length``: the encoding's L where known, else it is encoded)."""
    tokenized = clip.tokenize(text, return_word_ids=True)
    model = clip.cond_stage_model
    if isinstance(model, QwenImageTEModel):
        length = encode(clip, text).embeds.shape[1] if length is None else length
        return template_positions(clip, tokenized, length)
    if isinstance(model, SD3ClipModel):
        return sd3_positions(model, tokenized, text)
    sequences = [tokenized["t5xxl"]] if "t5xxl" in tokenized else list(tokenized.values())
    return agreed_positions(sequences, text)[0]


def sd3_positions(model: Any, tokenized: dict[str, Any], text: str) -> tuple[int, ...]:
    """SD3's word positions in the joint text (``SD3ClipModel.encode_token_weights`` puts the CLIPs'
    part first, then T5's): T5's, offset by the CLIP part's length, where a T5 is loaded — as
    leditspp's own SD3 adapter marks them —, else the loaded CLIPs' (``l``, ``g``)."""
    clips = [tokenized[key] for key, name in (("l", "clip_l"), ("g", "clip_g")) if getattr(model, name) is not None]
    positions, length = agreed_positions(clips, text) if clips else ((), 0)
    if model.t5xxl is None:
        return positions
    t5, _ = agreed_positions([tokenized["t5xxl"]], text)
    return tuple(length + p for p in t5)


def template_positions(clip: Any, tokenized: dict[str, Any], length: int) -> tuple[int, ...]:
    """The prompt's tokens in a chat template's encoding of ``length`` tokens: the tokens between
    the longest prefix and suffix it shares with the template's own (an empty prompt's)
    tokenization, shifted by the template prefix that the encoder drops (what the tokenization
    has beyond ``length``)."""
    (full,) = ([token for chunk in chunks for token, *_ in chunk] for chunks in tokenized.values())
    (bare,) = ([token for chunk in chunks for token, *_ in chunk] for chunks in clip.tokenize("").values())
    shared = min(len(full), len(bare))
    prefix = next((i for i in range(shared) if full[i] != bare[i]), shared)
    suffix = next((i for i in range(shared - prefix) if full[-1 - i] != bare[-1 - i]), shared - prefix)
    dropped = len(full) - length
    return tuple(i - dropped for i in range(prefix, len(full) - suffix) if i >= dropped)


def agreed_positions(sequences: Sequence[Any], text: str) -> tuple[tuple[int, ...], int]:
    """The word positions that every tokenization in ``sequences`` (each a list of chunks of
    ``(token, weight, word id)``) gives, and their shortest length in tokens."""
    flat = [[token for chunk in chunks for token in chunk] for chunks in sequences]
    found = {tuple(i for i, (_, _, word) in enumerate(tokens) if word > 0) for tokens in flat}
    if len(found) != 1:
        raise LeditsError(f"the text encoders of this CLIP tokenize {text!r} differently; cannot place its tokens")
    return found.pop(), min(len(tokens) for tokens in flat)


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


def pad_to_common_length(conds: Sequence[Conditioning]) -> list[Conditioning]:
    """``conds`` padded to the longest one's token count, each with its text mask, for a family whose
    pads are masked (Chroma, Qwen-Image): padded positions get no attention and the text's rotary
    positions do not move, so each row's output is its own."""
    length = max(c.embeds.shape[1] for c in conds)
    return [pad_tokens(c, length) for c in conds]


def pad_tokens(cond: Conditioning, length: int) -> Conditioning:
    """``cond`` (n, l, D) with zero embeddings appended up to ``length`` tokens and ``mask``
    (n, length): its own mask (1 on every token where it has none), 0 on the appended pads."""
    n, own, _ = cond.embeds.shape
    mask = cond.get("mask")
    mask = cond.embeds.new_ones(n, own) if mask is None else mask
    return Conditioning(
        {
            **cond.tensors,
            "embeds": F.pad(cond.embeds, (0, 0, 0, length - own)),
            "mask": F.pad(mask, (0, length - own)),
        }
    )


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


@dataclass(frozen=True, eq=False)
class ComfyText:
    """The text part: a ComfyUI ``CLIP`` (None where a node has none connected). ``padded``: the
    family's prompts keep their own token counts, padded and masked to stack (Chroma, Qwen-Image);
    otherwise repeated to a common count."""

    clip: Any
    padded: bool = False
    zeros_for_empty: bool = False

    @property
    def condition_keys(self) -> tuple[str, ...]:
        return ("embeds", "mask") if self.padded else ("embeds", "pooled")

    def _connected(self) -> Any:
        if self.clip is None:
            raise LeditsError("this LEDITS++ node has no CLIP connected")
        return self.clip

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """One row per prompt, brought to one token count (:func:`pad_to_common_length` or
        :func:`to_common_length`)."""
        encoded = [encode(self._connected(), p) for p in prompts]
        return Conditioning.cat(pad_to_common_length(encoded) if self.padded else to_common_length(encoded))

    def token_positions(self, prompt: str) -> list[int]:
        return list(token_positions(self._connected(), prompt))

    def modules(self) -> dict[str, Any]:
        return {}
