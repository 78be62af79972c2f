"""The suite protocol: what :func:`leditspp.evaluation.evaluate` asks of a benchmark suite.

A suite is a value with a ``name`` and two checks-then-plans, both run before any model loads:
``check_data(data)`` refuses a missing or unwanted DATA folder, and ``plan(request, recommended)``
checks the :class:`Request` (settings, sweep, metrics, limit…) and returns a :class:`Plan`: the
runner's items (sweep expanded), how to build ``evaluate_item`` from a loaded editor, and the
report's title and plot axes. The registry of suites is :data:`leditspp.evaluation.SUITES`;
:mod:`.shapes_suite` and :mod:`.photo_suite` implement it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import LeditsError
from ..jobs import Item
from .runner import EvaluateItem

#: The edit settings a run may give (flags ``--steps`` … ``--preserve``); the rest come from the
#: model's recommended settings, else the library's defaults.
SETTINGS = ("steps", "skip", "scale", "threshold", "preserve")


@dataclass(frozen=True)
class Request:
    """What a run asks of a suite besides the model: its DATA folder (None: a built-in suite),
    the given ``settings`` (keys of :data:`SETTINGS`), the ``sweep`` (name → values), the metric
    names (a comma-separated text, a sequence, or None: the suite's), the first ``limit`` items,
    the shapes suite's number of ``scenes``, the metric models and their device."""

    data: str | None = None
    settings: dict[str, Any] | None = None
    sweep: dict[str, list[float]] | None = None
    metrics: str | Sequence[str] | None = None
    limit: int | None = None
    scenes: int | None = None
    clip_model: str | None = None
    dino_model: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Plan:
    """A suite's checked work: the items (sweep expanded), how to build ``evaluate_item`` from the
    loaded editor, the report's title and plot axes (x, y), and ``prepare`` (on Ray: item → item
    with its input read, on the driver; None: nothing to read)."""

    items: list[Item]
    evaluator: Callable[[Any], EvaluateItem]
    title: str
    plot: tuple[str, str]
    prepare: Callable[[Item], Item] | None = None


class Suite(Protocol):
    """A benchmark suite (see the module docstring)."""

    name: str

    def check_data(self, data: str | None) -> None: ...

    def plan(self, request: Request, recommended: dict[str, Any]) -> Plan: ...


def first(items: list[Item], limit: int | None) -> list[Item]:
    """The first ``limit`` items (all with None)."""
    if limit is None:
        return items
    if limit < 1:
        raise LeditsError(f"--limit must be ≥ 1; got {limit}")
    return items[:limit]
