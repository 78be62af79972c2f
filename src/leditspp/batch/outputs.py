"""What a batch edit writes: each job's files (the edited image with its recipe, the mask
overlays), atomically, and ``OUT/edit-log.csv`` when there are several inputs."""

from __future__ import annotations

import csv
import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..io import mask_overlays, png_recipe_text, save_image
from ..lora import Lora, parse_recorded
from ..recipes import INVERSION_SETTINGS

OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
EDIT_LOG = "edit-log.csv"
_MISSING = object()  # a key a stored recipe lacks
#: What a recipe written before it recorded these keys meant: no base, no LoRAs.
_UNRECORDED: dict[str, Any] = {"base": None, "loras": []}

#: A file to write: (path, image, PNG metadata).
File = tuple[Path, Any, dict[str, Any]]


def job_paths(out: Path, n_edits: int, masks: bool) -> list[Path]:
    """The files a job writes: its output, and with ``masks`` one overlay per concept."""
    return [out, *(out.with_name(f"{out.stem}.mask-{k}.png") for k in range(1, n_edits + 1) if masks)]


def output_files(job: Any, result: Any, recipe: dict[str, Any], masks: bool) -> list[File]:
    """What to write for a job: with ``masks`` each concept's mask overlay, then the edited image
    with its ``recipe`` — the output last: an output that exists is a finished job (resume)."""
    overlays = mask_overlays(result.images[0], result.masks[:, 0]) if masks else []
    paths = job_paths(job.out, len(overlays), bool(overlays))
    metadata = [{"leditspp": __version__, "mask_of": edit.to_dict()} for edit in result.edits[: len(overlays)]]
    files = list(zip(paths[1:], overlays, metadata, strict=True))
    return [*files, (job.out, result.images[0], recipe)]


def output_recipe(job: Any, model: str, info: Any, inversion_file: str | None) -> dict[str, Any]:
    """What reproduces the output (``--recipe OUT.png``): the settings, with those the inversion
    fixes as it recorded them, the edits, and informational keys (see :mod:`leditspp.recipes`)."""
    return {
        "leditspp": __version__,
        **_asked(job, model, info, inversion_file),
        **model_files(info.base or None, [str(lora) for lora in parse_recorded(info.loras)]),
        "fingerprint": info.model,
        "family": info.family,
        "dtype": info.dtype,
    }


def _asked(job: Any, model: str, info: Any | None, inversion_file: str | None) -> dict[str, Any]:
    """The recipe keys a run decides: settings (those the inversion fixes from ``info`` where it
    is known), model, source, edits."""
    fixed = {key: getattr(info, key) for key in INVERSION_SETTINGS if key != "seed"} if info is not None else {}
    return {
        **job.settings,
        "model": model,
        **fixed,
        "seed": job.settings["seed"] if job.path else None,  # a saved inversion does not record its seed
        "source": Path(job.path).name if job.path else None,
        "inversion": inversion_file,
        "edits": [e.to_dict() for e in job.edits],
    }


def model_files(base: str | None, loras: list[str]) -> dict[str, Any]:
    """The recipe's record of a single file's base and the LoRAs (``PATH:SCALE``, paths absolute),
    for information: a re-run names them with ``--base`` and ``--lora``."""
    return {"base": base, "loras": [str(Lora.parse(lora)) for lora in loras]}


def wanted_recipe(job: Any, model: str, inversion_file: str | None, files: dict[str, Any]) -> dict[str, Any]:
    """The recipe a planned job's output will carry, as far as it is known before the model
    loads: a saved inversion's settings from its file; an image's size only where it is asked
    (else the model's size rule decides it); ``files``: :func:`model_files` of the run."""
    info = job.source.info if job.path is None else None
    asked = {**_asked(job, model, info, inversion_file), **files}
    return {key: value for key, value in asked.items() if value is not None or key not in ("height", "width")}


def recipe_difference(path: Path, wanted: dict[str, Any]) -> str | None:
    """How the recipe stored in the output ``path`` differs from ``wanted`` (one phrase), or None
    when it holds every wanted key with the same value."""
    stored = stored_recipe(path)
    if stored is None:
        return "no recipe of its own (only the PNGs leditspp writes carry one)"
    wanted = json.loads(json.dumps(wanted))  # as it would be stored: tuples as lists, …
    changed = [key for key, value in wanted.items() if stored.get(key, _UNRECORDED.get(key, _MISSING)) != value]
    if not changed:
        return None
    if "edits" in changed:
        return f"other edits ({_concepts(stored.get('edits'))} instead of {_concepts(wanted['edits'])})"
    return "other settings (" + ", ".join(f"{k} {stored.get(k)!r} instead of {wanted[k]!r}" for k in changed) + ")"


def stored_recipe(path: Path) -> dict[str, Any] | None:
    """The recipe a PNG written by leditspp carries (None: none, or not readable)."""
    try:
        text = png_recipe_text(path)
        recipe = json.loads(text) if text is not None else None
    except (OSError, ValueError):
        return None
    return recipe if isinstance(recipe, dict) else None


def _concepts(edits: Any) -> str:
    """Stored edits as ``+prompt:scale`` texts, for a message."""
    if not isinstance(edits, list):
        return "none"
    try:
        return ", ".join(f"{'-' if e['remove'] else '+'}{e['prompt']}:{e['scale']:g}" for e in edits) or "none"
    except (KeyError, TypeError, ValueError):
        return repr(edits)


def save_files(files: list[File], on_written: Callable[[Path], None] | None = None) -> None:
    """Write each (path, image, metadata), atomically, telling ``on_written`` each path."""
    for path, image, recipe in files:
        save_image(image, path, recipe)
        if on_written is not None:
            on_written(path)


class EditLog:
    """``OUT/edit-log.csv``, appended to as outputs are written or inputs fail: time, input,
    output, status (done / failed), error, seconds. A resumed run appends to it."""

    COLUMNS = ("time", "input", "output", "status", "error", "seconds")

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, source: str | None, out: Path | None, status: str, error: str, seconds: float) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.COLUMNS)
            now = datetime.datetime.now().isoformat(timespec="seconds")
            writer.writerow([now, _shown(source or ""), _shown(out or ""), status, _shown(error), f"{seconds:.2f}"])


def _shown(name: str | Path) -> str:
    """A file name as text: bytes that are not UTF-8 (which Python holds as lone surrogates, and
    no UTF-8 file can store) as ``\\xff`` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
