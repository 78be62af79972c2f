"""How many rows go into one network call, chosen from the memory that is free.

The N inversion calls are independent (SPEC B §4.1), so they run in chunks of steps. A chunk is
as large as fits a fraction of the device's free memory, by an estimate of one network row's
activation memory, and on the CPU no larger than the point where batching stops paying.
An edit step's rows (the base conditions and the active concepts, B images each) are one call
when they fit the same budget, else a few calls of whole groups of B rows (issue 25).

``steps_per_call`` and ``groups_per_call`` are the pure rules; ``free_bytes`` reads the machine
and the adapter's ``row_bytes`` the model. ``Editor.invert(inversion_batch=k)`` overrides the
inversion's choice.
"""

from __future__ import annotations

import math
import os

import torch

from . import defaults
from .models.base import ModelAdapter


def free_bytes(device: torch.device) -> int:
    """Memory available for activations on ``device``: CUDA's free plus cached-but-unused
    memory, else the host's available RAM (``MemAvailable``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def max_rows(device: torch.device) -> int | None:
    """Rows per call beyond which batching no longer speeds things up (None: no such limit)."""
    return defaults.CPU_ROWS_PER_CALL if device.type == "cpu" else None


def steps_per_call(steps: int, rows_per_step: int, bytes_per_row: int, budget: int, cap: int | None) -> int:
    """The chunk size: the most steps whose rows fit ``budget`` bytes (and ``cap`` rows), ≥ 1,
    evened out so that every call but the last runs the same number of steps.

    >>> steps_per_call(20, 1, 100, 850, None)  # 8 fit: 3 calls of 7, 7, 6 steps
    7
    """
    fit = budget // max(1, rows_per_step * bytes_per_row)
    if cap is not None:
        fit = min(fit, cap // max(1, rows_per_step))
    return even_chunk(steps, fit)


def even_chunk(total: int, fit: int) -> int:
    """The chunk size that splits ``total`` items into the fewest calls of at most ``fit`` (≥ 1)
    items, evened out: every call but the last takes this many.

    >>> even_chunk(10, 4)  # 3 calls: 4, 4, 2
    4
    >>> even_chunk(9, 8)  # 2 calls: 5, 4
    5
    """
    fit = max(1, min(total, fit))
    return math.ceil(total / math.ceil(total / fit))


def groups_per_call(batch: int, bytes_per_row: int, budget: int) -> int:
    """The most groups of ``batch`` rows one call can take within ``budget`` bytes, ≥ 1.

    >>> groups_per_call(2, 100, 850)  # 4 groups of 2 rows = 800 bytes
    4
    """
    return max(1, budget // max(1, batch * bytes_per_row))


def inversion_chunk(model: ModelAdapter, steps: int, rows_per_step: int, height: int, width: int) -> int:
    """:func:`steps_per_call` for ``model`` on its device (its own estimate of a row's bytes,
    ``model.row_bytes``), with the budget of ``defaults``."""
    budget = call_budget(model)
    return steps_per_call(steps, rows_per_step, model.row_bytes(height, width), budget, max_rows(model.device))


def call_budget(model: ModelAdapter) -> int:
    """The bytes one call's activations may take now: ``defaults.CALL_MEMORY_FRACTION`` of the free
    memory of the device ``model`` runs on."""
    return int(free_bytes(model.device) * defaults.CALL_MEMORY_FRACTION)


def edit_groups(model: ModelAdapter, batch: int, height: int, width: int) -> int:
    """:func:`groups_per_call` for ``model``'s edit calls on an ``height × width`` latent grid."""
    return groups_per_call(batch, model.row_bytes(height, width), call_budget(model))
