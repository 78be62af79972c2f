"""Every front end on a tiny folder of each 2026 family (issue 21): the web UI, recipes through the
CLI, a saved inversion, `leditspp eval shapes`, and bf16 with fp32 solver state.

The families' own files (``test_chroma.py``, ``test_klein.py``, ``test_zimage.py``, ``test_qwenimage.py``) check
exactness, the velocity against each pipeline and M¹ against a direct softmax; this one checks
that nothing outside the adapter needs to know which family it is.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image

from leditspp import Editor, Inversion
from leditspp.cli import main
from leditspp.model_options import ModelOptions
from leditspp.testing.tiny2026 import TINY_2026_PIPELINES

from .conftest import scene

FAMILIES = ["chroma", "klein", "zimage", "qwenimage"]


@pytest.fixture(scope="module", params=FAMILIES)
def folder(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    TINY_2026_PIPELINES[request.param](seed=0).save_pretrained(path)
    return request.param, path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models run fastest on one thread here (the other core may be busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_web_ui_edits_a_tiny_folder_of_each_family(folder):
    from leditspp.webui import EditorService, run_edit

    family, path = folder
    service = EditorService(model=str(path), options=ModelOptions(device="cpu"))
    settings = {"steps": 3, "skip": 0.0, "solver": "dpmsolver++", "seed": 0, "source_prompt": "", "source_guidance": 0}
    rows = [["red circle", "+", 4, 0.8, 0, None], ["blue square", "-", 3, 0.8, 0, None]]
    edited, overlays, *_ = run_edit(service, scene(64, 96), rows, {**settings, "mask_mode": "intersect"})
    assert service.editor.model.family == family
    assert edited.size == (96, 64) and len(overlays) == 2


def test_a_recipe_and_a_saved_inversion_through_the_cli(folder, tmp_path):
    family, path = folder
    photo, recipe = tmp_path / "photo.png", tmp_path / "recipe.json"
    scene(64, 64, seed=3).save(photo)
    recipe.write_text(json.dumps({"edits": ["+red circle:4", "-blue square:3@0.8"], "steps": 3, "skip": 0.0}))
    common = ["--model", str(path), "--device", "cpu", "--quiet"]
    out = tmp_path / "out.png"
    assert main(["edit", str(photo), "--recipe", str(recipe), "-o", str(out), *common]) == 0
    assert json.loads(Image.open(out).text["leditspp"])["steps"] == 3
    inv = tmp_path / "photo.inv.safetensors"
    assert main(["invert", str(photo), "--steps", "3", "--skip", "0", "-o", str(inv), *common]) == 0
    assert Inversion.load(inv).info.family == family
    again = tmp_path / "again.png"
    assert main(["edit", "--inversion", str(inv), "-e", "+red circle:4", "-o", str(again), *common]) == 0
    assert Image.open(again).size == (64, 64)


def test_eval_shapes_runs_on_a_tiny_folder(folder, tmp_path):
    _, path = folder
    out = tmp_path / "eval"
    args = ["eval", "shapes", "-o", str(out), "--scenes", "1", "--steps", "2", "--model", str(path)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    recon = [r for r in rows if r["edit_type"] == "reconstruction"]
    assert rows and not any(r["error"] for r in rows) and float(recon[0]["recon_latent"]) < 1e-4


def test_bf16_networks_keep_fp32_solver_state_and_reconstruct_exactly(folder):
    _, path = folder
    editor = Editor.from_pretrained(str(path), device="cpu", torch_dtype=torch.bfloat16)
    inv = editor.invert(scene(), steps=2, skip=0.0, seed=0)
    assert editor.model.dtype == torch.bfloat16 and inv.noise_maps.dtype == torch.float32
    assert torch.equal(editor.edit(inv, [], decode=False).latents, inv.source_latents)
    assert torch.isfinite(editor.edit(inv, ["+red circle:4"], decode=False).latents).all()
