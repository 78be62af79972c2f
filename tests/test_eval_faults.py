"""Issue 22, item 1: the faults found on benchmark folders given to ``leditspp eval``, each kept as a test.

Every benchmark row, flag and sweep value goes through the editor's own checks before any model
loads (exit 2, one line naming the file, the row and the field); a diverged edit (NaN latents, a
one-colour image) is a failed item, never a scored row; a run in which every item failed exits 1.
"""

from __future__ import annotations

import pytest

from leditspp.errors import LeditsError
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
