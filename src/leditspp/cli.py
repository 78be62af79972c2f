"""The ``leditspp`` command line: a thin layer over :class:`leditspp.Editor`.

Exit codes: 0 success, 2 bad input (one-line message), 1 internal error — or, for ``edit`` with
several inputs, some input failed; for ``eval``, every item failed (some failing is 0 with a count).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import functools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import __version__, defaults
from .editor import check_device
from .edits import Edit, check_warmup
from .errors import LeditsError
from .inversion import Inversion, read_metadata
from .io import PNG_KEY, check_pixels, load_mask, mask_overlays, open_image, save_image
from .jobs import EditorSpec, Item, MapItems, Outcome, RunStats, serial_map
from .masking import MASK_MODES
from .models import RECOMMENDABLE, model_settings, size_multiple_hint
from .recipes import INVERSION_SETTINGS, SETTINGS, check_settings, for_image, read_recipe
from .solvers import SOLVERS, validate_steps

EXAMPLES = """examples:
  leditspp edit examples/shapes.png -e "+red circle:8" -e "-blue square:4" -o out.png   # built-in demo model
  leditspp edit photo.png -e "+sunglasses" -e "-beard:7" --model stable-diffusion-v1-5/stable-diffusion-v1-5 -o out.png
  leditspp edit photos/ "more/*.jpg" -e "+snow:6" --model ./my-sd-folder -o edited/ --masks
  leditspp edit photos/ --recipe recipe.yaml -o edited/      # per-image edits from a recipe file
  leditspp edit photo.png --recipe out.png -o again.png      # re-run the recipe embedded in out.png
  leditspp invert photo.png --model ./my-sd-folder -o photo.inv.safetensors
  leditspp edit --inversion photo.inv.safetensors -e "+cherry blossoms:7@0.75" --model ./my-sd-folder -o out.png
  leditspp info out.png                                      # the recipe of an output, or an inversion's metadata
  leditspp serve                                             # the web UI on http://127.0.0.1:7860
  leditspp eval shapes -o eval/ --sweep scale=4,8,12         # measure edits on the demo world, write a report

edit syntax: [+|-]concept[:scale][@threshold]   ('-' removes the concept)
recipe (JSON/YAML): {"steps": 30, "edits": ["+hat"], "images": {"a.png": {"edits": ["-beard"]}}}
"""
EVAL_SUITES = ("shapes", "tedbench", "piebench")
EVAL_EXAMPLES = """examples:
  leditspp eval shapes -o eval/                              # the demo world (no data), 20 scenes
  leditspp eval shapes -o eval/ --scenes 200 --sweep scale=4,8,12 --resume
  leditspp eval tedbench ./tedbench -o eval-ted/ --model stable-diffusion-v1-5/stable-diffusion-v1-5

OUT gets metrics.csv (a row per edited image), summary.json (means per suite, edit type and sweep
value), report.html (self-contained: tables, the trade-off plot, thumbnails) and images/.
"""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _parser() -> argparse.ArgumentParser:
    """``leditspp invert | edit | serve | info | eval``; the model and inversion options are shared."""
    p = argparse.ArgumentParser(
        prog="leditspp",
        description="Exact LEDITS++ image editing with diffusion models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"leditspp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    model, inversion, ray = _model_options(), _inversion_options(), _ray_options()
    _add_invert(sub, [model, inversion])
    _add_edit(sub, [model, inversion, ray])
    _add_serve(sub, [model])
    _add_info(sub)
    _add_eval(sub, [model, ray])
    return p


def _model_options() -> argparse.ArgumentParser:
    """Which model to load, and how (every command that loads one)."""
    options = argparse.ArgumentParser(add_help=False)
    g = options.add_argument_group("model")
    g.add_argument(
        "--model",
        help="'demo' (the built-in model, default), a hub id or a local diffusers folder (SD 1.x/2.x, SDXL "
        "and their few-step distillations, SD3/3.5, FLUX.1, FLUX.2 [klein], Z-Image, Qwen-Image, Chroma)",
    )
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps … (default: cuda if available)")
    g.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="network precision")
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet: each call shape compiles once (slow), later calls run faster on a GPU",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars, no library warnings")
    g.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    return options


def _ray_options() -> argparse.ArgumentParser:
    """Scale-out on Ray (``edit`` and ``eval``)."""
    options = argparse.ArgumentParser(add_help=False)
    g = options.add_argument_group("scale-out on Ray (pip install 'leditspp[ray]')")
    g.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="compute on Ray workers, one editor each (a GPU each where there are GPUs): no ADDRESS or 'local' "
        "starts Ray on this machine, 'auto' or ray://HOST:PORT joins a cluster",
    )
    g.add_argument("--ray-workers", type=int, metavar="N", help="how many workers [one per GPU, else per CPU]")
    g.add_argument(
        "--ray-env",
        metavar="FILE",
        help="Ray runtime_env for the workers as JSON/YAML (pip, py_modules, env_vars …), for nodes without leditspp",
    )
    return options


def _inversion_options() -> argparse.ArgumentParser:
    """The settings an inversion is made with (``invert`` and ``edit``); None: recipe, model, default."""
    options = argparse.ArgumentParser(add_help=False)
    g = options.add_argument_group("inversion (defaults in brackets)")
    g.add_argument("--steps", type=int, help=f"inversion/edit steps N [{defaults.STEPS}]")
    g.add_argument("--skip", type=float, help=f"skipped fraction of the schedule [{defaults.SKIP}]")
    g.add_argument("--solver", choices=tuple(SOLVERS), help=f"[{defaults.SOLVER}]")
    g.add_argument("--seed", type=int, help=f"seed of the auxiliary noise [{defaults.SEED}]")
    g.add_argument("--source-prompt", help="describes the input; guides the inversion")
    g.add_argument("--source-guidance", type=float, help=f"[{defaults.SOURCE_GUIDANCE}]")
    g.add_argument("--negative-prompt")
    g.add_argument("--height", type=int, help="processing height [image height rounded down]")
    g.add_argument("--width", type=int, help="processing width [image width rounded down]")
    g.add_argument(
        "--max-pixels",
        type=int,
        default=defaults.MAX_PIXELS,
        help="refuse images whose processing size (height × width) exceeds this [%(default)s]",
    )
    return options


def _add_invert(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    pi = sub.add_parser(
        "invert",
        parents=parents,
        help="invert an image and save the inversion for later edits",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pi.add_argument("image", help="image file to invert")
    pi.add_argument("-o", "--output", required=True, help="inversion file to write (.safetensors)")


def _add_edit(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    pe = sub.add_parser(
        "edit",
        parents=parents,
        help="edit images (files, folders, globs) or a saved inversion with text concepts",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pe.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders or globs (or use --inversion)")
    pe.add_argument(
        "-e", "--edit", action="append", default=[], metavar="CONCEPT", help="e.g. '+sunglasses', '-beard:7@0.8'"
    )
    pe.add_argument("-o", "--output", required=True, help="edited image (.png) for one input; a folder for several")
    pe.add_argument("--recipe", help="JSON/YAML recipe, or a PNG written by leditspp, giving settings and edits")
    pe.add_argument("--masks", action="store_true", help="also write each concept's mask overlay: OUT.mask-K.png")
    pe.add_argument("--inversion", help="re-use a saved inversion instead of inverting IMAGE")
    pe.add_argument("--save-inversion", help="also save the inversion made from IMAGE to this file")
    pe.add_argument("--resume", action="store_true", help="skip inputs whose output files all exist already")
    g = pe.add_argument_group("edit (defaults for every -e concept)")
    g.add_argument("--scale", type=float, help=f"edit scale [the model's recommended, else {defaults.EDIT_SCALE}]")
    g.add_argument(
        "--threshold", type=float, help=f"mask threshold λ [the model's recommended, else {defaults.EDIT_THRESHOLD}]"
    )
    g.add_argument("--warmup", type=int, default=defaults.WARMUP_STEPS, help="warm-up steps [%(default)s]")
    g.add_argument("--cooldown", type=int, default=defaults.COOLDOWN_STEPS, help="cool-down step [none]")
    g.add_argument("--mask-mode", choices=MASK_MODES, help=f"[{defaults.MASK_MODE}]")
    g.add_argument("--user-mask", help="mask image (white = may change), any size")
    g.add_argument("--guidance-rescale", type=float, help=f"[{defaults.GUIDANCE_RESCALE}]")
    g.add_argument(
        "--preserve",
        type=int,
        metavar="K",
        help="keep the input outside the concepts' masks, grown by K latent cells (0 … 64; try 1) [off]",
    )


def _add_serve(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    ps = sub.add_parser("serve", help="start the web UI (Gradio) on this machine", parents=parents)
    ps.add_argument("--host", default="127.0.0.1", help="interface to listen on [%(default)s]")
    ps.add_argument("--port", type=int, default=7860, help="[%(default)s]")
    ps.add_argument("--max-upload-mb", type=float, default=20, help="largest accepted upload [%(default)s MB]")


def _add_info(sub: Any) -> None:
    pinfo = sub.add_parser("info", help="print the recipe embedded in a PNG, or an inversion file's metadata")
    pinfo.add_argument("file", help="a PNG written by leditspp, or an inversion (.safetensors)")
    pinfo.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def _add_eval(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    pv = sub.add_parser(
        "eval",
        parents=parents,
        help="measure edits on a benchmark suite: metrics.csv, summary.json, report.html",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pv.add_argument("suite", metavar="SUITE", help=f"one of {', '.join(EVAL_SUITES)}")
    pv.add_argument("data", nargs="?", metavar="DATA", help="the benchmark's folder (tedbench, piebench)")
    pv.add_argument("-o", "--output", required=True, help="folder for metrics.csv, summary.json, report.html, images/")
    pv.add_argument(
        "--metrics",
        help="comma-separated metrics (tedbench/piebench: clip_score, clip_score_edit_region, clip_image, lpips, "
        "psnr, ssim, mse, structure_distance, latent_error, time) [shapes: all; tedbench: clip_score,lpips,time; "
        "piebench: PIE-Bench's]",
    )
    pv.add_argument("--clip-model", metavar="ID|DIR", help="CLIP for the clip metrics [openai/clip-vit-large-patch14]")
    pv.add_argument("--dino-model", metavar="ID|DIR", help="DINO ViT for structure_distance [facebook/dino-vitb8]")
    pv.add_argument("--limit", type=int, help="evaluate only the first N items")
    pv.add_argument("--resume", action="store_true", help="continue a run in OUT: finished items are not redone")
    pv.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2,…",
        help="repeat every item for each value (several --sweep: every combination), e.g. scale=5,10,15",
    )
    g = pv.add_argument_group("edit settings (defaults: the model's recommended, else the library's)")
    g.add_argument("--steps", type=int, help=f"[{defaults.STEPS}]")
    g.add_argument("--skip", type=float, help=f"[{defaults.SKIP}]")
    g.add_argument("--scale", type=float, help=f"edit scale [{defaults.EDIT_SCALE}]")
    g.add_argument("--threshold", type=float, help=f"mask threshold λ [{defaults.EDIT_THRESHOLD}]")
    g.add_argument("--preserve", type=int, metavar="K", help="keep the source outside the masks grown by K cells [off]")
    g.add_argument("--scenes", type=int, help="shapes suite: number of scenes [20]")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="leditspp: %(message)s")
    try:
        return _run(args)
    except LeditsError as exc:
        print(f"leditspp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("leditspp: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(f"leditspp: internal error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        return _info(args.file)
    check_device(args.device)  # before reading images or loading anything
    if args.command == "serve":
        return _serve(args)
    if args.command == "invert":
        return _invert_command(args)
    if args.command == "eval":
        return _eval_command(args)
    return _edit_command(args)


def _info(path: str) -> int:
    """Print a PNG's recipe or an inversion's metadata as JSON."""

    if Path(path).suffix.lower() == ".safetensors":
        meta = read_metadata(path)
        data = {"format": meta["format"], "format_version": meta.get("format_version"), **json.loads(meta["info"])}
    else:
        read_recipe(path)  # validates, with a clear error for foreign files
        from PIL import Image

        with Image.open(path) as im:
            data = json.loads(im.text[PNG_KEY])
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise LeditsError("the web UI needs Gradio, which is not installed: pip install 'leditspp[web]'")
    from .webui import serve

    print(f"leditspp web UI on http://{args.host}:{args.port} (model: {args.model or defaults.MODEL}); Ctrl-C stops it")
    serve(args.model or defaults.MODEL, args.host, args.port, args.max_upload_mb, args.device, compile=args.compile)
    return 0


def _settings(
    args: argparse.Namespace, recipe: dict[str, Any], recommended: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Explicit flags over the recipe over the model's recommended settings over the defaults."""
    flags = {key: getattr(args, key) for key in SETTINGS if getattr(args, key, None) is not None}
    check_settings(flags, "command line")
    base = {**SETTINGS, **{k: v for k, v in (recommended or {}).items() if k in SETTINGS}}
    return {key: flags.get(key, recipe.get(key, default)) for key, default in base.items()}


def _recommended(args: argparse.Namespace, recipe: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model this run loads and the settings its folder recommends (``leditspp.json``)."""
    model = args.model or recipe.get("model") or defaults.MODEL
    return model, model_settings(model).get("recommended", {})


def _edit_defaults(args: argparse.Namespace, recommended: dict[str, Any]) -> dict[str, Any]:
    """Scale and threshold of concepts that give none: the flag, else the model's, else the default."""
    rec = {**RECOMMENDABLE, **recommended}
    return {key: rec[key] if getattr(args, key) is None else getattr(args, key) for key in ("scale", "threshold")}


def _check_inversion_flags(args: argparse.Namespace) -> None:
    """Refuse flags that would change what a saved inversion fixes."""
    given = [k for k in INVERSION_SETTINGS if getattr(args, k, None) is not None]
    if given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise LeditsError(
            f"{names} cannot change a saved inversion (it fixes them); drop {names}, or invert the image "
            "again with them"
        )


def _preflight(args: argparse.Namespace, model: str, image: Any, settings: dict[str, Any]) -> None:
    """Checks that need the image but not the model: the pixel limit and the minimum size."""
    width, height = image.size
    size = (settings["width"] or width, settings["height"] or height)
    check_pixels(size, args.max_pixels)
    multiple = size_multiple_hint(model)
    if multiple is not None and min(size) < multiple:
        raise LeditsError(
            f"the image is {width}×{height}; this model needs at least {multiple} pixels per side "
            "(upscale it, or pass --height/--width)"
        )


def _invert_command(args: argparse.Namespace) -> int:
    settings = _settings(args, {}, _recommended(args, {})[1])
    validate_steps(settings["steps"], settings["skip"])
    _check_output(args.output, (".safetensors",))
    image = open_image(args.image)
    _preflight(args, settings["model"], image, settings)
    editor = _load_editor(args, settings["model"])
    _invert(editor, image, settings, _progress(args.quiet), args.max_pixels).save(args.output)
    print(f"wrote {args.output}")
    return 0


@dataclass(frozen=True)
class _Job:
    """One input of ``edit``, planned and checked before the model loads."""

    path: str | None  # the image file; None: the saved inversion of --inversion
    out: Path
    settings: dict[str, Any]
    edits: list[Edit]  # none: the exact reconstruction
    source: Any  # the loaded Inversion, the image (one input) or its path (several: read in turn)


@dataclass(frozen=True)
class _EditPlan:
    """What ``edit`` will do: the model, the jobs to run, the inputs --resume found finished and
    those refused by their checks (several inputs: each refused one is recorded, the others run)."""

    model: str
    jobs: list[_Job]
    finished: int
    refused: list[tuple[str, str]]  # (input, error)
    several: bool  # a folder of outputs (and its edit-log.csv)


EDIT_LOG = "edit-log.csv"


def _edit_command(args: argparse.Namespace) -> int:
    """Check everything that is cheap to check, then edit every input (in this process with the
    model loaded once, or on Ray workers); each output written here, atomically, as it is done.

    One input: any problem is the command's error (exit 2). Several: an input that fails is
    reported, recorded in ``OUT/edit-log.csv`` and the others go on (exit 1 at the end)."""
    if args.ray is not None:
        _check_ray(args)
    plan = _plan_edits(args)
    stats = RunStats(total=len(plan.jobs) + plan.finished + len(plan.refused), skipped=plan.finished)
    log = _EditLog(Path(args.output) / EDIT_LOG) if plan.several else None
    for path, error in plan.refused:
        _record_failure(log, path, error)
        stats.failed += 1
    items = [Item(str(job.out), "edit", "", data=job) for job in plan.jobs]  # each input its own group
    bar = _item_progress(args.quiet or not (plan.several or args.ray), "edit", stats)
    if bar is not None:
        bar(stats.failed + stats.skipped, stats.total)
    with _edit_mapper(args, plan, stats) as map_items:
        start = time.perf_counter()
        for outcome in map_items(items):
            job = outcome.item.data
            if outcome.error:
                _record_failure(log, job.path or args.inversion, outcome.error)
            else:
                _save_files(outcome.row, quiet=bool(bar))
                if log is not None:
                    log.add(job.path, job.out, "done", "", outcome.seconds)
            stats.count(outcome.error, start)
            if bar is not None:
                bar(stats.done + stats.failed + stats.skipped, stats.total)
    if not args.quiet and (plan.several or args.ray is not None):
        print(f"edit: {stats.line()}", file=sys.stderr)
    return 1 if stats.failed else 0


def _record_failure(log: _EditLog | None, path: str | None, error: str) -> None:
    """An input that failed: said on stderr and, with several inputs, written to the log."""
    print(f"leditspp: {path} failed: {error}".replace(f"failed: {path}: ", "failed: "), file=sys.stderr)
    if log is not None:
        log.add(path, None, "failed", error, 0.0)


@contextlib.contextmanager
def _edit_mapper(args: argparse.Namespace, plan: _EditPlan, stats: RunStats) -> Iterator[MapItems]:
    """How the jobs are computed: on Ray (each worker loads the model once; images read here and
    shipped), or here with the model loaded on first use (one input: its error is the command's)."""
    if args.ray is not None and plan.jobs:  # (nothing to do: no Ray to start)
        from .distributed import ray_backend, ray_map

        worker_args = argparse.Namespace(**{**vars(args), "user_mask": _user_mask(args)})
        with ray_backend(args.ray, _ray_env(args)):
            yield ray_map(
                functools.partial(_load_editor, args, plan.model),
                functools.partial(_job_renderer, worker_args, plan.model),
                workers=args.ray_workers,
                stats=stats,
                prepare=_ship_job,
            )
        return

    def in_process(items: Sequence[Item]) -> Iterator[Outcome]:
        if not items:
            return
        evaluate = _job_renderer(args, plan.model, _load_editor(args, plan.model), _progress(args.quiet))
        if plan.several:
            yield from serial_map(evaluate)(items)
        else:  # no catching: the one input's problem is the command's error
            yield from (Outcome(item, evaluate(item), "", 0.0) for item in items)

    yield in_process


def _user_mask(args: argparse.Namespace) -> Any:
    """--user-mask read here, so workers on other machines need not see the file."""
    return load_mask(args.user_mask) if args.user_mask else None


def _ship_job(item: Item) -> Item:
    """On the driver, just before a Ray worker gets the job: its image read, to travel with it."""
    job = item.data
    if isinstance(job.source, str):
        job = replace(job, source=open_image(job.source))
    return replace(item, data=job)


def _check_ray(args: argparse.Namespace) -> None:
    """Ray installed, and no option that only makes sense in one process."""
    from .distributed import import_ray

    import_ray()  # a missing Ray is refused before any work
    if getattr(args, "save_inversion", None):
        raise LeditsError("--save-inversion is for one IMAGE in this process; drop --ray (or --save-inversion)")
    if args.device and args.device.startswith("cuda:"):
        raise LeditsError(f"with --ray each worker gets a GPU of its own; give --device cuda, not {args.device!r}")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise LeditsError(f"--ray-workers must be ≥ 1; got {args.ray_workers}")
    _ray_env(args)


def _ray_env(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --ray-env file: a Ray runtime_env (a mapping), read as YAML (JSON is YAML)."""
    if not args.ray_env:
        return None
    import yaml

    try:
        env = yaml.safe_load(Path(args.ray_env).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LeditsError(f"cannot read --ray-env {args.ray_env!r} ({exc}); give a JSON or YAML file") from exc
    if not isinstance(env, dict):
        raise LeditsError(
            f'--ray-env {args.ray_env!r} must hold a mapping such as {{"pip": ["leditspp[ray]"]}}; '
            f"got {type(env).__name__}"
        )
    return env


def _job_renderer(args: argparse.Namespace, model: str, editor: Any, bar: Any = None) -> Any:
    """item (a job) → the files to write, as (path, image, metadata); on a Ray worker or here."""
    return lambda item: _output_files(args, item.data, model, *_edit_job(editor, args, item.data, bar))


class _EditLog:
    """``OUT/edit-log.csv``, appended to as outputs are written or inputs fail: time, input,
    output, status (done / failed), error, seconds. A resumed run appends to it."""

    COLUMNS = ("time", "input", "output", "status", "error", "seconds")

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, source: str | None, out: Path | None, status: str, error: str, seconds: float) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.COLUMNS)
            now = datetime.datetime.now().isoformat(timespec="seconds")
            writer.writerow([now, source or "", out or "", status, error, f"{seconds:.2f}"])


def _plan_edits(args: argparse.Namespace) -> _EditPlan:
    """The model to load and one checked job per input: recipe, inputs, outputs, settings, edits."""
    recipe = read_recipe(args.recipe) if args.recipe else {}
    model, recommended = _recommended(args, recipe)
    edit_defaults = _edit_defaults(args, recommended)
    if args.recipe:  # again, so that its concepts without a scale or threshold get the model's
        recipe = read_recipe(args.recipe, edit_defaults)
    inputs = _edit_inputs(args)
    outputs = _outputs(inputs, args.output)
    overrides = {**edit_defaults, "warmup_steps": args.warmup, "cooldown_steps": args.cooldown}
    flag_edits = [Edit.parse(text, **overrides) for text in args.edit]
    jobs, finished, refused = [], 0, []
    for path, out in zip(inputs, outputs, strict=True):
        entry = for_image(recipe, path) if path else recipe
        edits = flag_edits or entry.get("edits", [])
        if args.resume and all(f.exists() for f in _job_paths(out, len(edits), args.masks)):
            finished += 1
            continue
        try:
            settings = _settings(args, entry, recommended)
            validate_steps(settings["steps"], settings["skip"])
            source = _edit_source(args, model, path, settings, edits, keep_pixels=len(inputs) == 1)
        except LeditsError as exc:
            if len(inputs) == 1:
                raise
            refused.append((str(path), str(exc)))
            continue
        jobs.append(_Job(path, out, settings, edits, source))
    return _EditPlan(model, jobs, finished, refused, several=len(inputs) > 1)


def _edit_inputs(args: argparse.Namespace) -> list[str | None]:
    """The image paths to edit, or ``[None]`` for --inversion; the options that depend on them checked."""
    if bool(args.images) == bool(args.inversion):
        raise LeditsError("give IMAGE(s) to edit or --inversion FILE, not both")
    inputs = _expand_inputs(args.images) if args.images else [None]
    if args.save_inversion and (len(inputs) != 1 or args.inversion):
        raise LeditsError("--save-inversion needs exactly one IMAGE to invert (not --inversion, not several)")
    if args.save_inversion:
        _check_output(args.save_inversion, (".safetensors",))
    if args.inversion:
        _check_inversion_flags(args)
    if args.user_mask:
        load_mask(args.user_mask)  # fail before the model loads
    return inputs


def _edit_source(
    args: argparse.Namespace,
    model: str,
    path: str | None,
    settings: dict[str, Any],
    edits: list[Edit],
    keep_pixels: bool,
) -> Any:
    """The saved inversion, or the image at ``path`` read now to fail early (its pixels kept only
    with ``keep_pixels``, else its path)."""
    if path is None:
        inversion = Inversion.load(args.inversion)
        check_warmup(edits, inversion.info.steps)
        return inversion
    image = open_image(path)
    _preflight(args, model, image, settings)
    check_warmup(edits, settings["steps"])
    return image if keep_pixels else path


def _edit_job(editor: Any, args: argparse.Namespace, job: _Job, bar: Any) -> tuple[Any, Any]:
    """Invert the job's image (unless it is a saved inversion) and edit it: (inversion, result)."""
    if job.path is None:
        inversion = job.source
    else:
        image = open_image(job.source) if isinstance(job.source, str) else job.source
        inversion = _invert(editor, image, job.settings, bar, args.max_pixels)
    if args.save_inversion:
        inversion.save(args.save_inversion)
    result = editor.edit(
        inversion,
        job.edits,
        mask_mode=job.settings["mask_mode"],
        user_mask=args.user_mask,
        guidance_rescale=job.settings["guidance_rescale"],
        preserve=job.settings["preserve"],
        progress=bar,
    )
    return inversion, result


def _job_paths(out: Path, n_edits: int, masks: bool) -> list[Path]:
    """The files a job writes: its output, and with --masks one overlay per concept."""
    return [out, *(out.with_name(f"{out.stem}.mask-{k}.png") for k in range(1, n_edits + 1) if masks)]


def _output_files(
    args: argparse.Namespace, job: _Job, model: str, inversion: Any, result: Any
) -> list[tuple[Path, Any, dict[str, Any]]]:
    """What to write for a job, as (path, image, PNG metadata): the edited image with its recipe,
    and with --masks each concept's mask overlay."""
    overlays = mask_overlays(result.images[0], result.masks[:, 0]) if args.masks else []
    paths = _job_paths(job.out, len(overlays), bool(overlays))
    metadata = [{"leditspp": __version__, "mask_of": edit.to_dict()} for edit in result.edits[: len(overlays)]]
    # the masks first, the output last: an output that exists is a finished job (--resume)
    files = list(zip(paths[1:], overlays, metadata, strict=True))
    return [*files, (job.out, result.images[0], _output_recipe(args, job, model, inversion.info))]


def _save_files(files: list[tuple[Path, Any, dict[str, Any]]], quiet: bool = False) -> None:
    """Write each (path, image, metadata), atomically, saying so (unless ``quiet``: a bar shows it)."""
    for path, image, recipe in files:
        save_image(image, path, recipe)
        if not quiet:
            print(f"wrote {path}")


def _output_recipe(args: argparse.Namespace, job: _Job, model: str, info: Any) -> dict[str, Any]:
    """What reproduces the output (``--recipe OUT.png``): the settings, with those the inversion
    fixes as it recorded them, the edits, and informational keys (see :mod:`leditspp.recipes`)."""
    return {
        "leditspp": __version__,
        **job.settings,
        "model": model,
        **{key: getattr(info, key) for key in INVERSION_SETTINGS if key != "seed"},
        "seed": job.settings["seed"] if job.path else None,  # a saved inversion does not record its seed
        "fingerprint": info.model,
        "family": info.family,
        "dtype": info.dtype,
        "source": Path(job.path).name if job.path else None,
        "inversion": args.inversion,
        "edits": [e.to_dict() for e in job.edits],
    }


def _expand_inputs(items: list[str]) -> list[str]:
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
        _check_output(output, OUTPUT_SUFFIXES)
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
    _check_writable_folder(folder, f"output folder {output!r}")
    return [folder / f"{stem}.png" for stem in stems]


def _invert(editor: Any, image: Any, settings: dict[str, Any], bar: Any, max_pixels: int | None) -> Any:
    return editor.invert(
        image,
        steps=settings["steps"],
        skip=settings["skip"],
        solver=settings["solver"],
        seed=settings["seed"],
        source_prompt=settings["source_prompt"],
        source_guidance=settings["source_guidance"],
        negative_prompt=settings["negative_prompt"],
        height=settings["height"],
        width=settings["width"],
        max_pixels=max_pixels,
        progress=bar,
    )


def _load_editor(args: argparse.Namespace, model: str) -> Any:
    return EditorSpec(model, args.device, args.dtype, args.compile, args.quiet).load()


def _check_output(path: str, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, an output with the wrong suffix or in a folder we cannot write to."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise LeditsError(f"output {path!r} must end in one of {', '.join(suffixes)}")
    if p.is_dir():
        raise LeditsError(f"output {path!r} is a folder; give a file name inside it")
    _check_writable_folder(p.parent, f"output {path!r}")


def _check_writable_folder(folder: Path, what: str) -> None:
    """Probe ``folder`` by creating (and removing) a file in it: permissions, read-only mounts and
    pseudo file systems all answer truthfully only to an attempt."""
    if not folder.exists():
        raise LeditsError(f"the folder of {what} does not exist; create it first")
    if not folder.is_dir():
        raise LeditsError(f"{what}: {str(folder)!r} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".leditspp-probe-"):
            pass
    except OSError as exc:
        raise LeditsError(f"{what}: cannot write in {str(folder)!r} ({exc.strerror}); choose another place") from exc


@dataclass(frozen=True)
class _EvalPlan:
    """A suite's checked work: the items (sweep expanded), how to build ``evaluate_item`` from the
    loaded editor, and the report's title and plot axes."""

    items: list[Any]
    evaluator: Any  # Callable[[Editor], Callable[[Item], Row]]
    title: str
    plot: tuple[str, str]
    prepare: Any = None  # Ray: item → item with its input read, on the driver (None: nothing to read)


def _eval_command(args: argparse.Namespace) -> int:
    """Check the suite, its data, settings and metric models, load the model, run every item,
    write the report."""
    from .evaluation import report, runner

    _check_eval_suite(args)
    if args.ray is not None:
        _check_ray(args)
    sweep = runner.parse_sweep(args.sweep)
    model, recommended = _recommended(args, {})
    plan_suite = _plan_shapes if args.suite == "shapes" else _plan_benchmark
    plan = plan_suite(args, sweep, {**RECOMMENDABLE, **recommended})
    out = _eval_output(args.output, args.resume)
    stats = RunStats()
    keys = list(sweep)
    options = {"resume": args.resume, "progress": _item_progress(args.quiet, args.suite, stats), "sweep_keys": keys}
    if not runner.pending(plan.items, out, args.resume):  # a finished run: no model, no Ray, the report again
        summary = runner.run(plan.items, None, out, map_items=lambda items: iter(()), stats=stats, **options)
    elif args.ray is None:
        summary = runner.run(plan.items, plan.evaluator(_load_editor(args, model)), out, stats=stats, **options)
    else:
        summary = _eval_on_ray(args, model, plan, out, stats, options)
    if not args.quiet:
        print(f"eval: {stats.line()}", file=sys.stderr)
    rows = runner.read_rows(out / runner.METRICS_CSV)
    title = f"leditspp eval {plan.title} — {model}"
    path = report.write_report(out, rows, summary, title=title, plot=plan.plot, sweep_keys=keys)
    print(f"wrote {out / runner.METRICS_CSV}, {out / runner.SUMMARY_JSON} and {path}")
    code, closing = _eval_outcome(summary)
    if closing:
        print(f"leditspp: {closing}", file=sys.stderr)
    return code


def _eval_outcome(summary: dict[str, Any]) -> tuple[int, str]:
    """The exit code of an ``eval`` run and its closing line: 0 when some items were measured (the
    line counts any failures), 1 when every item failed — nothing was measured, so no number in
    the report stands for the benchmark."""
    failed, total = summary["failed"], summary["items"]
    if not failed:
        return 0, ""
    if failed < total:
        return 0, f"{failed} of {total} items failed; see summary.json"
    first = summary["errors"][0]
    return 1, (
        f"every item failed ({failed} of {total}), so nothing was measured; the first, {first['item']}: "
        f"{first['error']} (all errors: summary.json)"
    )


def _eval_on_ray(
    args: argparse.Namespace, model: str, plan: _EvalPlan, out: Path, stats: RunStats, options: dict[str, Any]
) -> Any:
    """The same run with the items computed by Ray workers (each loads the model once, a scene's
    items go to one worker); the runner here writes every output."""
    from .distributed import ray_backend, ray_map
    from .evaluation import runner

    load = functools.partial(_load_editor, args, model)
    with ray_backend(args.ray, _ray_env(args)):
        mapper = ray_map(load, plan.evaluator, workers=args.ray_workers, stats=stats, prepare=plan.prepare)
        return runner.run(plan.items, None, out, map_items=mapper, stats=stats, **options)


def _eval_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The edit settings given as flags (steps, skip, scale, threshold, preserve)."""
    keys = ("steps", "skip", "scale", "threshold", "preserve")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _plan_shapes(args: argparse.Namespace, sweep: dict[str, list[float]], recommended: dict[str, Any]) -> _EvalPlan:
    from .evaluation import runner, shapes_suite

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    shapes_suite.check_metrics(metrics)
    if args.clip_model or args.dino_model:
        raise LeditsError("--clip-model/--dino-model are for tedbench and piebench; shapes measures by pixels")
    shapes_suite.check_settings(_eval_settings(args), sweep, recommended)
    params = {k: recommended[k] for k in ("steps", "skip", "scale", "threshold")} | _eval_settings(args)
    scenes = 20 if args.scenes is None else args.scenes
    items = runner.expand_sweep(_limit(shapes_suite.items(scenes, params), args.limit), sweep)
    return _EvalPlan(
        items,
        lambda editor: shapes_suite.ShapesEvaluator(editor, metrics),
        f"shapes, {scenes} scenes",
        shapes_suite.PLOT,
    )


def _plan_benchmark(args: argparse.Namespace, sweep: dict[str, list[float]], recommended: dict[str, Any]) -> _EvalPlan:
    """TEdBench++ / PIE-Bench: the manifest read and checked, the metric models loaded."""
    from .evaluation import manifests, photo_suite, runner
    from .evaluation import metrics as metric_names

    if args.scenes is not None:
        raise LeditsError(f"--scenes is for the shapes suite; {args.suite} takes its items from DATA (see --limit)")
    photo_suite.check_settings(_eval_settings(args), sweep, {k: recommended[k] for k in ("steps", "skip")})
    names = metric_names.check_metrics(args.metrics) if args.metrics else photo_suite.DEFAULT_METRICS[args.suite]
    entries = manifests.READERS[args.suite](args.data)
    items = runner.expand_sweep(_limit(photo_suite.items(entries, args.suite, _eval_settings(args)), args.limit), sweep)
    scorers = photo_suite.load_scorers(
        names, clip_model=args.clip_model, dino_model=args.dino_model, device=args.device
    )
    fallback = {"steps": recommended["steps"], "skip": recommended["skip"], "seed": defaults.SEED}
    return _EvalPlan(
        items,
        lambda editor: photo_suite.PhotoEvaluator(editor, names, scorers, fallback),
        f"{args.suite} ({args.data})",
        photo_suite.PLOT,
        photo_suite.with_pixels,
    )


def _check_eval_suite(args: argparse.Namespace) -> None:
    """A known suite, with DATA where it needs one (an existing folder) and none where it does not."""
    if args.suite not in EVAL_SUITES:
        raise LeditsError(f"unknown suite {args.suite!r}; choose one of {', '.join(EVAL_SUITES)}")
    if args.suite == "shapes":
        if args.data:
            raise LeditsError(f"the shapes suite is built in and takes no DATA; drop {args.data!r}")
        return
    if not args.data:
        raise LeditsError(
            f"the {args.suite} suite needs DATA, the benchmark's folder: leditspp eval {args.suite} DIR -o OUT"
        )
    if not Path(args.data).is_dir():
        raise LeditsError(f"DATA {args.data!r} is not a folder; give the {args.suite} benchmark's folder")


def _limit(items: list[Any], limit: int | None) -> list[Any]:
    """The first ``limit`` items (all with None)."""
    if limit is None:
        return items
    if limit < 1:
        raise LeditsError(f"--limit must be ≥ 1; got {limit}")
    return items[:limit]


def _eval_output(output: str, resume: bool) -> Path:
    """The output folder, created if needed and probed for writing; one holding a finished or
    stopped run is refused without --resume."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise LeditsError(f"-o {output!r} is a file; eval writes a folder (metrics.csv, summary.json, report.html)")
    if (out / "metrics.csv").exists() and not resume:
        raise LeditsError(f"{output!r} holds an earlier run; pass --resume to continue it, or choose another -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LeditsError(f"cannot create the output folder {output!r} ({exc.strerror}); choose another place") from exc
    _check_writable_folder(out, f"output folder {output!r}")
    return out


def _item_progress(quiet: bool, desc: str, stats: RunStats) -> Any:
    """A ``progress(done, total)`` over items drawn as one tqdm bar, with the failed and retried
    counts and the items per minute of ``stats`` (None with --quiet)."""
    if quiet:
        return None
    from tqdm import tqdm

    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, initial=done, desc=desc, unit="edit", file=sys.stderr))
        rate = f"{stats.per_minute:.1f}/min" if stats.seconds else "…/min"
        bars[0].set_postfix_str(f"{stats.failed} failed, {stats.retried} retried, {rate}", refresh=False)
        bars[0].update(done - bars[0].n)
        if done >= total:
            bars[0].close()

    return update


def _progress(quiet: bool) -> Any:
    if quiet:
        return None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


if __name__ == "__main__":
    sys.exit(main())
