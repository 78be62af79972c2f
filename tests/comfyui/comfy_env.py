"""Where the tests find ComfyUI, and a skip with the reason when they cannot.

ComfyUI is not a PyPI package: the tests import it from a checkout at tag v0.3.64 named by
``LEDITSPP_COMFYUI``, else ``../shared/comfyui`` or ``shared/comfyui`` beside the repository.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "comfyui"


def comfyui_root() -> Path | None:
    """The ComfyUI checkout to test against, or None."""
    given = os.environ.get("LEDITSPP_COMFYUI")
    candidates = [Path(given)] if given else [REPO.parent / "shared" / "comfyui", REPO / "shared" / "comfyui"]
    return next((p for p in candidates if (p / "comfy" / "model_base.py").is_file()), None)


def require_comfyui() -> Path:
    """Put ComfyUI (on the CPU) and the pack on ``sys.path``, or skip the calling test module."""
    root = comfyui_root()
    if root is None:
        pytest.skip(
            "ComfyUI not found: set LEDITSPP_COMFYUI to a ComfyUI v0.3.64 checkout (or put it at ../shared/comfyui)",
            allow_module_level=True,
        )
    for path in (str(root), str(PACK)):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        for module in ("comfy.sd", "comfy_extras.nodes_model_advanced"):  # most of ComfyUI and its requirements
            importlib.import_module(module)
    except Exception as exc:  # ComfyUI's requirements (or its torch) are missing in this environment
        reason = f"ComfyUI at {root} cannot be imported here ({exc!r}); build its environment: comfyui/dev/setup_env.sh"
        if os.environ.get("LEDITSPP_REQUIRE_COMFYUI"):  # comfyui/dev/test.sh: its environment must work
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    # Tiny models on shared CPUs: one thread (measured here, 2 busy cores: a small conv took 0.6 ms
    # on one thread and 80 ms on two).
    torch.set_num_threads(1)
    return root
