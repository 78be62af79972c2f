"""Runs that would do something the user may not expect: one-line warnings that name the value,
why it surprises and the fix, computed before any model loads. The command line says them;
an edit's plan carries its own (:attr:`leditspp.batch.EditPlan.warnings`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import defaults
from .errors import LeditsError
from .models.loading import DEMO_FLOW_PATH, DEMO_PATH, resolve_model
from .models.settings import unrecognised_checkpoint

#: A model for photos, suggested where a photo is given to a built-in demo model.
PHOTO_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def dtype_on_cpu(device_type: str, dtype: str | None) -> str | None:
    """Half precision on a CPU: much slower there than float32 (and no smaller result)."""
    if device_type != "cpu" or dtype not in ("float16", "bfloat16"):
        return None
    return f"--dtype {dtype} on the CPU runs many times slower than float32 there; drop --dtype (or pass float32)"


def demo_photo(model: str, size: tuple[int, int], settings: Mapping[str, Any]) -> str | None:
    """A large image given to a built-in demo model, which knows only the shapes world's 128-px scenes."""
    if not _is_demo(model):
        return None
    width, height = settings.get("width") or size[0], settings.get("height") or size[1]
    if max(width, height) <= defaults.DEMO_MAX_SIDE:
        return None
    return (
        f"the image is {width}×{height} and the built-in {model} model knows only 128-px coloured shapes: the run is "
        f"slow and its result means little; pass --model with a photo model (e.g. --model {PHOTO_MODEL}), "
        "or --height/--width 128 to try the demo"
    )


def model_warnings(model: str) -> list[str]:
    """What the model's folder alone makes surprising (a checkpoint its name says but its configs do not)."""
    return [w for w in [unrecognised_checkpoint(model)] if w]


def no_edit(outputs: Sequence[Path]) -> str:
    """No concept given: the output is the input's reconstruction."""
    first = f"{outputs[0]}" + (f" and {len(outputs) - 1} more" if len(outputs) > 1 else "")
    return (
        f"no edit given (no -e, and the recipe has no edits): {first} will be the reconstruction of the input; "
        "add -e '+concept' (or edits to the recipe)"
    )


def no_recipe(output: Path) -> str:
    """An output format that cannot carry the recipe that PNGs carry."""
    return (
        f"{output} is {output.suffix.lstrip('.').upper()}, which cannot carry the recipe that PNG outputs carry "
        "(leditspp info, --recipe); write .png to keep it"
    )


def unmatched_recipe_images(recipe: Mapping[str, Any], inputs: Sequence[str | None]) -> str | None:
    """Per-image recipe entries (``images:``) that match no input (by file name or path): ignored."""
    names = {Path(p).name for p in inputs if p} | {str(p) for p in inputs if p}
    unmatched = [key for key in recipe.get("images", {}) if key not in names]
    if not unmatched:
        return None
    return (
        f"the recipe's images entries {', '.join(map(repr, unmatched))} match no input, so they are not used; "
        "name them as the inputs' file names (e.g. photo.png) or paths"
    )


def _is_demo(model: str) -> bool:
    try:
        folder = Path(resolve_model(model)).resolve()
    except LeditsError:  # a missing demo: said where the model loads
        return False
    return folder in (DEMO_PATH, DEMO_FLOW_PATH)
