"""Logging as a value: the library changes the process's loggers only for the length of a call,
and puts them back as its user configured them.

The command line hushes diffusers' and transformers' loading bars and warnings while a command
runs (:func:`hushed_loading`); ``quiet=`` of :func:`~leditspp.evaluation.evaluate` and
:class:`~leditspp.batch.BatchEdit` keeps leditspp's logger to errors while it runs
(:func:`quiet_logs`); a Ray worker logs as the process that started it (:class:`LoggingState`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

#: The loggers whose levels a Ray worker takes from the process that started it.
LIBRARIES = ("leditspp", "diffusers", "transformers")


@contextlib.contextmanager
def logger_levels(levels: Mapping[str, int]) -> Iterator[None]:
    """The loggers ``levels`` names at those levels inside the block, as they were afterwards."""
    loggers = {name: logging.getLogger(name) for name in levels}
    before = {name: logger.level for name, logger in loggers.items()}
    for name, logger in loggers.items():
        logger.setLevel(levels[name])
    try:
        yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(before[name])


def quiet_logs(quiet: bool) -> contextlib.AbstractContextManager[None]:
    """With ``quiet``: only errors from leditspp's logger inside the block."""
    return logger_levels({"leditspp": logging.ERROR} if quiet else {})


@dataclass(frozen=True)
class LoggingState:
    """The levels of :data:`LIBRARIES`' loggers and whether diffusers' and transformers' progress
    bars show (picklable: it travels to a Ray worker)."""

    levels: Mapping[str, int]
    bars: tuple[bool, bool]  # diffusers', transformers'

    @classmethod
    def now(cls) -> LoggingState:
        """This process's state."""
        diffusers, transformers = _libraries()
        diffusers.get_verbosity(), transformers.get_verbosity()  # each configures its logger on first use
        levels = {name: logging.getLogger(name).level for name in LIBRARIES}
        return cls(levels, (diffusers.is_progress_bar_enabled(), transformers.is_progress_bar_enabled()))

    def apply(self) -> None:
        """Make it this process's state (a Ray worker's: the process lives for the run only)."""
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        for library, shown in zip(_libraries(), self.bars, strict=True):
            if shown:
                library.enable_progress_bar()
            else:
                library.disable_progress_bar()


@contextlib.contextmanager
def hushed_loading() -> Iterator[None]:
    """No loading bars or warnings from diffusers and transformers inside the block (the command
    line's output is leditspp's own bars, lines and errors); as they were afterwards."""
    before = LoggingState.now()
    hushed = {**before.levels, "diffusers": logging.ERROR, "transformers": logging.ERROR}
    replace(before, levels=hushed, bars=(False, False)).apply()
    try:
        yield
    finally:
        before.apply()


def _libraries() -> tuple[Any, Any]:
    """diffusers' and transformers' logging modules (their verbosity and progress bars)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    return diffusers_logging, transformers_logging
