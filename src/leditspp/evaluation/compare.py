"""Runs side by side: the per-edit-type means of several eval runs in one table, a column per run.

``leditspp eval shapes --model demo,demo-flow -o OUT`` evaluates each model into ``OUT/<model>/``
(its own metrics.csv, summary.json and report.html) and writes ``OUT/comparison.md`` and
``OUT/comparison.html`` from their summaries: for every edit type (``remove (attention mask)`` and
``remove (noise mask)`` give the mask modes) and every metric some run measured, one row with each
run's mean — success, locality (``others_kept``, ``change_ratio``) and mask IoU next to each other.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..files import atomic_write

COMPARISON = "comparison"  # OUT/comparison.md and OUT/comparison.html


def comparison_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, list[Any]]]:
    """``(edit type, metric, [mean of each run])`` for every edit type and metric any run has, in
    the order they first appear; a run without that pair gives None."""
    types: list[str] = []
    for summary in summaries.values():
        types += [t for t in summary["per_edit_type"] if t not in types]
    rows = []
    for edit_type in types:
        groups = [summary["per_edit_type"].get(edit_type, {}) for summary in summaries.values()]
        metrics: list[str] = []
        for group in groups:
            metrics += [m for m, v in group.items() if m not in metrics and not isinstance(v, dict)]
        rows += [(edit_type, m, [group.get(m) for group in groups]) for m in metrics]
    return rows


def comparison_markdown(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """The comparison as a Markdown table (README-ready)."""
    names = list(summaries)
    lines = [
        "| edit type | metric | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for edit_type, metric, values in comparison_rows(summaries):
        lines.append(f"| {edit_type} | {metric} | " + " | ".join(_fmt(v) for v in values) + " |")
    failed = ", ".join(f"{name}: {s['failed']} of {s['items']}" for name, s in summaries.items())
    return "\n".join([*lines, "", f"failed items — {failed}"]) + "\n"


def write_comparison(out_dir: str | Path, summaries: Mapping[str, Mapping[str, Any]], title: str) -> list[Path]:
    """Write ``OUT/comparison.md`` and ``OUT/comparison.html`` (atomically); returns their paths."""
    out = Path(out_dir)
    names = list(summaries)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["edit type", "metric", *names])
    body = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{html.escape(m)}</td>"
        + "".join(f"<td>{_fmt(v)}</td>" for v in values)
        + "</tr>"
        for t, m, values in comparison_rows(summaries)
    )
    links = " · ".join(f"<a href='{html.escape(n)}/report.html'>{html.escape(n)}</a>" for n in names)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px}"
        "table{border-collapse:collapse;font-variant-numeric:tabular-nums}"
        "th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}"
        "th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}th{background:#f6f6f6}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>each run's report: {links}</p>"
        f"<table><tr>{head}</tr>{body}</table></body></html>\n"
    )
    paths = [out / f"{COMPARISON}.md", out / f"{COMPARISON}.html"]
    texts = [f"# {title}\n\n" + comparison_markdown(summaries), page]
    for path, text in zip(paths, texts, strict=True):
        atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
    return paths


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
