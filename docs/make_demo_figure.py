"""Draw docs/demo.png: the README's main command on the bundled example, before and after, with
each concept's mask (mean over the steps it acted) — what `make demo` does, as one picture.

    python docs/make_demo_figure.py            # writes docs/demo.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from leditspp import Edit, Editor

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "shapes.png"
EDITS = ["+red circle:8", "-blue square:4"]  # the Makefile's EDITS
SCALE = 3  # pixel repeat, so the 128 px scenes read on a page


def mask_panel(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """``mask`` (h, w) in [0, 1], upsampled to the image, over a dimmed copy of it."""
    m = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize(image.size, Image.NEAREST)) / 255.0
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.array([255, 0, 80], dtype=np.float32)
    m = m[..., None]
    out = base * 0.45 * (1 - m) + (base * 0.35 + tint * 0.65) * m
    return Image.fromarray(out.round().astype(np.uint8))


def main() -> None:
    editor = Editor.from_pretrained("demo", device="cpu")
    rec = editor.recommended
    edits = [Edit.parse(e, scale=rec["scale"], threshold=rec["threshold"]) for e in EDITS]
    source = Image.open(EXAMPLE).convert("RGB")
    inversion = editor.invert(source, seed=0, steps=rec["steps"], skip=rec["skip"])
    result = editor.edit(inversion, edits, mask_mode=rec["mask_mode"])
    panels = [("input", source), ("edited", result.images[0])]
    means = result.mask_means[:, 0].cpu().numpy()
    panels += [(f"mask {e.prompt}", mask_panel(source, m)) for e, m in zip(edits, means, strict=True)]
    w, h = source.size[0] * SCALE, source.size[1] * SCALE
    sheet = Image.new("RGB", (len(panels) * (w + 8) - 8, h + 22), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, image) in enumerate(panels):
        sheet.paste(image.resize((w, h), Image.NEAREST), (i * (w + 8), 22))
        draw.text((i * (w + 8) + 4, 4), title, fill=(0, 0, 0))
    out = ROOT / "docs" / "demo.png"
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
