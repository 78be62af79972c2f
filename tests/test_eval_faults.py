"""Issue 22, item 1: the faults found on benchmark folders given to ``leditspp eval``, each kept as a test.

Every benchmark row, flag and sweep value goes through the editor's own checks before any model
loads (exit 2, one line naming the file, the row and the field); a diverged edit (NaN latents, a
one-colour image) is a failed item, never a scored row; a run in which every item failed exits 1.
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from leditspp import divergence
from leditspp import editor as editor_module
from leditspp.cli import main
from leditspp.cli.eval import eval_outcome
from leditspp.demo import shapes
from leditspp.edits import Edit
from leditspp.errors import LeditsError
from leditspp.evaluation import checks, shapes_suite
from leditspp.evaluation.manifests import read_piebench, read_tedbench

from .conftest import scene
from .test_eval_data import _piebench

HEADER = "img_name,target_text,skip,threshold,edit_guidance_scale,seed,steps"
GOOD = "cat.png,a hat,0.1,0.9,6,42,3"


def _tedbench(folder, rows=(GOOD,), header=HEADER, *, encoding="utf-8", newline="\n", bom=False):
    """A TEdBench++ folder whose CSV is written byte for byte as asked (encoding, line ends, BOM)."""
    (folder / "originals").mkdir(parents=True, exist_ok=True)
    scene(64, 64, seed=1).save(folder / "originals" / "cat.png")
    text = newline.join([header, *rows]) + newline
    (folder / "tedbench++.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return folder


def _row(**cells) -> str:
    values = dict(zip(HEADER.split(","), GOOD.split(","), strict=True)) | cells
    return ",".join(str(v) for v in values.values())


# -- encodings and line ends ---------------------------------------------------------------------


def test_a_latin1_csv_is_one_line_naming_the_file_and_the_encoding(tmp_path):
    _tedbench(tmp_path, ["cat.png,un café,0.1,0.9,6,42,3"], encoding="latin-1")
    with pytest.raises(LeditsError) as err:
        read_tedbench(tmp_path)
    message = str(err.value)
    assert "tedbench++.csv: not UTF-8 text (byte 0xe9 on line 2" in message and "Latin-1" in message
    assert "save it as UTF-8" in message and "\n" not in message


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_utf8_with_a_bom_and_any_line_ends_reads_the_same(tmp_path, bom, newline):
    rows = ["cat.png,un café,0.1,0.9,6,42,3", 'cat.png,"a hat, red",0.2,0.8,7,1,2']
    first, second = read_tedbench(_tedbench(tmp_path, rows, bom=bom, newline=newline))
    assert first.edits[0].prompt == "un café" and first.params == {"steps": 3, "skip": 0.1, "seed": 42}
    assert second.edits[0].prompt == "a hat, red" and second.params["steps"] == 2


def test_a_piebench_mapping_with_a_bom_reads_and_one_in_latin1_names_the_encoding(tmp_path):
    folder = _piebench(tmp_path)
    path = folder / "mapping_file.json"
    text = path.read_text().replace("Make the car blue", "Make the café blue")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_piebench(folder)[0].info["editing_instruction"] == "Make the café blue"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(LeditsError, match=r"mapping_file\.json: not UTF-8 text \(byte 0xe9"):
        read_piebench(folder)


# -- the header and the rows ---------------------------------------------------------------------


def test_a_column_twice_in_the_header_is_refused_naming_it(tmp_path):
    _tedbench(tmp_path, [GOOD + ",7"], header=HEADER + ",seed")
    with pytest.raises(LeditsError, match=r"column seed appears twice in the header \(columns 6 and 8\)"):
        read_tedbench(tmp_path)


def test_a_manifest_without_items_is_refused(tmp_path):
    _tedbench(tmp_path / "ted", [])
    with pytest.raises(LeditsError, match="no rows after the header"):
        read_tedbench(tmp_path / "ted")
    folder = _piebench(tmp_path / "pie")
    (folder / "mapping_file.json").write_text("{}")
    with pytest.raises(LeditsError, match=r"mapping_file\.json: no items"):
        read_piebench(folder)


def test_a_csv_the_csv_module_cannot_read_names_the_line(tmp_path):
    _tedbench(tmp_path, [GOOD, "cat.png," + "x" * 200_000 + ",0.1,0.9,6,42,3"])
    with pytest.raises(LeditsError, match=r"tedbench\+\+\.csv, line 3: not valid CSV \(field larger than"):
        read_tedbench(tmp_path)


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ({"steps": 0}, "column steps: steps must be an integer in [1, 1000]; got 0"),
        ({"steps": -5}, "column steps: steps must be an integer in [1, 1000]; got -5"),
        ({"steps": 100000}, "column steps: steps must be an integer in [1, 1000]; got 100000"),
        ({"skip": 1.5}, "column skip: skip is a fraction in [0, 1); got 1.5"),
        ({"skip": "nan"}, "column skip: skip is a fraction in [0, 1); got nan"),
        ({"skip": -0.1}, "column skip: skip is a fraction in [0, 1); got -0.1"),
        ({"edit_guidance_scale": -1}, "column edit_guidance_scale: edit scale must be a number in [0, 1000]"),
        ({"edit_guidance_scale": "inf"}, "column edit_guidance_scale: edit scale must be a number in [0, 1000]"),
        ({"threshold": "nan"}, "column threshold: edit threshold is a quantile in [0, 1); got nan"),
    ],
)
def test_a_row_the_editor_would_refuse_is_refused_naming_file_row_and_column(tmp_path, cells, expected):
    _tedbench(tmp_path, [GOOD, _row(**cells)])
    with pytest.raises(LeditsError) as err:
        read_tedbench(tmp_path)
    assert "tedbench++.csv, row 2 (cat.png), " + expected in str(err.value)


@pytest.mark.parametrize("key", ["original_prompt", "editing_prompt", "image_path"])
def test_a_null_piebench_text_is_refused_not_read_as_none(tmp_path, key):
    _piebench(tmp_path, **{key: None})
    with pytest.raises(LeditsError, match=rf"item 000000000000: {key} must be text; got null — .* or \"\""):
        read_piebench(tmp_path)


def test_an_empty_piebench_original_prompt_is_no_source_prompt(tmp_path):
    first, _ = read_piebench(_piebench(tmp_path, original_prompt=""))
    assert first.source_prompt == "" and [(e.prompt, e.remove) for e in first.edits] == [
        ("blue", False),
        ("wooden", False),
    ]


# -- flags and sweep values: the same checks, the same rule for the scale -------------------------


@pytest.mark.parametrize(
    ("flags", "sweep", "recommended", "expected"),
    [
        ({"steps": 0}, {}, {}, "--steps: steps must be"),
        ({"skip": float("nan")}, {}, {}, "--skip: skip is a fraction"),
        ({}, {"steps": [4, 0]}, {}, "--sweep steps=0: steps must be"),
        ({}, {"steps": [2.5]}, {}, "--sweep steps=2.5: steps must be an integer"),
        ({}, {"skip": [0.1, 1.5]}, {}, "--sweep skip=1.5: skip is a fraction in [0, 1); got 1.5"),
        ({}, {"threshold": [90]}, {}, "did you mean 0.9"),
        ({}, {}, {"steps": 0}, "the model's recommended steps: steps must be"),
        ({}, {"steps": [2.0]}, {}, "--sweep steps=2.0: steps must be an integer"),
    ],
)
def test_flags_sweep_values_and_recommended_settings_name_their_origin(flags, sweep, recommended, expected):
    with pytest.raises(LeditsError) as err:
        checks.check_given(flags, sweep, recommended)
    assert expected in str(err.value)


def test_a_recommended_setting_that_a_flag_or_the_sweep_replaces_is_not_checked():
    checks.check_given({"steps": 4}, {"skip": [0.1]}, {"steps": 0, "skip": 7})


def test_the_scales_upper_bound_is_one_rule_on_the_command_line_and_in_a_benchmark(tmp_path):
    """An absurd but finite scale is refused up front with its range, on the command line as in a row."""
    assert Edit.parse("+hat:1000").scale == 1000
    for check in (lambda: Edit.parse("+hat:1e300"), lambda: checks.check_given({}, {"scale": [1e300]})):
        with pytest.raises(LeditsError, match=r"edit scale must be a number in \[0, 1000\].*got 1e\+300"):
            check()
    with pytest.raises(LeditsError, match=r"row 1 \(cat.png\), column edit_guidance_scale: edit scale must be"):
        read_tedbench(_tedbench(tmp_path, [_row(edit_guidance_scale="1e300")]))


# -- diverged edits ----------------------------------------------------------------------------


def _picture(colour=None):
    if colour is not None:
        return Image.new("RGB", (8, 8), colour)
    return Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))


@pytest.mark.parametrize(
    ("bad", "edited", "source", "expected"),
    [
        (float("nan"), _picture(), _picture(), "the edit diverged: 25% of its values are NaN or inf"),
        (float("inf"), _picture(), _picture(), "NaN or inf"),
        (None, _picture((0, 0, 0)), _picture(), "one colour (0, 0, 0) everywhere while its input is not"),
        (None, _picture((255, 0, 0)), _picture(), "one colour (255, 0, 0)"),
        (None, _picture((0, 0, 0)), _picture((0, 0, 0)), None),  # a one-colour input may stay one colour
        (None, _picture(), _picture(), None),
    ],
)
def test_a_diverged_edit_is_refused_with_its_reason(bad, edited, source, expected):
    latents = torch.zeros(1, 4, 2, 2)
    if bad is not None:
        latents[0, 0] = bad
    if expected is None:
        divergence.check_edited(latents, edited, source)
        return
    with pytest.raises(divergence.DivergedEdit) as err:
        divergence.check_edited(latents, edited, source)
    assert expected in str(err.value) and "lower the edit scale" in str(err.value)


@pytest.mark.parametrize("latent", [float("nan"), 0.0])
def test_the_shapes_suite_refuses_a_diverged_edit_too(latent):
    """A black image would read as every object "gone": a removal success."""

    class Diverging:
        def edit(self, inversion, concepts, **options):
            return SimpleNamespace(latents=torch.full((1, 4, 8, 8), latent), images=[_picture((0, 0, 0))])

    with pytest.raises(divergence.DivergedEdit):
        shapes_suite._edit(Diverging(), None, shapes.scene(0), ["-red circle:1e300"], {})


def test_the_exit_code_is_1_when_some_item_failed():
    errors = [{"item": "001_cat", "error": "DivergedEdit: the edit diverged"}]
    assert eval_outcome({"items": 2, "failed": 0, "errors": []}) == (0, "")
    code, line = eval_outcome({"items": 2, "failed": 1, "errors": errors})
    assert code == 1 and line == "1 of 2 items failed (the others are measured); see summary.json"
    code, line = eval_outcome({"items": 1, "failed": 1, "errors": errors})
    assert code == 1 and line.startswith("every item failed (1 of 1), so nothing was measured; the first, 001_cat:")


# -- through the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("write", "extra", "expected"),
    [
        ({"rows": ["cat.png,un café,0.1,0.9,6,42,3"], "encoding": "latin-1"}, [], "not UTF-8 text"),
        ({"rows": [_row(steps=0)]}, [], "row 1 (cat.png), column steps: steps must be"),
        ({"rows": [_row(skip="nan")]}, [], "row 1 (cat.png), column skip: skip is a fraction"),
        ({"rows": [GOOD + ",1"], "header": HEADER + ",steps"}, [], "column steps appears twice"),
        ({}, ["--sweep", "steps=0,2"], "--sweep steps=0: steps must be"),
        ({}, ["--skip", "1.5"], "--skip: skip is a fraction"),
    ],
)
def test_eval_refuses_a_bad_benchmark_before_any_model_loads(tmp_path, capsys, monkeypatch, write, extra, expected):
    monkeypatch.setattr(
        "leditspp.model_options.ModelOptions.load", lambda *a: pytest.fail("a refused run loads no model")
    )
    data = _tedbench(tmp_path / "ted", **write)
    argv = ["eval", "tedbench", str(data), "-o", str(tmp_path / "out"), "--metrics", "psnr", "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "internal error" not in err


def test_eval_piebench_null_prompt_is_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        "leditspp.model_options.ModelOptions.load", lambda *a: pytest.fail("a refused run loads no model")
    )
    data = _piebench(tmp_path / "pie", original_prompt=None)
    assert main(["eval", "piebench", str(data), "-o", str(tmp_path / "out"), "--metrics", "psnr"]) == 2
    assert "original_prompt must be text; got null" in capsys.readouterr().err


def test_a_diverged_benchmark_edit_is_a_failed_row_and_a_run_of_only_those_exits_1(
    sd_folder, tmp_path, capsys, monkeypatch
):
    loop = editor_module.edit_loop
    monkeypatch.setattr(editor_module, "edit_loop", lambda *a: (loop(*a)[0] * float("nan"), *loop(*a)[1:]))
    data, out = _tedbench(tmp_path / "ted", [_row(steps=2)]), tmp_path / "out"
    argv = ["eval", "tedbench", str(data), "--model", str(sd_folder), "--metrics", "psnr", "--device", "cpu"]
    assert main([*argv, "-o", str(out), "--quiet"]) == 1
    with open(out / "metrics.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["error"].startswith("DivergedEdit: the edit diverged") and not row.get("psnr")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 1 and summary["per_suite"] == {}
    assert "leditspp: every item failed (1 of 1), so nothing was measured" in capsys.readouterr().err


def test_an_empty_csv_file_is_refused(tmp_path):
    folder = _tedbench(tmp_path / "ted")
    (folder / "tedbench++.csv").write_bytes(b"")
    with pytest.raises(LeditsError, match=r"tedbench\+\+\.csv"):
        read_tedbench(folder)


def test_unicode_and_spaces_in_folder_and_image_names_read(tmp_path):
    folder = _tedbench(tmp_path / "bench marks ünï cødé", [_row(img_name="a cat é.png")])
    (folder / "originals" / "cat.png").rename(folder / "originals" / "a cat é.png")
    items = read_tedbench(folder)
    assert len(items) == 1 and items[0].image_path.name == "a cat é.png" and items[0].image_path.exists()
