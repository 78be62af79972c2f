"""``eval --resume`` keeps every finished row and refuses what would mix or damage them: rows of
other sweep values or past a ``--limit`` are kept, a cut-off last row is redone, another model's
rows are refused, a NUL byte is a one-line refusal, seeds above 2**53 read back exactly; and the
eval flags that name models or sweep values are checked before anything runs."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from leditspp.cli import main
from leditspp.errors import LeditsError
from leditspp.evaluation import runner, session
from leditspp.evaluation.runner import Row
from leditspp.jobs import Item


def _items(ids=("x0", "x1", "x2"), **params) -> list[Item]:
    return [Item(i, "toy", "add", {"scale": 1, **params}, data=k) for k, i in enumerate(ids)]


def _value(item: Item) -> Row:
    return Row({"value": item.data + 0.123456789}, {"edited": Image.new("RGB", (4, 4))})


def _rows(out) -> list[dict[str, str]]:
    with open(out / runner.METRICS_CSV, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_with_another_sweep_value_keeps_the_finished_rows(tmp_path):
    runner.run(runner.expand_sweep(_items(), {"preserve": [0, 1]}), _value, tmp_path)
    summary = runner.run(runner.expand_sweep(_items(), {"preserve": [2]}), _value, tmp_path, resume=True)
    assert sorted(r["preserve"] for r in _rows(tmp_path)) == ["0"] * 3 + ["1"] * 3 + ["2"] * 3
    assert summary["items"] == 9


def test_resume_with_a_smaller_limit_keeps_every_row(tmp_path):
    runner.run(_items(), _value, tmp_path)
    runner.run(_items()[:1], _value, tmp_path, resume=True)
    assert [r["item"] for r in _rows(tmp_path)] == ["x0", "x1", "x2"]


@pytest.mark.parametrize("cut", [1, 4, 9, 14])
def test_a_cut_off_last_row_is_evaluated_again_not_kept_with_its_cut_values(tmp_path, cut):
    runner.run(_items(), _value, tmp_path)
    path = tmp_path / runner.METRICS_CSV
    path.write_bytes(path.read_bytes().rstrip(b"\r\n")[:-cut])
    calls = []
    runner.run(_items(), lambda item: calls.append(item.id) or _value(item), tmp_path, resume=True)
    assert calls == ["x2"]
    assert [r["value"] for r in _rows(tmp_path)] == ["0.123456789", "1.123456789", "2.123456789"]


def test_resume_with_another_model_is_refused_naming_both(tmp_path):
    runner.run(_items(), _value, tmp_path, tags={"model": "demo"})
    with pytest.raises(LeditsError, match=r"rows made with model 'demo' .* this run asks model 'demo-flow'"):
        runner.run(_items(("x3",)), _value, tmp_path, resume=True, tags={"model": "demo-flow"})
    assert {r["model"] for r in _rows(tmp_path)} == {"demo"} and len(_rows(tmp_path)) == 3


def test_a_nul_byte_in_metrics_csv_is_a_one_line_refusal(tmp_path):
    runner.run(_items(), _value, tmp_path)
    path = tmp_path / runner.METRICS_CSV
    path.write_text(path.read_text().replace("1.123", "1\x00.123"))
    with pytest.raises(LeditsError) as err:
        runner.run(_items(), _value, tmp_path, resume=True)
    assert "NUL byte on line 3" in str(err.value) and "\n" not in str(err.value)


def test_a_seed_above_2_53_reads_back_exactly_so_the_run_resumes(tmp_path):
    items = _items(seed=2**60 + 1)
    runner.run(items, _value, tmp_path)
    assert runner.read_rows(tmp_path / runner.METRICS_CSV)[0]["seed"] == 2**60 + 1
    runner.run(items, lambda item: pytest.fail("a finished run computes nothing"), tmp_path, resume=True)


def test_a_repeated_sweep_value_is_refused_naming_it():
    for sweep in (["preserve=1,1"], ["scale=5,5.0"]):
        with pytest.raises(LeditsError, match=r"gives (preserve=1|scale=5) twice; give each value once"):
            runner.parse_sweep(sweep)
    with pytest.raises(LeditsError, match="scale=4 twice"):
        session.evaluate("shapes", None, "unused", sweep={"scale": [4, 4]})


@pytest.mark.parametrize("models", ["demo,", "demo,,demo-flow", "demo,./no-such-folder"])
def test_eval_checks_every_model_name_before_running_the_first(tmp_path, capsys, monkeypatch, models):
    monkeypatch.setattr(
        "leditspp.model_options.ModelOptions.load", lambda *a: pytest.fail("a refused run loads no model")
    )
    out = tmp_path / "out"
    assert main(["eval", "shapes", "-o", str(out), "--model", models, "--scenes", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("none empty" in err or "no such folder" in err)
    assert not (out / runner.METRICS_CSV).exists() and not (out / "demo" / runner.METRICS_CSV).exists()
