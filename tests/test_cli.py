"""The command line: edits, inversion re-use, exit codes and one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leditspp import LeditsError, defaults
from leditspp.cli import main
from leditspp.masking import MASK_MODES
from leditspp.recipes import SETTINGS, check_settings
from leditspp.solvers import SOLVERS

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


def test_compile_flag_compiles_the_unet(sd_folder, photo, tmp_path, monkeypatch):
    from leditspp import Editor

    compiled = []
    monkeypatch.setattr(Editor, "compile", lambda self, **options: compiled.append(options) or self)
    args = ["edit", str(photo), "-e", "+a hat", "--model", str(sd_folder), "--steps", "3", "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "a.png"), "--quiet"]) == 0 and compiled == []
    assert main([*args, "-o", str(tmp_path / "b.png"), "--quiet", "--compile"]) == 0 and compiled == [{}]


def test_invert_then_edit_from_the_inversion(sd_folder, photo, tmp_path, capsys):
    inv, a, b = tmp_path / "photo.inv.safetensors", tmp_path / "a.png", tmp_path / "b.png"
    common = ["--model", str(sd_folder), "--device", "cpu", "--quiet"]
    assert main(["invert", str(photo), "-o", str(inv), "--steps", "5", *common]) == 0
    assert main(["edit", "--inversion", str(inv), "-e", "+a red hat", "-o", str(a), *common]) == 0
    assert main(["edit", str(photo), "-e", "+a red hat", "-o", str(b), "--steps", "5", *common]) == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))

    # the file names its model (the folder, absolute): an edit without --model loads that one
    c = tmp_path / "c.png"
    assert main(["edit", "--inversion", str(inv), "-e", "+a red hat", "-o", str(c), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(c)), np.asarray(Image.open(a)))
    assert json.loads(Image.open(c).text["leditspp"])["model"] == str(Path(sd_folder).resolve())
    assert main(["info", str(inv)]) == 0 and f'"source": "{Path(sd_folder).resolve()}"' in capsys.readouterr().out
    assert main(["edit", "--inversion", str(inv), "-e", "+hat", "-o", str(c), "--model", "demo", "--quiet"]) == 2
    assert f"Edit it with --model {Path(sd_folder).resolve()}, or invert" in capsys.readouterr().err


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
    steps = [] if "--inversion" in args else ["--steps", "3"]  # a saved inversion fixes the steps
    code = main([*args, "--model", str(sd_folder), *steps, "--quiet", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("leditspp: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_unloadable_model_is_a_clear_error(photo, tmp_path, capsys, monkeypatch):
    """A path that is no folder is refused before anything loads (it was looked up on the hub)."""
    monkeypatch.setattr("leditspp.model_options.ModelOptions.load", lambda *a: pytest.fail("refused before loading"))
    missing = str(tmp_path / "nothing")
    for args in (["edit", str(photo), "-e", "+hat"], ["invert", str(photo)]):
        out = str(tmp_path / ("o.png" if args[0] == "edit" else "o.safetensors"))
        assert main([*args, "--model", missing, "-o", out]) == 2
        assert f"--model {missing!r}: no such folder, and not a Hugging Face hub id" in capsys.readouterr().err
    monkeypatch.undo()
    (tmp_path / "empty").mkdir()  # a folder, but not a model: loading says why
    code = main(["edit", str(photo), "-e", "+hat", "--model", str(tmp_path / "empty"), "-o", str(tmp_path / "o.png")])
    assert code == 2
    assert "cannot load model" in capsys.readouterr().err


def test_installed_entry_point_shows_help_with_examples():
    exe = shutil.which("leditspp") or [sys.executable, "-m", "leditspp.cli"]
    cmd = [exe, "edit", "--help"] if isinstance(exe, str) else [*exe, "edit", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "examples:" in proc.stdout and "--inversion" in proc.stdout


def test_info_prints_a_pngs_recipe_and_an_inversions_metadata(sd_folder, photo, tmp_path, capsys):
    out, inv = tmp_path / "out.png", tmp_path / "p.inv.safetensors"
    common = ["--model", str(sd_folder), "--steps", "4", "--quiet"]
    assert main(["edit", str(photo), "-e", "+a red hat:6", "-o", str(out), "--save-inversion", str(inv), *common]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["edits"][0]["prompt"] == "a red hat" and recipe["model"] == str(sd_folder)
    assert recipe["source"] == "photo.png" and recipe["seed"] == defaults.SEED and recipe["height"] == 64
    assert main(["info", str(inv)]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["format"] == "leditspp-inversion" and meta["steps"] == 4 and meta["family"] == "sd"
    assert main(["info", str(photo)]) == 2
    assert "carries no leditspp recipe" in capsys.readouterr().err


def test_rerunning_a_pngs_recipe_reproduces_it_bit_for_bit(sd_folder, photo, tmp_path):
    first, again = tmp_path / "first.png", tmp_path / "again.png"
    args = ["-e", "+a red hat:6@0.8", "-e", "-a cat", "--steps", "5", "--seed", "3", "--skip", "0.2"]
    args += ["--mask-mode", "noise", "--model", str(sd_folder), "--quiet", "-o", str(first)]
    assert main(["edit", str(photo), *args]) == 0
    assert main(["edit", str(photo), "--recipe", str(first), "--quiet", "-o", str(again)]) == 0
    a, b = Image.open(first), Image.open(again)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert json.loads(a.text["leditspp"]) == json.loads(b.text["leditspp"])


def test_a_folder_and_a_glob_with_per_image_yaml_recipes_and_mask_overlays(sd_folder, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.jpg"]):
        scene(64, 64, seed=30 + i).save(src / name)
    (src / "notes.txt").write_text("not an image")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model: {sd_folder}\nsteps: 4\nedits: ['+a red hat']\n"
        "images:\n  b.png:\n    edits: ['-a cat:6', '+snow']\n    mask_mode: noise\n"
    )
    out = tmp_path / "out"
    args = ["edit", str(src / "a.png"), str(src / "b.png"), str(src / "*.jpg"), "--recipe", str(recipe), "--masks"]
    assert main([*args, "--quiet", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a.mask-1.png",
        "a.png",
        "b.mask-1.png",
        "b.mask-2.png",
        "b.png",
        "c.mask-1.png",
        "c.png",
        "edit-log.csv",
    ]
    log = list(csv.DictReader((out / "edit-log.csv").open()))
    assert [(Path(r["input"]).name, r["status"], r["error"]) for r in log] == [
        (n, "done", "") for n in ("a.png", "b.png", "c.jpg")
    ]
    b = json.loads(Image.open(out / "b.png").text["leditspp"])
    assert [e["prompt"] for e in b["edits"]] == ["a cat", "snow"] and b["mask_mode"] == "noise" and b["steps"] == 4
    assert json.loads(Image.open(out / "a.png").text["leditspp"])["mask_mode"] == "intersect"
    assert main(["edit", str(src), "--recipe", str(recipe), "--quiet", "-o", str(tmp_path / "folder")]) == 0
    assert len(list((tmp_path / "folder").iterdir())) == 4  # 3 images and the log


def test_a_batch_records_a_bad_input_goes_on_and_resume_redoes_only_what_is_missing(
    sd_folder, tmp_path, capsys, monkeypatch
):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        scene(64, 64, seed=40 + i).save(src / f"s{i}.png")
    (src / "broken.png").write_text("not an image")
    args = ["edit", str(src), "-e", "+a red hat", "--model", str(sd_folder), "--steps", "3", "--masks", "--quiet"]
    assert main([*args, "-o", str(out)]) == 1  # the others are edited, the run says something failed
    assert "broken.png failed: " in capsys.readouterr().err
    log = list(csv.DictReader((out / "edit-log.csv").open()))
    assert sorted((Path(r["input"]).name, r["status"]) for r in log) == [
        ("broken.png", "failed"),
        ("s0.png", "done"),
        ("s1.png", "done"),
        ("s2.png", "done"),
    ]
    assert "cannot read" in next(r["error"] for r in log if r["status"] == "failed")
    images = sorted(p.name for p in out.glob("*.png"))
    assert images == [f"s{i}{k}.png" for i in range(3) for k in (".mask-1", "")]

    (src / "broken.png").unlink()
    (out / "s1.mask-1.png").unlink()  # an unfinished job: one of its files is missing
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main([*args, "-o", str(out), "--resume"]) == 0
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert sorted(now) == images
    assert [n for n in images if now[n] != mtimes.get(n)] == ["s1.mask-1.png", "s1.png"]  # only s1 redone

    monkeypatch.setattr(
        "leditspp.model_options.ModelOptions.load", lambda *a: pytest.fail("nothing to do, no model to load")
    )
    assert main([*args, "-o", str(out), "--resume"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == now


def test_a_ray_address_that_does_not_answer_is_a_clear_error(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()  # (test_distributed's runtime starts later; a running one would be used)
    args = ["eval", "shapes", "--scenes", "1", "--quiet", "-o", str(tmp_path / "out")]
    assert main([*args, "--ray", "not-an-address"]) == 2
    err = capsys.readouterr().err
    assert "cannot start or join Ray at --ray 'not-an-address'" in err and "ray://HOST:PORT" in err


def test_the_item_bar_shows_failed_retried_and_the_rate(capsys):
    from leditspp.cli.progress import item_progress
    from leditspp.jobs import RunStats

    stats = RunStats(total=3, done=1, failed=1, retried=2, seconds=30.0)
    bar = item_progress(False, "edit", stats)
    bar(2, 3)
    bar(3, 3)
    assert "1 failed, 2 retried, 4.0/min" in capsys.readouterr().err
    assert item_progress(True, "edit", stats) is None  # --quiet


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ('{"edits": ["+hat"], "colour": 3}', "unknown recipe keys ['colour']"),
        ('{"edits": "+hat"}', "must be a list"),
        ("{not json", "cannot be parsed"),
        ('{"solver": ["ddpm"]}', "solver must be one of"),
    ],
)
def test_bad_recipes_exit_2(sd_folder, photo, tmp_path, capsys, recipe, message):
    path = tmp_path / "r.json"
    path.write_text(recipe)
    out = tmp_path / "o.png"
    assert main(["edit", str(photo), "--recipe", str(path), "--model", str(sd_folder), "-o", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_several_images_need_an_output_folder(photo, tmp_path, capsys):
    other = tmp_path / "other.png"
    scene(64, 64, seed=40).save(other)
    code = main(["edit", str(photo), str(other), "-e", "+hat", "-o", str(tmp_path / "x.png")])
    assert code == 2 and "need a folder" in capsys.readouterr().err


def test_every_setting_of_the_schema_is_checked():
    """A setting added to recipes.SETTINGS without a check would slip through from recipes and flags."""
    for key in SETTINGS:
        with pytest.raises(LeditsError, match=f"recipe: {key} must be"):
            check_settings({key: [1]}, "recipe")
    with pytest.raises(LeditsError, match="unknown setting 'colour'"):
        check_settings({"colour": 3}, "recipe")


def test_solver_and_mask_mode_choices_read_their_one_declaration(capsys):
    """The parser lists the names in defaults (no torch import); the tables that use them match."""
    assert tuple(SOLVERS) == defaults.SOLVERS and MASK_MODES is defaults.MASK_MODES
    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    usage = capsys.readouterr().out
    assert "{" + ",".join(SOLVERS) + "}" in usage
    assert "{" + ",".join(MASK_MODES) + "}" in usage


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_outputs_never_replace_inputs_unless_asked(sd_folder, tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        scene(64, 64, seed=60 + i).save(src / f"s{i}.png")
    before = _bytes(src)
    args = ["edit", "-e", "+a red hat", "--model", str(sd_folder), "--steps", "3", "--quiet"]
    for extra in ([], ["--resume"]):  # the folder into itself: the edits would replace and join the inputs
        assert main([*args, str(src), "-o", str(src), *extra]) == 2
        err = capsys.readouterr().err
        assert "holds the inputs" in err and "--overwrite-inputs" in err and "already done" not in err
        assert _bytes(src) == before
    one = src / "s0.png"
    for target in (one, src / ".." / "imgs" / "s0.png"):  # one file into itself, also by another path
        assert main([*args, str(one), "-o", str(target)]) == 2
        assert "would overwrite the input" in capsys.readouterr().err
    recipe = tmp_path / "recipe.png"  # a recipe PNG is an input too
    shutil.copy(one, recipe)
    assert main([*args, str(src / "s1.png"), "--recipe", str(recipe), "-o", str(recipe)]) == 2
    assert _bytes(src) == before and recipe.read_bytes() == before["s0.png"]

    assert main([*args, str(one), "-o", str(one), "--overwrite-inputs"]) == 0  # said explicitly
    assert json.loads(Image.open(one).text["leditspp"])["edits"][0]["prompt"] == "a red hat"


def test_resume_edits_again_an_output_made_with_another_recipe(sd_folder, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        scene(64, 64, seed=70 + i).save(src / f"s{i}.png")
    args = ["edit", str(src), "--model", str(sd_folder), "--steps", "3", "-o", str(out)]
    assert main([*args, "-e", "+snow:6", "--quiet"]) == 0
    first = _bytes(out)
    assert main([*args, "-e", "+snow:6", "--resume"]) == 0  # the same recipe: nothing to do
    assert _bytes(out) == first and "editing it again" not in capsys.readouterr().err
    assert main([*args, "-e", "+red circle:8", "--resume"]) == 0  # another edit: both redone
    assert "other edits (+snow:6 instead of +red circle:8)" in capsys.readouterr().err
    for name in ("s0.png", "s1.png"):
        assert json.loads(Image.open(out / name).text["leditspp"])["edits"][0]["prompt"] == "red circle"
    again = _bytes(out)
    assert main([*args, "-e", "+red circle:8", "--steps", "4", "--resume"]) == 0  # another setting
    assert "steps 3 instead of 4" in capsys.readouterr().err
    assert all(_bytes(out)[n] != again[n] for n in ("s0.png", "s1.png"))
    Image.open(src / "s0.png").save(out / "s0.png")  # an output without a recipe: cannot be trusted
    assert main([*args, "-e", "+red circle:8", "--steps", "4", "--resume"]) == 0
    assert "s0.png was made with no recipe" in capsys.readouterr().err
