"""Small defects of issue 22 (item 5), each kept as a test."""

from __future__ import annotations

import threading
import time

import torch

from leditspp.models import autoencoder, base

from .conftest import scene


def test_the_inversion_bar_moves_with_every_network_call(editor):
    """Progress is told after each chunk of steps, not once after the whole inversion."""
    seen: list[tuple[str, int, int]] = []
    editor.invert(scene(), steps=6, seed=0, inversion_batch=2, progress=lambda *a: seen.append(a))
    assert seen == [("inversion", 2, 6), ("inversion", 4, 6), ("inversion", 6, 6)]


def test_different_vaes_do_not_wait_for_each_other():
    """The fp32 upcast lock is per VAE: a second model's VAE is not held up by the first one's."""
    first, second = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    assert autoencoder.vae_lock(first) is autoencoder.vae_lock(first) and autoencoder.vae_lock(
        first
    ) is not autoencoder.vae_lock(second)
    entered = threading.Event()
    with autoencoder.vae_lock(first):
        worker = threading.Thread(target=lambda: (autoencoder.vae_lock(second).acquire(), entered.set()))
        worker.start()
        assert entered.wait(5), "another VAE's lock was blocked by this one"
        blocked = threading.Event()
        waiter = threading.Thread(target=lambda: (autoencoder.vae_lock(first).acquire(), blocked.set()))
        waiter.start()
        time.sleep(0.2)
        assert not blocked.is_set(), "the same VAE's lock must be exclusive"
    waiter.join(5)
    assert blocked.is_set()
    worker.join(5)


def test_per_size_caches_stay_bounded(xl_editor):
    model = xl_editor.model
    model.denoiser._time_ids.clear()
    for side in range(1, 3 * base.SIZE_CACHE):
        model.denoiser.time_ids(torch.zeros(1, 4, side, side))
        assert len(model.denoiser._time_ids) <= base.SIZE_CACHE
    again = model.denoiser.time_ids(torch.zeros(1, 4, 5, 5))
    side = 5 * autoencoder.vae_scale_factor(model.autoencoder.vae)
    assert again.tolist() == [[side, side, 0, 0, side, side]]


def test_flux_position_ids_cache_stays_bounded(flux_editor):
    model = flux_editor.model
    model.denoiser._ids.clear()
    for side in range(2, 2 + 3 * base.SIZE_CACHE * 2, 2):
        model.denoiser._image_ids(side, side, torch.device("cpu"))
        assert len(model.denoiser._ids) <= base.SIZE_CACHE
    assert model.denoiser._image_ids(4, 6, torch.device("cpu")).tolist() == [
        [0, r, c] for r in range(2) for c in range(3)
    ]
