"""The evaluation runner: items in, ``metrics.csv`` and ``summary.json`` out, resumable.

A suite turns its data into :class:`~leditspp.jobs.Item` values and gives a pure function ``evaluate_item(item)
-> Row``. The runner owns everything else: the order, ``--sweep`` expansion (items × values),
resume (an item whose row is already in ``OUT/metrics.csv`` is not computed again; rows of items
this run does not ask for are kept as they are; every row names the model that made it), atomic writes
of the CSV, the images and the summary after every item, and failures (an item that raises gets a
row with its error; the run goes on). Because ``evaluate_item`` only maps a value to a value, the
computing can be handed to a worker pool: ``run(..., map_items=...)`` takes any function that
turns the items to do into :class:`~leditspp.jobs.Outcome` values (in any order; :mod:`leditspp.distributed`
does it on Ray), and this module still does all the ordering, resuming and writing.

Outputs under ``OUT``:
    metrics.csv    one row per edited image: item, suite, edit_type, parameters, metrics, image
                   paths (``image_<name>``), seconds, error
    summary.json   means over rows without error: per suite, per edit type, per sweep value
    images/        ``<item>.<name>.png`` for every image a row returns
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import LeditsError
from ..files import DISK_ERRORS, WriteError, atomic_write, folder_lock
from ..jobs import Item, MapItems, Outcome, RunStats, Value, by_group, serial_map

logger = logging.getLogger(__name__)

METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"
IMAGES_DIR = "images"
FIXED_COLUMNS = ("item", "suite", "edit_type")
TAIL_COLUMNS = ("seconds", "error")
IMAGE_PREFIX = "image_"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Row:
    """What ``evaluate_item`` returns: metric name → value, and named images to write."""

    metrics: dict[str, Value]
    images: dict[str, Image.Image] = field(default_factory=dict)


EvaluateItem = Callable[[Item], Row]


def parse_sweep(specs: Sequence[str]) -> dict[str, list[float]]:
    """``["scale=5,10,15", "threshold=0.8,0.9"]`` → ``{"scale": [5, 10, 15], "threshold": [0.8, 0.9]}``
    (whole numbers as ints)."""
    sweep: dict[str, list[float]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        try:
            numbers = [_parse_number(v) for v in values.split(",") if v.strip()]
        except ValueError:
            numbers = []
        if not sep or not key or not numbers:
            raise LeditsError(f"--sweep {spec!r} must be NAME=V1,V2,… with numbers, e.g. --sweep scale=5,10,15")
        if key in sweep:
            raise LeditsError(f"--sweep names {key!r} twice; give its values once: --sweep {key}=V1,V2,…")
        sweep[key] = numbers
    check_sweep(sweep)
    return sweep


def check_sweep(sweep: dict[str, list[float]]) -> None:
    """Refuse a value given twice for one sweep name (``scale=5,5`` or ``scale=5,5.0``): both copies
    would be the same item."""
    for key, values in sweep.items():
        seen = [_number(v) for v in values]
        twice = next((v for k, v in enumerate(seen) if v in seen[:k]), None)
        if twice is not None:
            raise LeditsError(
                f"--sweep {key}={','.join(seen)} gives {key}={twice} twice; give each value once: "
                f"--sweep {key}={','.join(dict.fromkeys(seen))}"
            )


def _parse_number(text: str) -> float:
    text = text.strip()
    return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)


def expand_sweep(items: Iterable[Item], sweep: dict[str, list[float]]) -> list[Item]:
    """Every combination of sweep values × items (all items of one sweep point together, so a
    suite's memo of shared work holds); each copy's params and id carry its values."""
    items = list(items)
    if not sweep:
        return items
    keys = list(sweep)
    expanded = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        suffix = ".".join(f"{k}={_number(v)}" for k, v in point.items())
        expanded += [replace(item, id=f"{item.id}.{suffix}", params={**item.params, **point}) for item in items]
    return expanded


def run(
    items: Sequence[Item],
    evaluate_item: EvaluateItem | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    sweep_keys: Sequence[str] = (),
    map_items: MapItems | None = None,
    stats: RunStats | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate every item not already done, writing ``OUT`` after each; returns the summary (of
    every row in ``metrics.csv``).

    Without ``resume`` an ``OUT`` that already holds a ``metrics.csv`` is refused (nothing is
    overwritten behind the user's back). With ``resume``, rows of finished items are kept and
    those items skipped; items whose earlier row has an error are tried again; rows of items this
    run does not ask for (another sweep value, past a ``--limit``) are kept as they are. ``tags``
    (``{"model": "demo"}``) are columns every row carries: resuming rows made with another value
    is refused.

    ``map_items`` computes the items to do, a group's items together (default:
    ``serial_map(evaluate_item)``, in this process; ``evaluate_item`` may then be None); outcomes
    may come back in any order, and each is written here, once, as it arrives. ``stats`` is
    counted as they do (read it for a progress bar).
    """
    out = Path(out_dir)
    _check_unique(items)
    with folder_lock(out):
        return _run(items, evaluate_item, out, resume, progress, sweep_keys, map_items, stats, tags or {})


def _run(
    items: Sequence[Item],
    evaluate_item: EvaluateItem | None,
    out: Path,
    resume: bool,
    progress: Progress | None,
    sweep_keys: Sequence[str],
    map_items: MapItems | None,
    stats: RunStats | None,
    tags: dict[str, str],
) -> dict[str, Any]:
    params = sorted({key for item in items for key in item.params})
    previous = _previous_rows(out, resume, tags)
    done = {key: row for key, row in previous.items() if not row["error"]}
    for item in items:
        if item.id in done:
            _check_same_params(item, done[item.id])
    ids = {item.id for item in items}
    rows = [done[item.id] for item in items if item.id in done]
    kept = [row for key, row in previous.items() if key not in ids]  # not asked for this time: kept as they are
    todo = by_group([item for item in items if item.id not in done])
    total, finished = len(items), len(rows)
    stats = stats if stats is not None else RunStats()
    stats.total, stats.skipped = total, finished
    if progress is not None:
        progress(finished, total)
    if map_items is None:
        if evaluate_item is None:
            raise TypeError("run() needs evaluate_item or map_items")
        map_items = serial_map(evaluate_item)
    start = time.perf_counter()
    for outcome in map_items(todo):
        rows.append(_record(outcome, out, tags))
        stats.count(str(rows[-1]["error"]), start)
        finished += 1
        _save(out, _in_order(rows, items) + kept, summarize(rows + kept, sweep_keys, params))
        if progress is not None:
            progress(finished, total)
    rows = _in_order(rows, items) + kept
    summary = summarize(rows, sweep_keys, params)
    _save(out, rows, summary)
    return summary


def _save(out: Path, rows: list[dict[str, Value]], summary: dict[str, Any]) -> None:
    """``metrics.csv`` and ``summary.json`` (atomic: a failed write leaves the previous ones whole);
    a full or read-only disk is a :class:`LeditsError` saying so and how to go on."""
    try:
        write_rows(out / METRICS_CSV, rows)
        write_summary(out / SUMMARY_JSON, summary)
    except (OSError, WriteError) as exc:
        raise LeditsError(
            f"cannot write the results in {out} ({exc.strerror or exc}); the files written before are intact — "
            "free space there (or make it writable) and rerun with --resume"
        ) from exc


def pending(items: Sequence[Item], out_dir: str | Path, resume: bool, tags: dict[str, str] | None = None) -> list[Item]:
    """The items :func:`run` would compute: those without a finished row in ``OUT/metrics.csv``
    (all of them without ``resume``; an earlier run without ``resume``, or one with other ``tags``,
    is refused as in ``run``)."""
    previous = _previous_rows(Path(out_dir), resume, tags or {})
    return [item for item in items if item.id not in previous or previous[item.id]["error"]]


def _record(outcome: Outcome, out: Path, tags: dict[str, str]) -> dict[str, Value]:
    """One CSV row for an outcome: its metrics and image paths (images written here), or its error."""
    item = outcome.item
    row: dict[str, Value] = {"item": item.id, "suite": item.suite, "edit_type": item.edit_type, **tags}
    row.update(item.params)
    row["error"] = outcome.error
    if outcome.error:
        logger.warning("item %s failed: %s", item.id, outcome.error)
    if outcome.row is not None and not outcome.error:
        row.update(outcome.row.metrics)
        try:
            row.update(_write_images(out, item.id, outcome.row.images))
        except (OSError, WriteError) as exc:
            if exc.errno in DISK_ERRORS:  # every next item would fail alike: stop the run
                raise LeditsError(
                    f"cannot write the images in {out} ({exc.strerror}); the results written before are intact — "
                    "free space there (or make it writable) and rerun with --resume"
                ) from exc
            logger.warning("item %s: cannot write its images: %s", item.id, exc)
            row["error"] = f"{type(exc).__name__}: {exc}"
    row["seconds"] = outcome.seconds
    return row


def _write_images(out: Path, item_id: str, images: dict[str, Image.Image]) -> dict[str, str]:
    """Save each image as ``images/<item>.<name>.png`` (atomic); columns ``image_<name>`` → path
    relative to ``out``."""
    if not images:
        return {}
    folder = out / IMAGES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    columns = {}
    for name, image in images.items():
        path = folder / f"{_safe(item_id)}.{_safe(name)}.png"
        atomic_write(path, lambda tmp, im=image: im.save(tmp, format="PNG"))
        columns[IMAGE_PREFIX + name] = path.relative_to(out).as_posix()
    return columns


def _check_unique(items: Sequence[Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise LeditsError(f"two evaluation items share the id {item.id!r}; item ids must be unique")
        seen.add(item.id)


def _previous_rows(out: Path, resume: bool, tags: dict[str, str]) -> dict[str, dict[str, Value]]:
    """The rows of an earlier run (``resume``), by item id, finished or failed; rows made with
    other ``tags`` (another model) are refused."""
    csv_path = out / METRICS_CSV
    if not csv_path.exists():
        return {}
    if not resume:
        raise LeditsError(
            f"{csv_path} exists from an earlier run; pass --resume to continue it, or choose another output folder"
        )
    rows = read_rows(csv_path)
    for key, value in tags.items():
        other = next((row for row in rows if row.get(key) not in (None, value)), None)
        if other is not None:
            raise LeditsError(
                f"cannot resume: {csv_path} holds rows made with {key} {other[key]!r} (item {other['item']!r}), "
                f"this run asks {key} {value!r}; resume with --{key} {other[key]}, or choose another output folder"
            )
    return {row["item"]: row for row in rows}


def _check_same_params(item: Item, row: dict[str, Value]) -> None:
    """Refuse to resume a row made with other settings than ``item`` asks for (mixed numbers)."""
    changed = [k for k, v in item.params.items() if row.get(k) != (None if v == "" else v)]
    if changed:
        was = ", ".join(f"{k}={row.get(k)!r}" for k in changed)
        now = ", ".join(f"{k}={item.params[k]!r}" for k in changed)
        raise LeditsError(
            f"cannot resume: item {item.id!r} was evaluated with {was}, this run asks {now}; "
            "resume with the same settings, or choose another output folder"
        )


def _in_order(rows: list[dict[str, Value]], items: Sequence[Item]) -> list[dict[str, Value]]:
    order = {item.id: k for k, item in enumerate(items)}
    return sorted(rows, key=lambda row: order.get(str(row["item"]), len(order)))


# -- the CSV ----------------------------------------------------------------------------------------


def columns_of(rows: Sequence[dict[str, Value]]) -> list[str]:
    """Fixed columns, then every other key in first-seen order, then image paths, seconds, error."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    middle = [k for k in keys if k not in FIXED_COLUMNS + TAIL_COLUMNS and not k.startswith(IMAGE_PREFIX)]
    images = [k for k in keys if k.startswith(IMAGE_PREFIX)]
    return [*FIXED_COLUMNS, *middle, *images, *TAIL_COLUMNS]


def write_rows(path: Path, rows: Sequence[dict[str, Value]]) -> None:
    """Write ``rows`` as CSV atomically; a missing value is an empty cell."""
    columns = columns_of(rows)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in columns})

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def read_rows(path: Path) -> list[dict[str, Value]]:
    """Rows of a ``metrics.csv``, cells parsed back to numbers, booleans, None or text. A last row
    cut off mid-line (the file does not end with a line end) is left out with a warning: its values
    may be cut, so its item is evaluated again."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
        if "\x00" in text:
            line = text.count("\n", 0, text.index("\x00")) + 1
            raise LeditsError(
                f"{path} holds a NUL byte on line {line}, so it is not a metrics file as leditspp writes it (a "
                "damaged copy?); remove it to start the run afresh — it is left as it is"
            )
        raw = list(csv.DictReader(io.StringIO(text, newline="")))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise LeditsError(f"cannot read {path} ({exc}); remove it to start the run afresh") from exc
    if raw and "item" not in raw[0]:
        raise LeditsError(f"{path} has no 'item' column, so it is not a leditspp metrics file; choose another folder")
    if raw and not text.endswith(("\n", "\r")):
        logger.warning("%s: the last row (item %r) is cut off; that item is evaluated again", path, raw[-1]["item"])
        raw = raw[:-1]
    for line, row in enumerate(raw, start=2):  # a short row has None values, a long one a None key
        if None in row or None in row.values() or not row["item"]:
            raise LeditsError(
                f"{path}, row {line - 1}: the row does not fit the header (a hand edit or a damaged file); fix "
                "that line or remove the file to start the run afresh — it is left as it is"
            )
    rows = [{k: _parse(v) for k, v in row.items()} for row in raw]
    for row in rows:
        row["item"] = str(row["item"])
        row["error"] = row.get("error") or ""
    return rows


def _cell(value: Value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _parse(text: str | None) -> Value:
    if text is None or text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if re.fullmatch(r"-?\d+", text):
        return int(text)  # exactly: a seed above 2**53 is no float
    try:
        return float(text)
    except ValueError:
        return text


# -- the summary --------------------------------------------------------------------------------------


def summarize(
    rows: Sequence[dict[str, Value]], sweep_keys: Sequence[str] = (), param_keys: Sequence[str] = ()
) -> dict[str, Any]:
    """Means of every numeric column but ``param_keys`` over rows without error (booleans as
    rates): per suite, per edit type, and per sweep value (overall and per edit type); plus counts
    and the errors."""
    ok = [r for r in rows if not r.get("error")]
    metrics = [m for m in _metric_columns(ok) if m not in param_keys]
    summary: dict[str, Any] = {
        "items": len(rows),
        "failed": len(rows) - len(ok),
        "errors": [{"item": r["item"], "error": r["error"]} for r in rows if r.get("error")],
        "per_suite": _means_by(ok, metrics, lambda r: str(r["suite"])),
        "per_edit_type": _means_by(ok, metrics, lambda r: str(r["edit_type"])),
        "per_sweep_value": {},
    }
    for key in sweep_keys:
        by_value = _means_by(ok, metrics, lambda r, k=key: f"{k}={_number(r.get(k))}")
        for label in by_value:
            subset = [r for r in ok if f"{key}={_number(r.get(key))}" == label]
            by_value[label]["per_edit_type"] = _means_by(subset, metrics, lambda r: str(r["edit_type"]))
        summary["per_sweep_value"][key] = by_value
    return summary


def _metric_columns(rows: Sequence[dict[str, Value]]) -> list[str]:
    """Columns holding a number or boolean in some row, but not the identity or image paths."""
    columns = columns_of(rows)
    return [
        c
        for c in columns
        if c not in (*FIXED_COLUMNS, "error")
        and not c.startswith(IMAGE_PREFIX)
        and any(isinstance(r.get(c), (int, float)) for r in rows)
    ]


def _means_by(
    rows: Sequence[dict[str, Value]], metrics: Sequence[str], key: Callable[[dict[str, Value]], str]
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Value]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return {name: {"n": len(group), **_means(group, metrics)} for name, group in groups.items()}


def _means(rows: Sequence[dict[str, Value]], metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each metric over the rows with a finite value (PSNR of identical images is inf)."""
    means = {}
    for m in metrics:
        values = [float(r[m]) for r in rows if isinstance(r.get(m), (int, float)) and math.isfinite(r[m])]
        if values:
            means[m] = sum(values) / len(values)
    return means


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """``summary.json``, atomically."""
    text = json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def _number(value: Any) -> str:
    """5.0 → "5", 0.25 → "0.25": sweep values as people write them."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _safe(name: str) -> str:
    """A file-name-safe form of an item id or image name."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", name)
