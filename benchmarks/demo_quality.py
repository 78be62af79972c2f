"""Quality of the built-in demo model and of LEDITS++ on it, measured on held-out shapes scenes.

    python benchmarks/demo_quality.py --scenes 200                    # prints a Markdown report
    python benchmarks/demo_quality.py --scenes 200 --records r.jsonl  # resumable: one line per scene

Held-out scenes are seeds 0… (training used seeds ≥ 1,000,000). Everything is read back by pixel
analysis against the shapes-world palette (:mod:`leditspp.shapes`):

(a) generation — the model's text-to-image samples for the scenes' captions: requested colour
    present, requested shape (fill ratio of that colour's largest region), requested background;
(b) edits with LEDITS++ on the rendered scenes —
    add    "+<colour> <shape>" (a colour not in the scene): the colour appears (≥ 60 px);
    remove "-<colour> <shape>" (an object of the scene): fraction of its pixels gone, success ≥ ½;
    recolour "-<old> <shape>", "+<new> <shape>": ≥ ½ of the object's pixels read as the new colour;
    multi  add one and remove another at once: both succeed;
    for add/remove: mean |Δ| outside the object's box (dilated by 6 px) ÷ mean |Δ| inside it, and
    the fraction of the other objects' pixels that keep their colour;
(c) masks — IoU of a removed object's mask with its ground truth, per mask mode: the last step's
    mask, and the mean over the steps thresholded at ½;
(d) reconstruction — no edits: max |output − input| of the latents and of the decoded pixels
    (the VAE round trip itself is reported beside it).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from leditspp import Editor, shapes

DILATE = 6


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def box_mask(box: tuple[int, int, int, int], size: int, dilate: int = DILATE) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((size, size), bool)
    m[max(0, y0 - dilate) : y1 + dilate, max(0, x0 - dilate) : x1 + dilate] = True
    return m


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def change_ratio(before, after, region: np.ndarray) -> float:
    """Mean |Δ| (RGB, 0–255) outside ``region`` ÷ mean |Δ| inside it."""
    delta = np.abs(pixels(after) - pixels(before)).mean(-1)
    inside = delta[region].mean()
    return float(delta[~region].mean() / max(inside, 1e-6))


def others_kept(image, scene: shapes.Scene, skip: int | None = None) -> float:
    """Mean over the scene's objects (but ``skip``) of the fraction of their pixels still read
    as their colour; 1.0 when there is no other object."""
    kept = [
        float((shapes.color_mask(image, scene.background, o.color) & m).sum() / m.sum())
        for i, (o, m) in enumerate(zip(scene.objects, scene.masks, strict=True))
        if i != skip
    ]
    return float(np.mean(kept)) if kept else 1.0


def iou(mask: torch.Tensor, truth: np.ndarray) -> float:
    """IoU of a latent-grid mask (h, w), upsampled to the image, with a ground-truth mask."""
    up = F.interpolate(mask[None, None].float(), size=truth.shape, mode="nearest")[0, 0].cpu().numpy() > 0.5
    return float((up & truth).sum() / max((up | truth).sum(), 1))


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
    a = pixels(image)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    med = np.median(border, axis=0)
    return min(shapes.BACKGROUNDS, key=lambda b: np.linalg.norm(med - np.array(shapes.BACKGROUNDS[b])))


def edit_scene(editor: Editor, seed: int, args: argparse.Namespace) -> dict:
    """Every measurement on the scene of ``seed``, as one JSON-ready record."""
    s = shapes.scene(seed)
    rng = random.Random(seed)
    r: dict = {"seed": seed}
    size = s.image.size[0]

    def run(edits, mode="intersect"):
        return editor.edit(inv, edits, mask_mode=mode)

    def concept(sign: str, color: str, shape: str, scale: float) -> str:
        return f"{sign}{color} {shape}:{scale}@{args.threshold}"

    inv = editor.invert(s.image, steps=args.steps, skip=args.skip, seed=0)
    # (d) reconstruction
    same = run([])
    r["recon_latent"] = (same.latents - inv.source_latents).abs().max().item()
    source_image = editor.decode(inv.source_latents)[0]
    r["recon_pixel"] = float(np.abs(pixels(same.images[0]) - pixels(source_image)).max())
    r["vae_roundtrip"] = float(np.abs(pixels(source_image) - pixels(s.image)).mean())
    absent = [c for c in shapes.COLORS if c not in {o.color for o in s.objects}]
    # add
    new_color, new_shape = rng.choice(absent), rng.choice(shapes.SHAPES)
    out = run([concept("+", new_color, new_shape, args.add_scale)]).images[0]
    found = shapes.color_mask(out, s.background, new_color)
    r["add"] = bool(found.sum() >= 60)
    r["add_others_kept"] = others_kept(out, s)
    if r["add"]:
        r["add_shape"] = shapes.find_objects(out, s.background).get(new_color) == new_shape
        r["add_ratio"] = change_ratio(s.image, out, box_mask(bbox(found), size))
    # remove, with its masks in every mode
    k = rng.randrange(len(s.objects))
    obj, truth = s.objects[k], s.masks[k]
    for mode in ("intersect", "attention", "noise"):
        res = run([concept("-", obj.color, obj.shape, args.remove_scale)], mode)
        r[f"iou_{mode}"] = iou(res.masks[0, 0], truth)
        r[f"iou_mean_{mode}"] = iou(res.mask_means[0, 0] >= 0.5, truth)
        if mode == "intersect":
            out = res.images[0]
            gone = 1 - (shapes.color_mask(out, s.background, obj.color) & truth).sum() / truth.sum()
            r["remove_gone"] = float(gone)
            r["remove"] = bool(gone >= 0.8)
            r["remove_ratio"] = change_ratio(s.image, out, box_mask(obj.box, size))
            r["remove_others_kept"] = others_kept(out, s, skip=k)
    # recolour
    to = rng.choice(absent)
    out = run(
        [concept("-", obj.color, obj.shape, args.remove_scale), concept("+", to, obj.shape, args.add_scale)]
    ).images[0]
    r["recolour"] = bool((shapes.color_mask(out, s.background, to) & truth).sum() / truth.sum() >= 0.5)
    # multi: add one, remove another, at once
    add_color = rng.choice([c for c in absent if c != to] or absent)
    out = run(
        [
            concept("+", add_color, rng.choice(shapes.SHAPES), args.add_scale),
            concept("-", obj.color, obj.shape, args.remove_scale),
        ]
    ).images[0]
    added = shapes.color_mask(out, s.background, add_color).sum() >= 60
    gone = 1 - (shapes.color_mask(out, s.background, obj.color) & truth).sum() / truth.sum()
    r["multi"] = bool(added and gone >= 0.8)
    return r


def edit_scenes(editor: Editor, seeds: range, args: argparse.Namespace) -> dict[str, list[float]]:
    """Records of every scene, read from ``args.records`` where present, computed (and appended)
    where not: a stopped evaluation resumes where it stopped."""
    done: dict[int, dict] = {}
    if args.records and args.records.exists():
        for line in args.records.read_text().splitlines():
            rec = json.loads(line)
            done[rec["seed"]] = rec
    for seed in seeds:
        if seed not in done:
            done[seed] = edit_scene(editor, seed, args)
            if args.records:
                with open(args.records, "a") as f:
                    f.write(json.dumps(done[seed]) + "\n")
    columns: dict[str, list[float]] = {}
    for seed in seeds:
        for key, value in done[seed].items():
            columns.setdefault(key, []).append(value)
    return columns


def mean(values: list[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0, help="scenes are seeds first … first+scenes−1")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=float, default=0.15)
    parser.add_argument("--add-scale", type=float, default=8.0)
    parser.add_argument("--remove-scale", type=float, default=8.0)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--gen-steps", type=int, default=25)
    parser.add_argument("--gen-guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--mask-level", type=int, help="override the model's attention mask level")
    parser.add_argument("--records", type=Path, help="JSON lines of per-scene results; resumes from it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    editor = Editor.from_pretrained(args.model, device="cpu")
    if args.mask_level is not None:
        editor.model.mask_level = args.mask_level
    seeds = range(args.first_seed, args.first_seed + args.scenes)
    scenes = [shapes.scene(seed) for seed in seeds]
    t0 = time.time()
    print(f"# Demo model quality — {args.scenes} held-out scenes (seeds {seeds[0]}–{seeds[-1]})\n")
    if not args.skip_generation:
        g = generation(args.model, scenes, args.gen_steps, args.gen_guidance)
        print(f"(a) generation ({args.gen_steps} DPM++ steps, guidance {args.gen_guidance}), per requested object:")
        print(f"requested colour present {g['colour']:.0%}, requested shape {g['shape']:.0%}; ", end="")
        print(f"background right {g['background']:.0%}\n")
    r = edit_scenes(editor, seeds, args)
    print(
        f"(b) edits: {args.steps} steps, skip {args.skip}, add scale {args.add_scale}, "
        f"remove scale {args.remove_scale}, threshold {args.threshold}, mask mode intersect, "
        f"attention mask at 1/{2**editor.model.mask_level} of the latents\n"
    )
    print("| edit | success | detail |\n| --- | --- | --- |")
    print(
        f"| add `+colour shape` | {mean(r['add']):.0%} | "
        f"requested shape {mean(r.get('add_shape', [])):.0%} of successes; "
        f"change outside/inside box {mean(r.get('add_ratio', [])):.1%} "
        f"(median {statistics.median(r.get('add_ratio') or [float('nan')]):.1%}); "
        f"other objects keep {mean(r['add_others_kept']):.0%} of their pixels |"
    )
    print(
        f"| remove `-colour shape` (≥ 80 % of its pixels gone) | {mean(r['remove']):.0%} | "
        f"pixels gone {mean(r['remove_gone']):.0%}; change outside/inside box {mean(r['remove_ratio']):.1%} "
        f"(median {statistics.median(r['remove_ratio']):.1%}); "
        f"other objects keep {mean(r['remove_others_kept']):.0%} of their pixels |"
    )
    print(f"| recolour | {mean(r['recolour']):.0%} | ≥ ½ of the object in the new colour |")
    print(f"| add one + remove another | {mean(r['multi']):.0%} | both succeed |")
    print("\n(c) mask IoU with the removed object's ground truth:\n")
    print("| mask mode | last step | mean over steps ≥ ½ |\n| --- | --- | --- |")
    for mode in ("intersect", "attention", "noise"):
        print(f"| {mode} | {mean(r[f'iou_{mode}']):.2f} | {mean(r[f'iou_mean_{mode}']):.2f} |")
    print(
        f"\n(d) reconstruction, no edits: max |Δ latents| {max(r['recon_latent']):.1e}, "
        f"max |Δ pixels| {max(r['recon_pixel']):.0f}/255 (against the VAE's own round trip, whose mean |Δ| "
        f"from the rendered scene is {mean(r['vae_roundtrip']):.1f}/255)"
    )
    print(f"\n({time.time() - t0:.0f} s on {torch.get_num_threads()} CPU threads)")


if __name__ == "__main__":
    main()
