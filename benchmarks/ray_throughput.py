"""Throughput of `leditspp eval` and `leditspp edit` on this machine: serial against `--ray local`.

Each run is the command a user types, in a fresh process, on the built-in demo model: the wall
time is the whole command's (Python's start, model loading, Ray's start); items/min is the closing
line's rate, from the first item handed out to the last (for Ray this includes the workers loading
their models; the serial eval loads its model before). The Ray run's outputs
are checked equal to the serial run's (metrics and images bit for bit), so the speed is not bought
with other results.

    .venv/bin/python benchmarks/ray_throughput.py > benchmarks/results/ray_throughput.md
    .venv/bin/python benchmarks/ray_throughput.py --scenes 2 --sweep ""   # a quick look
"""

from __future__ import annotations

import argparse
import filecmp
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE = re.compile(r"(\d+) done, (\d+) failed, (\d+) retried.*?([\d.]+) items/min on (\d+) worker")


def run(argv: list[str]) -> tuple[float, dict[str, float]]:
    """Wall seconds of ``leditspp ARGV`` in a new process, and its closing line's numbers."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "leditspp.cli", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"leditspp {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    found = LINE.findall(done.stderr)
    if not found:
        sys.exit(f"no closing line in:\n{done.stderr[-2000:]}")
    ok, failed, retried, rate, workers = found[-1]
    return wall, {
        "done": int(ok),
        "failed": int(failed),
        "retried": int(retried),
        "rate": float(rate),
        "workers": int(workers),
    }


def metrics(out: Path) -> list[dict]:
    """The rows of a run's metrics.csv without their timing."""
    from leditspp.evaluation import runner

    rows = runner.read_rows(out / runner.METRICS_CSV)
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def same_files(a: Path, b: Path, pattern: str) -> bool:
    names = sorted(p.relative_to(a) for p in a.glob(pattern))
    return (
        bool(names)
        and names == sorted(p.relative_to(b) for p in b.glob(pattern))
        and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4, help="shapes scenes (7 edits each) [4]")
    parser.add_argument("--sweep", default="scale=4,8,12", help="eval sweep, '' for none [scale=4,8,12]")
    parser.add_argument("--images", type=int, default=12, help="images in the edit folder [12]")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ray-throughput-"))
    sweep = ["--sweep", args.sweep] if args.sweep else []
    rows = []

    evaluation = ["eval", "shapes", "--scenes", str(args.scenes), *sweep]
    for mode, extra in (("serial", []), ("ray", ["--ray", "local"])):
        wall, line = run([*evaluation, "-o", str(tmp / f"eval-{mode}"), *extra])
        rows.append((f"eval shapes, {args.scenes} scenes{' × ' + args.sweep if args.sweep else ''}", mode, wall, line))
    eval_same = same_files(tmp / "eval-serial", tmp / "eval-ray", "images/*.png") and metrics(
        tmp / "eval-serial"
    ) == metrics(tmp / "eval-ray")

    from leditspp.demo import shapes

    folder = tmp / "in"
    folder.mkdir()
    for k in range(args.images):
        shapes.scene(500 + k).image.save(folder / f"s{k:03d}.png")
    edit = ["edit", str(folder), "-e", "+red circle", "-e", "-blue square"]
    for mode, extra in (("serial", []), ("ray", ["--ray", "local"])):
        wall, line = run([*edit, "-o", str(tmp / f"edit-{mode}"), *extra])
        rows.append((f"edit a folder of {args.images} images, 2 concepts", mode, wall, line))
    edit_same = same_files(tmp / "edit-serial", tmp / "edit-ray", "*.png")

    import datetime
    import os
    import platform

    import ray
    import torch

    print(f"# Ray throughput on this machine ({os.cpu_count()} CPU cores), demo model\n")
    print(
        f"{datetime.date.today()} · {platform.machine()}, {os.cpu_count()} CPU cores · torch {torch.__version__}, "
        f"ray {ray.__version__} · `python benchmarks/ray_throughput.py {' '.join(sys.argv[1:])}`\n"
    )
    print("| run | mode | workers | items | wall s | items/min (closing line) | Ray / serial |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for k, (what, mode, wall, line) in enumerate(rows):
        serial = rows[k - 1][3]["rate"] if mode == "ray" else line["rate"]
        ratio = line["rate"] / serial if serial else float("nan")
        items = line["done"] + line["failed"]
        print(f"| {what} | {mode} | {line['workers']} | {items} | {wall:.1f} | {line['rate']:.1f} | {ratio:.2f} |")
    print(f"\nRay outputs equal to the serial run's: eval {eval_same}, edit {edit_same}.")


if __name__ == "__main__":
    main()
