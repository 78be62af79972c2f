"""The one exception users see for bad input, and the type checks that decide it."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from typing import Any


class LeditsError(ValueError):
    """Bad input or an impossible request. The message says what is wrong and how to fix it."""


def is_int(v: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A real number (int or float, Python or NumPy), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


#: The kinds of argument :func:`check_arguments` knows: the test and the words for what it takes.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "text": (lambda v: isinstance(v, (str, os.PathLike)), "a text or path"),
    "text?": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "None or a text / path"),
    "texts": (
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, (str, os.PathLike)) for x in v),
        "a list or tuple of texts (one text is not a list: wrap it, ['+hat'])",
    ),
    "int?": (lambda v: v is None or is_int(v), "None or an integer"),
    "int": (is_int, "an integer"),
    "number?": (lambda v: v is None or is_number(v), "None or a number"),
}


def check_arguments(owner: str, values: dict[str, Any], kinds: dict[str, str]) -> None:
    """Refuse (:class:`LeditsError`) each of ``values`` that is not of its kind in ``kinds`` (keys of
    :data:`KINDS`), naming ``owner`` (``"BatchEdit"``), the argument, what it takes and the value."""
    for name, kind in kinds.items():
        ok, what = KINDS[kind]
        if not ok(values[name]):
            value = values[name]
            raise LeditsError(f"{owner}: {name} must be {what}; got {value!r} ({type(value).__name__})")


def fraction_hint(value: Any, at_one: str) -> str:
    """A hint for a value given where a fraction in [0, 1) belongs: a percentage (1 < v < 100)
    probably meant v/100; exactly 1 gets ``at_one``, the caller's words for why 1 is excluded."""
    if not is_number(value):
        return ""
    if value == 1:
        return f" — {at_one}"
    return f" — did you mean {value / 100:g}?" if 1 < value < 100 else ""
