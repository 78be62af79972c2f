"""The Edit value: syntax and validation messages."""

from __future__ import annotations

import pytest

from leditspp import Edit, LeditsError
from leditspp.edits import as_edits


@pytest.mark.parametrize(
    ("text", "prompt", "remove", "scale", "threshold"),
    [
        ("+sunglasses", "sunglasses", False, 5.0, 0.9),
        ("-beard:7", "beard", True, 7.0, 0.9),
        ("−beard", "beard", True, 5.0, 0.9),
        ("+cherry blossoms:7@0.75", "cherry blossoms", False, 7.0, 0.75),
        ("cherry blossoms@0.75:7", "cherry blossoms", False, 7.0, 0.75),
        ("a red hat", "a red hat", False, 5.0, 0.9),
    ],
)
def test_parse(text, prompt, remove, scale, threshold):
    e = Edit.parse(text)
    assert (e.prompt, e.remove, e.scale, e.threshold) == (prompt, remove, scale, threshold)
    assert Edit.parse(e.to_text()) == e


def test_parse_uses_overrides_as_defaults():
    e = Edit.parse("+hat", scale=9.0, warmup_steps=2)
    assert e.scale == 9.0 and e.warmup_steps == 2
    assert Edit.parse("+hat:3", scale=9.0).scale == 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "empty"),
        ({"prompt": "  "}, "empty"),
        ({"prompt": "hat", "threshold": 90}, "did you mean 0.9"),
        ({"prompt": "hat", "threshold": 1.0}, r"\[0, 1\)"),
        ({"prompt": "hat", "scale": -2.0}, "remove=True"),
        ({"prompt": "hat", "scale": float("nan")}, r"a number in \[0, 1000\]"),
        ({"prompt": "hat", "warmup_steps": -1}, "warmup"),
        ({"prompt": "hat", "warmup_steps": 3, "cooldown_steps": 3}, "cooldown"),
    ],
)
def test_bad_edits_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(LeditsError, match=message):
        Edit(**kwargs)


def test_parse_rejects_an_empty_concept():
    with pytest.raises(LeditsError, match="empty"):
        Edit.parse("+:7")


def test_as_edits_accepts_texts_and_values():
    assert as_edits(None) == ()
    assert as_edits("+hat") == (Edit("hat"),)
    assert as_edits(["+hat", Edit("cat", remove=True)])[1].remove
    with pytest.raises(LeditsError):
        as_edits([3])
