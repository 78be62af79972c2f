"""The command line: edits, inversion re-use, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from leditspp.cli import main

from .conftest import scene


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "photo.png"
    scene(64, 96, seed=21).save(path)
    return path


def test_edit_writes_an_image_with_its_recipe(sd_folder, photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    code = main(
        [
            "edit",
            str(photo),
            "-e",
            "+a red hat",
            "-e",
            "-a cat:7@0.8",
            "--model",
            str(sd_folder),
            "--steps",
            "6",
            "--device",
            "cpu",
            "--quiet",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as im:
        assert im.size == (96, 64)
        recipe = json.loads(im.text["leditspp"])
    assert recipe["steps"] == 6 and recipe["mask_mode"] == "intersect"
    assert recipe["edits"][1] == {
        "prompt": "a cat",
        "scale": 7.0,
        "threshold": 0.8,
        "remove": True,
        "warmup_steps": 0,
        "cooldown_steps": None,
    }


def test_invert_then_edit_from_the_inversion(sd_folder, photo, tmp_path, capsys):
    inv, a, b = tmp_path / "photo.inv.safetensors", tmp_path / "a.png", tmp_path / "b.png"
    common = ["--model", str(sd_folder), "--steps", "5", "--device", "cpu", "--quiet"]
    assert main(["invert", str(photo), "-o", str(inv), *common]) == 0
    assert main(["edit", "--inversion", str(inv), "-e", "+a red hat", "-o", str(a), *common]) == 0
    assert main(["edit", str(photo), "-e", "+a red hat", "-o", str(b), *common]) == 0
    assert list(Image.open(a).getdata()) == list(Image.open(b).getdata())


def test_no_edit_reconstructs_the_input(sd_folder, photo, tmp_path):
    out = tmp_path / "rec.png"
    assert main(["edit", str(photo), "--model", str(sd_folder), "--steps", "4", "--quiet", "-o", str(out)]) == 0
    assert out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["edit", "missing.png", "-e", "+hat"], "does not exist"),
        (["edit", "{photo}", "-e", "+hat@90"], "did you mean 0.9"),
        (["edit", "{photo}", "-e", "+"], "empty"),
        (["edit", "{photo}", "-e", "+hat:-3"], "remove"),
        (["edit", "{photo}", "-e", "+hat", "--skip", "2"], "skip"),
        (["edit", "--inversion", "{corrupt}", "-e", "+hat"], "not a readable"),
        (["edit", "{photo}", "--inversion", "{corrupt}"], "not both"),
        (["edit", "{text}", "-e", "+hat"], "cannot read"),
        (["invert", "{photo}"], "safetensors"),
    ],
)
def test_bad_input_exits_2_with_one_line(sd_folder, photo, tmp_path, capsys, args, message):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"garbage")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    args = [a.format(photo=photo, corrupt=corrupt, text=text) for a in args]
    out = tmp_path / ("x.safetensors" if args[0] == "invert" and "-o" in args else "x.png")
    if args[0] == "invert":
        out = tmp_path / "x.png"
    code = main([*args, "--model", str(sd_folder), "--steps", "3", "--quiet", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("leditspp: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_missing_model_is_a_clear_error(photo, tmp_path, capsys):
    assert main(["edit", str(photo), "-e", "+hat", "-o", str(tmp_path / "o.png")]) == 2
    assert "--model" in capsys.readouterr().err


def test_unloadable_model_is_a_clear_error(photo, tmp_path, capsys):
    code = main(["edit", str(photo), "-e", "+hat", "--model", str(tmp_path / "nothing"), "-o", str(tmp_path / "o.png")])
    assert code == 2
    assert "cannot load model" in capsys.readouterr().err


def test_installed_entry_point_shows_help_with_examples():
    exe = shutil.which("leditspp") or [sys.executable, "-m", "leditspp.cli"]
    cmd = [exe, "edit", "--help"] if isinstance(exe, str) else [*exe, "edit", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "examples:" in proc.stdout and "--inversion" in proc.stdout
