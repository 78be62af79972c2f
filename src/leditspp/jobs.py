"""Jobs: the values that edit, eval and Ray share — items in, outcomes out, counted as they go.

An :class:`Item` is one unit of work (an evaluation item, an input of a batch edit); a pure
function ``item → row`` computes it; :func:`serial_map` (here) or
:func:`leditspp.distributed.ray_map` (on Ray) turns the items to do into :class:`Outcome` values,
a group's items together (:func:`by_group`); the editor that computes them travels as a model
name and its :class:`~leditspp.model_options.ModelOptions`, which a worker loads for itself.
Writing the outcomes is the caller's job (:mod:`leditspp.evaluation.runner`, :mod:`leditspp.batch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Value = float | int | bool | str | None


@dataclass(frozen=True)
class Item:
    """One unit of work: an edit of one input with its parameters (picklable, so it can travel).

    ``id`` is unique within a run (it names the CSV row and the image files); ``params`` are the
    settings the edit uses, sweep values included, written to the CSV; ``data`` is whatever else
    the suite's ``evaluate_item`` needs (a scene seed, a file path) and is not written. Items with
    the same ``group`` (their input: a scene, an image file) share work such as an inversion, so
    they are computed one after another, by one worker (empty: an item of its own).
    """

    id: str
    suite: str
    edit_type: str
    params: dict[str, Value] = field(default_factory=dict)
    data: Any = None
    group: str = ""

    @property
    def group_key(self) -> str:
        return self.group or f"item:{self.id}"


#: Computes one item: ``item → row`` (a :class:`~leditspp.evaluation.runner.Row` in an evaluation,
#: the files to write in a batch edit).
ComputeItem = Callable[[Item], Any]


@dataclass(frozen=True)
class Outcome:
    """What computing one item gave, before anything is written: its row (whatever the function
    returned: a :class:`Row` in an evaluation), or the error that stopped it (``"Type: message"``),
    and the seconds it took. Picklable, so a worker can send it back to the process that writes."""

    item: Item
    row: Any
    error: str
    seconds: float


MapItems = Callable[[Sequence[Item]], Iterable[Outcome]]


@dataclass
class RunStats:
    """What a run did, counted as it goes, for the progress bar and the closing line: items done,
    failed, skipped (finished by an earlier run), retried (handed out again after their worker
    died), the workers computing them and the seconds since computing began."""

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    retried: int = 0
    workers: int = 1
    seconds: float = 0.0

    def count(self, error: str, start: float) -> None:
        """One more outcome (failed if it has an ``error``), ``start`` being when computing began."""
        self.failed += bool(error)
        self.done += not error
        self.seconds = time.perf_counter() - start

    @property
    def per_minute(self) -> float:
        """Items computed (done or failed) per minute so far."""
        return 60 * (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        skipped = f", {self.skipped} already done" if self.skipped else ""
        return (
            f"{self.done} done, {self.failed} failed, {self.retried} retried{skipped}; "
            f"{self.per_minute:.1f} items/min on {workers}"
        )


def by_group(items: Sequence[Item]) -> list[Item]:
    """``items`` with each group's together, groups in order of first appearance (a stable sort),
    so a worker's cache of a group's shared work (an inversion) is used by all its items."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.group_key, []).append(item)
    return [item for group in groups.values() for item in group]


def compute(item: Item, compute_item: ComputeItem) -> Outcome:
    """``compute_item(item)`` timed, an exception caught and kept as the outcome's error (one
    failing item must not stop the run)."""
    start = time.perf_counter()
    try:
        row, error = compute_item(item), ""
    except Exception as exc:  # said where the outcome is recorded (once, in the process that writes)
        row, error = None, f"{type(exc).__name__}: {exc}"
    return Outcome(item, row, error, round(time.perf_counter() - start, 4))


def serial_map(compute_item: ComputeItem) -> MapItems:
    """The in-process ``map_items``: items computed one after another, in order."""
    return lambda items: (compute(item, compute_item) for item in items)
