"""``OUT/report.html``: one self-contained page (inline CSS, images as data URIs) of an eval run.

It shows the summary's tables (per suite, per edit type, per sweep value), a trade-off plot over
the sweep like the paper's Fig. 5 (edit strength against deviation from the input: CLIP against
LPIPS for the photo benchmarks, success against change_ratio for ``shapes``) drawn with
matplotlib's Agg backend, the errors, and a grid of input / edited / mask thumbnails.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import LeditsError
from ..files import atomic_write
from ..jobs import Value
from .runner import IMAGE_PREFIX

REPORT_HTML = "report.html"
THUMB = 112  # px, the longer side of a grid thumbnail
GRID_ROWS = 24  # items shown in the grid
# the trade-off plot's (x, y) when the suite names none or its pair has no data: the first pair with data
PLOT_PAIRS = (("lpips", "clip_score"), ("change_ratio", "success"), ("psnr", "clip_score"), ("mse", "clip_score"))

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .6em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f6f6f6; }
.grid img { width: 112px; image-rendering: pixelated; border: 1px solid #ddd; }
.grid td { text-align: center; vertical-align: middle; }
.err { color: #a00; } .meta { color: #666; }
"""


def write_report(
    out_dir: str | Path,
    rows: Sequence[dict[str, Value]],
    summary: dict[str, Any],
    *,
    title: str,
    plot: tuple[str, str] | None = None,
    sweep_keys: Sequence[str] = (),
) -> Path:
    """Write ``OUT/report.html`` (atomically) and return its path. ``plot``: the (x, y) metrics of
    the trade-off plot (None or absent from the run: the first of :data:`PLOT_PAIRS` it has)."""
    out = Path(out_dir)
    body = [f"<h1>{_esc(title)}</h1>", _counts(summary)]
    body += _section("Per suite", _table(summary["per_suite"]))
    body += _section("Per edit type", _table(summary["per_edit_type"]))
    for key in sweep_keys:
        per_value = summary["per_sweep_value"].get(key, {})
        body += _section(f"Per {key}", _table({k: _flat(v) for k, v in per_value.items()}))
    pair = plot if plot is not None and _has(summary, plot) else _plot_pair(summary)
    if pair is not None:
        body += _section("Trade-off", _tradeoff(summary, pair, sweep_keys))
    if summary["errors"]:
        body += _section("Errors", _errors(summary["errors"]))
    body += _section("Inputs, edits and masks", _grid(out, rows))
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
    page += f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    path = out / REPORT_HTML
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def _section(heading: str, content: str) -> list[str]:
    return [f"<h2>{_esc(heading)}</h2>", content]


def _counts(summary: dict[str, Any]) -> str:
    return f"<p class='meta'>{summary['items']} edited images, {summary['failed']} failed.</p>"


def _flat(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if not isinstance(v, dict)}


def _table(groups: dict[str, dict[str, Any]]) -> str:
    """Groups (name → {metric: mean}) as one HTML table, a column per metric."""
    if not groups:
        return "<p class='meta'>no finished items</p>"
    metrics: list[str] = []
    for group in groups.values():
        metrics += [m for m in _flat(group) if m not in metrics]
    head = "".join(f"<th>{_esc(m)}</th>" for m in ["", *metrics])
    body = "".join(
        "<tr>" + f"<td>{_esc(name)}</td>" + "".join(f"<td>{_fmt(group.get(m))}</td>" for m in metrics) + "</tr>"
        for name, group in groups.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _errors(errors: list[dict[str, str]]) -> str:
    body = "".join(f"<tr><td>{_esc(e['item'])}</td><td class='err'>{_esc(e['error'])}</td></tr>" for e in errors)
    return f"<table><tr><th>item</th><th>error</th></tr>{body}</table>"


def _plot_pair(summary: dict[str, Any]) -> tuple[str, str] | None:
    """The first (x, y) of :data:`PLOT_PAIRS` whose metrics both appear in the summary."""
    return next((pair for pair in PLOT_PAIRS if _has(summary, pair)), None)


def _has(summary: dict[str, Any], pair: tuple[str, str]) -> bool:
    """Whether some edit type has means of both metrics of ``pair``."""
    return any(set(pair) <= set(group) for group in summary["per_edit_type"].values())


def _tradeoff(summary: dict[str, Any], pair: tuple[str, str], sweep_keys: Sequence[str]) -> str:
    """A line per edit type through its (x, y) means at each value of the first sweep key (one
    point per edit type without a sweep), as an inline PNG."""
    x_name, y_name = pair
    key = next((k for k in sweep_keys if summary["per_sweep_value"].get(k)), None)
    curves: dict[str, list[tuple[float, float, str]]] = {}
    if key is None:
        for edit_type, means in summary["per_edit_type"].items():
            if x_name in means and y_name in means:
                curves[edit_type] = [(means[x_name], means[y_name], "")]
    else:
        for label, group in summary["per_sweep_value"][key].items():
            for edit_type, means in group["per_edit_type"].items():
                if x_name in means and y_name in means:
                    curves.setdefault(edit_type, []).append((means[x_name], means[y_name], label))
    if not curves:
        return f"<p class='meta'>no item has both {_esc(x_name)} and {_esc(y_name)}</p>"
    caption = f"{y_name} against {x_name}" + (f" over {key} (points labelled)" if key else "")
    caption += ", means per edit type"
    return f"<p class='meta'>{_esc(caption)}</p>" + _img_tag(_plot_png(curves, x_name, y_name), "trade-off plot")


def _plot_png(curves: dict[str, list[tuple[float, float, str]]], x_name: str, y_name: str) -> bytes:
    """The curves drawn with matplotlib (a bare Figure renders with Agg; pyplot and the user's
    backend are left alone), points labelled with their sweep value."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise LeditsError("the report's plot needs matplotlib: pip install matplotlib") from exc

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot()
    for edit_type, points in curves.items():
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", label=edit_type)
        for x, y, label in points:
            if label:
                value = label.partition("=")[2]
                ax.annotate(value, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if all(0 <= p[1] <= 1 for points in curves.values() for p in points):
        ax.set_ylim(-0.03, 1.03)  # rates and similarities in [0, 1]: show the whole range
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _grid(out: Path, rows: Sequence[dict[str, Value]], limit: int = GRID_ROWS) -> str:
    """Up to ``limit`` finished rows with images: item, then a thumbnail per image column."""
    with_images = [r for r in rows if not r.get("error") and any(k.startswith(IMAGE_PREFIX) and r[k] for k in r)]
    if not with_images:
        return "<p class='meta'>no images</p>"
    names: list[str] = []
    for row in with_images:
        names += [k for k in row if k.startswith(IMAGE_PREFIX) and k not in names]
    head = "".join(f"<th>{_esc(n.removeprefix(IMAGE_PREFIX))}</th>" for n in names)
    body = ""
    for row in with_images[:limit]:
        cells = "".join(f"<td>{_thumb(out, row.get(n))}</td>" for n in names)
        body += f"<tr><td>{_esc(str(row['item']))}<br>{_esc(str(row['edit_type']))}</td>{cells}</tr>"
    more = len(with_images) - limit
    note = f"<p class='meta'>{more} more in metrics.csv and images/</p>" if more > 0 else ""
    return f"<table class='grid'><tr><th>item</th>{head}</tr>{body}</table>{note}"


def _thumb(out: Path, relative: Value) -> str:
    """A thumbnail data URI of ``out/relative``, or a dash where there is none (or it is gone)."""
    if not relative:
        return "–"
    try:
        with Image.open(out / str(relative)) as im:
            im = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
    except OSError:
        return "<span class='err'>missing</span>"
    im.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return _img_tag(buffer.getvalue(), str(relative))


def _img_tag(png: bytes, alt: str) -> str:
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return _esc(str(value))


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
