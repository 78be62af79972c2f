"""Quality of the built-in demo model and of LEDITS++ on it, measured on held-out shapes scenes.

    python benchmarks/demo_quality.py --scenes 200                      # prints a Markdown report
    python benchmarks/demo_quality.py --scenes 200 --out q/ --resume    # resumable: q/metrics.csv

The edit measurements are the ``shapes`` suite of ``leditspp eval`` (one implementation:
:mod:`leditspp.evaluation.shapes_suite` — add / remove / recolour / multi success by pixel
analysis, locality, mask IoU per mask mode, reconstruction; ``leditspp eval shapes -o OUT`` gives
the same numbers with an HTML report). This script adds (a), the model's text-to-image
generation, which is a property of the demo model rather than of editing, and prints the tables
the README quotes. Held-out scenes are seeds 0… (training used seeds ≥ 1,000,000).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from leditspp import Editor
from leditspp.demo import shapes
from leditspp.evaluation import runner, shapes_suite


def generation(model: str, scenes: list[shapes.Scene], steps: int, guidance: float) -> dict[str, float]:
    """Text-to-image samples of the scenes' captions, read back by pixel analysis."""
    from diffusers import StableDiffusionPipeline

    from leditspp.models import resolve_model

    pipe = StableDiffusionPipeline.from_pretrained(resolve_model(model), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    color = shape = background = total = 0
    for start in range(0, len(scenes), 20):
        chunk = scenes[start : start + 20]
        images = pipe(
            [s.caption for s in chunk],
            height=shapes.SIZE,
            width=shapes.SIZE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(start),
        ).images
        for s, image in zip(chunk, images, strict=True):
            found = shapes.find_objects(image, s.background)
            background += _background_of(image) == s.background
            for o in s.objects:
                total += 1
                color += o.color in found
                shape += found.get(o.color) == o.shape
    n = len(scenes)
    return {"colour": color / total, "shape": shape / total, "background": background / n}


def _background_of(image) -> str:
    """The background whose colour is nearest the image's border pixels (median)."""
    a = np.asarray(image, dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    med = np.median(border, axis=0)
    return min(shapes.BACKGROUNDS, key=lambda b: np.linalg.norm(med - np.array(shapes.BACKGROUNDS[b])))


def edit_rows(editor: Editor, args: argparse.Namespace, out: Path) -> dict[str, list[dict]]:
    """The shapes suite's rows, by edit type (computed, or read back from ``out`` with --resume)."""
    params = {"steps": args.steps, "skip": args.skip, "scale": args.scale, "threshold": args.threshold}
    items = shapes_suite.items(args.scenes, params, first_seed=args.first_seed)
    runner.run(items, shapes_suite.ShapesEvaluator(editor), out, resume=args.resume)
    by_type: dict[str, list[dict]] = {}
    for row in runner.read_rows(out / runner.METRICS_CSV):
        by_type.setdefault(str(row["edit_type"]), []).append(row)
    return by_type


def values(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not r.get("error")]


def mean(v: list[float]) -> float:
    return float(statistics.fmean(v)) if v else float("nan")


def median(v: list[float]) -> float:
    return float(statistics.median(v)) if v else float("nan")


def print_edits(r: dict[str, list[dict]], args: argparse.Namespace, mask_level: int) -> None:
    """(b)–(d) as the README's Markdown tables."""
    print(
        f"(b) edits: {args.steps} steps, skip {args.skip}, scale {args.scale}, threshold {args.threshold}, "
        f"mask mode intersect, attention mask at 1/{2**mask_level} of the latents\n"
    )
    add, remove = r["add"], r["remove"]
    print("| edit | success | detail |\n| --- | --- | --- |")
    print(
        f"| add `+colour shape` | {mean(values(add, 'success')):.0%} | "
        f"requested shape {mean(values(add, 'add_shape')):.0%} of successes; "
        f"change outside/inside box {mean(values(add, 'change_ratio')):.1%} "
        f"(median {median(values(add, 'change_ratio')):.1%}); "
        f"other objects keep {mean(values(add, 'others_kept')):.0%} of their pixels |"
    )
    print(
        f"| remove `-colour shape` (≥ 80 % of its pixels back to the background) | "
        f"{mean(values(remove, 'success')):.0%} | pixels cleared {mean(values(remove, 'cleared')):.0%}, "
        f"lost their colour {mean(values(remove, 'gone')):.0%}; change outside/inside box "
        f"{mean(values(remove, 'change_ratio')):.1%} (median {median(values(remove, 'change_ratio')):.1%}); "
        f"other objects keep {mean(values(remove, 'others_kept')):.0%} of their pixels |"
    )
    print(f"| recolour | {mean(values(r['recolour'], 'success')):.0%} | ≥ ½ of the object in the new colour |")
    print(f"| add one + remove another | {mean(values(r['multi'], 'success')):.0%} | both succeed |")
    failed = {kind: sum(bool(row.get("error")) for row in rows) for kind, rows in r.items()}
    if any(failed.values()):  # the rates above are over the items that ran; say how many did not
        print(
            "\nfailed items (an error: not in the rates above): "
            + ", ".join(f"{kind} {n} of {len(r[kind])}" for kind, n in failed.items() if n)
        )
    print("\n(c) mask IoU with the removed object's ground truth:\n")
    print("| mask mode | last step | mean over steps ≥ ½ |\n| --- | --- | --- |")
    for mode in shapes_suite.MASK_MODES:
        rows = r[shapes_suite.EDIT_TYPES["remove" if mode == "intersect" else f"remove-{mode}"]]
        print(f"| {mode} | {mean(values(rows, 'mask_iou')):.2f} | {mean(values(rows, 'mask_iou_mean')):.2f} |")
    recon = r["reconstruction"]
    print(
        f"\n(d) reconstruction, no edits: max |Δ latents| {max(values(recon, 'recon_latent')):.1e}, "
        f"max |Δ pixels| {max(values(recon, 'recon_pixel')):.0f}/255 (against the VAE's own round trip, whose "
        f"mean |Δ| from the rendered scene is {mean(values(recon, 'vae_roundtrip')):.1f}/255)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0, help="scenes are seeds first … first+scenes−1")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=float, default=0.15)
    parser.add_argument("--scale", type=float, default=8.0, help="edit scale of adds and removals")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--gen-steps", type=int, default=25)
    parser.add_argument("--gen-guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--mask-level", type=int, help="override the model's attention mask level")
    parser.add_argument("--out", type=Path, help="folder for the suite's metrics.csv (default: a temp folder)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    editor = Editor.from_pretrained(args.model, device="cpu")
    if args.mask_level is not None:
        editor.model.mask_level = args.mask_level
    seeds = range(args.first_seed, args.first_seed + args.scenes)
    t0 = time.time()
    print(f"# Demo model quality — {args.scenes} held-out scenes (seeds {seeds[0]}–{seeds[-1]})\n")
    if not args.skip_generation:
        g = generation(args.model, [shapes.scene(seed) for seed in seeds], args.gen_steps, args.gen_guidance)
        print(f"(a) generation ({args.gen_steps} DPM++ steps, guidance {args.gen_guidance}), per requested object:")
        print(f"requested colour present {g['colour']:.0%}, requested shape {g['shape']:.0%}; ", end="")
        print(f"background right {g['background']:.0%}\n")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print_edits(edit_rows(editor, args, out), args, editor.model.mask_level)
    print(f"\n({time.time() - t0:.0f} s on {torch.get_num_threads()} CPU threads)")


if __name__ == "__main__":
    main()
