"""No silent settings: a fast ``--help`` that names the model's recommendation, the start summary,
the warnings and the quiet flag of the command line."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import time
import warnings

import pytest

from leditspp import LeditsError, defaults
from leditspp.batch.plan import resolve_settings
from leditspp.cli import RECOMMENDED, _parser, main
from leditspp.evaluation import SUITES
from leditspp.models import RECOMMENDABLE
from leditspp.models.loading import load_pipeline
from leditspp.models.settings import unrecognised_checkpoint
from leditspp.offload import CHOICES

from .conftest import scene


def test_building_the_parser_imports_neither_torch_nor_diffusers():
    code = "import sys; from leditspp.cli import _parser; _parser(); print({'torch', 'diffusers'} & {*sys.modules})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "set()"


def test_the_parsers_choices_are_the_librarys():
    assert tuple(SUITES) == defaults.SUITES and CHOICES == defaults.OFFLOADS


def _help_of(command: str, dest: str) -> str | None:
    sub = next(a for a in _parser()._subparsers._group_actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    return next((a.help for a in sub._actions if a.dest == dest), None)


@pytest.mark.parametrize("command", ["edit", "invert", "eval"])
def test_help_names_the_models_recommendation_where_it_is_the_default(command):
    for key in RECOMMENDABLE:
        text = _help_of(command, key)
        if text is not None:
            assert RECOMMENDED in text, (command, key, text)
            assert str(RECOMMENDABLE[key]) not in text, (command, key, text)


@pytest.fixture
def folder_with_settings(sd_folder, tmp_path):
    """The tiny SD model with a leditspp.json recommending a scale and a mask mode."""
    folder = tmp_path / "tiny-sd"
    shutil.copytree(sd_folder, folder)
    (folder / "leditspp.json").write_text(json.dumps({"recommended": {"scale": 6.5, "mask_mode": "noise"}}))
    return folder


def test_resolve_settings_says_where_each_setting_came_from():
    flags, recipe = {"steps": 12}, {"skip": 0.2, "steps": 40}
    settings, origins = resolve_settings(
        flags,
        recipe,
        {"skip": 0.0, "mask_mode": "noise", "solver": "ddpm"},
        {"mask_mode": "leditspp.json"},
        "recipe r.yaml",
    )
    assert (settings["steps"], origins["steps"]) == (12, "flag")
    assert (settings["skip"], origins["skip"]) == (0.2, "recipe r.yaml")
    assert (settings["mask_mode"], origins["mask_mode"]) == ("noise", "leditspp.json")
    assert (settings["solver"], origins["solver"]) == ("ddpm", "recommended")
    assert (settings["seed"], origins["seed"]) == (defaults.SEED, "default")


def test_edit_says_the_model_each_setting_and_its_origin_then_loads(folder_with_settings, tmp_path, capsys, caplog):
    image, recipe, out = tmp_path / "in.png", tmp_path / "r.yaml", tmp_path / "out.png"
    scene(64, 64).save(image)
    recipe.write_text("skip: 0.2\n")
    args = ["edit", str(image), "-e", "+hat", "--model", str(folder_with_settings), "--steps", "3"]
    assert main([*args, "--device", "cpu", "--recipe", str(recipe), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"model {folder_with_settings} (flag), family sd; device cpu (flag), dtype float32 (default)" in err
    for said in ("steps 3 (flag)", f"skip 0.2 (recipe {recipe})", "mask_mode 'noise' (leditspp.json)"):
        assert said in err
    assert "scale 6.5 (leditspp.json)" in err and "solver 'dpmsolver++' (default)" in err
    assert err.count("settings: ") == 1
    loading = [r.getMessage() for r in caplog.records if r.name == "leditspp.model_options"]
    assert loading[0].startswith("loading model") and " s: family sd, memory plan none" in loading[1]


def test_quiet_says_nothing_at_start(sd_folder, tmp_path, capsys):
    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    args = [
        "invert",
        str(image),
        "--model",
        str(sd_folder),
        "--steps",
        "3",
        "--quiet",
        "-o",
        str(tmp_path / "i.safetensors"),
    ]
    assert main(args) == 0
    assert capsys.readouterr().err == ""


def test_invert_says_its_settings(sd_folder, tmp_path, capsys):
    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    assert (
        main(["invert", str(image), "--model", str(sd_folder), "--steps", "3", "-o", str(tmp_path / "i.safetensors")])
        == 0
    )
    err = capsys.readouterr().err
    assert "steps 3 (flag)" in err and "seed 0 (default)" in err and "source_guidance 3.5 (default)" in err


def test_eval_says_its_settings_before_it_runs(monkeypatch, capsys):
    """Once the checks have passed (the runner counts the first items), before any item runs."""

    def stop(*args, progress=None, **kwargs):
        progress(0, 20)
        raise LeditsError("stopped here")

    monkeypatch.setattr("leditspp.cli.eval.evaluate", stop)
    assert main(["eval", "shapes", "-o", "unused", "--scale", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "model demo (default)" in err and "scale 4.0 (flag)" in err and "threshold 0.9 (leditspp.json)" in err


@pytest.fixture
def stub_run(monkeypatch):
    """The edit planned and checked but not run (no model loads)."""
    monkeypatch.setattr("leditspp.cli.edit.edit_batch", lambda *args, **kwargs: None)


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("leditspp: warning: ")]


def test_half_precision_on_a_cpu_is_a_warning(sd_folder, tmp_path, capsys, stub_run):
    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    args = ["edit", str(image), "-e", "+hat", "--model", str(sd_folder), "--device", "cpu", "--quiet"]
    assert main([*args, "--dtype", "float16", "-o", str(tmp_path / "o.png")]) == 0
    (line,) = _warnings(capsys)
    assert "--dtype float16 on the CPU" in line and "float32" in line


def test_no_edit_a_jpeg_output_and_an_unmatched_recipe_entry_are_warnings(sd_folder, tmp_path, capsys, stub_run):
    image, recipe = tmp_path / "in.png", tmp_path / "r.yaml"
    scene(64, 64).save(image)
    recipe.write_text("images:\n  other.png: {edits: ['+hat']}\n")
    out = tmp_path / "o.jpg"
    args = ["edit", str(image), "--model", str(sd_folder), "--recipe", str(recipe), "--quiet", "-o", str(out)]
    assert main(args) == 0
    said = _warnings(capsys)
    assert any("'other.png' match no input" in w for w in said)
    assert any(f"{out} will be the reconstruction of the input; add -e" in w for w in said)
    assert any(f"{out} is JPG, which cannot carry the recipe" in w and "write .png" in w for w in said)
    assert len(said) == 3


def test_an_edit_with_a_concept_to_a_png_says_no_warning(sd_folder, tmp_path, capsys, stub_run):
    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    args = ["edit", str(image), "-e", "+hat", "--model", str(sd_folder), "--device", "cpu", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "o.png")]) == 0
    assert _warnings(capsys) == []


def test_a_photo_given_to_the_demo_model_suggests_another_model(tmp_path, capsys, stub_run):
    image = tmp_path / "photo.png"
    scene(600, 800).save(image)
    assert main(["edit", str(image), "-e", "+hat", "--quiet", "-o", str(tmp_path / "o.png")]) == 0
    (line,) = _warnings(capsys)
    assert "800×600" in line and "built-in demo model" in line and "--model stable-diffusion-v1-5/" in line


def test_a_z_image_turbo_folder_without_leditspp_json_is_a_warning(tmp_path):
    folder = tmp_path / "Z-Image-Turbo-bf16"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "ZImagePipeline"}))
    line = unrecognised_checkpoint(str(folder))
    assert line and "Tongyi-MAI/Z-Image-Turbo" in line and "--steps 8 --skip 0.0" in line and "leditspp.json" in line
    (folder / "leditspp.json").write_text(json.dumps({"recommended": {"steps": 8}}))
    assert unrecognised_checkpoint(str(folder)) is None
    other = tmp_path / "my-z-image"
    folder.rename(other)
    (other / "leditspp.json").unlink()
    assert unrecognised_checkpoint(str(other)) is None


def test_quiet_silences_the_libraries_warnings_while_the_command_runs(sd_folder, tmp_path, monkeypatch, caplog):
    def chatter(*args, **kwargs):
        warnings.warn("hub chatter", UserWarning, stacklevel=1)
        for name in ("huggingface_hub", "diffusers", "transformers"):
            logging.getLogger(name).warning("%s says something", name)

    monkeypatch.setattr("leditspp.cli.edit.edit_batch", chatter)
    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    names = ("huggingface_hub", "diffusers", "transformers")
    before = [logging.getLogger(name).level for name in names]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        args = ["edit", str(image), "-e", "+hat", "--model", str(sd_folder), "--quiet", "-o", str(tmp_path / "o.png")]
        assert main(args) == 0
    assert seen == [] and [r.name for r in caplog.records if r.name in names] == []
    assert [logging.getLogger(name).level for name in names] == before  # as the user configured them


def test_a_hub_id_offline_and_not_cached_is_refused_at_once(tmp_path, capsys):
    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    start = time.perf_counter()
    args = ["edit", str(image), "-e", "+hat", "--model", "nobody-here/no-such-model", "-o", str(tmp_path / "o.png")]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'nobody-here/no-such-model' is a Hugging Face hub id that is not reachable and not in the cache" in err
    assert "HF_HUB_OFFLINE is set" in err and "pass a Hugging Face hub id" not in err
    assert time.perf_counter() - start < 20


def test_a_hub_id_without_a_connection_is_refused_without_waiting_for_the_download(monkeypatch):
    import huggingface_hub

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(socket, "create_connection", refused)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LeditsError, match=r"not reachable and not in the cache \(no connection to huggingface.co"):
        load_pipeline("nobody-here/no-such-model", None)


def test_an_edit_of_a_saved_inversion_says_the_settings_it_fixes(sd_folder, tmp_path, capsys, stub_run):
    image, saved = tmp_path / "in.png", tmp_path / "in.safetensors"
    scene(64, 64).save(image)
    assert main(["invert", str(image), "--model", str(sd_folder), "--steps", "3", "--quiet", "-o", str(saved)]) == 0
    assert main(["edit", "--inversion", str(saved), "-e", "+hat", "-o", str(tmp_path / "o.png")]) == 0
    err = capsys.readouterr().err
    assert f"model {sd_folder} (inversion {saved})" in err and f"steps 3 (inversion {saved})" in err
    assert "seed" not in err.split("settings: ")[1]
