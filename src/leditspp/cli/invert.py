"""``leditspp invert``: one image inverted with the given settings, saved for later edits."""

from __future__ import annotations

import argparse

from .. import defaults
from ..advice import demo_photo, model_warnings
from ..batch.plan import given, origins_of, preflight, resolve_settings
from ..batch.run import invert
from ..files import check_output
from ..io import open_image
from ..logs import quiet_logs
from ..models import model_settings, recommendation_sources
from ..models.loading import check_model_name
from ..recipes import INVERSION_SETTINGS
from ..solvers import validate_steps
from .options import model_options
from .progress import step_progress
from .summary import say_start, say_warnings


def invert_command(args: argparse.Namespace) -> int:
    model = check_model_name(args.model or defaults.MODEL, "--model")
    recommended = model_settings(model).get("recommended", {})
    flags = given(vars(args))
    settings, origins = resolve_settings(flags, {}, recommended, recommendation_sources(model))
    validate_steps(settings["steps"], settings["skip"])
    check_output(args.output, (".safetensors",))
    image = open_image(args.image)
    preflight(settings["model"], image, settings, args.max_pixels, origins_of(flags, {}, recommended, None, model))
    sourced = {key: (settings[key], origins[key]) for key in INVERSION_SETTINGS}
    say_start(args, model, origins["model"], sourced)
    say_warnings(args, [*model_warnings(model), demo_photo(model, image.size, settings)])
    with quiet_logs(args.quiet):
        editor = model_options(args).load(model)
        invert(editor, image, settings, step_progress(args.quiet), args.max_pixels).save(args.output)
    print(f"wrote {args.output}")
    return 0
