"""The one exception users see for bad input: it names the problem and the fix."""

from __future__ import annotations


class LeditsError(ValueError):
    """Bad input or an impossible request. The message says what is wrong and how to fix it."""
