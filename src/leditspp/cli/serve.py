"""``leditspp serve``: the web UI (Gradio) on this machine."""

from __future__ import annotations

import argparse
import importlib.util

from .. import defaults
from ..advice import model_warnings
from ..errors import LeditsError
from ..models.loading import check_model_name
from .options import model_options
from .summary import say, say_start, say_warnings


def serve_command(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise LeditsError("the web UI needs Gradio, which is not installed: pip install 'leditspp[web]'")
    from ..webui import serve

    model = check_model_name(args.model or defaults.MODEL, "--model")
    say_start(args, model, "flag" if args.model else "default", {})
    if not args.quiet:
        say("settings: the model's recommendation, shown in the page's settings panel")
    say_warnings(args, model_warnings(model))
    print(f"leditspp web UI on http://{args.host}:{args.port} (model: {model}); Ctrl-C stops it")
    serve(model, args.host, args.port, args.max_upload_mb, model_options(args))
    return 0
