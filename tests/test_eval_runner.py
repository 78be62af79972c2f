"""``leditspp eval``: the runner (sweep, resume, failures, atomic outputs), the report and the
shapes suite end to end on the demo model through the CLI."""

from __future__ import annotations

import csv
import json
import random

import pytest
from PIL import Image

from leditspp import LeditsError
from leditspp.cli import main
from leditspp.evaluation import report, runner
from leditspp.evaluation.runner import Row
from leditspp.jobs import Item, RunStats

from .conftest import scene
from .test_eval_data import clip_folder  # noqa: F401  (a tiny random CLIP saved with save_pretrained)


def _items(n: int = 4) -> list[Item]:
    return [Item(f"x{k}", "toy", "add" if k % 2 else "remove", {"scale": 1}, data=k) for k in range(n)]


class Counting:
    """A toy ``evaluate_item``: success = data is even, a 4×4 image; counts its calls."""

    def __init__(self, fail: set[str] = frozenset(), interrupt: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail, self.interrupt = fail, interrupt

    def __call__(self, item: Item) -> Row:
        self.calls.append(item.id)
        if item.id == self.interrupt:
            raise KeyboardInterrupt
        if item.id in self.fail:
            raise RuntimeError("boom")
        value = item.data * item.params["scale"]
        return Row({"success": item.data % 2 == 0, "value": value}, {"edited": Image.new("RGB", (4, 4))})


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_parse_and_expand_sweep():
    sweep = runner.parse_sweep(["scale=5,10", "threshold=0.8"])
    assert sweep == {"scale": [5, 10], "threshold": [0.8]}
    items = runner.expand_sweep(_items(2), sweep)
    ids = [f"x{k}.scale={scale}.threshold=0.8" for scale in (5, 10) for k in (0, 1)]
    assert [i.id for i in items] == ids
    assert items[2].params == {"scale": 10, "threshold": 0.8}
    for bad in (["scale"], ["scale=a,b"], ["=1"], ["scale=1", "scale=2"]):
        with pytest.raises(LeditsError, match="--sweep"):
            runner.parse_sweep(bad)


def test_run_writes_one_row_per_item_and_means(tmp_path):
    items = runner.expand_sweep(_items(4), {"scale": [1, 2]})
    summary = runner.run(items, Counting(), tmp_path, sweep_keys=["scale"])
    rows = _csv(tmp_path / "metrics.csv")
    assert [r["item"] for r in rows] == [i.id for i in items]
    assert rows[0]["image_edited"] == "images/x0.scale=1.edited.png" and (tmp_path / rows[0]["image_edited"]).is_file()
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["per_suite"]["toy"]["success"] == 0.5
    assert summary["per_edit_type"]["remove"]["success"] == 1.0  # data 0, 2
    assert summary["per_sweep_value"]["scale"]["scale=2"]["value"] == 2 * (0 + 1 + 2 + 3) / 4
    assert summary["per_sweep_value"]["scale"]["scale=2"]["per_edit_type"]["add"]["value"] == 2 * (1 + 3) / 2
    assert "scale" not in summary["per_suite"]["toy"]  # a parameter, not a metric


def test_resume_computes_nothing_new_and_a_plain_rerun_is_refused(tmp_path):
    runner.run(_items(), Counting(), tmp_path)
    before = (tmp_path / "metrics.csv").read_text()
    again = Counting()
    runner.run(_items(), again, tmp_path, resume=True)
    assert again.calls == []
    assert (tmp_path / "metrics.csv").read_text() == before
    more = Counting()
    runner.run(_items(6), more, tmp_path, resume=True)  # a larger run computes only the new items
    assert more.calls == ["x4", "x5"]
    with pytest.raises(LeditsError, match="--resume"):
        runner.run(_items(), Counting(), tmp_path)
    other = [Item(i.id, i.suite, i.edit_type, {"scale": 2}, i.data) for i in _items()]
    with pytest.raises(LeditsError, match=r"evaluated with scale=1, this run asks scale=2"):
        runner.run(other, Counting(), tmp_path, resume=True)  # resuming with other settings would mix numbers


def test_a_failing_item_is_recorded_and_the_run_goes_on(tmp_path):
    summary = runner.run(_items(), Counting(fail={"x1"}), tmp_path)
    rows = {r["item"]: r for r in _csv(tmp_path / "metrics.csv")}
    assert rows["x1"]["error"] == "RuntimeError: boom" and rows["x1"]["value"] == ""
    assert rows["x3"]["value"] == "3" and rows["x3"]["error"] == ""
    assert summary["failed"] == 1 and summary["errors"] == [{"item": "x1", "error": "RuntimeError: boom"}]
    assert summary["per_edit_type"]["add"]["n"] == 1  # the failed item counts in no mean
    retry = Counting()
    runner.run(_items(), retry, tmp_path, resume=True)
    assert retry.calls == ["x1"]  # a failed item is not finished: resume tries it again


def test_a_groups_items_are_computed_together_and_written_in_order(tmp_path):
    """A sweep puts a scene's items far apart; they are computed one after another (so a worker's
    cached inversion serves them all) and the CSV keeps the items' order. The stats count as they go."""
    base = [Item(f"s{k}.{e}", "toy", "t", {"scale": 1}, data=k, group=f"s{k}") for k in range(2) for e in "ab"]
    items = runner.expand_sweep(base, {"scale": [1, 2]})
    counting, stats = Counting(fail={"s1.a.scale=2"}), RunStats()
    runner.run(items, counting, tmp_path, stats=stats)
    assert counting.calls == [i.id for i in items if i.group == "s0"] + [i.id for i in items if i.group == "s1"]
    assert [r["item"] for r in _csv(tmp_path / "metrics.csv")] == [i.id for i in items]
    assert (stats.total, stats.done, stats.failed, stats.skipped) == (8, 7, 1, 0)
    assert stats.per_minute > 0 and "7 done, 1 failed, 0 retried" in stats.line()
    again = RunStats()
    runner.run(items, Counting(), tmp_path, resume=True, stats=again)
    assert (again.done, again.skipped) == (1, 7) and "7 already done" in again.line()


def test_lru_cache_computes_each_key_once_and_drops_the_least_recently_used():
    from leditspp.caching import LRUCache, image_key

    cache, computed = LRUCache(2), []

    def value(key):
        return lambda: computed.append(key) or key * 10

    assert [cache.get(k, value(k)) for k in (1, 2, 1, 3, 2, 1)] == [10, 20, 10, 30, 20, 10]
    assert computed == [1, 2, 3, 2, 1]  # 2 was dropped when 3 came (1 had just been used), then 1
    assert (cache.hits, cache.misses, len(cache)) == (1, 5, 2)
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    assert image_key(red) == image_key(red.copy()) != image_key(blue)
    assert image_key(red) != image_key(Image.new("RGB", (2, 8), "red"))  # same bytes, other size


def test_the_shapes_suite_inverts_a_scene_once_across_edit_types_and_sweep_values(tmp_path):
    from leditspp import Editor
    from leditspp.evaluation import shapes_suite

    editor = Editor.from_pretrained("demo", device="cpu")
    params = {"steps": 6, "skip": 0.2, "scale": 8, "threshold": 0.9}
    items = [i for i in shapes_suite.items(2, params) if i.edit_type in ("reconstruction", "add")]
    items = runner.expand_sweep(items, {"scale": [4, 8]})
    evaluator = shapes_suite.ShapesEvaluator(editor)
    runner.run(items, evaluator, tmp_path)
    assert len(items) == 8 and evaluator.inversions.misses == 2 and evaluator.inversions.hits == 6


def test_a_photo_item_with_its_pixels_needs_no_file(editor, tmp_path):
    """What Ray ships: the image read on the driver, so a worker that cannot see DATA edits it."""
    from leditspp.evaluation import manifests, photo_suite

    data = _piebench_folder(tmp_path / "pie")
    [item] = photo_suite.items(manifests.READERS["piebench"](data), "piebench", {"steps": 3})
    shipped = photo_suite.with_pixels(item)
    (data / "annotation_images" / "0_random" / "000.png").unlink()
    evaluator = photo_suite.PhotoEvaluator(editor, ("psnr",), {}, {"skip": 0.1, "seed": 0})
    assert evaluator(shipped).metrics["psnr"] > 0
    with pytest.raises(LeditsError, match="does not exist"):
        evaluator(item)


def test_an_interrupted_run_leaves_whole_files_and_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        runner.run(_items(), Counting(interrupt="x2"), tmp_path)
    assert [r["item"] for r in _csv(tmp_path / "metrics.csv")] == ["x0", "x1"]
    assert json.loads((tmp_path / "summary.json").read_text())["items"] == 2
    assert not list(tmp_path.rglob("*.leditspp-tmp"))
    rest = Counting()
    runner.run(_items(), rest, tmp_path, resume=True)
    assert rest.calls == ["x2", "x3"]


def test_report_is_self_contained(tmp_path):
    items = runner.expand_sweep(_items(4), {"scale": [1, 2]})
    summary = runner.run(items, Counting(fail={"x3.scale=2"}), tmp_path, sweep_keys=["scale"])
    rows = runner.read_rows(tmp_path / "metrics.csv")
    path = report.write_report(
        tmp_path, rows, summary, title="toy <run>", plot=("value", "success"), sweep_keys=["scale"]
    )
    page = path.read_text()
    assert "toy &lt;run&gt;" in page and "Per scale" in page and "RuntimeError: boom" in page
    assert page.count("data:image/png;base64,") == 1 + min(len(rows) - 1, report.GRID_ROWS)  # plot + thumbnails
    assert "http" not in page and "src='images/" not in page


def test_eval_shapes_end_to_end(tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    args = ["eval", "shapes", "-o", str(out), "--scenes", "2", "--steps", "2", "--device", "cpu", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    rows = _csv(out / "metrics.csv")
    assert len(rows) == 2 * 7 and not any(r["error"] for r in rows)
    assert {r["edit_type"] for r in rows} >= {"reconstruction", "add", "remove", "remove (noise mask)", "multi"}
    recon = [r for r in rows if r["edit_type"] == "reconstruction"]
    assert all(float(r["recon_latent"]) < 1e-4 for r in recon)  # no edits reproduce the input
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["per_edit_type"]["remove"]["mask_iou"] <= 1
    page = (out / "report.html").read_text()
    assert "Trade-off" in page and page.count("data:image/png;base64,") > 10
    before = (out / "metrics.csv").read_text()
    monkeypatch.setattr(
        "leditspp.model_options.ModelOptions.load", lambda *a: pytest.fail("a finished run loads no model")
    )
    assert main([*args, "--resume"]) == 0
    assert (out / "metrics.csv").read_text() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "nosuch", "-o", "{out}"], "unknown suite"),
        (["eval", "tedbench", "-o", "{out}"], "needs DATA"),
        (["eval", "piebench", "{missing}", "-o", "{out}"], "not a folder"),
        (["eval", "shapes", "{missing}", "-o", "{out}"], "takes no DATA"),
        (["eval", "shapes", "-o", "{out}", "--sweep", "guidance=1,2"], "cannot sweep"),
        (["eval", "shapes", "-o", "{out}", "--metrics", "clip_score"], "no metric clip_score"),
        (["eval", "shapes", "-o", "{out}", "--sweep", "scale=x"], "--sweep"),
        (["eval", "shapes", "-o", "{out}", "--limit", "0"], "--limit must be"),
        (["eval", "shapes", "-o", "{out}", "--sweep", "steps=0,4"], "steps must be"),
        (["eval", "shapes", "-o", "{out}", "--clip-model", "x"], "--clip-model"),
    ],
)
def test_eval_refuses_bad_input_with_exit_code_2(tmp_path, capsys, argv, message):
    fill = {"out": str(tmp_path / "out"), "missing": str(tmp_path / "missing")}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_eval_refuses_an_earlier_run_without_resume(tmp_path, capsys):
    (tmp_path / "metrics.csv").write_text("item\n")
    assert main(["eval", "shapes", "-o", str(tmp_path), "--scenes", "1"]) == 2
    assert "--resume" in capsys.readouterr().err


# -- the photo benchmarks on hand-made folders in the published formats (tiny SD, tiny CLIP) ------


def _tedbench_folder(folder):
    (folder / "originals").mkdir(parents=True)
    scene(64, 64, seed=1).save(folder / "originals" / "cat.png")
    scene(72, 64, seed=2).convert("RGB").save(folder / "originals" / "dog.jpg")
    rows = ["cat.png,a cat wearing a hat,0.1,0.9,6,4.39383222278441E+17,3", "dog.jpg,a sitting dog,0.2,0.8,4,7,2.0"]
    (folder / "tedbench++.csv").write_text("img_name,target_text,skip,threshold,edit_guidance_scale,seed,steps\n")
    with open(folder / "tedbench++.csv", "a") as f:
        f.write("\n".join(rows) + "\n")
    return folder


def _piebench_folder(folder):
    (folder / "annotation_images" / "0_random").mkdir(parents=True)
    scene(64, 64, seed=3).save(folder / "annotation_images" / "0_random" / "000.png")
    runs = [512 * r + 100 for r in range(100, 300)]  # rows 100-299, columns 100-299
    mapping = {
        "000": {
            "image_path": "0_random/000.png",
            "original_prompt": "a [red] disc on a gradient",
            "editing_prompt": "a [blue] disc on a gradient",
            "editing_type_id": "6",
            "blended_word": "disc disc",
            "mask": [v for start in runs for v in (start, 200)],
        }
    }
    (folder / "mapping_file.json").write_text(json.dumps(mapping))
    return folder


def test_eval_tedbench_uses_each_rows_settings(sd_folder, clip_folder, tmp_path, capsys):  # noqa: F811
    data, out = _tedbench_folder(tmp_path / "ted"), tmp_path / "out"
    metrics = "clip_score,clip_image,psnr,latent_error,time"
    argv = ["eval", "tedbench", str(data), "--model", str(sd_folder), "--clip-model", str(clip_folder)]
    assert main([*argv, "--metrics", metrics, "-o", str(out), "--device", "cpu", "--quiet"]) == 0, capsys.readouterr()
    rows = _csv(out / "metrics.csv")
    assert [r["item"] for r in rows] == ["001_cat", "002_dog"] and not any(r["error"] for r in rows)
    assert rows[0]["steps"] == "3" and rows[0]["seed"] == "439383222278441024" and rows[1]["skip"] == "0.2"
    assert rows[0]["edits"] == "+a cat wearing a hat:6@0.9"
    for r in rows:
        assert 0 <= float(r["clip_score"]) <= 100 and float(r["latent_max_abs"]) < 1e-4 and float(r["time"]) > 0
    assert "Trade-off" in (out / "report.html").read_text()


def test_eval_piebench_scores_outside_the_mask(sd_folder, clip_folder, tmp_path, capsys):  # noqa: F811
    data, out = _piebench_folder(tmp_path / "pie"), tmp_path / "out"
    argv = ["eval", "piebench", str(data), "--model", str(sd_folder), "--clip-model", str(clip_folder)]
    argv += ["--metrics", "psnr,mse,ssim,clip_score,clip_score_edit_region", "--steps", "2", "--sweep", "scale=3,6"]
    assert main([*argv, "-o", str(out), "--device", "cpu", "--quiet"]) == 0, capsys.readouterr()
    rows = _csv(out / "metrics.csv")
    assert [r["item"] for r in rows] == ["000.scale=3", "000.scale=6"] and not any(r["error"] for r in rows)
    assert rows[0]["edit_type"] == "change attribute (color)" and rows[1]["edits"] == "-red:6@0.9; +blue:6@0.9"
    assert rows[0]["image_mask"] and float(rows[0]["clip_score_edit_region"]) >= 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["per_sweep_value"]["scale"]) == {"scale=3", "scale=6"}


def test_eval_benchmark_metric_model_that_cannot_load_is_exit_2(sd_folder, tmp_path, capsys):
    data = _tedbench_folder(tmp_path / "ted")
    argv = ["eval", "tedbench", str(data), "--model", str(sd_folder), "--clip-model", str(tmp_path / "nothing")]
    assert main([*argv, "--metrics", "clip_score", "-o", str(tmp_path / "out")]) == 2
    assert "--clip-model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace("\nx1,", "\nx1,extra,cells,", 1) + "x9,1,2,3,4,5,6,7,8,9,10,11,12\n",
        lambda text: "\n".join(line.split(",")[0] if line.startswith("x1") else line for line in text.split("\n")),
        lambda text: text.replace("\nx1,", "\n,", 1),
    ],
    ids=["long-row", "short-row", "empty-item"],
)
def test_a_hand_damaged_metrics_file_is_refused_and_left_as_it_is(damage, tmp_path):
    runner.run(_items(), Counting(), tmp_path)
    path = tmp_path / "metrics.csv"
    path.write_text(damage(path.read_text()))
    before = path.read_bytes()
    with pytest.raises(LeditsError, match=r"row \d: the row does not fit the header.*left as it is"):
        runner.run(_items(), Counting(), tmp_path, resume=True)
    assert path.read_bytes() == before


def test_a_second_run_on_the_same_folder_is_refused_and_a_dead_runs_lock_taken_over(tmp_path):
    import subprocess
    import sys

    from leditspp.files import LOCK_NAME

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(str(other.pid))
        with pytest.raises(LeditsError, match=rf"another run \(process {other.pid}\) is writing"):
            runner.run(_items(), Counting(), tmp_path)
        assert not (tmp_path / "metrics.csv").exists()
    finally:
        other.kill()
        other.wait()
    runner.run(_items(), Counting(), tmp_path)  # the lock's process is gone: taken over
    assert len(_csv(tmp_path / "metrics.csv")) == 4 and not (tmp_path / LOCK_NAME).exists()


SLOW_RUN = """
import sys, time
from PIL import Image
from leditspp.evaluation import runner
from leditspp.evaluation.runner import Row
from leditspp.jobs import Item

def slow(item):
    time.sleep(0.3)
    return Row({"value": item.data}, {"edited": Image.new("RGB", (4, 4))})

items = [Item(f"x{k}", "toy", "add", {"scale": 1}, data=k) for k in range(40)]
runner.run(items, slow, sys.argv[1], resume=True)
"""


def test_a_run_killed_mid_item_resumes_without_recomputing_or_half_files(tmp_path):
    """SIGKILL (no clean-up runs): every file is whole, the dead run's lock is taken over, and the
    resumed run computes only the items without a row."""
    import signal
    import subprocess
    import sys
    import time

    from leditspp.files import LOCK_NAME

    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(tmp_path)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (tmp_path / "metrics.csv").exists() and len(_csv(tmp_path / "metrics.csv")) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [r["item"] for r in _csv(tmp_path / "metrics.csv")]
    assert 3 <= len(done) < 40 and (tmp_path / LOCK_NAME).exists()
    assert all(Image.open(tmp_path / r["image_edited"]).size == (4, 4) for r in _csv(tmp_path / "metrics.csv"))
    rest = Counting()
    items = [Item(f"x{k}", "toy", "add", {"scale": 1}, data=k) for k in range(40)]
    runner.run(items, rest, tmp_path, resume=True)
    assert set(rest.calls) == {i.id for i in items} - set(done) and not set(rest.calls) & set(done)
    assert len(_csv(tmp_path / "metrics.csv")) == 40 and not list(tmp_path.rglob("*.leditspp-tmp"))


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    import subprocess

    folder = tmp_path / "disk"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_a_clear_error_and_earlier_results_stay_whole(small_disk):
    class Big(Counting):
        def __call__(self, item):
            row = super().__call__(item)
            noise = Image.frombytes("RGB", (96, 96), random.Random(item.data).randbytes(96 * 96 * 3))  # 27 KB
            return Row(row.metrics, {"edited": noise})

    items = [Item(f"x{k}", "toy", "add", {"scale": 1}, data=k) for k in range(40)]
    with pytest.raises(LeditsError, match=r"cannot write the images in .*No space left"):
        runner.run(items, Big(), small_disk)
    kept = _csv(small_disk / "metrics.csv")
    assert kept and all(r["item"].startswith("x") for r in kept)  # a whole earlier version
    assert not list(small_disk.rglob("*.leditspp-tmp"))


def test_a_read_only_output_folder_is_a_clear_error_and_nothing_changes(small_disk):
    import subprocess

    runner.run(_items(2), Counting(), small_disk)
    before = (small_disk / "metrics.csv").read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(LeditsError, match=r"cannot write in .*Read-only file system.*writable output folder"):
        runner.run(_items(), Counting(), small_disk, resume=True)
    assert (small_disk / "metrics.csv").read_bytes() == before
