"""Progress bars of the command line (tqdm on stderr): one over items, one per stage of an edit."""

from __future__ import annotations

import sys
from typing import Any

from ..jobs import RunStats


def item_progress(quiet: bool, desc: str, stats: RunStats) -> Any:
    """A ``progress(done, total)`` over items drawn as one tqdm bar, with the failed and retried
    counts and the items per minute of ``stats`` (None with --quiet)."""
    if quiet:
        return None
    from tqdm import tqdm

    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, initial=done, desc=desc, unit="edit", file=sys.stderr))
        rate = f"{stats.per_minute:.1f}/min" if stats.seconds else "…/min"
        bars[0].set_postfix_str(f"{stats.failed} failed, {stats.retried} retried, {rate}", refresh=False)
        bars[0].update(done - bars[0].n)
        if done >= total:
            bars[0].close()

    return update


def step_progress(quiet: bool) -> Any:
    """A ``progress(stage, done, total)`` for the editor: a transient tqdm bar per stage (None with --quiet)."""
    if quiet:
        return None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
