"""The ``leditspp`` command line: a thin layer over :class:`leditspp.Editor`.

Exit codes: 0 success, 2 bad input (one-line message), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, defaults
from .errors import LeditsError

EXAMPLES = """examples:
  leditspp edit photo.png -e "+sunglasses" -e "-beard:7" --model stable-diffusion-v1-5/stable-diffusion-v1-5 -o out.png
  leditspp invert photo.png --model ./my-sd-folder -o photo.inv.safetensors
  leditspp edit --inversion photo.inv.safetensors -e "+cherry blossoms:7@0.75" --model ./my-sd-folder -o out.png

edit syntax: [+|-]concept[:scale][@threshold]   ('-' removes the concept)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="leditspp",
        description="Exact LEDITS++ image editing with diffusion models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"leditspp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("model")
    g.add_argument("--model", help="hub id or local diffusers folder (Stable Diffusion 1.x/2.x)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps … (default: cuda if available)")
    g.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="network precision")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")

    inv = argparse.ArgumentParser(add_help=False)
    g = inv.add_argument_group("inversion")
    g.add_argument("--steps", type=int, default=defaults.STEPS, help="inversion/edit steps N (default %(default)s)")
    g.add_argument("--skip", type=float, default=defaults.SKIP, help="skipped fraction (default %(default)s)")
    g.add_argument("--solver", choices=("dpmsolver++", "ddpm"), default=defaults.SOLVER)
    g.add_argument("--seed", type=int, default=0, help="seed of the auxiliary noise (default %(default)s)")
    g.add_argument("--source-prompt", default="", help="describes the input; guides the inversion")
    g.add_argument("--source-guidance", type=float, default=defaults.SOURCE_GUIDANCE)
    g.add_argument("--negative-prompt", default="")
    g.add_argument("--height", type=int, help="processing height (default: image height rounded down)")
    g.add_argument("--width", type=int, help="processing width (default: image width rounded down)")

    pi = sub.add_parser(
        "invert",
        parents=[common, inv],
        help="invert an image and save the inversion for later edits",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pi.add_argument("image", help="image file to invert")
    pi.add_argument("-o", "--output", required=True, help="inversion file to write (.safetensors)")

    pe = sub.add_parser(
        "edit",
        parents=[common, inv],
        help="edit an image (or a saved inversion) with text concepts",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pe.add_argument("image", nargs="?", help="image file to edit (or use --inversion)")
    pe.add_argument(
        "-e", "--edit", action="append", default=[], metavar="CONCEPT", help="e.g. '+sunglasses', '-beard:7@0.8'"
    )
    pe.add_argument("-o", "--output", required=True, help="edited image to write (.png)")
    pe.add_argument("--inversion", help="re-use a saved inversion instead of inverting IMAGE")
    pe.add_argument("--save-inversion", help="also save the inversion made from IMAGE to this file")
    pe.add_argument("--scale", type=float, default=defaults.EDIT_SCALE, help="default edit scale (default %(default)s)")
    pe.add_argument("--threshold", type=float, default=defaults.EDIT_THRESHOLD, help="default mask threshold λ")
    pe.add_argument("--warmup", type=int, default=defaults.WARMUP_STEPS, help="warm-up steps of every concept")
    pe.add_argument("--cooldown", type=int, default=defaults.COOLDOWN_STEPS, help="cool-down step of every concept")
    pe.add_argument("--mask-mode", choices=("intersect", "attention", "noise", "none"), default=defaults.MASK_MODE)
    pe.add_argument("--user-mask", help="mask image (white = may change), any size")
    pe.add_argument("--guidance-rescale", type=float, default=defaults.GUIDANCE_RESCALE)
    return p


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
    """Check everything that is cheap to check, then load the model and do the work."""
    from .edits import Edit
    from .inversion import Inversion
    from .io import open_image
    from .solvers.base import validate_steps

    validate_steps(args.steps, args.skip)
    inversion = image = None
    if args.command == "invert":
        _check_output(args.output, (".safetensors",))
        image = open_image(args.image)
    else:
        if (args.image is None) == (args.inversion is None):
            raise LeditsError("give either an IMAGE to edit or --inversion FILE, not both")
        if args.inversion and args.save_inversion:
            raise LeditsError("--save-inversion needs an IMAGE to invert (not --inversion)")
        _check_output(args.output, (".png", ".jpg", ".jpeg", ".webp"))
        overrides = {
            "scale": args.scale,
            "threshold": args.threshold,
            "warmup_steps": args.warmup,
            "cooldown_steps": args.cooldown,
        }
        edits = [Edit.parse(text, **overrides) for text in args.edit]
        if args.inversion:
            inversion = Inversion.load(args.inversion)
        else:
            image = open_image(args.image)

    editor = _load_editor(args)
    bar = _progress(args.quiet)
    if inversion is None:
        inversion = _invert(editor, image, args, bar)
    if args.command == "invert" or args.save_inversion:
        inversion.save(args.output if args.command == "invert" else args.save_inversion)
    if args.command == "invert":
        print(f"wrote {args.output}")
        return 0
    result = editor.edit(
        inversion,
        edits,
        mask_mode=args.mask_mode,
        user_mask=args.user_mask,
        guidance_rescale=args.guidance_rescale,
        progress=bar,
    )
    recipe = {
        "leditspp": __version__,
        "model": args.model,
        "inversion": args.inversion,
        **{k: v for k, v in vars(inversion.info).items() if k != "version"},
        "mask_mode": args.mask_mode,
        "guidance_rescale": args.guidance_rescale,
        "edits": [e.to_dict() for e in edits],
    }
    save_image(result.images[0], args.output, recipe)
    print(f"wrote {args.output}")
    return 0


def _invert(editor: Any, image: Any, args: argparse.Namespace, bar: Any) -> Any:
    return editor.invert(
        image,
        steps=args.steps,
        skip=args.skip,
        solver=args.solver,
        seed=args.seed,
        source_prompt=args.source_prompt,
        source_guidance=args.source_guidance,
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        progress=bar,
    )


def _load_editor(args: argparse.Namespace) -> Any:
    import torch
    from diffusers.utils import logging as diffusers_logging

    from .editor import Editor

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()

    if not args.model:
        raise LeditsError(
            "give --model: a hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5, or a local diffusers folder"
        )
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return Editor.from_pretrained(args.model, torch_dtype=dtype, device=args.device)


def _check_output(path: str, suffixes: tuple[str, ...]) -> None:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise LeditsError(f"output {path!r} must end in one of {', '.join(suffixes)}")
    if not p.parent.exists() and str(p.parent) not in ("", "."):
        raise LeditsError(f"the folder of output {path!r} does not exist")


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


def save_image(image: Any, path: str | os.PathLike[str], recipe: dict[str, Any]) -> Path:
    """Write ``image`` atomically (temp file, then rename); PNGs carry the recipe as text."""
    from PIL import PngImagePlugin

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        if path.suffix.lower() == ".png":
            info = PngImagePlugin.PngInfo()
            info.add_text("leditspp", json.dumps(recipe))
            image.save(tmp, format="PNG", pnginfo=info)
        else:
            image.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


if __name__ == "__main__":
    sys.exit(main())
