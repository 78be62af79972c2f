"""``leditspp info``: a PNG's recipe or an inversion file's metadata, printed as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ..inversion_file import read_metadata
from ..io import PNG_KEY
from ..recipes import read_recipe


def info_command(path: str) -> int:
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
