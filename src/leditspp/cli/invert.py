"""``leditspp invert``: one image inverted with the given settings, saved for later edits."""

from __future__ import annotations

import argparse

from .. import defaults
from ..batch.plan import given, origins_of, preflight, resolve_settings
from ..batch.run import invert
from ..files import check_output
from ..io import open_image
from ..jobs import EditorSpec
from ..models import model_settings
from ..solvers import validate_steps
from .progress import step_progress


def invert_command(args: argparse.Namespace) -> int:
    recommended = model_settings(args.model or defaults.MODEL).get("recommended", {})
    flags = given(vars(args))
    settings = resolve_settings(flags, {}, recommended)
    validate_steps(settings["steps"], settings["skip"])
    check_output(args.output, (".safetensors",))
    image = open_image(args.image)
    origins = origins_of(flags, {}, recommended, None, settings["model"])
    preflight(settings["model"], image, settings, args.max_pixels, origins)
    model = settings["model"]
    options = (args.device, args.dtype, args.compile, args.quiet, args.offload, args.base, tuple(args.lora))
    editor = EditorSpec(model, *options).load()
    invert(editor, image, settings, step_progress(args.quiet), args.max_pixels).save(args.output)
    print(f"wrote {args.output}")
    return 0
