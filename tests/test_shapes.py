"""The shapes world: deterministic scenes, exact masks, captions, and the pixel analysis."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageDraw

from leditspp.demo import shapes
from leditspp.evaluation import shapes_suite


def test_scene_is_a_pure_function_of_the_seed():
    a, b, c = shapes.scene(7), shapes.scene(7), shapes.scene(8)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.caption == b.caption
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


@pytest.mark.parametrize("seed", range(40))
def test_objects_are_distinct_apart_and_masks_exact(seed):
    s = shapes.scene(seed)
    assert 1 <= len(s.objects) <= 3 and s.background in shapes.BACKGROUNDS
    assert len({o.color for o in s.objects}) == len(s.objects)
    for i, (obj, mask) in enumerate(zip(s.objects, s.masks, strict=True)):
        others = np.delete(s.masks, i, axis=0)
        assert not (mask & others).any(), "objects overlap"
        rgb = np.asarray(s.image)[mask]
        assert (rgb == shapes.COLORS[obj.color]).all(), "a mask pixel is not the object's colour"
        x0, y0, x1, y1 = obj.box
        assert mask[y0:y1, x0:x1].sum() == mask.sum(), "mask leaves the box"
    background = ~s.masks.any(0)
    assert (np.asarray(s.image)[background] == shapes.BACKGROUNDS[s.background]).all()


def test_captions():
    objs = (
        shapes.ShapeObject("red", "circle", (0, 0, 1, 1)),
        shapes.ShapeObject("blue", "square", (0, 0, 1, 1)),
        shapes.ShapeObject("green", "triangle", (0, 0, 1, 1)),
    )
    assert shapes.caption(objs[:1], "gray") == "a red circle on a gray background"
    assert shapes.caption(objs[:2], "white") == "a red circle and a blue square on a white background"
    assert shapes.caption(objs, "black") == "a red circle, a blue square and a green triangle on a black background"
    assert shapes.short_caption(objs[:2]) == "red circle and blue square"


def test_pixel_analysis_reads_every_rendered_scene_back():
    for seed in range(100):
        s = shapes.scene(seed)
        assert shapes.find_objects(s.image, s.background) == {o.color: o.shape for o in s.objects}


def test_pixel_analysis_tolerates_noise_and_ignores_specks():
    s = shapes.scene(3, count=2, background="gray")
    noisy = np.clip(np.asarray(s.image, np.float32) + np.random.default_rng(0).normal(0, 12, (128, 128, 3)), 0, 255)
    assert shapes.find_objects(noisy.astype(np.uint8), "gray") == {o.color: o.shape for o in s.objects}
    speck = s.image.copy()
    absent = next(c for c in shapes.COLORS if c not in {o.color for o in s.objects})
    ImageDraw.Draw(speck).rectangle((0, 0, 4, 4), fill=shapes.COLORS[absent])  # 25 px < 60
    assert absent not in shapes.find_objects(speck, "gray")


def test_a_removal_counts_only_when_the_background_comes_back():
    """An object turned another colour has lost its colour ("gone") but is not removed ("cleared");
    painted over with the background it is both; taken by an added colour it is a replacement."""
    from leditspp.evaluation.shapes_suite import cleared_fraction, colour_gone

    s = shapes.scene(3, count=2, background="gray")
    obj = s.objects[0]
    other = next(c for c in shapes.COLORS if c not in {o.color for o in s.objects})

    def painted(fill):
        image = s.image.copy()
        shapes.draw_object(ImageDraw.Draw(image), obj, fill)
        return image

    recoloured, erased = painted(shapes.COLORS[other]), painted(shapes.BACKGROUNDS["gray"])
    assert colour_gone(recoloured, s, 0) == 1.0 and cleared_fraction(recoloured, s, 0) == 0.0
    assert colour_gone(erased, s, 0) == 1.0 and cleared_fraction(erased, s, 0) == 1.0
    assert cleared_fraction(recoloured, s, 0, also=other) == 1.0
    assert colour_gone(s.image, s, 0) == 0.0 == cleared_fraction(s.image, s, 0)
    smudge = np.full((128, 128, 3), 200, np.uint8)  # neither gray nor any object colour
    assert shapes.background_mask(smudge, "gray").sum() == 0


def test_demo_quality_says_how_many_items_failed(capsys):
    """The rates are over the items that ran; an errored item must be counted in the report."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_quality.py"
    spec = importlib.util.spec_from_file_location("demo_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ok = {"success": True, "add_shape": True, "change_ratio": 0.1, "others_kept": 0.9, "cleared": 1.0, "gone": 1.0}
    ok |= {"mask_iou": 0.5, "mask_iou_mean": 0.5, "recon_latent": 0.0, "recon_pixel": 0.0, "vae_roundtrip": 2.0}
    rows = {kind: [dict(ok)] for kind in shapes_suite.EDIT_TYPES.values()}
    args = argparse.Namespace(steps=30, skip=0.15, scale=8.0, threshold=0.9)
    module.print_edits(rows, args, 1)
    assert "failed items" not in capsys.readouterr().out
    rows["add"].append({"error": "diverged"})
    module.print_edits(rows, args, 1)
    out = capsys.readouterr().out
    assert "| add `+colour shape` | 100% |" in out and "failed items" in out and "add 1 of 2" in out
