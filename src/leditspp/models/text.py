"""Text stacks (see :class:`~.base.TextStack`) and what they share: the one truncation warning, a
CLIP's or T5's word positions, and the Qwen3 chat-template stack of FLUX.2 [klein] and Z-Image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import LeditsError
from .base import Conditioning, logger, runs_on, tokenize


def warn_long(prompt: str, count: int, limit: int) -> None:
    """Log that ``prompt``, ``count`` tokens as its text encoder reads it, is cut at ``limit``."""
    if count > limit:
        logger.warning(
            "prompt %r is %d tokens as the text encoder reads it; it reads only the first %d (the rest is "
            "ignored) — shorten it",
            prompt if len(prompt) <= 60 else prompt[:57] + "…",
            count,
            limit,
        )


def token_count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` as ``tokenizer`` encodes it, uncut."""
    return len(tokenize(tokenizer, text, truncation=False, verbose=False).input_ids)


def warn_if_truncated(tokenizer: Any, prompts: list[str], limit: int | None = None) -> None:
    """:func:`warn_long` for each prompt longer than the text encoder's window (``limit``, default
    the tokenizer's ``model_max_length``)."""
    for prompt in prompts:
        warn_long(prompt, token_count(tokenizer, prompt), limit or tokenizer.model_max_length)


@torch.no_grad()
def encode_text(
    tokenizer: Any, encoder: Any, prompts: list[str], max_length: int | None = None, *, all_layers: bool = True
) -> Any:
    """One text encoder's output for ``prompts`` padded to ``max_length`` (default the
    tokenizer's window). With ``all_layers``, ``out.hidden_states[-2]`` (n, L, D) is the
    penultimate layer SDXL and SD3 condition on; ``out[0]`` is a CLIP's projected embedding
    (``out.pooler_output`` its pooled one) or T5's last hidden states."""
    ids = tokenize(
        tokenizer,
        prompts,
        padding="max_length",
        max_length=max_length or tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return encoder(ids.to(runs_on(encoder)), output_hidden_states=all_layers)


def word_positions(tokenizer: Any, prompt: str, max_length: int | None = None) -> list[int]:
    """Positions of everything but the start/end tokens of the un-padded tokenization — a "!" the
    user typed counts even where "!" is also the pad token (SD 2.x, SDXL's second tokenizer).

    Counted from the un-padded ids, ignoring special tokens, so neither the tokenizer's ``length``
    field nor the pad token can change it."""
    ids = tokenize(tokenizer, prompt, truncation=True, max_length=max_length or tokenizer.model_max_length).input_ids
    ends = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    return [i for i, t in enumerate(ids) if t not in ends]


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template around one user turn, ``add_generation_prompt`` on, with its ``thinking``
    switch. It puts a prompt's text between a fixed prefix and suffix; both are read off two
    renderings that differ in one character, so a prompt's span is known by construction."""

    tokenizer: Any
    thinking: bool

    def render(self, prompt: str) -> str:
        """The text the pipeline feeds its encoder for ``prompt``."""
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=self.thinking
        )

    def span(self, prompt: str) -> tuple[int, int]:
        """Where ``prompt``'s characters lie in :meth:`render` (start, end)."""
        a, b = self.render("a"), self.render("b")
        start = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        if self.render(prompt) != a[:start] + prompt + a[start + 1 :]:
            raise LeditsError("this tokenizer's chat template changes the prompt's text; its tokens cannot be placed")
        return start, start + len(prompt)


@dataclass(frozen=True, kw_only=True)
class Qwen3ChatText:
    """The Qwen3 text stack of FLUX.2 [klein] and Z-Image: the prompt in the chat template, read to
    ``max_sequence_length`` tokens, the hidden states of ``layers`` concatenated per token.

    ``masked`` (Z-Image): only each prompt's real tokens count — embeds zero after them and
    ``mask`` (n, L) bool True on them; otherwise ([klein]) all L padded positions are the text.
    """

    tokenizer: Any
    text_encoder: Any
    max_sequence_length: int
    thinking: bool
    layers: tuple[int, ...]
    masked: bool
    zeros_for_empty: bool = False

    @property
    def template(self) -> ChatTemplate:
        return ChatTemplate(self.tokenizer, self.thinking)

    @property
    def condition_keys(self) -> tuple[str, ...]:
        return ("embeds", "mask") if self.masked else ("embeds",)

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """embeds (n, L, len(layers)·D) and, ``masked``, mask (n, L) bool."""
        length = self.max_sequence_length
        texts = [self.template.render(p) for p in prompts]  # new strings: a pipeline's list is not touched
        for prompt, text in zip(prompts, texts, strict=True):
            warn_long(prompt, token_count(self.tokenizer, text), length)
        padding = "longest" if self.masked else "max_length"
        inputs = tokenize(
            self.tokenizer, texts, padding=padding, max_length=length, truncation=True, return_tensors="pt"
        )
        device = runs_on(self.text_encoder)
        mask = inputs.attention_mask.to(device)
        mask = mask.bool() if self.masked else mask
        out = self.text_encoder(
            input_ids=inputs.input_ids.to(device), attention_mask=mask, output_hidden_states=True, use_cache=False
        )
        embeds = torch.cat([out.hidden_states[k] for k in self.layers], dim=-1)
        if not self.masked:
            return Conditioning.of(embeds)
        embeds = embeds * mask[..., None]  # right padding of a causal model: the real rows are the pipeline's
        pad = length - embeds.shape[1]
        pad_rows = torch.nn.functional.pad
        return Conditioning.of(pad_rows(embeds, (0, 0, 0, pad)), mask=pad_rows(mask, (0, pad)))

    def token_positions(self, prompt: str) -> list[int]:
        """The prompt's own tokens inside the template (index j = text token j): those whose
        characters lie in its span (:meth:`ChatTemplate.span`), so a word that is also in the
        template ("user", "a") is found at its own place only."""
        if not prompt:
            return []
        start, end = self.template.span(prompt)
        offsets = tokenize(
            self.tokenizer,
            self.template.render(prompt),
            truncation=True,
            max_length=self.max_sequence_length,
            return_offsets_mapping=True,
        ).offset_mapping
        return [j for j, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
