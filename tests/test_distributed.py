"""Scale-out on Ray (issue 16): the same outputs as the serial run, dead workers' items retried,
failures recorded, and a clear error without Ray. The Ray tests need ``pip install 'leditspp[ray]'``
and are skipped without it; they share one local Ray runtime (2 CPUs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leditspp.cli import main
from leditspp.evaluation import runner
from leditspp.evaluation.runner import Item, Row


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _rows(out: Path) -> list[dict]:
    rows = runner.read_rows(out / runner.METRICS_CSV)
    for row in rows:
        row.pop("seconds")
    return rows


def test_eval_on_ray_gives_the_serial_runs_numbers_and_images(ray_runtime, tmp_path):
    serial, on_ray = tmp_path / "serial", tmp_path / "ray"
    args = ["eval", "shapes", "--scenes", "2", "--quiet"]
    assert main([*args, "-o", str(serial)]) == 0
    assert main([*args, "-o", str(on_ray), "--ray", "local"]) == 0
    rows = _rows(serial)
    assert len(rows) == 14 and not any(r["error"] for r in rows)
    assert _rows(on_ray) == rows  # every metric, bit for bit, in the serial order
    images = sorted(p.name for p in (serial / "images").iterdir())
    assert images == sorted(p.name for p in (on_ray / "images").iterdir())
    for name in images:
        a, b = (np.asarray(Image.open(d / "images" / name)) for d in (serial, on_ray))
        assert np.array_equal(a, b), name
    # --resume on Ray computes nothing again and rewrites no image
    mtimes = {p.name: p.stat().st_mtime_ns for p in (on_ray / "images").iterdir()}
    assert main([*args, "-o", str(on_ray), "--resume", "--ray"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (on_ray / "images").iterdir()} == mtimes


def test_edit_on_ray_writes_the_serial_runs_files_byte_for_byte(ray_runtime, tmp_path):
    from leditspp import shapes

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        shapes.scene(100 + k).image.save(folder / f"s{k}.png")
    args = ["edit", str(folder), "-e", "+red circle", "--masks", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "serial")]) == 0
    assert main([*args, "-o", str(tmp_path / "ray"), "--ray"]) == 0
    names = sorted(p.name for p in (tmp_path / "serial").iterdir())
    assert len(names) == 6 and names == sorted(p.name for p in (tmp_path / "ray").iterdir())
    for name in names:  # pixels and the recipe in the PNG
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name


def _flaky(marker_dir: str):
    """An evaluate_item whose item "dies-once" kills its worker process the first time, "dies"
    every time, and "raises" raises; others return their number."""

    def evaluate(item: Item) -> Row:
        if item.id == "dies-once" and not os.path.exists(os.path.join(marker_dir, "died")):
            Path(marker_dir, "died").touch()
            os._exit(1)
        if item.id == "dies":
            os._exit(1)
        if item.id == "raises":
            raise RuntimeError("bad item")
        return Row({"value": item.data})

    return evaluate


def test_a_dead_worker_has_its_item_retried_and_failures_are_recorded(ray_runtime, tmp_path):
    from leditspp.distributed import RayStats, ray_map

    ids = ["a", "dies-once", "b", "raises", "dies", "c"]
    items = [Item(i, "toy", "t", data=k) for k, i in enumerate(ids)]
    stats = RayStats()
    mapper = ray_map(lambda: None, lambda editor: _flaky(str(tmp_path)), workers=2, retries=1, threads=1, stats=stats)
    summary = runner.run(items, None, tmp_path / "out", map_items=mapper)
    rows = runner.read_rows(tmp_path / "out" / runner.METRICS_CSV)
    assert [r["item"] for r in rows] == ids  # each once, in order
    by_id = {r["item"]: r for r in rows}
    assert by_id["dies-once"]["value"] == 1 and by_id["dies-once"]["error"] == ""
    assert by_id["raises"]["error"] == "RuntimeError: bad item"
    assert by_id["dies"]["error"].startswith("WorkerDied: its worker died 2 times")
    assert [by_id[i]["value"] for i in "abc"] == [0, 2, 5]
    assert summary["failed"] == 2
    assert (stats.done, stats.failed, stats.retried, stats.workers) == (4, 2, 2, 2)


@pytest.mark.parametrize("command", [["eval", "shapes", "--scenes", "1"], ["edit", "missing.png", "-e", "+a"]])
def test_ray_missing_is_a_clear_error(monkeypatch, tmp_path, capsys, command):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main([*command, "-o", str(tmp_path / "out"), "--ray"])
    assert code == 2
    err = capsys.readouterr().err
    assert "pip install 'leditspp[ray]'" in err and "--ray" in err
    assert not (tmp_path / "out").exists()  # refused before any work
