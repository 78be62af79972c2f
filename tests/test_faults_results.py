"""No silent wrong result in any front end: absurd guidance values are refused up front with
their range and where they came from, and a diverged edit or inversion (NaN / inf, an image of
one colour) is an error in the API, ``leditspp edit``, ``invert`` and the web UI — not a black
image with exit 0. Also the web UI's own faults: ``serve --max-upload-mb 20`` and its temp folders."""

from __future__ import annotations

import gc
import json
import tempfile
from pathlib import Path

import pytest
import torch

from leditspp import LeditsError
from leditspp import editor as editor_module
from leditspp.cli import main
from leditspp.divergence import DivergedEdit
from leditspp.model_options import ModelOptions
from leditspp.webui import EditorService, parse_concepts, run_edit

from .conftest import scene

SETTINGS = {"steps": 3, "skip": 0.0, "solver": "dpmsolver++", "seed": 0, "source_prompt": "", "source_guidance": 3.5}
SETTINGS |= {"mask_mode": "intersect", "preserve": "off"}


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr("leditspp.Editor.from_pretrained", lambda *a, **k: pytest.fail("no model may load"))


@pytest.fixture
def diverging(monkeypatch):
    """The edit loop's latents, and the inversion's noise maps, made NaN."""
    loop, invert = editor_module.edit_loop, editor_module.invert_latents
    monkeypatch.setattr(editor_module, "edit_loop", lambda *a: (loop(*a)[0] * float("nan"), *loop(*a)[1:]))
    monkeypatch.setattr(editor_module, "invert_latents", lambda *a: (*invert(*a)[:2], invert(*a)[2] * float("nan")))


def _refused(argv, capsys, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" not in err, err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["-e", "+hat", "--source-guidance", "1e30"], "source_guidance must be a number in [0, 1000]"),
        (["-e", "+hat:1e30"], "edit scale must be a number in [0, 1000]"),
        (["-e", "+hat", "--scale", "1e308"], "edit scale must be a number in [0, 1000]"),
    ],
)
def test_absurd_guidance_flags_are_refused_before_the_model_loads(tmp_path, capsys, no_model, flags, expected):
    scene().save(tmp_path / "in.png")
    _refused(["edit", str(tmp_path / "in.png"), *flags, "-o", str(tmp_path / "out.png")], capsys, expected)
    assert not (tmp_path / "out.png").exists()


def test_an_absurd_scale_in_leditspp_json_is_refused_naming_the_file(tmp_path, capsys, no_model):
    model = tmp_path / "model"
    model.mkdir()
    (model / "leditspp.json").write_text(json.dumps({"recommended": {"scale": 1e308}}))
    scene().save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "-e", "+hat", "--model", str(model), "-o", str(tmp_path / "out.png")]
    _refused(argv, capsys, str(model / "leditspp.json"), "recommended scale: edit scale must be a number in [0, 1000]")


def test_an_absurd_source_guidance_in_a_recipe_is_refused_naming_the_file(tmp_path, capsys, no_model):
    (tmp_path / "recipe.json").write_text(json.dumps({"source_guidance": 1e30, "edits": ["+hat"]}))
    scene().save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--recipe", str(tmp_path / "recipe.json"), "-o", str(tmp_path / "o.png")]
    _refused(argv, capsys, "recipe.json", "source_guidance must be a number in [0, 1000]")


def test_a_diverged_edit_or_inversion_is_an_error_in_the_api(editor, diverging):
    with pytest.raises(DivergedEdit, match="the inversion diverged: 100% of its values are NaN or inf"):
        editor.invert(scene(), steps=2)


def test_a_one_colour_edit_of_a_many_coloured_input_is_refused_by_the_editor(editor, monkeypatch):
    inversion = editor.invert(scene(), steps=2)
    monkeypatch.setattr(editor_module.Editor, "decode", _black_for_edits(editor_module.Editor.decode, inversion))
    with pytest.raises(DivergedEdit, match=r"one colour \(0, 0, 0\) everywhere while its input is not"):
        editor.edit(inversion, "+hat:10")


def _black_for_edits(decode, inversion):
    """``Editor.decode`` that turns every latents but the source's into a black image."""

    def patched(self, latents):
        images = decode(self, latents)
        return images if torch.equal(latents.cpu(), inversion.source_latents[:1]) else [_black(images[0])]

    return patched


def _black(image):
    from PIL import Image

    return Image.new("RGB", image.size)


@pytest.mark.parametrize("command", ["edit", "invert"])
def test_a_diverged_result_is_exit_2_and_writes_nothing(sd_folder, tmp_path, capsys, diverging, command):
    scene().save(tmp_path / "in.png")
    out = tmp_path / ("out.png" if command == "edit" else "out.inv.safetensors")
    extra = ["-e", "+hat"] if command == "edit" else []
    argv = [command, str(tmp_path / "in.png"), *extra, "--model", str(sd_folder), "--steps", "2", "-o", str(out)]
    _refused([*argv, "--device", "cpu", "--quiet"], capsys, "diverged", "NaN or inf")
    assert not out.exists()


def test_the_web_ui_refuses_a_diverged_edit_and_an_absurd_scale_cell(sd_folder, diverging):
    with pytest.raises(LeditsError, match=r"edit scale must be a number in \[0, 1000\]"):
        parse_concepts([["hat", "+", 1e30, 0.9, 0, None]])
    with pytest.raises(DivergedEdit):
        run_edit(
            EditorService(model=str(sd_folder), options=ModelOptions(device="cpu")),
            scene(),
            [["hat", "+", 5, 0.9, 0, None]],
            SETTINGS,
        )


def test_web_ui_requests_leave_no_temp_folder_behind(sd_folder):
    """Every request writes into the service's one scratch folder, removed with the service (judged
    on that folder, not on all of /tmp, where other processes come and go)."""
    service = EditorService(model=str(sd_folder), options=ModelOptions(device="cpu"))
    paths = [Path(run_edit(service, scene(seed=k), [], SETTINGS)[3]) for k in range(3)]
    folders = {p.parent for p in paths}
    assert len(folders) == 1 and all(p.exists() for p in paths)  # recent requests' files stay
    (folder,) = folders
    assert folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith("leditspp-")
    del service
    gc.collect()
    assert not folder.exists()


def test_serve_with_the_readmes_max_upload_mb_starts(monkeypatch, capsys):
    from gradio.utils import _parse_file_size

    launched = {}

    class App:
        def queue(self, **options):
            return self

        def launch(self, **options):
            launched.update(options)

    monkeypatch.setattr("leditspp.webui.build_app", lambda service: App())
    assert main(["serve", "--max-upload-mb", "20"]) == 0
    assert _parse_file_size(launched["max_file_size"]) == 20 * 2**20
    assert main(["serve", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be a number in (0, " in capsys.readouterr().err
