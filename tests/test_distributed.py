"""Scale-out on Ray (issue 16): the same outputs as the serial run, dead workers' items retried,
failures recorded, and a clear error without Ray. The Ray tests need ``pip install 'leditspp[ray]'``
and are skipped without it; they share one local Ray runtime (2 CPUs)."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leditspp import LeditsError
from leditspp.cli import main
from leditspp.evaluation import runner
from leditspp.evaluation.runner import Row
from leditspp.jobs import Item, RunStats

from .test_eval_data import clip_folder  # noqa: F401  (a tiny random CLIP saved with save_pretrained)


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


def test_a_photo_benchmark_on_ray_ships_its_images_and_gives_the_serial_numbers(
    ray_runtime,
    sd_folder,
    clip_folder,  # noqa: F811
    tmp_path,
):
    from .test_eval_runner import _piebench_folder

    data = _piebench_folder(tmp_path / "pie")
    args = ["eval", "piebench", str(data), "--model", str(sd_folder), "--clip-model", str(clip_folder)]
    args += ["--metrics", "psnr,clip_score", "--steps", "3", "--sweep", "scale=4,8", "--device", "cpu", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "serial")]) == 0
    assert main([*args, "-o", str(tmp_path / "ray"), "--ray"]) == 0
    rows = _rows(tmp_path / "serial")
    assert len(rows) == 2 and not any(r["error"] for r in rows)
    assert _rows(tmp_path / "ray") == rows


def test_edit_on_ray_writes_the_serial_runs_files_byte_for_byte_and_resumes(ray_runtime, tmp_path):
    from leditspp.demo import shapes

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(6):
        shapes.scene(100 + k).image.save(folder / f"s{k}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")  # a bad input: recorded, not fatal
    recipe = tmp_path / "recipe.yaml"  # a recipe with per-image entries
    recipe.write_text("edits: ['+red circle']\nimages:\n  s1.png: {edits: ['-blue square', '+green ring'], seed: 7}\n")
    serial, on_ray = tmp_path / "serial", tmp_path / "ray"
    args = ["edit", str(folder), "--recipe", str(recipe), "--masks", "--quiet"]
    assert main([*args, "-o", str(serial)]) == 1
    assert main([*args, "-o", str(on_ray), "--ray"]) == 1
    names = sorted(p.name for p in serial.glob("*.png"))
    assert len(names) == 13 and "s1.mask-2.png" in names and names == sorted(p.name for p in on_ray.glob("*.png"))
    for name in names:  # pixels and the recipe in the PNG
        assert (serial / name).read_bytes() == (on_ray / name).read_bytes(), name
    log = {Path(r["input"]).name: r for r in csv.DictReader((on_ray / "edit-log.csv").open())}
    assert sorted(log) == ["broken.png"] + [f"s{k}.png" for k in range(6)]  # each once
    assert [n for n, r in log.items() if r["status"] != "done"] == ["broken.png"]
    assert "cannot read" in log["broken.png"]["error"]
    # --resume on Ray: every output exists, so nothing is computed or rewritten
    (folder / "broken.png").unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in on_ray.glob("*.png")}
    assert main([*args, "-o", str(on_ray), "--ray", "--resume"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in on_ray.glob("*.png")} == mtimes


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
    from leditspp.distributed import ray_map

    ids = ["a", "dies-once", "b", "raises", "dies", "c"]
    items = [Item(i, "toy", "t", data=k) for k, i in enumerate(ids)]
    stats = RunStats()
    mapper = ray_map(lambda: None, lambda editor: _flaky(str(tmp_path)), workers=2, retries=1, threads=1, stats=stats)
    summary = runner.run(items, None, tmp_path / "out", map_items=mapper, stats=stats)
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


def _queue_order(queue, workers: list[int]) -> list[tuple[int, str]]:
    """(worker, item id) as ``workers`` take items in turn until the queue is empty."""
    taken = []
    while queue:
        worker = workers[len(taken) % len(workers)]
        taken.append((worker, queue.take(worker).id))
    return taken


def test_a_groups_items_go_to_one_worker_and_idle_workers_help_at_the_end():
    from leditspp.distributed import GroupQueue

    items = [Item(f"{g}{k}", "t", "t", group=g) for g, n in (("a", 3), ("b", 1), ("c", 2)) for k in range(n)]
    queue = GroupQueue(items)
    assert len(queue) == 6
    assert _queue_order(queue, [0, 1]) == [(0, "a0"), (1, "b0"), (0, "a1"), (1, "c0"), (0, "a2"), (1, "c1")]
    assert queue.take(0) is None
    # three workers, two groups: the third helps with the largest group rather than idle
    queue = GroupQueue([Item(f"{g}{k}", "t", "t", group=g) for g in "ab" for k in range(3)])
    assert _queue_order(queue, [0, 1, 2]) == [(0, "a0"), (1, "b0"), (2, "a1"), (0, "a2"), (1, "b1"), (2, "b2")]


def test_an_item_put_back_is_next_for_its_groups_worker():
    from leditspp.distributed import GroupQueue

    queue = GroupQueue([Item(f"a{k}", "t", "t", group="a") for k in range(2)] + [Item("x", "t", "t")])
    first = queue.take(0)
    queue.put_back(first)  # its worker died; the replacement has the same slot
    assert len(queue) == 3 and queue.take(0).id == "a0" and queue.take(0).id == "a1" and queue.take(0).id == "x"


def test_ray_init_options_and_the_version_check():
    from types import SimpleNamespace

    from leditspp import __version__
    from leditspp.distributed import _check_ready, init_options

    local = init_options("local")
    assert local["num_cpus"] >= 1 and local["address"] == "local" and "runtime_env" not in local
    joined = init_options("ray://head:10001", {"pip": ["leditspp[ray]"]})
    assert joined["address"] == "ray://head:10001" and joined["runtime_env"] == {"pip": ["leditspp[ray]"]}

    def fake_ray(version):
        class Actor:
            ready = SimpleNamespace(remote=lambda: {"version": version, "host": "node-7", "pid": 1})

        exceptions = SimpleNamespace(RayError=RuntimeError)
        return SimpleNamespace(get=lambda refs: refs, exceptions=exceptions), [Actor(), Actor()]

    _check_ready(*fake_ray(__version__))
    with pytest.raises(LeditsError, match=r"node-7 runs leditspp 0\.0\.1"):
        _check_ready(*fake_ray("0.0.1"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "cuda:1"], "give --device cuda"),
        (["--ray-workers", "0"], "--ray-workers must be"),
        (["--ray-workers", "-1"], "--ray-workers must be"),
        (["--ray-env", "{dir}/missing.yaml"], "cannot read --ray-env"),
        (["--ray-env", "{dir}/list.yaml"], "must hold a mapping"),
    ],
)
def test_bad_ray_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    pytest.importorskip("ray")
    monkeypatch.setattr("leditspp.validation.check_device", lambda device: None)  # as if this build had GPUs
    (tmp_path / "list.yaml").write_text("- pip\n")
    extra = [e.replace("{dir}", str(tmp_path)) for e in extra]
    code = main(["edit", "missing.png", "-e", "+a", "-o", str(tmp_path / "out.png"), "--ray", *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_more_workers_than_the_cluster_has_is_refused_instead_of_waiting_forever(ray_runtime, tmp_path):
    from leditspp.distributed import ray_map

    items = [Item(i, "toy", "t", data=k) for k, i in enumerate("abc")]
    mapper = ray_map(lambda: None, lambda editor: _flaky(str(tmp_path)), workers=1000, threads=1)
    with pytest.raises(LeditsError, match=r"--ray-workers 1000 is more than this Ray cluster has .*give at most \d"):
        runner.run(items, None, tmp_path / "out", map_items=mapper)


def test_a_local_runtime_is_shut_down_even_when_the_run_fails():
    """No raylet is left behind: a run that fails inside ``ray_backend("local")`` stops its runtime."""
    import subprocess
    import sys
    import time

    pytest.importorskip("ray")
    code = (
        "import os, sys\n"
        "from leditspp.distributed import ray_backend\n"
        "try:\n"
        "    with ray_backend('local'):\n"
        "        print(os.getpid(), flush=True)\n"
        "        raise RuntimeError('the run failed')\n"
        "except RuntimeError:\n"
        "    sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]
    driver = done.stdout.split()[0]  # its runtime's processes name the session folder, which ends in this pid
    for _ in range(50):
        left = subprocess.run(["pgrep", "-f", f"raylet.*_{driver}/|gcs_server.*_{driver}/"], capture_output=True)
        if not left.stdout.strip():
            break
        time.sleep(0.2)
    assert not left.stdout.strip(), f"processes of the failed run's runtime are still running: {left.stdout}"


@pytest.mark.parametrize("address", ["foo:bar:baz", "127.0.0.1"])
def test_a_bad_ray_address_is_one_line_naming_the_forms(address, tmp_path, capsys):
    pytest.importorskip("ray")
    args = ["eval", "shapes", "--scenes", "1", "--steps", "2", "-o", str(tmp_path / "out"), "--ray", address]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot start or join Ray at --ray {address!r}" in err and "ray://HOST:PORT" in err
    assert len(err.splitlines()) == 1
