"""Draw docs/demo.png: the README's main command on the bundled example, before and after, with
each concept's mask (mean over the steps it acted) — what `make demo` and `make demo MODEL=demo-flow`
do, one row per demo model, plus the flow demo on the UNet demo's edit (what it still gets wrong).

    python docs/make_demo_figure.py            # writes docs/demo.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from leditspp import Edit, Editor

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "shapes.png"
# (model, edits): the Makefile's EDITS for each demo model, then the flow demo on the UNet demo's
ROWS = [
    ("demo", ["+red circle:8", "-blue square:4"]),
    ("demo-flow", ["+green square:3", "-blue square:3"]),
    ("demo-flow", ["+red circle:8", "-blue square:4"]),
]
SCALE = 3  # pixel repeat, so the 128 px scenes read on a page


def mask_panel(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """``mask`` (h, w) in [0, 1], upsampled to the image, over a dimmed copy of it."""
    m = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize(image.size, Image.NEAREST)) / 255.0
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.array([255, 0, 80], dtype=np.float32)
    m = m[..., None]
    out = base * 0.45 * (1 - m) + (base * 0.35 + tint * 0.65) * m
    return Image.fromarray(out.round().astype(np.uint8))


def row(model: str, texts: list[str], source: Image.Image) -> list[tuple[str, Image.Image]]:
    """Titled panels for one model and edit: input, edited, each concept's mean mask."""
    editor = Editor.from_pretrained(model, device="cpu")
    rec = editor.recommended
    edits = [Edit.parse(e, scale=rec["scale"], threshold=rec["threshold"]) for e in texts]
    inversion = editor.invert(source, seed=0, steps=rec["steps"], skip=rec["skip"])
    result = editor.edit(inversion, edits, mask_mode=rec["mask_mode"])
    panels = [(f"{model}: input", source), (" ".join(texts), result.images[0])]
    means = result.mask_means[:, 0].cpu().numpy()
    return panels + [(f"mask {e.prompt}", mask_panel(source, m)) for e, m in zip(edits, means, strict=True)]


def main() -> None:
    source = Image.open(EXAMPLE).convert("RGB")
    rows = [row(model, texts, source) for model, texts in ROWS]
    w, h = source.size[0] * SCALE, source.size[1] * SCALE
    columns = max(len(panels) for panels in rows)
    sheet = Image.new("RGB", (columns * (w + 8) - 8, len(rows) * (h + 30)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, panels in enumerate(rows):
        top = r * (h + 30)
        for i, (title, image) in enumerate(panels):
            sheet.paste(image.resize((w, h), Image.NEAREST), (i * (w + 8), top + 22))
            draw.text((i * (w + 8) + 4, top + 4), title, fill=(0, 0, 0))
    out = ROOT / "docs" / "demo.png"
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
