"""mkdocs hook: a page that cites internal notes fails the build (``mkdocs build --strict``).

Readers cannot see the project's tracker or design notes, so rendered text must not point at them:
"issue 34", "SPEC A2". Docstrings pass through ``docs/hooks/docstrings.py`` first.
"""

from __future__ import annotations

import html
import logging
import re

log = logging.getLogger("mkdocs.hooks.public_text")
INTERNAL = re.compile(r"\bSPEC [A-Z]|\b[Ii]ssues? #?\d+|\bDESIGN\.md\b")


def internal_references(text: str) -> list[str]:
    """The phrases of ``text`` (HTML or Markdown) that cite internal notes."""
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return [m.group(0) for m in INTERNAL.finditer(plain)]


def on_page_content(content: str, page, config, files) -> str:  # mkdocs passes page, config, files
    for phrase in internal_references(content):
        log.warning("%s cites an internal note readers cannot see: %r", page.file.src_uri, phrase)
    return content
