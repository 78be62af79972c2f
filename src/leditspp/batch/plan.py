"""A batch edit as a plain value (:class:`BatchEdit`), and its plan: every check that needs no
model (recipe, inputs, outputs, settings, edits, sizes), one :class:`Job` per input."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from .. import defaults
from ..advice import demo_photo, model_warnings, no_edit, no_recipe, unmatched_recipe_images
from ..distributed import RayOptions
from ..edits import Edit, check_warmup
from ..errors import LeditsError, check_arguments
from ..files import check_output, check_writable_folder
from ..inversion import Inversion
from ..inversion_file import model_source
from ..io import check_pixels, load_mask, open_image
from ..lora import parse_recorded
from ..masking import check_preserve
from ..model_options import ModelOptions
from ..models import (
    RECOMMENDABLE,
    is_flow_model,
    model_settings,
    recommendation_sources,
    size_multiple_hint,
    source_name,
)
from ..models.loading import check_model_name
from ..recipes import INVERSION_SETTINGS, SETTINGS, check_settings, for_image, read_recipe
from ..solvers import validate_steps
from .outputs import OUTPUT_SUFFIXES, job_paths, model_files, recipe_difference, wanted_recipe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class BatchEdit:
    """What ``leditspp edit`` takes, flag for flag, as a value (picklable: Ray workers get it).

    ``images``: files, folders or globs (or ``inversion``: a saved inversion); ``output``: a file
    for one input, a folder for several; ``edits``: ``"+concept:scale@threshold"`` texts (none:
    the recipe's); ``settings``: any of :data:`leditspp.recipes.SETTINGS` but ``model`` (None or
    absent: the recipe's, else the model's recommended, else the default); ``scale``,
    ``threshold``: of concepts that give none; ``user_mask``: a mask file or image; ``model``:
    the model (None: the saved inversion's, else the recipe's, else the default) and ``options``
    how it loads (a saved inversion's base and LoRAs where ``options`` names none); ``quiet``:
    only errors from leditspp's logger while the batch runs.
    """

    images: tuple[str, ...] = ()
    output: str = ""
    edits: tuple[str, ...] = ()
    recipe: str | None = None
    inversion: str | None = None
    save_inversion: str | None = None
    masks: bool = False
    resume: bool = False
    overwrite_inputs: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)
    scale: float | None = None
    threshold: float | None = None
    warmup: int = defaults.WARMUP_STEPS
    cooldown: int | None = defaults.COOLDOWN_STEPS
    user_mask: Any = None
    max_pixels: int | None = defaults.MAX_PIXELS
    model: str | None = None
    options: ModelOptions = field(default_factory=ModelOptions)
    quiet: bool = False

    def __post_init__(self) -> None:
        check_arguments("BatchEdit", vars(self), BATCH_KINDS)
        if not isinstance(self.settings, Mapping):
            raise LeditsError(f"BatchEdit: settings must be a mapping, e.g. {{'steps': 20}}; got {self.settings!r}")
        if not isinstance(self.options, ModelOptions):
            raise LeditsError(f"BatchEdit: options must be a ModelOptions; got {self.options!r}")


#: The kind of each :class:`BatchEdit` argument (:data:`leditspp.errors.KINDS`) but settings and user_mask.
BATCH_KINDS = {
    "images": "texts",
    "output": "text",
    "edits": "texts",
    "recipe": "text?",
    "inversion": "text?",
    "save_inversion": "text?",
    "masks": "bool",
    "resume": "bool",
    "scale": "number?",
    "threshold": "number?",
    "warmup": "int",
    "cooldown": "int?",
    "max_pixels": "int?",
    "model": "text?",
    "quiet": "bool",
}


@dataclass(frozen=True)
class Job:
    """One input of a batch edit, planned and checked before the model loads."""

    path: str | None  # the image file; None: the saved inversion of ``BatchEdit.inversion``
    out: Path
    settings: dict[str, Any]
    edits: list[Edit]  # none: the exact reconstruction
    source: Any  # the loaded Inversion, the image (one input) or its path (several: read in turn)
    origins: dict[str, str] = field(default_factory=dict)  # where each setting came from (resolve_settings)


@dataclass(frozen=True)
class EditPlan:
    """What a batch edit will do: the batch (its user mask read, its model options with a saved
    inversion's base and LoRAs), the model it edits with, the jobs to run, the inputs ``resume``
    found finished, the outputs it found made with another recipe (``stale``: edited again), those
    refused by their checks (several inputs: each refused one is recorded, the others run), and
    where it computes (``ray``; None: here)."""

    batch: BatchEdit
    model: str
    jobs: list[Job]
    finished: int
    refused: list[tuple[str, str]]  # (input, error)
    several: bool  # a folder of outputs (and its edit-log.csv)
    ray: RayOptions | None = None
    stale: list[tuple[Path, str]] = field(default_factory=list)  # (output, how its recipe differs)
    #: What the run will do that may surprise, one line each with the fix (:mod:`leditspp.advice`).
    warnings: list[str] = field(default_factory=list)
    #: The model and the scale and threshold of concepts that give none, each with where it came
    #: from ('flag', 'inversion FILE', 'recipe FILE', 'leditspp.json', 'recommended', 'default').
    chosen: dict[str, tuple[Any, str]] = field(default_factory=dict)


def plan_edits(batch: BatchEdit, ray: RayOptions | None = None) -> EditPlan:
    """The editor to load and one checked job per input: recipe, inputs, outputs, settings, edits.

    One input: any problem is a :class:`~leditspp.LeditsError`. Several: an input that fails its
    checks is in ``refused`` and the others are planned."""
    if ray is not None:
        ray.check(batch.options.device)
        if batch.save_inversion:
            raise LeditsError("--save-inversion is for one IMAGE in this process; drop --ray (or --save-inversion)")
    recipe = read_recipe(batch.recipe) if batch.recipe else {}
    model, model_origin = _model_of(batch, recipe)
    if model_origin.startswith("inversion"):  # its model as it was: the base and LoRAs too, unless given
        batch = _files_of(batch, str(batch.inversion))
    check_model_name(model, "--model" if model_origin == "flag" else f"the model of the {model_origin}")
    recommended = model_settings(model).get("recommended", {})
    from_model = recommendation_sources(model)
    edit_defaults, edit_origins = _edit_defaults(batch, recommended, from_model)
    if batch.recipe:  # again, so that its concepts without a scale or threshold get the model's
        recipe = read_recipe(batch.recipe, edit_defaults)
    inputs, checked = _inputs(batch)
    protected, batch = _protected_files(batch, inputs), checked
    outputs = _outputs(inputs, batch.output)
    if not batch.overwrite_inputs:
        _check_output_folder(batch, inputs)
    overrides = {**edit_defaults, "warmup_steps": batch.warmup, "cooldown_steps": batch.cooldown}
    flag_edits = [Edit.parse(text, **overrides) for text in batch.edits]
    jobs, finished, refused, stale = [], 0, [], []
    for path, out in zip(inputs, outputs, strict=True):
        entry = for_image(recipe, path) if path else recipe
        edits = flag_edits or entry.get("edits", [])
        paths = job_paths(out, len(edits), batch.masks)
        if not batch.overwrite_inputs:
            _check_no_overwrite(paths, protected)
        try:
            flags = given({"model": batch.model, **batch.settings})
            settings, sourced = resolve_settings(flags, entry, recommended, from_model, f"recipe {batch.recipe}")
            origins = origins_of(flags, entry, recommended, batch.recipe, model)
            validate_steps(settings["steps"], settings["skip"])
            source = _source(batch, model, path, settings, edits, keep_pixels=len(inputs) == 1, origins=origins)
        except LeditsError as exc:
            if len(inputs) == 1:
                raise
            refused.append((str(path), str(exc)))
            continue
        job = Job(path, out, settings, edits, source, sourced)
        if batch.resume and all(f.exists() for f in paths):
            files = model_files(batch.options.base and source_name(batch.options.base), list(batch.options.loras))
            difference = recipe_difference(out, wanted_recipe(job, model, batch.inversion, files))
            if difference is None:
                finished += 1
                continue
            stale.append((out, difference))
        jobs.append(job)
    chosen = {"model": (model, model_origin), **{k: (v, edit_origins[k]) for k, v in edit_defaults.items()}}
    warnings = _warnings(recipe, inputs, jobs, model)
    return EditPlan(batch, model, jobs, finished, refused, len(inputs) > 1, ray, stale, warnings, chosen)


def _warnings(recipe: Mapping[str, Any], inputs: list[str | None], jobs: list[Job], model: str) -> list[str]:
    """The plan's surprises (:mod:`leditspp.advice`): the model's, recipe entries for no input,
    outputs without edits or without a recipe, a photo given to a demo model."""
    found = [*model_warnings(model), unmatched_recipe_images(recipe, inputs)]
    plain = [job.out for job in jobs if not job.edits]
    found += [
        no_edit(plain) if plain else None,
        *(no_recipe(job.out) for job in jobs if job.out.suffix.lower() != ".png"),
    ]
    photos = (demo_photo(model, _size(job.source), job.settings) for job in jobs if job.path)
    found.append(next((w for w in photos if w), None))
    return [w for w in found if w]


def _size(source: Any) -> tuple[int, int]:
    """An input's pixel size: the image's, or its file's header."""
    if not isinstance(source, (str, Path)):
        return source.size
    with Image.open(source) as image:
        return image.size


def _model_of(batch: BatchEdit, recipe: Mapping[str, Any]) -> tuple[str, str]:
    """The model a batch edits with, and where that came from: ``--model``, else the one the saved
    inversion names, else the recipe's, else the default."""
    if batch.model:
        return batch.model, "flag"
    made_with = model_source(batch.inversion) if batch.inversion else None
    if made_with:
        return made_with, f"inversion {batch.inversion}"
    if recipe.get("model"):
        return recipe["model"], f"recipe {batch.recipe}"
    return defaults.MODEL, "default"


def _protected_files(batch: BatchEdit, inputs: list[str | None]) -> list[Path]:
    """The files a batch reads and must never write over: its images, the recipe, the saved
    inversion and the user mask (given as a file)."""
    named = [batch.recipe, batch.inversion, batch.user_mask if isinstance(batch.user_mask, str) else None]
    return [Path(p) for p in [*inputs, *named] if p]


def _check_no_overwrite(paths: list[Path], protected: list[Path]) -> None:
    """Refuse a job whose output (or mask overlay) is one of the files the batch reads."""
    for path in paths:
        for source in protected:
            if _same_file(path, source):
                raise LeditsError(
                    f"the output {str(path)!r} would overwrite the input {str(source)!r}, which would be "
                    "lost; write elsewhere (-o), or pass --overwrite-inputs to replace it"
                )


def _check_output_folder(batch: BatchEdit, inputs: list[str | None]) -> None:
    """Refuse an output folder that holds inputs: the edits and mask overlays written there would
    be read as inputs by the next run over that folder."""
    if len(inputs) < 2:
        return
    folder = Path(batch.output)
    for item in [*(p for p in batch.images if Path(p).is_dir()), *(str(Path(p).parent) for p in inputs if p)]:
        if _same_file(folder, Path(item)):
            raise LeditsError(
                f"the output folder {batch.output!r} holds the inputs ({item!r}): the edits and their masks "
                "would replace or join them and be edited again by the next run; choose another -o folder "
                "(or pass --overwrite-inputs)"
            )


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one existing file or folder (links and ``..`` resolved)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among ``values`` that are given (not None), in :data:`~leditspp.recipes.SETTINGS` order."""
    return {key: values[key] for key in SETTINGS if values.get(key) is not None}


def resolve_settings(
    flags: dict[str, Any],
    recipe: dict[str, Any],
    recommended: dict[str, Any] | None = None,
    from_model: Mapping[str, str] | None = None,
    recipe_name: str = "recipe",
    schema: Mapping[str, Any] = SETTINGS,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Explicit ``flags`` over the recipe over the model's recommended settings over the defaults
    (``schema``: the settings and their defaults), and where each came from — ``"flag"``,
    ``recipe_name``, the model's (its ``from_model`` source:
    :func:`~leditspp.models.recommendation_sources`) or ``"default"``."""
    check_settings({k: v for k, v in flags.items() if k in SETTINGS}, "command line")
    recommended, from_model = recommended or {}, from_model or {}
    settings, origins = {}, {}
    for key, default in schema.items():
        if key in flags:
            settings[key], origins[key] = flags[key], "flag"
        elif key in recipe:
            settings[key], origins[key] = recipe[key], recipe_name
        elif key in recommended:
            settings[key], origins[key] = recommended[key], from_model.get(key, "recommended")
        else:
            settings[key], origins[key] = default, "default"
    return settings, origins


def origins_of(
    flags: Mapping[str, Any], recipe: Mapping[str, Any], recommended: Mapping[str, Any], path: str | None, model: str
) -> dict[str, str]:
    """Where each setting given comes from, for the errors: its flag, the recipe file or the model's
    recommended settings (its folder's leditspp.json, or its family's rule)."""
    origins = {key: f"the recommended settings of model {model!r} (its leditspp.json or family)" for key in recommended}
    origins |= {key: f"recipe {path}" for key in recipe if key in SETTINGS}
    return origins | {key: "--" + key.replace("_", "-") for key in flags}


def check_against_model(model: str, settings: dict[str, Any], origins: Mapping[str, str]) -> None:
    """Settings that contradict each other or the model, known from its folder before it loads:
    preserve with mask mode none, the lcm solver on a flow model, a height or width off the family's
    side multiple; each error names the value and where it came from."""

    def source(key: str) -> str:
        return f"{key} {settings[key]!r} (from {origins.get(key, 'the defaults')})"

    try:
        check_preserve(settings["preserve"], settings["mask_mode"])
    except LeditsError as exc:
        raise LeditsError(f"{source('preserve')} with {source('mask_mode')}: {exc}") from None
    if settings["solver"] == "lcm" and is_flow_model(model):
        raise LeditsError(
            f"{source('solver')}: the lcm solver is for LCM-distilled DDPM models and {model!r} is a flow model; "
            "use dpmsolver++ or ddpm"
        )
    multiple = size_multiple_hint(model)
    for key in ("height", "width"):
        if multiple and settings[key] and settings[key] % multiple:
            near = settings[key] // multiple * multiple
            raise LeditsError(
                f"{source(key)} is not a multiple of {multiple}, the side multiple of {model!r}; "
                f"use {near or multiple} or {near + multiple}"
            )


def preflight(
    model: str, image: Any, settings: dict[str, Any], max_pixels: int | None, origins: Mapping[str, str] | None = None
) -> None:
    """Checks that need the image but not the model: :func:`check_against_model`, the pixel limit
    and the minimum size."""
    check_against_model(model, settings, origins or {})
    width, height = image.size
    size = (settings["width"] or width, settings["height"] or height)
    check_pixels(size, max_pixels)
    multiple = size_multiple_hint(model)
    if multiple is not None and min(size) < multiple:
        raise LeditsError(
            f"the image is {width}×{height}; this model needs at least {multiple} pixels per side "
            "(upscale it, or pass --height/--width)"
        )


def _edit_defaults(
    batch: BatchEdit, recommended: dict[str, Any], from_model: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Scale and threshold of concepts that give none: the batch's, else the model's, else the
    default; and where each came from."""
    values, origins = {}, {}
    for key in ("scale", "threshold"):
        if getattr(batch, key) is not None:
            values[key], origins[key] = getattr(batch, key), "flag"
        elif key in recommended:
            values[key], origins[key] = recommended[key], from_model.get(key, "recommended")
        else:
            values[key], origins[key] = RECOMMENDABLE[key], "default"
    return values, origins


def _files_of(batch: BatchEdit, inversion: str) -> BatchEdit:
    """``batch`` with the base and the LoRAs the inversion's model was loaded with, where not given."""
    options = batch.options
    base = options.base or model_source(inversion, "base")
    loras = options.loras or tuple(str(lora) for lora in parse_recorded(model_source(inversion, "loras") or ""))
    return replace(batch, options=replace(options, base=base, loras=loras))


def _inputs(batch: BatchEdit) -> tuple[list[str | None], BatchEdit]:
    """The image paths to edit, or ``[None]`` for a saved inversion, the options that depend on
    them checked; and the batch with its user mask read (so workers elsewhere need not see the file)."""
    unknown = [k for k in batch.settings if k not in SETTINGS or k == "model"]
    if unknown:
        raise LeditsError(f"unknown setting(s) {', '.join(unknown)}; give any of {', '.join(SETTINGS)} but model")
    if bool(batch.images) == bool(batch.inversion):
        raise LeditsError("give IMAGE(s) to edit or --inversion FILE, not both")
    inputs = expand_inputs(batch.images) if batch.images else [None]
    if batch.save_inversion and (len(inputs) != 1 or batch.inversion):
        raise LeditsError("--save-inversion needs exactly one IMAGE to invert (not --inversion, not several)")
    if batch.save_inversion:
        check_output(batch.save_inversion, (".safetensors",))
    if batch.inversion:
        _check_inversion_settings(batch.settings)
    if batch.user_mask is not None:
        batch = replace(batch, user_mask=load_mask(batch.user_mask))  # fails before the model loads
    return inputs, batch


def _check_inversion_settings(settings: Mapping[str, Any]) -> None:
    """Refuse settings that would change what a saved inversion fixes."""
    fixed = [k for k in INVERSION_SETTINGS if settings.get(k) is not None]
    if fixed:
        names = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise LeditsError(
            f"{names} cannot change a saved inversion (it fixes them); drop {names}, or invert the image "
            "again with them"
        )


def expand_inputs(items: tuple[str, ...] | list[str]) -> list[str]:
    """Files, folders (their images, sorted) and globs → image paths, in order, without repeats."""
    import glob

    paths: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise LeditsError(f"folder {item!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif any(ch in item for ch in "*?["):
            found = sorted(glob.glob(item))
            if not found:
                raise LeditsError(f"no file matches {item!r}")
        else:
            found = [item]
        paths += [f for f in found if f not in paths]
    return paths


def _outputs(inputs: list[str | None], output: str) -> list[Path]:
    """One output file for one input; for several, ``output`` is a folder of ``<stem>.png``."""
    if len(inputs) == 1:
        check_output(output, OUTPUT_SUFFIXES)
        return [Path(output)]
    folder = Path(output)
    if folder.suffix.lower() in OUTPUT_SUFFIXES:
        raise LeditsError(f"{len(inputs)} images need a folder for -o, not the file {output!r}")
    stems = [Path(p).stem for p in inputs if p]
    if len(set(stems)) != len(stems):
        raise LeditsError("two inputs share a file name; their outputs would collide — edit them separately")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LeditsError(f"cannot create the output folder {output!r} ({exc.strerror}); choose another place") from exc
    check_writable_folder(folder, f"output folder {output!r}")
    return [folder / f"{stem}.png" for stem in stems]


def _source(
    batch: BatchEdit,
    model: str,
    path: str | None,
    settings: dict[str, Any],
    edits: list[Edit],
    keep_pixels: bool,
    origins: Mapping[str, str],
) -> Any:
    """The saved inversion, or the image at ``path`` read now to fail early (its pixels kept only
    with ``keep_pixels``, else its path)."""
    if path is None:
        inversion = Inversion.load(batch.inversion)
        check_warmup(edits, inversion.info.steps)
        return inversion
    image = open_image(path)
    preflight(model, image, settings, batch.max_pixels, origins)
    check_warmup(edits, settings["steps"])
    return image if keep_pixels else path
