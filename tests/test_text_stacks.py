"""The text stacks families share: one Qwen3 chat-template stack for FLUX.2 [klein] and Z-Image,
whose prompt's tokens are placed by construction — a word the template also holds ("user", the
"a" and "art" of ``<|im_start|>``) is found at the prompt's own place."""

from __future__ import annotations

import pytest

from leditspp import LeditsError
from leditspp.models.text import ChatTemplate, Qwen3ChatText
from leditspp.testing.tiny2026 import qwen_tokenizer

WORDS = ["a", "art", "star", "user", "system", "assistant", "a user with a star", "<|im_start|>"]


@pytest.fixture(scope="module")
def tokenizer():
    return qwen_tokenizer("qwen3")


@pytest.mark.parametrize("thinking", [True, False], ids=["zimage", "klein"])
@pytest.mark.parametrize("prompt", WORDS)
def test_a_prompts_tokens_are_its_own_after_the_templates_first_line(tokenizer, thinking, prompt):
    text = Qwen3ChatText(
        tokenizer=tokenizer, text_encoder=None, max_sequence_length=512, thinking=thinking, layers=(-2,), masked=True
    )
    rendered = text.template.render(prompt)
    head = rendered[: rendered.index("\n") + 1]  # "<|im_start|>user\n": the prompt comes right after it
    before = len(tokenizer(head, add_special_tokens=False).input_ids)
    own = tokenizer(prompt, add_special_tokens=False).input_ids
    ids = tokenizer(rendered).input_ids
    positions = text.token_positions(prompt)
    assert positions == list(range(before, before + len(own)))
    assert [ids[p] for p in positions] == own


def test_positions_stop_at_the_text_window_and_an_empty_prompt_has_none(tokenizer):
    text = Qwen3ChatText(
        tokenizer=tokenizer, text_encoder=None, max_sequence_length=5, thinking=False, layers=(-1,), masked=False
    )
    assert text.token_positions("red circle") == [3, 4]
    assert text.token_positions("") == []


def test_a_template_that_rewrites_the_prompt_is_refused(tokenizer):
    class Upper:
        def apply_chat_template(self, messages, **options):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": messages[0]["content"].upper()}], **options
            )

    with pytest.raises(LeditsError, match="changes the prompt's text"):
        ChatTemplate(Upper(), thinking=True).span("a red hat")
