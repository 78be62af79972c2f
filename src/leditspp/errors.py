"""The one exception users see for bad input, and the type checks that decide it."""

from __future__ import annotations

import numbers
from typing import Any


class LeditsError(ValueError):
    """Bad input or an impossible request. The message says what is wrong and how to fix it."""


def is_int(v: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A real number (int or float, Python or NumPy), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def fraction_hint(value: Any, at_one: str) -> str:
    """A hint for a value given where a fraction in [0, 1) belongs: a percentage (1 < v < 100)
    probably meant v/100; exactly 1 gets ``at_one``, the caller's words for why 1 is excluded."""
    if not is_number(value):
        return ""
    if value == 1:
        return f" — {at_one}"
    return f" — did you mean {value / 100:g}?" if 1 < value < 100 else ""
