"""What a model declares for leditspp without being loaded: its folder's ``leditspp.json``
(family options, recommended settings), the recommendations known by checkpoint name, by family
rule and by few-step spacing, and the image size multiple its configs imply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import LeditsError
from ..solvers import SPACINGS
from ..solvers.path import declared_spacing
from .families import parts_of_folder, pipeline_config_of_folder, recommended_of, size_multiple_of_folder
from .loading import resolve_model

#: A model folder may hold this file: what it declares for leditspp (see :func:`model_settings`).
MODEL_SETTINGS_FILE = "leditspp.json"
#: Edit and inversion settings a model may recommend, with the defaults that hold where it does not
#: (their types are the types a recommendation must have).
RECOMMENDABLE: dict[str, Any] = {
    "solver": defaults.SOLVER,
    "steps": defaults.STEPS,
    "skip": defaults.SKIP,
    "scale": defaults.EDIT_SCALE,
    "threshold": defaults.EDIT_THRESHOLD,
    "mask_mode": defaults.MASK_MODE,
    "source_guidance": defaults.SOURCE_GUIDANCE,
}


#: What a few-step DDPM checkpoint recommends, by the spacing of its scheduler config: the 4 steps
#: Turbo, Lightning and LCM are distilled for, no skip, and the solver of their kind.
FEW_STEP_RECOMMENDED: dict[str, dict[str, Any]] = {
    "trailing": {"solver": "ddpm", "steps": 4, "skip": 0.0},
    "lcm": {"solver": "lcm", "steps": 4, "skip": 0.0},
}

#: Checkpoints whose configs do not say what they are made for, by hub id: Z-Image-Turbo ships
#: Z-Image's configs, and a hub id not yet downloaded has no configs to read ([klein]'s
#: ``is_distilled``). Matched against the model named (case aside) and a Hugging Face cache
#: folder's name (``models--Tongyi-MAI--Z-Image-Turbo``); over the family's own rule.
CHECKPOINT_RECOMMENDED: dict[str, dict[str, Any]] = {
    "Tongyi-MAI/Z-Image-Turbo": {"steps": 8, "skip": 0.0, "source_guidance": 0.0},
    "black-forest-labs/FLUX.2-klein-4B": {"steps": 4, "skip": 0.0, "source_guidance": 0.0},
    "black-forest-labs/FLUX.2-klein-9B": {"steps": 4, "skip": 0.0, "source_guidance": 0.0},
}


#: Keys a ``leditspp.json`` may hold besides ``recommended`` and ``comment``: family options
#: (each refused by a family that cannot use it) with the check of their values.
MODEL_OPTIONS: dict[str, tuple[str, Any]] = {
    "mask_level": ("an integer ≥ 0", lambda v: _of_type(v, int) and v >= 0),
    "spacing": (f"one of {list(SPACINGS)}", lambda v: v in SPACINGS),
    "max_sequence_length": ("an integer ≥ 0; its family sets the range", lambda v: _of_type(v, int) and v >= 0),
    "upscaler": ("a hub id or folder of the model's upscaler", lambda v: isinstance(v, str) and bool(v.strip())),
    "upscaler_steps": ("an integer ≥ 1", lambda v: _of_type(v, int) and v >= 1),
}


def model_settings(model: str) -> dict[str, Any]:
    """What a model declares for leditspp, read without loading it: family options
    (``mask_level``, ``spacing``, ``max_sequence_length``, ``upscaler``, ``upscaler_steps``: see
    :data:`MODEL_OPTIONS`) from its folder's ``leditspp.json``, and ``recommended`` settings (keys
    of :data:`RECOMMENDABLE`: the defaults the CLI and the web UI use for this model) — the folder's own over
    :data:`CHECKPOINT_RECOMMENDED` over its family's rule (``recommended``, from the configs)
    over :data:`FEW_STEP_RECOMMENDED`. A hub id is read from the Hugging Face cache where it is
    there (nothing is downloaded), else known by name only. ``{}`` where nothing is declared."""
    declared, implied = _declared_and_implied(model)
    recommended = implied | declared.get("recommended", {})
    options = {k: declared[k] for k in MODEL_OPTIONS if k in declared}
    return {**options, "recommended": recommended} if recommended or declared else options


def recommendation_sources(model: str) -> dict[str, str]:
    """For each setting :func:`model_settings` recommends, where it comes from: ``"leditspp.json"``
    (the folder's own file) or ``"recommended"`` (what leditspp knows of the checkpoint, its
    family or its spacing)."""
    declared, implied = _declared_and_implied(model)
    return {key: "recommended" for key in implied} | {
        key: MODEL_SETTINGS_FILE for key in declared.get("recommended", {})
    }


def _declared_and_implied(model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The folder's ``leditspp.json`` (checked; ``{}`` where none) and the recommended settings
    implied by the spacing, the family's rule and the checkpoint's name, in that order."""
    folder = _local_folder(model)
    path = folder / MODEL_SETTINGS_FILE if folder else None
    declared = _read_settings_file(path) if path and path.is_file() else {}
    spacing = declared.get("spacing") or (_folder_spacing(folder) if folder else None)
    implied = dict(FEW_STEP_RECOMMENDED.get(spacing or "", {}))
    if folder and (parts := parts_of_folder(folder)):
        implied |= recommended_of(parts, pipeline_config_of_folder(folder))
    return declared, implied | _checkpoint_recommended(model, folder)


def _read_settings_file(path: Path) -> dict[str, Any]:
    """A ``leditspp.json``, checked: its options and recommended settings must be known and typed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LeditsError(f"{path}: cannot be read as JSON ({exc}); fix or remove the file") from exc
    if not isinstance(data, dict) or not isinstance(data.get("recommended", {}), dict):
        raise LeditsError(f"{path}: must be a JSON object whose 'recommended' is an object; fix or remove the file")
    recommended = data.get("recommended", {})
    bad = [k for k in data if k not in (*MODEL_OPTIONS, "recommended", "comment")]
    bad += [k for k, v in recommended.items() if k not in RECOMMENDABLE or not _of_type(v, type(RECOMMENDABLE[k]))]
    bad += [k for k, (_, ok) in MODEL_OPTIONS.items() if k in data and not ok(data[k])]
    if bad:
        options = ", ".join(f"{k} ({what})" for k, (what, _) in MODEL_OPTIONS.items())
        raise LeditsError(
            f"{path}: unknown or mistyped entries {bad}; it may give {options} and recommended settings "
            f"{sorted(RECOMMENDABLE)}"
        )
    for key, value in recommended.items():
        try:
            check_recommended(key, value)
        except LeditsError as exc:
            raise LeditsError(f"{path}: recommended {key}: {exc}; fix or remove the file") from None
    return data


def check_recommended(key: str, value: Any) -> None:
    """Refuse a recommended setting out of its range, with the check the editor applies to it."""
    from ..edits import Edit
    from ..masking import MASK_MODES
    from ..solvers import SOLVERS, validate_steps
    from ..validation import check_invert_arguments

    if key in ("scale", "threshold"):
        Edit("concept", **{key: value})
    elif key == "steps":
        validate_steps(value, 0.0)
    elif key == "skip":
        validate_steps(1, value)
    elif key == "source_guidance":
        check_invert_arguments(None, "", "", value, 0.0)
    elif key in ("solver", "mask_mode"):
        choices = list(SOLVERS if key == "solver" else MASK_MODES)
        if value not in choices:
            raise LeditsError(f"{key} must be one of {choices}; got {value!r}")


def _local_folder(model: str) -> Path | None:
    """The folder ``model`` is on this machine: itself, a demo's, or a hub id's snapshot in the
    Hugging Face cache (looked up offline); None where there is none."""
    folder = Path(resolve_model(model))
    if folder.is_dir():
        return folder
    if model.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        index = try_to_load_from_cache(model, "model_index.json")
    except (ValueError, OSError):  # a malformed id (HFValidationError) or cache: nothing is known
        return None
    return Path(index).parent if isinstance(index, str) else None


def _checkpoint_recommended(model: str, folder: Path | None) -> dict[str, Any]:
    """:data:`CHECKPOINT_RECOMMENDED` for the checkpoint ``model`` names, by hub id or cache folder."""
    names = {model.lower()}
    if folder:
        names |= {p.name.removeprefix("models--").replace("--", "/").lower() for p in folder.parents}
    for hub_id, recommended in CHECKPOINT_RECOMMENDED.items():
        if hub_id.lower() in names:
            return dict(recommended)
    return {}


def unrecognised_checkpoint(model: str) -> str | None:
    """A warning where a local folder's name says a checkpoint of :data:`CHECKPOINT_RECOMMENDED`
    (``./Z-Image-Turbo``) that its configs cannot tell apart from its base model, and no
    ``leditspp.json`` says which it is: it runs with the base model's recommendation. None otherwise."""
    folder = _local_folder(model)
    if folder is None or (folder / MODEL_SETTINGS_FILE).is_file() or _checkpoint_recommended(model, folder):
        return None
    name, implied = _squashed(Path(model).resolve().name), _declared_and_implied(model)[1]
    for hub_id, recommended in CHECKPOINT_RECOMMENDED.items():
        if _squashed(hub_id.split("/")[1]) in name and recommended.items() - implied.items():
            flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in recommended.items())
            return (
                f"model folder {model!r} looks like {hub_id} by its name, but it has no {MODEL_SETTINGS_FILE} and its "
                f"configs are its base model's, so the base model's recommended settings are used; pass {flags}, "
                f"or write {folder / MODEL_SETTINGS_FILE} with {json.dumps({'recommended': recommended})}"
            )
    return None


def _squashed(name: str) -> str:
    """A checkpoint name compared without case or separators (``z_image-turbo`` is ``zimageturbo``)."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _folder_spacing(folder: Path) -> str | None:
    """The spacing a local model's scheduler config declares, read without loading the model."""
    try:
        return declared_spacing(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _of_type(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)


def is_flow_model(model: str) -> bool:
    """Whether a local model (``"demo-flow"`` or a folder) is a flow-matching one, by its scheduler
    config's class, read without loading it; False where that cannot be told (a hub id not cached)."""
    try:
        folder = _local_folder(model)
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text()) if folder else {}
    except (LeditsError, OSError, ValueError):
        return False
    return "FlowMatch" in str(config.get("_class_name", ""))


def size_multiple_hint(model: str) -> int | None:
    """The image side multiple of a local model (``"demo"`` or a folder) by its family's size
    rule, read from its JSON files without loading it; None for a hub id (known only once loaded)."""
    try:
        folder = resolve_model(model)
        settings = model_settings(model)
    except LeditsError:
        return None
    return size_multiple_of_folder(folder, settings)
