"""Values that need no model are refused before it loads, naming where they came from (a flag, a
recipe file, the model's recommended settings); and the README's own ``-e "-beard:7"`` parses."""

from __future__ import annotations

import json
import shlex

import pytest

from leditspp.cli import EXAMPLES, main

from .conftest import scene


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr("leditspp.Editor.from_pretrained", lambda *a, **k: pytest.fail("no model may load"))


@pytest.mark.parametrize(
    ("command", "flags", "expected"),
    [
        ("edit", ["--guidance-rescale", "2"], "guidance_rescale must be a number in [0, 1]; got 2.0"),
        (
            "edit",
            ["--preserve", "1", "--mask-mode", "none"],
            "preserve 1 (from --preserve) with mask_mode 'none' (from --mask-mode)",
        ),
        ("edit", ["--solver", "lcm", "--model", "demo-flow"], "solver 'lcm' (from --solver): the lcm solver is for"),
        ("invert", ["--solver", "lcm", "--model", "demo-flow"], "'demo-flow' is a flow model; use dpmsolver++ or ddpm"),
        ("edit", ["--height", "60"], "height 60 (from --height) is not a multiple of 8, the side multiple of 'demo'"),
        ("invert", ["--width", "70", "--model", "demo"], "use 64 or 72"),
    ],
)
def test_a_value_that_needs_no_model_is_refused_before_it_loads(tmp_path, capsys, no_model, command, flags, expected):
    scene().save(tmp_path / "in.png")
    out = tmp_path / ("out.png" if command == "edit" else "out.inv.safetensors")
    edits = ["-e", "+hat"] if command == "edit" else []
    assert main([command, str(tmp_path / "in.png"), *edits, *flags, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_a_contradiction_in_a_recipe_names_the_recipe_file(tmp_path, capsys, no_model):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"preserve": 1, "mask_mode": "none", "edits": ["+hat"]}))
    scene().save(tmp_path / "in.png")
    assert main(["edit", str(tmp_path / "in.png"), "--recipe", str(recipe), "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert f"preserve 1 (from recipe {recipe}) with mask_mode 'none' (from recipe {recipe})" in err


def test_the_readmes_removal_example_parses(tmp_path, monkeypatch):
    """``-e "-beard:7"`` was refused by argparse: "expected one argument"."""
    (line,) = [x for x in EXAMPLES.splitlines() if '-e "-beard:7"' in x]
    argv = shlex.split(line.split("#")[0])[1:]
    monkeypatch.chdir(tmp_path)
    scene().save(tmp_path / "photo.png")
    planned = []

    def plan(batch, ray):
        planned.append(batch)
        raise SystemExit(0)

    monkeypatch.setattr("leditspp.cli.edit.plan_edits", plan)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0 and planned[0].edits == ("+sunglasses", "-beard:7")
    assert planned[0].output == "out.png" and planned[0].images == ("photo.png",)


def test_an_option_after_e_is_still_refused_as_a_missing_value(capsys):
    with pytest.raises(SystemExit):
        main(["edit", "x.png", "-e", "-o", "y.png"])
    assert "expected one argument" in capsys.readouterr().err
