"""Evaluation data: TEdBench++ / PIE-Bench manifests as published (offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from leditspp.errors import LeditsError
from leditspp.evaluation import manifests
from leditspp.evaluation.manifests import decode_rle, parse_seed, read_piebench, read_tedbench

TEDBENCH_HEADER = "img_name,target_text,skip,threshold,edit_guidance_scale,seed,steps"
TEDBENCH_ROWS = [
    "cat.png,a cat wearing a hat,0.1,0.95,10,4.39383222278441E+17,50",
    'cat.png,"a cat, sleeping",0.2,0.9,12.5,42,50.0',
    "dog.jpg,a sitting dog,0.15,0.85,7,-1.5E+19,30",
]


def _tedbench(folder, header=TEDBENCH_HEADER, rows=TEDBENCH_ROWS):
    (folder / "originals").mkdir(parents=True)
    Image.new("RGB", (37, 23), (200, 10, 10)).save(folder / "originals" / "cat.png")
    Image.new("RGB", (19, 41), (10, 200, 10)).save(folder / "originals" / "dog.jpg")
    (folder / "tedbench++.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def _runs(mask: np.ndarray) -> list[int]:
    """Encode a (H, W) bool mask as PIE-Bench's [start, length, ...] runs (the inverse of decode_rle)."""
    flat = np.concatenate([[False], mask.ravel(), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts, strict=True) for v in pair]


def _square(top, left, size, shape=(512, 512)):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


def _piebench(folder, **changes):
    images = folder / "annotation_images" / "0_random_140"
    images.mkdir(parents=True)
    Image.new("RGB", (512, 512), (0, 0, 255)).save(images / "000000000000.jpg")
    Image.new("RGB", (512, 512), (255, 0, 0)).save(images / "000000000001.png")
    mapping = {
        "000000000000": {
            "image_path": "0_random_140/000000000000.jpg",
            "original_prompt": "a [red] car on a [wooden] bridge",
            "editing_prompt": "a [blue] car on a [wooden] bridge",
            "editing_instruction": "Make the car blue",
            "editing_type_id": "6",
            "blended_word": "car car",
            "mask": _runs(_square(100, 200, 50)),
        },
        "000000000001": {
            "image_path": "0_random_140/000000000001.png",
            "original_prompt": "a [cat] sitting on a sofa",
            "editing_prompt": "a sofa",
            "editing_type_id": "3",
            "blended_word": "",
            "mask": [0, 10, 600, 5],
        },
    }
    for key, value in changes.items():
        mapping["000000000000"][key] = value
    (folder / "mapping_file.json").write_text(json.dumps(mapping))
    return folder


# --- TEdBench++ -------------------------------------------------------------------------------


def test_parse_seed_reads_published_floats_and_exact_integers():
    # the float the text denotes, as pandas or float() read it (not the decimal 439383222278441000)
    assert parse_seed("4.39383222278441E+17") == 439383222278441024 == int(float("4.39383222278441E+17"))
    assert parse_seed("12345678901234567891") == 12345678901234567891  # exact, no float round trip
    assert parse_seed("-1") == 2**64 - 1
    assert 0 <= parse_seed("-1.5E+19") < 2**64
    with pytest.raises(ValueError):
        parse_seed("nan")


def test_read_tedbench_keeps_each_rows_parameters(tmp_path):
    items = read_tedbench(_tedbench(tmp_path))
    assert [i.item_id for i in items] == ["001_cat", "002_cat", "003_dog"]
    first, second, third = items
    assert first.image_path == tmp_path / "originals" / "cat.png"
    assert first.params == {"steps": 50, "skip": 0.1, "seed": 439383222278441024}
    (edit,) = first.edits
    assert (edit.prompt, edit.scale, edit.threshold, edit.remove) == ("a cat wearing a hat", 10.0, 0.95, False)
    assert first.target_prompt == "a cat wearing a hat" and first.mask is None
    assert second.edits[0].prompt == "a cat, sleeping" and second.params["steps"] == 50
    assert third.image_path.suffix == ".jpg" and third.params["steps"] == 30
    assert 0 <= third.params["seed"] < 2**64


def test_read_tedbench_accepts_spaces_and_extra_columns(tmp_path):
    header = "img_name, target_text, skip, threshold, edit_guidance_scale, seed, steps, note"
    rows = ["cat.png, a hat, 0.1, 0.9, 10, 1E+3, 50, ok", ""]
    (item,) = read_tedbench(_tedbench(tmp_path, header, rows))
    assert item.params["seed"] == 1000 and item.edits[0].prompt == "a hat"


@pytest.mark.parametrize(
    ("header", "rows", "expected"),
    [
        (TEDBENCH_HEADER.replace(",seed", ""), ["cat.png,a hat,0.1,0.9,10,50"], "missing column(s) seed"),
        (TEDBENCH_HEADER, ["missing.png,a hat,0.1,0.9,10,1,50"], "row 1 (missing.png)"),
        (TEDBENCH_HEADER, ["cat.png,a hat,0.1,0.9,10,1,50", "cat.png,a hat,0.1,0.9,ten,1,50"], "row 2 (cat.png)"),
        (TEDBENCH_HEADER, ["cat.png,a hat,0.1,90,10,1,50"], "did you mean 0.9"),
        (TEDBENCH_HEADER, ["cat.png,a hat,0.1,0.9,10,1,50.5"], "column steps"),
        (TEDBENCH_HEADER, ["cat.png,,0.1,0.9,10,1,50"], "target_text is empty"),
        (TEDBENCH_HEADER, ["cat.png,a hat,0.1"], "3 cells for 7 columns"),
    ],
)
def test_broken_tedbench_names_file_and_row(tmp_path, header, rows, expected):
    _tedbench(tmp_path, header, rows)
    with pytest.raises(LeditsError, match=r"tedbench\+\+\.csv") as err:
        read_tedbench(tmp_path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_tedbench_without_csv_says_what_the_folder_holds(tmp_path):
    with pytest.raises(LeditsError, match=r"tedbench\+\+\.csv: file not found; a TEdBench\+\+ folder holds"):
        read_tedbench(tmp_path)


# --- PIE-Bench --------------------------------------------------------------------------------


def test_decode_rle_follows_piebench_convention():
    inside = _square(100, 200, 50)
    mask = decode_rle(_runs(inside))
    assert mask.shape == (512, 512) and mask.dtype == bool
    # the published mask_decode marks the outermost rows/columns as edited
    border = np.zeros_like(mask)
    border[[0, -1], :] = border[:, [0, -1]] = True
    assert np.array_equal(mask, inside | border)
    assert np.array_equal(decode_rle(_runs(inside), border=False), inside)
    # runs are row-major over the flattened image and clipped at its end
    small = decode_rle([3, 2, 14, 100], (4, 4), border=False)
    assert small.ravel().nonzero()[0].tolist() == [3, 4, 14, 15]


@pytest.mark.parametrize("runs", [[1, 2, 3], [-1, 2], [1.5, 2], [512 * 512, 1], "1 2"])
def test_decode_rle_refuses_malformed(runs):
    with pytest.raises(ValueError):
        decode_rle(runs)


def test_read_piebench_gives_remove_and_add_concepts(tmp_path):
    first, second = read_piebench(_piebench(tmp_path))
    assert first.item_id == "000000000000"
    assert first.image_path == tmp_path / "annotation_images" / "0_random_140" / "000000000000.jpg"
    assert [(e.prompt, e.remove) for e in first.edits] == [("red", True), ("blue", False)]
    assert first.source_prompt == "a red car on a wooden bridge"
    assert first.target_prompt == "a blue car on a wooden bridge"
    assert first.edit_type == "change attribute (color)" and first.params == {}
    assert first.info == {"editing_type_id": "6", "blended_word": "car car", "editing_instruction": "Make the car blue"}
    assert first.mask[120, 220] and not first.mask[50, 50] and first.mask[0, 50]
    assert first.mask.sum() == 50 * 50 + 4 * 511
    assert [(e.prompt, e.remove) for e in second.edits] == [("cat", True)]
    assert second.edit_type == "delete object"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mask": [5, 1, 7]}, "start/length pairs"),
        ({"mask": [512 * 512 + 3, 2]}, "beyond the 512×512 image"),
        ({"image_path": "0_random_140/gone.jpg"}, "gone.jpg: file not found"),
        ({"editing_prompt": "a [red] car on a [wooden] bridge"}, "no bracketed words differ"),
    ],
)
def test_broken_piebench_names_file_and_item(tmp_path, changes, expected):
    _piebench(tmp_path, **changes)
    with pytest.raises(LeditsError, match=r"mapping_file\.json, item 000000000000") as err:
        read_piebench(tmp_path)
    assert expected in str(err.value)


def test_piebench_missing_key_and_bad_json(tmp_path):
    folder = _piebench(tmp_path)
    mapping = json.loads((folder / "mapping_file.json").read_text())
    del mapping["000000000001"]["mask"]
    (folder / "mapping_file.json").write_text(json.dumps(mapping))
    with pytest.raises(LeditsError, match=r"item 000000000001: missing key\(s\) mask"):
        read_piebench(folder)
    (folder / "mapping_file.json").write_text("{not json")
    with pytest.raises(LeditsError, match=r"mapping_file\.json: not valid JSON"):
        read_piebench(folder)


def test_bracket_helpers():
    assert manifests.bracketed("a [red] [sports car] on [ ]") == ["red", "sports car"]
    assert manifests.plain_prompt("a [red] car") == "a red car"
