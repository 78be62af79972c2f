"""Masks and guidance terms on hand-made tensors (no network)."""

from __future__ import annotations

import math

import pytest
import torch

from leditspp import Conditioning
from leditspp.guidance import base_estimate, direction_terms, is_active, rescale
from leditspp.masking import (
    attention_mask,
    implicit_masks,
    noise_mask,
    quantile,
    resize_user_mask,
    smooth,
    threshold,
)


def test_quantile_matches_torch_quantile_per_row():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(5, 37, generator=g)
    q = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.999])
    expected = torch.stack([torch.quantile(values[i], q[i]) for i in range(5)])
    assert torch.allclose(quantile(values, q), expected, atol=1e-6)


def test_threshold_keeps_the_top_fraction_per_row():
    maps = torch.stack([torch.arange(100.0), torch.arange(100.0).flip(0)])
    m = threshold(maps, torch.tensor([0.9, 0.5]))
    assert m[0].sum() == 10 and m[0, 90:].all()
    assert m[1].sum() == 50 and m[1, :50].all()
    assert threshold(maps, torch.tensor([0.0, 0.0])).all()  # λ = 0 keeps everything


def test_noise_mask_sums_absolute_guidance_over_channels():
    psi = torch.zeros(1, 4, 4, 4)
    psi[0, 0, 1, 2] = -3.0  # one strong negative cell: |ψ| counts
    psi[0, 1, 3, 3] = 0.5
    psi[0, 2, 3, 3] = 0.5
    m = noise_mask(psi, torch.tensor([0.9]))
    assert m.shape == (1, 1, 4, 4)
    assert m[0, 0, 1, 2] == 1 and m[0, 0, 3, 3] == 1 and m.sum() == 2


def test_smoothing_kernel_is_the_ports_and_preserves_constants():
    const = torch.full((1, 3, 3), 2.0)
    assert torch.allclose(smooth(const), const)
    impulse = torch.zeros(1, 5, 5)
    impulse[0, 2, 2] = 1.0
    out = smooth(impulse)
    c = 1 / (1 + 2 * math.exp(-1))
    assert out[0, 2, 2] == pytest.approx(c * c, rel=1e-6)
    assert out[0, 1, 2] == pytest.approx(c * c * math.exp(-1), rel=1e-6)


def test_attention_mask_upsamples_nearest_to_the_latent_grid():
    maps = torch.zeros(1, 2, 3)
    maps[0, 1, 2] = 1.0
    m = attention_mask(maps, torch.tensor([0.9]), (8, 12))
    assert m.shape == (1, 1, 8, 12)
    assert m[0, 0, 4:, 8:].all()  # the hot cell covers its 4×4 latent block
    assert m[0, 0, :4, :4].sum() == 0


def test_mask_modes_combine_as_documented():
    g = torch.Generator().manual_seed(1)
    psi = torch.randn(2, 4, 8, 8, generator=g)
    attn = torch.rand(2, 2, 2, generator=g)
    q = torch.tensor([0.5, 0.5])
    m1 = implicit_masks("attention", psi, q, attn)
    m2 = implicit_masks("noise", psi, q, attn)
    assert torch.equal(implicit_masks("intersect", psi, q, attn), m1 * m2)
    assert implicit_masks("none", psi, q, None).all()
    with pytest.raises(ValueError):
        implicit_masks("intersect", psi, q, None)


def test_user_mask_is_resized_to_the_latent_grid():
    mask = torch.zeros(64, 96)
    mask[:, :48] = 1.0
    m = resize_user_mask(mask, (8, 12))
    assert m.shape == (1, 1, 8, 12)
    assert m[..., :6].eq(1).all() and m[..., 6:].eq(0).all()
    assert resize_user_mask(torch.ones(2, 1, 4, 4), (8, 8)).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    ("step", "warmup", "cooldown", "active"),
    [(0, 0, None, True), (1, 2, None, False), (2, 2, None, True), (4, 0, 5, True), (5, 0, 5, False)],
)
def test_activity_window(step, warmup, cooldown, active):
    assert is_active(step, warmup, cooldown) is active


def test_direction_terms_scale_sign_and_user_mask():
    eps_u = torch.zeros(1, 4, 2, 2)
    eps_c = torch.ones(2, 1, 4, 2, 2)
    user = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    psi = direction_terms(eps_c, eps_u, torch.tensor([1.0, -1.0]), torch.tensor([5.0, 7.0]), user)
    assert psi.shape == (2, 1, 4, 2, 2)
    assert psi[0, 0, :, :, 0].eq(5).all() and psi[1, 0, :, :, 0].eq(-7).all()
    assert psi[..., 1].eq(0).all()


def test_base_estimate_is_cfg_towards_the_source_prompt():
    u, s = torch.zeros(3), torch.ones(3)
    assert torch.equal(base_estimate(u, None, 3.5), u)
    assert torch.allclose(base_estimate(u, s, 3.5), torch.full((3,), 3.5))


def test_rescale_matches_reference_std_and_is_identity_at_zero():
    g = torch.Generator().manual_seed(2)
    guided = torch.randn(2, 4, 8, 8, generator=g) * 5
    ref = torch.randn(2, 4, 8, 8, generator=g)
    assert torch.equal(rescale(guided, ref, 0.0), guided)
    full = rescale(guided, ref, 1.0)
    assert torch.allclose(full.flatten(1).std(1), ref.flatten(1).std(1), rtol=1e-5)


def test_the_attention_mask_is_smoothed_before_its_quantile():
    """A lone spike beside a broad 3×3 blob: unsmoothed, the spike is the top cell; smoothed (the
    port's 3×3 kernel), the blob's centre wins and the spike drops out of the top quantile."""
    from leditspp.masking import attention_mask

    maps = torch.zeros(1, 8, 8)
    maps[0, 1, 1] = 1.0  # the spike
    maps[0, 4:7, 4:7] = 0.8  # the blob
    q = torch.tensor([0.98])  # the top 2 % of 64 cells: one cell
    mask = attention_mask(maps, q, (8, 8))[0, 0]
    assert mask[5, 5] == 1 and mask[1, 1] == 0
    unsmoothed = (maps[0] >= torch.quantile(maps[0].flatten(), 0.98)).float()
    assert unsmoothed[1, 1] == 1, "the probe must tell smoothing apart: without it the spike is on top"


def test_row_layout_orders_groups_then_images():
    """RowLayout in milliseconds: group-major stacking, per-row values, split and repeat."""
    from leditspp.rows import RowLayout

    layout = RowLayout(groups=3, batch=2)
    x = torch.arange(2.0)[:, None]  # image b has value b
    assert layout.repeat(x).flatten().tolist() == [0, 1, 0, 1, 0, 1]
    assert layout.per_row(torch.tensor([10.0, 20.0, 30.0])).tolist() == [10, 10, 20, 20, 30, 30]
    rows = layout.stack([x + 10 * g for g in range(3)])  # row g·B + b = 10g + b
    assert rows.flatten().tolist() == [0, 1, 10, 11, 20, 21]
    split = layout.split(rows)
    assert split.shape == (3, 2, 1) and split[2, 1, 0] == 21 and split[1, 0, 0] == 10
    cond = layout.conditions([Conditioning.of(torch.full((1, 1, 1), float(g))) for g in range(3)])
    assert cond.embeds.flatten().tolist() == [0, 0, 1, 1, 2, 2]


def test_row_layout_plans_the_calls_of_a_step_and_where_its_concepts_sit():
    """Two base groups and three concepts of two images, at most 3 groups a call: calls of 3 and
    2 groups; the concept rows of each call, in the call and among the concept rows."""
    from leditspp.rows import RowLayout

    layout = RowLayout(groups=5, batch=2)
    whole = layout.calls(None)
    assert [(c.start, c.layout, c.rows) for c in whole] == [(0, layout, slice(0, 10))]
    assert whole[0].rows_from(2) == (slice(4, None), slice(0, 6))
    first, second = layout.calls(3)
    assert (first.start, first.layout, first.rows) == (0, RowLayout(3, 2), slice(0, 6))
    assert (second.start, second.layout, second.rows) == (3, RowLayout(2, 2), slice(6, 10))
    assert first.rows_from(2) == (slice(4, None), slice(0, 2))  # its last group is the first concept
    assert second.rows_from(2) == (slice(0, None), slice(2, 6))
    assert layout.calls(2)[0].rows_from(2) is None  # the base conditions only
    assert [c.layout.groups for c in RowLayout(9, 1).calls(8)] == [5, 4]  # evened out
