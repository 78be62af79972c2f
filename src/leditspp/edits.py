"""The :class:`Edit` value: one concept to add or remove, and the compact text syntax for it.

Glossary (paper → code): s_e → ``scale``, λ → ``threshold``, d = −1 → ``remove``,
warm-up / cool-down → ``warmup_steps`` / ``cooldown_steps`` (edit-loop step indices).

Text syntax: ``[+|-]concept[:scale][@threshold]``, e.g. ``"+sunglasses"``, ``"-beard:7"``,
``"+cherry blossoms:7@0.75"``. A leading ``-`` (or ``−``) removes the concept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import defaults
from .errors import LeditsError, fraction_hint, is_int, is_number
from .models.base import Conditioning

#: A ``:``/``@`` suffix with no space after it that is not a number ("+cat:abc") is refused;
#: with a space it is part of the prompt ("style: watercolour").
_BAD_SUFFIX = re.compile(r"^(?P<rest>.*?)(?P<kind>[:@])(?P<value>[^\s:@]*)$")
_SUFFIX = re.compile(r"^(?P<rest>.*?)(?P<kind>[:@])(?P<value>[+-]?[0-9]*\.?[0-9]+(?:e[+-]?\d+)?)$")


@dataclass(frozen=True)
class Edit:
    """One edit concept. Validated on creation; errors name the field and the fix.

    ``conditioning`` (optional, a one-row :class:`~leditspp.models.base.Conditioning` with the
    tensors the model's family encodes, e.g. ``editor.model.encode_prompts([...]).row(0)`` or
    ``Conditioning.of(embeds, pooled)``) replaces the encoding of ``prompt``; ``prompt`` then only
    names the concept and gives its token positions for the attention mask.
    """

    prompt: str | None
    scale: float = defaults.EDIT_SCALE
    threshold: float = defaults.EDIT_THRESHOLD
    remove: bool = False
    warmup_steps: int = defaults.WARMUP_STEPS
    cooldown_steps: int | None = defaults.COOLDOWN_STEPS
    conditioning: Conditioning | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.conditioning is None and (not isinstance(self.prompt, str) or not self.prompt.strip()):
            raise LeditsError(
                f"edit prompt is empty ({self.prompt!r}); give the concept as text, e.g. "
                "Edit('sunglasses'), or pass conditioning="
            )
        if self.conditioning is not None and (
            not isinstance(self.conditioning, Conditioning)
            or len(self.conditioning) != 1
            or self.conditioning.embeds.dim() != 3
        ):
            raise LeditsError(
                "conditioning must be a one-row Conditioning with embeds (1, tokens, dim), e.g. "
                "editor.model.encode_prompts(['a red hat']).row(0)"
            )
        if not is_number(self.scale) or not 0 <= self.scale <= defaults.MAX_GUIDANCE:
            raise LeditsError(
                f"edit scale must be a number in [0, {defaults.MAX_GUIDANCE:g}] (the paper uses 5–20); got "
                f"{self.scale!r} for {self.prompt!r} — to push away from a concept use remove=True (or a '-' prefix)"
            )
        if not is_number(self.threshold) or not 0.0 <= self.threshold < 1.0:
            hint = fraction_hint(self.threshold, "λ = 1 would mask out every pixel; e.g. 0.95 keeps the top 5 %")
            raise LeditsError(
                f"edit threshold is a quantile in [0, 1); got {self.threshold!r} for {self.prompt!r}{hint}"
            )
        if not is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise LeditsError(f"warmup_steps must be an integer ≥ 0; got {self.warmup_steps!r}")
        if self.cooldown_steps is not None and (
            not is_int(self.cooldown_steps) or self.cooldown_steps <= self.warmup_steps
        ):
            raise LeditsError(
                f"cooldown_steps must be None or an integer > warmup_steps ({self.warmup_steps}); "
                f"got {self.cooldown_steps!r}"
            )

    @property
    def direction(self) -> float:
        """d_i: +1 adds the concept, −1 removes it."""
        return -1.0 if self.remove else 1.0

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> Edit:
        """Parse ``[+|-]concept[:scale][@threshold]``; keyword ``overrides`` fill the rest."""
        if not isinstance(text, str):
            raise LeditsError(f"an edit must be text like '+sunglasses'; got {text!r}")
        rest = text.strip()
        values: dict[str, Any] = {}
        while (m := _SUFFIX.match(rest)) is not None:
            key = "scale" if m["kind"] == ":" else "threshold"
            if key in values:
                raise LeditsError(f"edit {text!r} gives its {key} twice")
            values[key] = float(m["value"])
            rest = m["rest"].rstrip()
        if (bad := _BAD_SUFFIX.match(rest)) is not None:
            what = "scale" if bad["kind"] == ":" else "threshold"
            raise LeditsError(
                f"edit {text!r}: the {bad['kind']!r} suffix gives the {what} and must be a number; got "
                f"{bad['value']!r} (syntax: [+|-]concept[:scale][@threshold], e.g. '+hat:7@0.8')"
            )
        remove = rest[:1] in ("-", "−")
        if rest[:1] in ("+", "-", "−"):
            rest = rest[1:].strip()
        return cls(rest, **{"remove": remove, **overrides, **values})

    def to_text(self) -> str:
        """The compact syntax for this edit (inverse of :meth:`parse` for prompt/scale/threshold)."""
        return f"{'-' if self.remove else '+'}{self.prompt}:{self.scale:g}@{self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready recipe of this edit (a given conditioning is not serialised)."""
        return {
            "prompt": self.prompt,
            "scale": self.scale,
            "threshold": self.threshold,
            "remove": self.remove,
            "warmup_steps": self.warmup_steps,
            "cooldown_steps": self.cooldown_steps,
        }


def check_warmup(edits: tuple[Edit, ...] | list[Edit], steps: int) -> None:
    """Refuse a concept whose warm-up lasts the whole edit: it would never act."""
    for e in edits:
        if e.warmup_steps >= steps:
            raise LeditsError(
                f"edit {e.prompt!r} waits {e.warmup_steps} warm-up steps, but the edit has only {steps} "
                f"steps, so it would never act; use a warm-up below {steps}"
            )


def as_edits(edits: Edit | str | list[Edit | str] | tuple[Edit | str, ...] | None) -> tuple[Edit, ...]:
    """Normalise the ``edits`` argument: an Edit, a text, or a sequence of those."""
    if edits is None:
        return ()
    if isinstance(edits, (Edit, str)):
        edits = [edits]
    out = []
    for e in edits:
        if isinstance(e, str):
            e = Edit.parse(e)
        if not isinstance(e, Edit):
            raise LeditsError(f"edits must be Edit values or texts like '+sunglasses'; got {e!r}")
        out.append(e)
    return tuple(out)
