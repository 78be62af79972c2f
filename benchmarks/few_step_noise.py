"""Statistics of the inverted noise maps z_j with few steps, with and without TurboEdit's shift.

TurboEdit (Deutch et al., 2024) found that with 3–4 steps the noise maps of an edit-friendly
inversion drift from N(0, I) on SDXL-Turbo, and shifted the noising times of Eq. 6 by a step
(``noise_shift`` δ here). This script measures, for N = 1 … 4 steps and δ ∈ {0, 0.5, 1}, the
noise maps' mean, standard deviation and their correlation with the input latent (image structure
leaking into the noise) on two models available offline: the tests' tiny random-weight SD model
with a Turbo scheduler config (trailing spacing), and the built-in demo model read with trailing
spacing. Neither is a distilled model, so the numbers say how the statistics move, not how a real
Turbo checkpoint behaves.

    .venv/bin/python benchmarks/few_step_noise.py > benchmarks/results/few_step_noise.md
"""

from __future__ import annotations

import tempfile

import torch

from leditspp import Editor
from leditspp.demo import shapes
from leditspp.testing import clip_tokenizer, few_step_scheduler, tiny_sd_pipeline

IMAGES = 8
SHIFTS = (0.0, 0.5, 1.0)


def models() -> dict[str, Editor]:
    pipe = tiny_sd_pipeline(clip_tokenizer(tempfile.mkdtemp()), seed=0)
    pipe.scheduler = few_step_scheduler("turbo")
    return {
        "tiny SD, Turbo config": Editor.from_pipe(pipe),
        "demo model, trailing": Editor.from_pretrained("demo", device="cpu", spacing="trailing"),
    }


def statistics(editor: Editor, steps: int, shift: float) -> tuple[float, float, float]:
    """Mean, std and |correlation with x0| of all noise maps of IMAGES shapes scenes."""
    images = [shapes.scene(1000 + i, count=2).image for i in range(IMAGES)]
    inv = editor.invert(images, steps=steps, skip=0.0, solver="ddpm", seed=0, noise_shift=shift)
    z = inv.noise_maps  # (N, B, C, h, w)
    x0 = inv.source_latents[None].expand_as(z)
    zc, xc = z - z.mean(), x0 - x0.mean()
    corr = float((zc * xc).sum() / (zc.norm() * xc.norm()))
    return float(z.mean()), float(z.std()), abs(corr)


def main() -> None:
    torch.set_num_threads(2)
    print(f"Noise maps of {IMAGES} shapes scenes per row, DDPM solver, skip 0, seed 0.\n")
    print("| model | steps N | shift δ | mean | std | corr(z, x0) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, editor in models().items():
        for steps in (1, 2, 3, 4):
            for shift in SHIFTS:
                mean, std, corr = statistics(editor, steps, shift)
                print(f"| {name} | {steps} | {shift} | {mean:+.3f} | {std:.3f} | {corr:.3f} |", flush=True)


if __name__ == "__main__":
    main()
