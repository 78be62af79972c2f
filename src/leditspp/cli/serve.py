"""``leditspp serve``: the web UI (Gradio) on this machine."""

from __future__ import annotations

import argparse
import importlib.util

from .. import defaults
from ..errors import LeditsError
from ..models.loading import check_model_name


def serve_command(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise LeditsError("the web UI needs Gradio, which is not installed: pip install 'leditspp[web]'")
    from ..webui import serve

    model = check_model_name(args.model or defaults.MODEL, "--model")
    print(f"leditspp web UI on http://{args.host}:{args.port} (model: {model}); Ctrl-C stops it")
    serve(model, args.host, args.port, args.max_upload_mb, args.device, compile=args.compile, offload=args.offload)
    return 0
