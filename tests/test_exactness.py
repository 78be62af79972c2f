"""Perfect inversion (SPEC A1): editing with no active concept returns the encoded input."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from leditspp import Edit, LeditsError
from leditspp.testing import replay_tolerance

from .conftest import scene

GRID = list(
    itertools.product(["dpmsolver++", "ddpm"], [1, 3, 20, 50], [0.0, 0.15, 0.5], [1, 2], ["", "a photo of a cat"])
)


@pytest.mark.parametrize(("solver", "steps", "skip", "batch", "source"), GRID)
def test_reconstruction_is_exact(editor, solver, steps, skip, batch, source):
    images = [scene(64, 64, seed=i) for i in range(batch)]
    inv = editor.invert(images, steps=steps, skip=skip, solver=solver, seed=0, source_prompt=source)
    assert inv.noise_maps.shape == (steps, batch, 4, 8, 8)
    out = editor.edit(inv, [], decode=False).latents
    assert (out - inv.source_latents).abs().max() <= 1e-5
    with pytest.raises(LeditsError, match="never act"):  # a concept that would never act is refused
        editor.edit(inv, [Edit("a red hat", warmup_steps=steps)], decode=False)


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize(("height", "width"), [(64, 96), (96, 32)])
def test_reconstruction_is_exact_for_non_square_images(editor, solver, height, width):
    inv = editor.invert(scene(height, width), steps=20, solver=solver, seed=3, source_prompt="a scene")
    out = editor.edit(inv, decode=False).latents
    assert out.shape[-2:] == (height // 8, width // 8)
    assert (out - inv.source_latents).abs().max() <= 1e-5


@pytest.mark.parametrize(("solver", "source"), [("dpmsolver++", ""), ("ddpm", ""), ("dpmsolver++", "a scene")])
@pytest.mark.parametrize("warmup", [0, 7])
def test_replaying_every_step_with_zero_guidance_reconstructs(editor, solver, source, warmup):
    """A concept at scale 0 is active, so every step runs the network and the solver with the
    stored noise maps: the replay itself lands on the input (up to fp32 rounding of the tiny
    random network's trajectory)."""
    inv = editor.invert([scene(64, 96, 1), scene(64, 96, 2)], steps=30, solver=solver, seed=1, source_prompt=source)
    out = editor.edit(inv, [Edit("a red hat", scale=0.0, warmup_steps=warmup)], mask_mode="none", decode=False)
    assert (out.latents - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)


def test_the_replay_tolerance_catches_a_wrong_replay(editor):
    """The fp32 bound of the replay tests is far below what a defect gives: replaying one image
    with another image's noise maps misses by orders of magnitude more."""
    inv = editor.invert([scene(64, 96, 1), scene(64, 96, 2)], steps=10, seed=1)
    swapped = dataclasses.replace(inv, noise_maps=inv.noise_maps.flip(1))
    out = editor.edit(swapped, [Edit("a red hat", scale=0.0)], mask_mode="none", decode=False)
    assert (out.latents - inv.source_latents).abs().max() > 100 * replay_tolerance(inv.source_latents)
