"""``leditspp serve``: the web UI (Gradio) on this machine."""

from __future__ import annotations

import argparse
import importlib.util

from .. import defaults
from ..errors import LeditsError


def serve_command(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise LeditsError("the web UI needs Gradio, which is not installed: pip install 'leditspp[web]'")
    from ..webui import serve

    print(f"leditspp web UI on http://{args.host}:{args.port} (model: {args.model or defaults.MODEL}); Ctrl-C stops it")
    model = args.model or defaults.MODEL
    serve(
        model,
        args.host,
        args.port,
        args.max_upload_mb,
        args.device,
        compile=args.compile,
        offload=args.offload,
        base=args.base,
        loras=tuple(args.lora),
    )
    return 0
