"""The built-in demo model (issue 3): offline loading, exact reconstruction, and semantic edits.

The scenes are rendered by :mod:`leditspp.shapes` from held-out seeds and read back by pixel
analysis, so "an added concept appears" is measured, not looked at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leditspp import Editor, LeditsError, shapes
from leditspp.cli import main
from leditspp.models import DEMO_PATH

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shapes.png"
SCENES = [shapes.scene(seed, count=2) for seed in (11, 12, 13)]  # held out (training seeds ≥ 1e6)
ADD_SCALE = REMOVE_SCALE = 8.0  # as in benchmarks/demo_quality.py


@pytest.fixture(scope="module")
def demo():
    return Editor.from_pretrained("demo", device="cpu")


def test_the_demo_model_ships_small_and_loads_offline(demo):
    weights = sum(f.stat().st_size for f in DEMO_PATH.rglob("*.safetensors"))
    assert weights <= 30e6
    assert demo.model.family == "sd" and demo.size_multiple == 16


def test_the_missing_demo_model_is_a_clear_error(monkeypatch, tmp_path):
    import leditspp.models

    monkeypatch.setattr(leditspp.models, "DEMO_PATH", tmp_path)
    with pytest.raises(LeditsError, match=r"demo model is missing.*train_demo\.py"):
        Editor.from_pretrained("demo")


def test_reconstruction_is_exact(demo):
    inv = demo.invert([s.image for s in SCENES], seed=0)
    assert (demo.edit(inv, decode=False).latents - inv.source_latents).abs().max() <= 1e-5


def _absent_color(scene: shapes.Scene) -> str:
    return next(c for c in ("red", "yellow", "green", "orange") if c not in {o.color for o in scene.objects})


def test_an_added_concept_appears(demo):
    added = 0
    for s in SCENES:
        color = _absent_color(s)
        assert shapes.color_mask(s.image, s.background, color).sum() == 0
        out = demo.edit(demo.invert(s.image, seed=0), [f"+{color} circle:{ADD_SCALE}"]).images[0]
        added += shapes.color_mask(out, s.background, color).sum() >= 60
    assert added >= 2


def test_a_removed_object_fades(demo):
    removed = 0
    for s in SCENES:
        obj, truth = s.objects[0], s.masks[0]
        out = demo.edit(demo.invert(s.image, seed=0), [f"-{obj.name}:{REMOVE_SCALE}"]).images[0]
        kept = (shapes.color_mask(out, s.background, obj.color) & truth).sum() / truth.sum()
        removed += kept <= 0.5
    assert removed >= 2


def test_the_cli_uses_the_demo_model_by_default(tmp_path):
    out = tmp_path / "edited.png"
    assert main(["edit", str(EXAMPLE), "-e", "+red circle", "-e", "-blue square", "-o", str(out), "--quiet"]) == 0
    before, after = np.asarray(Image.open(EXAMPLE).convert("RGB")), np.asarray(Image.open(out))
    assert after.shape == before.shape and np.abs(after.astype(int) - before).mean() > 1
