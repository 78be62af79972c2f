"""The ``leditspp`` command line: the parser and ``main``; each command turns its flags into the
library's values and calls it (:mod:`.edit` → :mod:`leditspp.batch`, :mod:`.eval` →
:func:`leditspp.evaluation.evaluate`, :mod:`.invert`, :mod:`.info`, :mod:`.serve`).

The parser imports nothing heavy (its choices are :mod:`leditspp.defaults`' constants), so
``leditspp --help`` answers at once; each command imports torch and diffusers when it runs.

Exit codes: 0 success, 2 bad input (one-line message), 1 internal error — or, for ``edit`` with
several inputs, some input failed; for ``eval``, some item failed (the closing line counts them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from .. import __version__, defaults
from ..errors import LeditsError

#: What ``--help`` says where the model's recommended value is the default: the run uses the
#: loaded model's (its leditspp.json, its checkpoint's or its family's), else the library's.
RECOMMENDED = "the model's recommendation"

EXAMPLES = """examples:
  leditspp edit examples/shapes.png -e "+red circle:8" -e "-blue square:4" -o out.png   # built-in demo model
  leditspp edit photo.png -e "+sunglasses" -e "-beard:7" --model stable-diffusion-v1-5/stable-diffusion-v1-5 -o out.png
  leditspp edit photos/ "more/*.jpg" -e "+snow:6" --model ./my-sd-folder -o edited/ --masks
  leditspp edit photos/ --recipe recipe.yaml -o edited/      # per-image edits from a recipe file
  leditspp edit photo.png --recipe out.png -o again.png      # re-run the recipe embedded in out.png
  leditspp invert photo.png --model ./my-sd-folder -o photo.inv.safetensors
  leditspp edit --inversion photo.inv.safetensors -e "+cherry blossoms:7@0.75" -o out.png   # its model, as it names it
  leditspp info out.png                                      # the recipe of an output, or an inversion's metadata
  leditspp serve                                             # the web UI on http://127.0.0.1:7860
  leditspp eval shapes -o eval/ --sweep scale=4,8,12         # measure edits on the demo world, write a report

edit syntax: [+|-]concept[:scale][@threshold]   ('-' removes the concept)
recipe (JSON/YAML): {"steps": 30, "edits": ["+hat"], "images": {"a.png": {"edits": ["-beard"]}}}
"""
EVAL_EXAMPLES = """examples:
  leditspp eval shapes -o eval/                              # the demo world (no data), 20 scenes
  leditspp eval shapes -o eval/ --scenes 200 --sweep scale=4,8,12 --resume
  leditspp eval tedbench ./tedbench -o eval-ted/ --model stable-diffusion-v1-5/stable-diffusion-v1-5

OUT gets metrics.csv (a row per edited image), summary.json (means per suite, edit type and sweep
value), report.html (self-contained: tables, the trade-off plot, thumbnails) and images/.
"""


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
    model, inversion, ray, files = _model_options(), _inversion_options(), _ray_options(), _model_files()
    _add_invert(sub, [model, files, inversion])
    _add_edit(sub, [model, files, inversion, ray])
    _add_serve(sub, [model, files])
    _add_info(sub)
    _add_eval(sub, [model, ray])
    return p


def _model_options() -> argparse.ArgumentParser:
    """Which model to load, and how (every command that loads one)."""
    options = argparse.ArgumentParser(add_help=False)
    g = options.add_argument_group("model")
    g.add_argument(
        "--model",
        help="'demo' (the built-in model, default), a hub id, a local diffusers folder or a single-file "
        "checkpoint (.safetensors/.ckpt; see --base) (SD 1.x/2.x, SDXL "
        "and their few-step distillations, SD3/3.5, FLUX.1, FLUX.2 [klein], Z-Image, Qwen-Image, Chroma); "
        "eval: several, comma-separated, side by side (demo,demo-flow)",
    )
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps … (default: cuda if available)")
    g.add_argument("--dtype", choices=defaults.DTYPES, help="network precision")
    g.add_argument(
        "--offload",
        choices=defaults.OFFLOADS,
        default=defaults.OFFLOAD,
        help="memory plan: text encoders off the GPU between calls (model), the denoiser group-offloaded too "
        "(group), everything resident (none), or the lightest that fits the free memory (auto) [%(default)s]",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the denoiser (CUDA graphs on a GPU): each call shape compiles once (slow), "
        "later calls run faster",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars, no library warnings")
    g.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    return options


def _model_files() -> argparse.ArgumentParser:
    """The user's own model files: a single file's base and LoRAs (``invert``, ``edit``, ``serve``)."""
    options = argparse.ArgumentParser(add_help=False)
    g = options.add_argument_group("model files")
    g.add_argument(
        "--base",
        metavar="MODEL",
        help="for a single-file --model: the hub id or diffusers folder it was fine-tuned from, giving the "
        "configs and the parts the file lacks (text encoders, tokenizers, scheduler; all but the transformer "
        "for a FLUX.1/SD3/Chroma/Z-Image transformer file)",
    )
    g.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="apply a LoRA (a .safetensors file, a folder or a hub id) at SCALE [1]; repeat for several. "
        "Inversions record them: an edit with other LoRAs is refused",
    )
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
    g.add_argument("--steps", type=int, help=f"inversion/edit steps N [{RECOMMENDED}]")
    g.add_argument("--skip", type=float, help=f"skipped fraction of the schedule [{RECOMMENDED}]")
    g.add_argument("--solver", choices=defaults.SOLVERS, help=f"[{RECOMMENDED}]")
    g.add_argument("--seed", type=int, help=f"seed of the auxiliary noise [{defaults.SEED}]")
    g.add_argument("--source-prompt", help="describes the input; guides the inversion")
    g.add_argument("--source-guidance", type=float, help=f"guidance of the source prompt [{RECOMMENDED}]")
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
    pe.add_argument(
        "--inversion", help="re-use a saved inversion instead of inverting IMAGE (its model, unless --model is given)"
    )
    pe.add_argument("--save-inversion", help="also save the inversion made from IMAGE to this file")
    pe.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs whose outputs exist already and carry this run's recipe (others are edited again)",
    )
    pe.add_argument(
        "--overwrite-inputs",
        action="store_true",
        help="allow outputs to replace input files (refused otherwise: the originals would be lost)",
    )
    g = pe.add_argument_group("edit (defaults for every -e concept)")
    g.add_argument("--scale", type=float, help=f"edit scale [{RECOMMENDED}]")
    g.add_argument("--threshold", type=float, help=f"mask threshold λ [{RECOMMENDED}]")
    g.add_argument("--warmup", type=int, default=defaults.WARMUP_STEPS, help="warm-up steps [%(default)s]")
    g.add_argument("--cooldown", type=int, default=defaults.COOLDOWN_STEPS, help="cool-down step [none]")
    g.add_argument("--mask-mode", choices=defaults.MASK_MODES, help=f"[{RECOMMENDED}]")
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
    pv.add_argument("suite", metavar="SUITE", help=f"one of {', '.join(defaults.SUITES)}")
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
    g = pv.add_argument_group("edit settings (defaults in brackets)")
    g.add_argument("--steps", type=int, help=f"[{RECOMMENDED}]")
    g.add_argument("--skip", type=float, help=f"[{RECOMMENDED}]")
    g.add_argument("--scale", type=float, help=f"edit scale [{RECOMMENDED}]")
    g.add_argument("--threshold", type=float, help=f"mask threshold λ [{RECOMMENDED}]")
    g.add_argument("--preserve", type=int, metavar="K", help="keep the source outside the masks grown by K cells [off]")
    g.add_argument("--scenes", type=int, help="shapes suite: number of scenes [20]")


EDIT_FLAGS = ("-e", "--edit")


def attach_edit_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``-e "-beard:7"`` as ``--edit=-beard:7``: argparse reads a value that starts with ``-`` as
    an option, so a removal concept would be refused ("expected one argument"); a value that is
    itself one of ``edit``'s options (``-e -o``) is left for argparse to refuse."""
    edit = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices["edit"]  # type: ignore[union-attr]
    options = {flag for action in edit._actions for flag in action.option_strings}
    out: list[str] = []
    for token in argv:
        if out and out[-1] in EDIT_FLAGS and token.startswith("-") and token.split("=")[0] not in options:
            out[-1] = f"--edit={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(attach_edit_values(parser, sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="leditspp: %(message)s")
    if not getattr(args, "quiet", False):
        logging.getLogger("leditspp.model_options").setLevel(logging.INFO)  # "loading model …", "loaded … in 9.8 s"
        logging.getLogger("leditspp.scheduler").setLevel(logging.INFO)  # the scheduler's rule is not used
    try:
        with library_warnings_silenced(getattr(args, "quiet", False)):
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


#: The libraries whose warnings ``--quiet`` silences (their loggers, and Python warnings while a command runs).
LIBRARY_LOGGERS = ("diffusers", "transformers", "huggingface_hub", "accelerate", "torch", "PIL")


@contextlib.contextmanager
def library_warnings_silenced(quiet: bool) -> Iterator[None]:
    """With ``quiet``: the libraries' warnings dropped while the command runs (their loggers at
    ERROR, Python warnings ignored), as they were afterwards; leditspp's own lines are not theirs."""
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


#: Each command's module and function, imported when the command runs (torch comes with them).
COMMANDS = {
    "edit": (".edit", "edit_command"),
    "invert": (".invert", "invert_command"),
    "eval": (".eval", "eval_command"),
    "serve": (".serve", "serve_command"),
}


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        from .info import info_command

        return info_command(args.file)
    from ..logs import hushed_loading
    from ..validation import check_device

    check_device(args.device)  # before reading images or loading anything
    module, name = COMMANDS[args.command]
    with hushed_loading():  # the command's output is leditspp's own bars, lines and errors
        return getattr(importlib.import_module(module, __name__), name)(args)
