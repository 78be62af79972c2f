"""Draw docs/preserve.png: a removal with and without ``preserve=1`` on both demo models — the
input, the plain edit, the edit with preserve, the region R it kept open, and where each edit
changed the picture (pixels more than 24 levels from the decoded input, in red).

    python docs/make_preserve_figure.py            # writes docs/preserve.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from make_demo_figure import SCALE, mask_panel
from PIL import Image, ImageDraw

from leditspp import Edit, Editor
from leditspp.demo import shapes

ROOT = Path(__file__).resolve().parent.parent
SEED = 11  # a held-out scene (training used seeds ≥ 1,000,000), two objects: tests/test_demo_flow.py's first


def changed(before: Image.Image, after: Image.Image) -> Image.Image:
    """``after`` dimmed, with the pixels that moved more than 24 levels from ``before`` in red."""
    a, b = (np.asarray(x.convert("RGB"), dtype=np.float32) for x in (before, after))
    moved = np.abs(a - b).max(-1) > 24
    out = b * 0.4 + 153
    out[moved] = (230, 20, 40)
    return Image.fromarray(out.clip(0, 255).round().astype(np.uint8))


def row(model: str) -> list[tuple[str, Image.Image]]:
    editor = Editor.from_pretrained(model, device="cpu")
    rec = editor.recommended
    scene = shapes.scene(SEED, count=2)
    target = scene.objects[0]
    edit = Edit(target.name, remove=True, scale=rec["scale"], threshold=rec["threshold"])
    inversion = editor.invert(scene.image, seed=0, steps=rec["steps"], skip=rec["skip"])
    source = editor.decode(inversion.source_latents)[0]
    plain = editor.edit(inversion, edit, mask_mode=rec["mask_mode"]).images[0]
    kept = editor.edit(inversion, edit, mask_mode=rec["mask_mode"], preserve=1)
    region = kept.region[0, 0].cpu().numpy()
    return [
        (f"{model}: input", scene.image),
        (f"-{target.name}", plain),
        ("changed", changed(source, plain)),
        ("preserve=1", kept.images[0]),
        ("changed", changed(source, kept.images[0])),
        ("region R", mask_panel(scene.image, region)),
    ]


def main() -> None:
    rows = [row("demo"), row("demo-flow")]
    w, h = shapes.SIZE * SCALE, shapes.SIZE * SCALE
    sheet = Image.new("RGB", (len(rows[0]) * (w + 8) - 8, len(rows) * (h + 22)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, panels in enumerate(rows):
        for i, (title, image) in enumerate(panels):
            sheet.paste(image.resize((w, h), Image.NEAREST), (i * (w + 8), r * (h + 22) + 22))
            draw.text((i * (w + 8) + 4, r * (h + 22) + 4), title, fill=(0, 0, 0))
    out = ROOT / "docs" / "preserve.png"
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
