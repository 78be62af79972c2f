"""Benchmark manifests as published, parsed into :class:`EvalItem` values (no model, no images loaded).

- TEdBench++ (Brack et al. 2024, LEDITS++ §5): ``originals/`` and ``tedbench++.csv`` with columns
  ``img_name, target_text, skip, threshold, edit_guidance_scale, seed, steps``; every row carries
  its own editor settings (``steps``, ``skip``, ``seed``) and edit settings (s_e, λ).
- PIE-Bench (Ju et al. 2024, "Direct Inversion"): ``mapping_file.json`` keyed by item id, images
  under ``annotation_images/``; the bracketed words of ``original_prompt`` are the concepts to
  remove, those of ``editing_prompt`` the concepts to add; ``mask`` is a run-length encoding of
  the edited region on the 512 × 512 image (see :func:`decode_rle`).

Both files are read as UTF-8 (a byte-order mark and any line ends accepted). Every setting a row
gives goes through the editor's own checks (:func:`.checks.check_setting`) here, before any model
loads. A broken manifest — another encoding, a column twice, a bad cell, a prompt that is null
rather than text — raises :class:`~leditspp.errors.LeditsError` naming the file, the row or item,
the column and the fix; the CLI prints it as one line and exits with code 2.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..edits import Edit
from ..errors import LeditsError, is_int
from .checks import check_setting

TEDBENCH_CSV = "tedbench++.csv"
TEDBENCH_IMAGES = "originals"
TEDBENCH_COLUMNS = ("img_name", "target_text", "skip", "threshold", "edit_guidance_scale", "seed", "steps")

PIEBENCH_JSON = "mapping_file.json"
PIEBENCH_IMAGES = "annotation_images"
PIEBENCH_KEYS = ("image_path", "original_prompt", "editing_prompt", "editing_type_id", "mask")
#: The PIE-Bench keys that must hold text (null is refused, never read as the word "None").
_PIEBENCH_TEXTS = ("image_path", "original_prompt", "editing_prompt")
#: PIE-Bench's masks are drawn on the 512 × 512 images, flattened row-major.
PIEBENCH_MASK_SHAPE = (512, 512)
#: ``editing_type_id`` → the edit type's name, as in the PIE-Bench paper (Ju et al. 2024, Tab. 1).
PIEBENCH_EDIT_TYPES = {
    "0": "random",
    "1": "change object",
    "2": "add object",
    "3": "delete object",
    "4": "change attribute (content)",
    "5": "change attribute (pose)",
    "6": "change attribute (color)",
    "7": "change attribute (material)",
    "8": "change background",
    "9": "change style",
}

_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_SEED_MODULUS = 2**64


@dataclass(frozen=True)
class EvalItem:
    """One benchmark item: an input image and the edits to apply to it.

    ``params`` holds the editor settings the benchmark fixes for this item (``steps``, ``skip``,
    ``seed``; empty where the runner's defaults apply). ``mask`` is the benchmark's edited region,
    (H, W) bool with True inside the edit, or None; PIE-Bench's is drawn on its 512 × 512 images
    (resize it, nearest, for another size). ``target_prompt`` is the text the
    CLIP score compares the edited image with; ``info`` keeps the manifest's other fields.
    """

    item_id: str
    image_path: Path
    edits: tuple[Edit, ...]
    params: dict[str, Any] = field(default_factory=dict)
    source_prompt: str | None = None
    target_prompt: str | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    edit_type: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    pixels: Any = field(default=None, compare=False, repr=False)  # the image, read (Ray ships it to workers)


# --- TEdBench++ -------------------------------------------------------------------------------


def parse_seed(text: str) -> int:
    """A seed from a manifest cell, as an integer in [0, 2**64) (what ``torch.manual_seed`` takes).

    TEdBench++ publishes seeds as floats in scientific notation (``4.39383222278441E+17``): their
    lowest digits are already lost, so the rule is ``int(float(text)) % 2**64`` — the integer the
    binary float denotes (``4.39383222278441E+17`` → 439383222278441024, what pandas or ``float``
    read), wrapped into the unsigned 64-bit range as torch wraps negative seeds. Plain
    integers (``"42"``) are read exactly, without a round trip through float.
    """
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        value = float(text)  # ValueError for non-numbers; OverflowError / ValueError for inf / nan below
        if not np.isfinite(value):
            raise ValueError(f"seed must be finite; got {text!r}") from None
        value = int(value)
    return value % _SEED_MODULUS


def read_tedbench(folder: str | Path) -> list[EvalItem]:
    """Read a TEdBench++ folder: ``folder/tedbench++.csv`` and images in ``folder/originals/``.

    One item per row, ``item_id`` = ``"<row>_<image stem>"`` (``"001_cat"``; rows count from 1
    after the header, as an image appears in several rows; safe as a file name); the target
    text is the concept to add, with the row's ``edit_guidance_scale`` as s_e and ``threshold``
    as λ.
    """
    folder = Path(folder)
    csv_path = _require_file(folder / TEDBENCH_CSV, "a TEdBench++ folder holds tedbench++.csv and originals/")
    rows = _read_csv(csv_path)
    return [_tedbench_item(csv_path, folder / TEDBENCH_IMAGES, number, row) for number, row in rows]


def _read_text(path: Path, what: str) -> str:
    """The text of ``path``, UTF-8 (a byte-order mark is dropped), or a LeditsError naming the
    file, the encoding and the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LeditsError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}; saved as Latin-1 or "
            f"Windows-1252?); {what} is UTF-8 — save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of ``path`` with stripped header names and cells, numbered from 1; blank rows
    skipped. UTF-8 with or without a byte-order mark, any line ends (LF, CRLF, CR)."""
    text = _read_text(path, "TEdBench++'s CSV")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = _header(path, next(reader, []))
        rows = []
        for number, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise LeditsError(
                    f"{path}, row {number}: {len(cells)} cells for {len(header)} columns; "
                    "fix the row (quote texts that contain commas)"
                )
            rows.append((number, {h: c.strip() for h, c in zip(header, cells, strict=True)}))
    except csv.Error as e:
        raise LeditsError(f"{path}, line {reader.line_num}: not valid CSV ({e}); fix the line") from None
    if not rows:
        raise LeditsError(f"{path}: no rows after the header; add the benchmark's rows (one edit each)")
    return rows


def _header(path: Path, cells: list[str]) -> list[str]:
    """The stripped column names, checked: every TEdBench++ column present, none twice."""
    header = [h.strip() for h in cells]
    missing = [c for c in TEDBENCH_COLUMNS if c not in header]
    if missing:
        raise LeditsError(
            f"{path}: missing column(s) {', '.join(missing)}; TEdBench++'s header is "
            f"{', '.join(TEDBENCH_COLUMNS)} — use the published tedbench++.csv or add the column(s)"
        )
    for k, name in enumerate(header):
        if name in header[:k]:
            raise LeditsError(
                f"{path}: column {name or '(unnamed)'} appears twice in the header (columns "
                f"{header.index(name) + 1} and {k + 1}); keep one, so no cell is read in place of another"
            )
    return header


def _tedbench_item(csv_path: Path, images: Path, number: int, row: dict[str, str]) -> EvalItem:
    """One TEdBench++ row as an :class:`EvalItem`; any bad cell names the file, row and column."""
    where = f"{csv_path}, row {number} ({row['img_name'] or 'no image name'})"
    if not row["target_text"]:
        raise LeditsError(f"{where}: target_text is empty; give the concept to add, e.g. 'a sitting dog'")
    values = {}
    for column, (key, parse) in _TEDBENCH_SETTINGS.items():
        values[key] = _cell(where, row, column, parse)
        try:
            check_setting(key, values[key], concept=row["target_text"])
        except LeditsError as e:
            raise LeditsError(f"{where}, column {column}: {e}") from None
    image = _require_file(images / row["img_name"], f"put the image in {images} or fix img_name", where)
    edit = Edit(row["target_text"], scale=values["scale"], threshold=values["threshold"])
    return EvalItem(
        item_id=f"{number:03d}_{Path(row['img_name']).stem}",
        image_path=image,
        edits=(edit,),
        params={"steps": values["steps"], "skip": values["skip"], "seed": values["seed"]},
        target_prompt=row["target_text"],
        edit_type="tedbench++",
    )


def _parse_count(text: str) -> int:
    """A whole number written as ``50`` or ``50.0``."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(f"{text!r} is not a whole number")
    return int(value)


#: The TEdBench++ columns that hold settings: the evaluation setting each gives, and how its cell reads.
_TEDBENCH_SETTINGS = {
    "steps": ("steps", _parse_count),
    "skip": ("skip", float),
    "seed": ("seed", parse_seed),
    "edit_guidance_scale": ("scale", float),
    "threshold": ("threshold", float),
}


def _cell(where: str, row: dict[str, str], column: str, parse: Any) -> Any:
    """``parse(row[column])``, or a LeditsError naming the place, the column and the value."""
    try:
        return parse(row[column])
    except (ValueError, OverflowError) as e:
        raise LeditsError(f"{where}: column {column} = {row[column]!r} is not a number ({e}); fix the cell") from None


# --- PIE-Bench --------------------------------------------------------------------------------


def decode_rle(runs: list[int], shape: tuple[int, int] = PIEBENCH_MASK_SHAPE, *, border: bool = True) -> np.ndarray:
    """PIE-Bench's mask: ``runs`` = [start₀, length₀, start₁, length₁, …] over the row-major
    flattened (H, W) image, each run set to True; returns (H, W) bool.

    As PIE-Bench's own ``mask_decode`` (DirectInversion's evaluation code), a run is clipped at
    the image's end and, with ``border`` (the published convention, "to avoid annotation errors
    in boundary"), the outermost rows and columns count as edited — so metrics outside the mask
    match the published tables. Raises ValueError on a malformed encoding.
    """
    if not isinstance(runs, list) or len(runs) % 2:
        raise ValueError("the mask must be a list of start/length pairs (an even count of integers)")
    if not all(is_int(v) and v >= 0 for v in runs):
        raise ValueError("mask runs must be integers ≥ 0")
    length = shape[0] * shape[1]
    flat = np.zeros(length, dtype=bool)
    for start, count in zip(runs[::2], runs[1::2], strict=True):
        if start >= length:
            raise ValueError(f"a run starts at {start}, beyond the {shape[0]}×{shape[1]} image")
        flat[start : start + count] = True
    mask = flat.reshape(shape)
    if border:
        mask[[0, -1], :] = True
        mask[:, [0, -1]] = True
    return mask


def bracketed(prompt: str) -> list[str]:
    """The bracketed words of a PIE-Bench prompt: ``"a [red] [car]"`` → ``["red", "car"]``."""
    return [w.strip() for w in _BRACKETED.findall(prompt) if w.strip()]


def plain_prompt(prompt: str) -> str:
    """The prompt without its brackets: ``"a [red] car"`` → ``"a red car"``."""
    return prompt.replace("[", "").replace("]", "")


def piebench_edits(original_prompt: str, editing_prompt: str) -> tuple[Edit, ...]:
    """Remove the original's bracketed words and add the editing prompt's (default s_e and λ).

    A word bracketed in both prompts is unchanged and gives no edit.
    """
    removed, added = bracketed(original_prompt), bracketed(editing_prompt)
    edits = [Edit(w, remove=True) for w in removed if w not in added]
    return tuple(edits + [Edit(w) for w in added if w not in removed])


def read_piebench(folder: str | Path) -> list[EvalItem]:
    """Read a PIE-Bench folder: ``folder/mapping_file.json`` and images in ``folder/annotation_images/``."""
    folder = Path(folder)
    fix = "a PIE-Bench folder holds mapping_file.json and annotation_images/"
    json_path = _require_file(folder / PIEBENCH_JSON, fix)
    try:
        mapping = json.loads(_read_text(json_path, "PIE-Bench's mapping_file.json"))
    except json.JSONDecodeError as e:
        raise LeditsError(f"{json_path}: not valid JSON ({e}); use the published mapping_file.json") from None
    if not isinstance(mapping, dict):
        raise LeditsError(f"{json_path}: expected an object keyed by item id; got {type(mapping).__name__}")
    if not mapping:
        raise LeditsError(f"{json_path}: no items; use the published mapping_file.json")
    return [_piebench_item(json_path, folder / PIEBENCH_IMAGES, str(k), v) for k, v in mapping.items()]


def _piebench_item(json_path: Path, images: Path, item_id: str, entry: Any) -> EvalItem:
    """One PIE-Bench entry as an :class:`EvalItem`; errors name the file and the item."""
    where = f"{json_path}, item {item_id}"
    if not isinstance(entry, dict):
        raise LeditsError(f"{where}: expected an object with {', '.join(PIEBENCH_KEYS)}")
    missing = [k for k in PIEBENCH_KEYS if k not in entry]
    if missing:
        raise LeditsError(f"{where}: missing key(s) {', '.join(missing)}; add them as in the published file")
    for key in _PIEBENCH_TEXTS:
        if not isinstance(entry[key], str):
            raise LeditsError(
                f"{where}: {key} must be text; got {json.dumps(entry[key])} — give it as in the published file, "
                'or "" for an empty prompt (null is refused, not read as the text "None")'
            )
    original, editing = entry["original_prompt"], entry["editing_prompt"]
    try:
        mask = decode_rle(entry["mask"])
        edits = piebench_edits(original, editing)
    except (ValueError, LeditsError) as e:
        raise LeditsError(f"{where}: {e}; fix the entry") from None
    if not edits:
        raise LeditsError(
            f"{where}: no bracketed words differ between original_prompt {original!r} and editing_prompt "
            f"{editing!r}; bracket the changed words, e.g. 'a [red] car' → 'a [blue] car'"
        )
    type_id = str(entry["editing_type_id"])
    return EvalItem(
        item_id=item_id,
        image_path=_require_file(images / entry["image_path"], f"put it in {images} or fix image_path", where),
        edits=edits,
        source_prompt=plain_prompt(original),
        target_prompt=plain_prompt(editing),
        mask=mask,
        edit_type=PIEBENCH_EDIT_TYPES.get(type_id, type_id),
        info={k: entry[k] for k in ("editing_type_id", "blended_word", "editing_instruction") if k in entry},
    )


def _require_file(path: Path, fix: str, where: str | None = None) -> Path:
    """``path`` if it is a file, else a LeditsError naming it, the manifest entry ``where`` and ``fix``."""
    if not path.is_file():
        raise LeditsError(f"{where + ': ' if where else ''}{path}: file not found; {fix}")
    return path


#: Suite name (as ``leditspp eval SUITE DIR`` spells it) → the reader of its published folder.
READERS = {"tedbench": read_tedbench, "piebench": read_piebench}
