"""Edit recipes: the settings and concepts of an edit as data (JSON, YAML, or a PNG's text chunk).

A recipe is a mapping with any of the keys in :data:`SETTINGS` and ``edits`` (a list of
``"+concept:scale@threshold"`` strings or :meth:`Edit.to_dict` mappings). For batch work it may
also hold ``images``: ``{file name: {"edits": [...], other settings}}`` — per-image entries
override the top level. Every PNG the CLI writes embeds the recipe that made it, so
``leditspp edit IMAGE --recipe edited.png`` reproduces the edit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from . import defaults
from .edits import Edit
from .errors import LeditsError, is_int, is_number
from .io import png_recipe_text
from .validation import check_seed

#: The settings schema: every setting a recipe may give (besides ``edits`` and ``images``), with
#: its default. The CLI's flags, the web UI's settings panel and recipe files all read it; a model's
#: ``leditspp.json`` may recommend other defaults for some (:data:`leditspp.models.RECOMMENDABLE`).
#: ``height``/``width`` None: the image's own size, rounded down to what the model needs.
SETTINGS: dict[str, Any] = {
    "model": defaults.MODEL,
    "steps": defaults.STEPS,
    "skip": defaults.SKIP,
    "solver": defaults.SOLVER,
    "seed": defaults.SEED,
    "source_prompt": "",
    "source_guidance": defaults.SOURCE_GUIDANCE,
    "negative_prompt": "",
    "height": None,
    "width": None,
    "mask_mode": defaults.MASK_MODE,
    "guidance_rescale": defaults.GUIDANCE_RESCALE,
    "preserve": None,  # off; k: keep the source outside the masks' region dilated by k cells
}
#: The settings an inversion is made with (and a saved one fixes); the rest act on the edit.
INVERSION_SETTINGS = (
    "steps",
    "skip",
    "solver",
    "seed",
    "source_prompt",
    "source_guidance",
    "negative_prompt",
    "height",
    "width",
)
#: Keys written for information only (ignored when a recipe is read back).
INFORMATIONAL = ("leditspp", "fingerprint", "family", "dtype", "inversion", "source", "base", "loras")


def read_recipe(path: str | os.PathLike[str], edit_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a recipe from a ``.json``/``.yaml``/``.yml`` file or from a PNG the CLI wrote.

    ``edit_defaults`` (``scale``, ``threshold``) fill what its text concepts leave out."""
    p = Path(path)
    if not p.is_file():
        raise LeditsError(f"recipe file {str(path)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".png":
            data = _png_recipe(p)
        elif suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
        elif suffix in (".yaml", ".yml"):
            data = _yaml(p)
        else:
            raise LeditsError(f"recipe {str(path)!r} must be a .json, .yaml/.yml or a .png written by leditspp")
    except LeditsError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeditsError(f"recipe {str(path)!r} cannot be parsed: {_one_line(exc)}") from exc
    except ImportError as exc:
        raise LeditsError("YAML recipes need PyYAML: pip install pyyaml (or use JSON)") from exc
    return validate(data, str(path), edit_defaults or {})


def _yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or _one_line(exc)
        raise LeditsError(f"recipe {str(path)!r} is not valid YAML{where}: {problem}") from exc


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _png_recipe(path: Path) -> Any:
    from PIL import UnidentifiedImageError

    try:
        text = png_recipe_text(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise LeditsError(f"{path}: not a readable PNG ({exc})") from exc
    if text is None:
        raise LeditsError(f"{path}: this PNG carries no leditspp recipe (only images written by leditspp do)")
    return json.loads(text)


def validate(data: Any, where: str = "recipe", edit_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check keys and edits; return the recipe with ``edits`` parsed into :class:`Edit` values."""
    if not isinstance(data, dict):
        raise LeditsError(f"{where}: a recipe is a mapping of settings and 'edits'; got {type(data).__name__}")
    known = {*SETTINGS, *INFORMATIONAL, "edits", "images"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LeditsError(f"{where}: unknown recipe keys {unknown}; known: {sorted(known)}")
    out = {k: v for k, v in data.items() if k in SETTINGS}
    check_settings(out, where)
    if "edits" in data:
        out["edits"] = parse_edits(data["edits"], where, edit_defaults or {})
    if "images" in data:
        if not isinstance(data["images"], dict):
            raise LeditsError(f"{where}: 'images' maps file names to per-image recipes")
        out["images"] = {
            str(k): validate(v, f"{where}: images[{k!r}]", edit_defaults) for k, v in data["images"].items()
        }
        for name, entry in out["images"].items():
            if "images" in entry or "model" in entry:
                key = "images" if "images" in entry else "model"
                raise LeditsError(
                    f"{where}: images[{name!r}] gives {key!r}, which only the top level may give "
                    "(one run loads one model); put images for another model in a recipe of their own"
                )
    return out


def parse_edits(items: Any, where: str = "recipe", edit_defaults: dict[str, Any] | None = None) -> list[Edit]:
    """Edits from a list of text concepts or :meth:`Edit.to_dict` mappings; ``edit_defaults``
    fill the scale and threshold a concept leaves out."""
    if isinstance(items, str) or not isinstance(items, list):
        raise LeditsError(f"{where}: 'edits' must be a list, e.g. ['+sunglasses', '-beard:7']")
    edits = []
    for item in items:
        if isinstance(item, str):
            edits.append(Edit.parse(item, **(edit_defaults or {})))
        elif isinstance(item, dict):
            try:
                edits.append(Edit(**{**(edit_defaults or {}), **item}))
            except TypeError as exc:
                raise LeditsError(f"{where}: bad edit {item!r}: {exc}") from exc
        else:
            raise LeditsError(f"{where}: an edit is a text or a mapping; got {item!r}")
    return edits


def for_image(recipe: dict[str, Any], image: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level recipe with the entry of ``image`` (by file name, then by path) on top."""
    per = recipe.get("images", {})
    entry = per.get(Path(image).name) or per.get(str(image)) or {}
    return {**{k: v for k, v in recipe.items() if k != "images"}, **entry}


def check_settings(settings: dict[str, Any], where: str) -> None:
    """Check that every key is in :data:`SETTINGS` and every value present has its type and range
    (None means "the default")."""
    from .masking import MASK_MODES, MAX_PRESERVE
    from .solvers import SOLVERS

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise LeditsError(f"{where}: {key} must be {what}; got {settings[key]!r}")

    for key, value in settings.items():
        if key not in SETTINGS:
            raise LeditsError(f"{where}: unknown setting {key!r}; known: {', '.join(SETTINGS)}")
        if value is None:
            continue
        if key in ("model", "source_prompt", "negative_prompt"):
            need(isinstance(value, str), key, "a string")
        elif key in ("steps", "height", "width"):
            need(is_int(value) and value >= 1, key, "an integer ≥ 1")
        elif key == "seed":
            try:
                check_seed(value)
            except LeditsError as exc:
                raise LeditsError(f"{where}: {exc}") from None
        elif key == "skip":  # its range: validate_steps, with its hint
            need(is_number(value) and math.isfinite(value) and value >= 0, key, "a number ≥ 0")
        elif key == "guidance_rescale":
            need(is_number(value) and 0 <= value <= 1, key, "a number in [0, 1]")
        elif key == "source_guidance":
            need(
                is_number(value) and 0 <= value <= defaults.MAX_GUIDANCE,
                key,
                f"a number in [0, {defaults.MAX_GUIDANCE:g}]",
            )
        elif key == "solver":
            need(isinstance(value, str) and value in SOLVERS, key, f"one of {', '.join(SOLVERS)}")
        elif key == "mask_mode":
            need(isinstance(value, str) and value in MASK_MODES, key, f"one of {', '.join(MASK_MODES)}")
        elif key == "preserve":
            what = f"a whole number of cells 0 … {MAX_PRESERVE}, or null"
            need(is_int(value) and 0 <= value <= MAX_PRESERVE, key, what)
