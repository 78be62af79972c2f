"""What a batch edit writes: each job's files (the edited image with its recipe, the mask
overlays), atomically, and ``OUT/edit-log.csv`` when there are several inputs."""

from __future__ import annotations

import csv
import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..io import mask_overlays, save_image
from ..recipes import INVERSION_SETTINGS

OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
EDIT_LOG = "edit-log.csv"

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
        **job.settings,
        "model": model,
        **{key: getattr(info, key) for key in INVERSION_SETTINGS if key != "seed"},
        "seed": job.settings["seed"] if job.path else None,  # a saved inversion does not record its seed
        "fingerprint": info.model,
        "family": info.family,
        "dtype": info.dtype,
        "source": Path(job.path).name if job.path else None,
        "inversion": inversion_file,
        "edits": [e.to_dict() for e in job.edits],
    }


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
