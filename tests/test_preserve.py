"""``preserve=k`` (issue 23): the edit keeps the source outside the region its masks covered.

The region R is the running union of every step's concept masks, dilated by k latent cells. After
each step the latents and the solver history outside R are the source trajectory's, so the
background ends exactly at the input latent, and the decoded image takes the decoded input's
pixels there. With no concept the input comes back exactly; with R everywhere the result is the
plain edit bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leditspp import Edit, LeditsError
from leditspp.masking import MAX_PRESERVE, edit_region, keep_outside
from leditspp.model_options import ModelOptions

from .conftest import scene

CONCEPT = Edit("a red circle", scale=6.0, threshold=0.8)


# -- the pure functions ------------------------------------------------------------------------------


def test_edit_region_is_the_union_of_the_concepts_masks_dilated_by_k_cells():
    masks = torch.zeros(2, 1, 1, 7, 7)
    masks[0, 0, 0, 1, 1] = 1  # concept 0: one cell near a corner
    masks[1, 0, 0, 5, 4] = 1  # concept 1: another
    union = edit_region(masks, 0)
    assert union.shape == (1, 1, 7, 7) and union.sum() == 2 and union[0, 0, 1, 1] == union[0, 0, 5, 4] == 1
    grown = edit_region(masks, 1)[0, 0]
    expected = torch.zeros(7, 7)
    expected[0:3, 0:3] = 1
    expected[4:7, 3:6] = 1
    assert torch.equal(grown, expected)


def test_keep_outside_takes_each_cell_from_one_side_exactly_at_any_resolution():
    region = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    edited, source = torch.full((1, 3, 4, 4), 0.3), torch.full((1, 3, 4, 4), -0.7)
    out = keep_outside(region, edited, source)
    assert torch.equal(out[0, :, :2, :2], edited[0, :, :2, :2]) and torch.equal(out[0, :, :2, 2:], source[0, :, :2, 2:])
    assert torch.equal(out[0, :, 2:, 2:], edited[0, :, 2:, 2:]) and torch.equal(out[0, :, 2:, :2], source[0, :, 2:, :2])


# -- the edit ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inverted(editor):
    return editor.invert(scene(), steps=8, skip=0.0, seed=0)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1", MAX_PRESERVE + 1])
def test_bad_preserve_values_are_refused_naming_the_range(editor, inverted, bad):
    with pytest.raises(LeditsError, match=f"preserve must be a whole number of latent cells from 0 to {MAX_PRESERVE}"):
        editor.edit(inverted, [CONCEPT], preserve=bad)


def test_a_numpy_integer_is_a_whole_number_of_cells(editor, inverted):
    import numpy as np

    plain = editor.edit(inverted, [CONCEPT], preserve=1, decode=False)
    numpy = editor.edit(inverted, [CONCEPT], preserve=np.int64(1), decode=False)
    assert torch.equal(plain.latents, numpy.latents) and torch.equal(plain.region, numpy.region)


def test_preserve_without_masks_is_refused(editor, inverted):
    with pytest.raises(LeditsError, match="mask_mode 'none' has none"):
        editor.edit(inverted, [CONCEPT], mask_mode="none", preserve=1)


def test_with_no_concept_the_input_comes_back_exactly(editor, inverted):
    result = editor.edit(inverted, [], preserve=1)
    assert torch.equal(result.latents, inverted.source_latents)
    assert result.region is not None and not result.region.any()
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(editor.decode(inverted.source_latents)[0]))


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize("cells", [0, 1])
def test_outside_the_region_latents_and_pixels_are_the_sources_exactly(editor, solver, cells):
    inversion = editor.invert(scene(seed=3), steps=8, skip=0.0, seed=0, solver=solver)
    plain = editor.edit(inversion, [CONCEPT])
    kept = editor.edit(inversion, [CONCEPT], preserve=cells)
    region = kept.region
    assert region.shape == (1, 1, *inversion.source_latents.shape[-2:])
    outside = (region == 0).expand_as(kept.latents)
    assert 0 < outside[:, 0].float().mean() < 1  # the test has both sides
    # the source trajectory's end, bit for bit (an off-by-one in the step index ends elsewhere)
    assert torch.equal(kept.latents[outside], inversion.source_latents[outside])
    assert not torch.equal(plain.latents[outside], inversion.source_latents[outside])  # what preserve changes
    # the region contains the last step's masks (a running union, dilated)
    assert bool((region[:, 0] >= kept.masks.amax(dim=0)).all())
    pixels = np.asarray(kept.images[0]).astype(int)
    source = np.asarray(editor.decode(inversion.source_latents)[0]).astype(int)
    big = torch.nn.functional.interpolate(region, size=pixels.shape[:2], mode="nearest")[0, 0].numpy() > 0
    assert np.array_equal(pixels[~big], source[~big])
    assert not np.array_equal(pixels[big], source[big])  # the edit still edits inside


def test_a_dilation_growing_the_region_keeps_less_of_the_source(editor, inverted):
    small = editor.edit(inverted, [CONCEPT], preserve=0).region
    large = editor.edit(inverted, [CONCEPT], preserve=2).region
    assert large.sum() > small.sum()


def test_with_the_region_everywhere_the_result_is_the_plain_edit_bit_for_bit(editor, inverted):
    everywhere = Edit("a red circle", scale=6.0, threshold=0.0)  # M² at the 0-quantile: every cell
    plain = editor.edit(inverted, [everywhere], mask_mode="noise")
    kept = editor.edit(inverted, [everywhere], mask_mode="noise", preserve=0)
    assert bool(kept.region.all())
    assert torch.equal(kept.latents, plain.latents)
    assert np.array_equal(np.asarray(kept.images[0]), np.asarray(plain.images[0]))


def test_a_flow_model_keeps_its_source_too(sd3_editor):
    inversion = sd3_editor.invert(scene(), steps=6, skip=0.0, seed=0)
    kept = sd3_editor.edit(inversion, [CONCEPT], preserve=1)
    outside = (kept.region == 0).expand_as(kept.latents)
    assert bool(outside.any()) and torch.equal(kept.latents[outside], inversion.source_latents[outside])


# -- every front end -----------------------------------------------------------------------------------


def test_the_cli_takes_preserve_and_its_png_recipe_replays_it(sd_folder, tmp_path):
    import json

    from PIL import Image

    from leditspp.cli import main

    photo, out, again = tmp_path / "photo.png", tmp_path / "out.png", tmp_path / "again.png"
    scene().save(photo)
    args = ["edit", str(photo), "--model", str(sd_folder), "--device", "cpu", "--steps", "6", "--quiet"]
    assert main([*args, "-e", "+a red circle:6@0.8", "--preserve", "1", "-o", str(out)]) == 0
    recipe = json.loads(Image.open(out).text["leditspp"])
    assert recipe["preserve"] == 1
    assert main([*args, "--recipe", str(out), "-o", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    assert main([*args, "-e", "+a red circle", "--preserve", "-2", "-o", str(out)]) == 2
    assert main([*args, "-e", "+a red circle", "--preserve", "1", "--mask-mode", "none", "-o", str(out)]) == 2


def test_a_recipe_file_refuses_a_bad_preserve(tmp_path):
    import json

    from leditspp.recipes import read_recipe

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"preserve": 2, "edits": ["+a hat"]}))
    assert read_recipe(path)["preserve"] == 2
    for bad in (1.5, -1, "1", True):
        path.write_text(json.dumps({"preserve": bad, "edits": ["+a hat"]}))
        with pytest.raises(LeditsError, match=r"preserve must be a whole number of cells 0 … 64, or null"):
            read_recipe(path)


def test_the_web_ui_offers_preserve_and_applies_it(sd_folder):
    from PIL import Image

    from leditspp.webui import PRESERVE_OFF, EditorService, build_app, read_settings, run_edit

    app = build_app(EditorService(model=str(sd_folder)))
    [menu] = [b for b in app.blocks.values() if str(getattr(b, "label", "")).startswith("preserve")]
    assert menu.value == PRESERVE_OFF and [v for _, v in menu.choices][:3] == [PRESERVE_OFF, "0", "1"]
    base = {
        "steps": 6,
        "skip": 0.0,
        "solver": "dpmsolver++",
        "seed": 0,
        "source_prompt": "",
        "source_guidance": 3.5,
        "mask_mode": "intersect",
    }
    assert read_settings({**base, "preserve": PRESERVE_OFF})["preserve"] is None
    assert read_settings({**base, "preserve": "2"})["preserve"] == 2
    with pytest.raises(LeditsError, match="preserve must be"):
        read_settings({**base, "preserve": "lots"})
    service = EditorService(model=str(sd_folder), options=ModelOptions(device="cpu"))
    rows = [["a red circle", "+", 6, 0.8, 0, None]]
    image = scene()
    plain, *_ = run_edit(service, {"background": image, "layers": []}, rows, {**base, "preserve": PRESERVE_OFF})
    kept, _, _, png, _ = run_edit(service, {"background": image, "layers": []}, rows, {**base, "preserve": "0"})
    assert not np.array_equal(np.asarray(plain), np.asarray(kept))
    assert '"preserve": 0' in Image.open(png).text["leditspp"]


def test_eval_shapes_sweeps_preserve(tmp_path):
    import json

    from leditspp.cli import main

    out = tmp_path / "eval"
    args = ["eval", "shapes", "--model", "demo", "--device", "cpu", "--scenes", "1", "--steps", "6", "--quiet"]
    assert main([*args, "--sweep", "preserve=0,1", "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["per_sweep_value"]["preserve"]) == {"preserve=0", "preserve=1"}
    assert main([*args, "--sweep", "preserve=0.5", "-o", str(tmp_path / "bad")]) == 2
    assert main([*args, "--preserve", "99", "-o", str(tmp_path / "bad")]) == 2
