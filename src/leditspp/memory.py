"""How many inversion steps go into one network call, chosen from the memory that is free.

The N inversion calls are independent (SPEC B §4.1), so they run in chunks of steps. A chunk is
as large as fits a fraction of the device's free memory, by an estimate of one network row's
activation memory, and on the CPU no larger than the point where batching stops paying.

``steps_per_call`` is the pure rule; ``free_bytes`` reads the machine and the adapter's
``row_bytes`` the model. ``Editor.invert(inversion_batch=k)`` overrides the whole choice.
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
    fit = max(1, min(steps, fit))
    calls = math.ceil(steps / fit)
    return math.ceil(steps / calls)


def inversion_chunk(model: ModelAdapter, steps: int, rows_per_step: int, height: int, width: int) -> int:
    """:func:`steps_per_call` for ``model`` on its device (its own estimate of a row's bytes,
    ``model.row_bytes``), with the budget of ``defaults``."""
    device = model.device
    budget = int(free_bytes(device) * defaults.INVERSION_MEMORY_FRACTION)
    return steps_per_call(steps, rows_per_step, model.row_bytes(height, width), budget, max_rows(device))
