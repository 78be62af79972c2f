"""Loading a model: the built-in demos' names resolved to their folders, diffusers pipelines
loaded from the hub or disk."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import LeditsError
from .components import check_parts
from .families import family_of, parts_of_folder
from .single_file import is_single_file, load_single_file

#: The built-in demo models, tiny and trained on the shapes world (:mod:`leditspp.demo.shapes`): the
#: UNet one (SD-shaped, issue 3) and the flow-matching one (SD3-shaped MMDiT, issue 23).
DEMO_NAME = "demo"
DEMO_PATH = Path(__file__).resolve().parent.parent / "demo" / "demo_model"
DEMO_FLOW_NAME = "demo-flow"
DEMO_FLOW_PATH = Path(__file__).resolve().parent.parent / "demo" / "demo_flow_model"
#: Each demo's training script, named where its weights are missing.
_DEMO_TRAINING = {DEMO_NAME: "train_demo.py all", DEMO_FLOW_NAME: "train_demo_flow.py all"}


def resolve_model(model: str) -> str:
    """``"demo"`` / ``"demo-flow"`` → the shipped demo model's folder; anything else unchanged
    (hub id or folder). A local folder literally named ``demo`` is reached as ``./demo``."""
    if model in _DEMO_TRAINING:
        path = DEMO_PATH if model == DEMO_NAME else DEMO_FLOW_PATH
        if not (path / "model_index.json").exists():
            raise LeditsError(
                f"the built-in {model} model is missing from {path}; reinstall leditspp, or rebuild it "
                f"with `python training/{_DEMO_TRAINING[model]}`"
            )
        return str(path)
    return model


def check_model_name(model: Any, where: str = "model") -> str:
    """``model`` if it can name a model — a built-in demo, an existing folder or a Hugging Face hub
    id (owner/name) — refused here otherwise, before anything loads (a mistyped path would
    otherwise be looked up on the hub)."""
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(model, str) or not model.strip():
        raise LeditsError(f"{where} {model!r} names no model; give 'demo', a hub id or a local folder")
    resolve_model(model)
    if Path(model).exists():
        return model
    try:
        validate_repo_id(model)
    except ValueError:
        raise LeditsError(
            f"{where} {model!r}: no such folder, and not a Hugging Face hub id (owner/name); check the path"
        ) from None
    return model


def source_name(model: str) -> str:
    """How an inversion records what its model was loaded from, so that it can be loaded again:
    ``"demo"``/``"demo-flow"`` and hub ids as given, a local folder or file as its absolute path."""
    if model in _DEMO_TRAINING or not Path(model).exists():
        return model
    return str(Path(model).resolve())


def check_folder(model: str) -> None:
    """Refuse a local model folder whose configs do not fit together (:mod:`.components`), before
    any weight loads; a hub id, or a folder of no known family, is checked once loaded."""
    parts = parts_of_folder(model)
    family = family_of(parts) if parts else None
    if family is not None and parts is not None:
        check_parts(family, parts, model)


def from_folder(model: str, torch_dtype: torch.dtype | None, **components: Any) -> Any:
    """``DiffusionPipeline.from_pretrained`` of a hub id or folder, with ``components`` given
    (e.g. a transformer read from a single file) and without a safety checker."""
    from diffusers import DiffusionPipeline

    kwargs: dict[str, Any] = {} if torch_dtype is None else {"dtype": torch_dtype}
    index = DiffusionPipeline.load_config(model)
    # components the folder declares absent ([null, null], e.g. SD3 saved without T5) are
    # passed as None: diffusers refuses a folder that lacks a component its class requires
    kwargs |= {k: None for k, v in index.items() if isinstance(v, (list, tuple)) and list(v) == [None, None]}
    if "safety_checker" in index:  # SD 1.x/2.x pipelines: leave it out
        kwargs |= {"safety_checker": None, "requires_safety_checker": False}
    return DiffusionPipeline.from_pretrained(model, **kwargs | components)


def load_pipeline(model: str, torch_dtype: torch.dtype | None, base: str | None = None) -> Any:
    """Load a diffusers pipeline from ``"demo"``, a hub id, a local folder or a single-file
    checkpoint (with ``base``, the model whose configs and components the file lacks: see
    :mod:`.single_file`), without a safety checker."""
    model = resolve_model(model)
    if is_single_file(model):
        return load_single_file(model, None if base is None else resolve_model(base), torch_dtype)
    if base is not None:
        raise LeditsError(f"a base model is for single-file checkpoints; {model!r} is not one (a .safetensors file)")
    check_folder(model)
    check_reachable(model)

    try:
        return from_folder(model, torch_dtype)
    except (OSError, ValueError) as exc:
        if _is_hub_id(model) and not _in_cache(model):
            raise LeditsError(_unreachable(model, str(exc).splitlines()[0])) from exc
        raise LeditsError(
            f"cannot load model {model!r}: {str(exc).splitlines()[0]} — pass a Hugging Face hub id "
            "(e.g. stable-diffusion-v1-5/stable-diffusion-v1-5), a local folder in diffusers format "
            "(with model_index.json) or a single-file checkpoint (.safetensors)"
        ) from exc


#: Seconds to wait for the hub's host to answer before a hub id not in the cache is refused.
HUB_CONNECT_TIMEOUT = 5.0


def check_reachable(model: str) -> None:
    """Refuse at once a hub id that is not in the Hugging Face cache where the hub cannot be
    reached: offline mode (``HF_HUB_OFFLINE``), or no connection to its host in a few seconds —
    rather than after the download's retries time out."""
    if not _is_hub_id(model) or _in_cache(model):
        return
    from huggingface_hub import constants, is_offline_mode

    if is_offline_mode():
        raise LeditsError(_unreachable(model, "HF_HUB_OFFLINE is set"))
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # through a proxy: the download itself tells
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=HUB_CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise LeditsError(_unreachable(model, f"no connection to {url.hostname} ({exc.strerror or exc})")) from exc


def _unreachable(model: str, why: str) -> str:
    return (
        f"model {model!r} is a Hugging Face hub id that is not reachable and not in the cache ({why}); connect "
        "to the internet (and unset HF_HUB_OFFLINE) to download it once, check the id's spelling on "
        "huggingface.co, or pass a local folder in diffusers format"
    )


def _is_hub_id(model: str) -> bool:
    """Whether ``model`` reads as ``owner/name`` and is no path on this machine."""
    return model.count("/") == 1 and not model.startswith((".", "/", "~")) and not Path(model).exists()


def _in_cache(model: str) -> bool:
    """Whether the hub id's pipeline index is in the Hugging Face cache (looked up offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model, "model_index.json"), str)
    except (ValueError, OSError):  # a malformed id (HFValidationError): the download's error says it
        return False
