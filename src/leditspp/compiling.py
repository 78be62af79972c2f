"""``torch.compile`` of the denoiser, with CUDA graphs on a GPU (issue 25, item 2).

On a GPU a small model's step is bound by kernel launches (SD 1.5 at 512²: a UNet call is a few
hundred kernels, each launched by the host). CUDA graphs record a call's kernels once and replay
them with one launch: ``torch.compile(mode="reduce-overhead")`` records one graph per call shape,
and the loops have few shapes — the inversion's chunk (and its last, shorter one), and each
edit step's rows (the base conditions plus the active concepts: it changes only where a
concept's warm-up or cool-down begins or ends) at one image size. Attention capture on or off is
another graph of the same shape; the capture layers keep their own fused attention processor.

What graphs need from the loops, and what tests/test_performance.py checks on the CPU: no host
syncs inside a step (every value stays on the device), and each call's outputs used before the
next call (a replay overwrites its output buffers). What they need from the weights: to stay put
— the group-offload plan streams them, so graphs are refused there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .errors import LeditsError

#: The ``torch.compile`` mode that records CUDA graphs.
GRAPHS = "reduce-overhead"


def compile_options(device: torch.device, weights_move: bool, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``torch.compile`` options for the denoiser on ``device``: the caller's ``options``, and
    on a CUDA device, where they name no mode, backend or inductor options, CUDA graphs.

    Graphs compile one static graph per call shape (``dynamic=False`` unless given: no symbolic
    shapes, which graphs would record per shape anyway). ``weights_move``: the denoiser's weights
    leave the device between calls (group offload, a pipeline's own offload hooks) — graphs are
    refused then, since a graph replays with the weights' addresses fixed.
    """
    chosen = dict(options)
    if device.type == "cuda" and not {"mode", "backend", "options"} & chosen.keys():
        chosen["mode"] = GRAPHS
    if chosen.get("mode") == GRAPHS:
        if weights_move:
            raise LeditsError(
                "CUDA graphs (compile mode 'reduce-overhead') need the denoiser's weights to stay on the GPU, "
                "and this editor's memory plan moves them (group offload); use offload='none' or 'model', "
                "or compile with another mode, e.g. Editor.compile(mode='default')"
            )
        chosen.setdefault("dynamic", False)
    return chosen
