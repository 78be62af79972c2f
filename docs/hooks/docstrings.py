"""Griffe extension for the API reference: docstrings written for Sphinx-style readers render as
Markdown, and the references to internal notes that some docstrings carry are left out.

- ``:func:`~leditspp.x.name``` (any role, ``~`` or not) becomes the code span ``name`` (or the
  full target without ``~``);
- parenthesised references such as ``(paper Eq. 13; SPEC A3, A8)`` keep only their public part
  (``(paper Eq. 13)``) and ``(issue 25)`` goes; "the README" becomes "the documentation".
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc|const|py:\w+):`(~?)([^`]+)`")
PARENS = re.compile(r" ?\(([^()]*)\)")
INTERNAL = re.compile(r"^(?:SPEC\b.*|[Ii]ssues? \d+.*|item \d+|[A-Z]\d+|Part [A-Z].*|[A-Z] §.*)$")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"``{target.rsplit('.', 1)[-1] if match.group(1) else target}``"


def _parens(match: re.Match[str]) -> str:
    text = match.group(1)
    if not re.search(r"\bSPEC\b|\b[Ii]ssues? \d", text):
        return match.group(0)
    parts = [p.strip() for p in re.split(r"[;,]", text)]
    internal = False
    kept = []
    for part in parts:
        if part.startswith("SPEC") or re.match(r"[Ii]ssues? \d", part):
            internal = True
        elif not (internal and INTERNAL.match(part)):
            kept.append(part)
    if not kept:
        return ""
    return f"{' ' if match.group(0).startswith(' ') else ''}({'; '.join(kept)})"


def clean(text: str) -> str:
    """The docstring ``text`` as the API reference shows it."""
    text = ROLE.sub(_role, text)
    text = PARENS.sub(_parens, text)
    return text.replace("see the README", "see the documentation")


class PublicDocstrings(griffe.Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = clean(obj.docstring.value)
