"""The edit loop (paper Eqs. 8–14; SPEC B §7): estimate → guidance → masked sum → solver step.

Guidance acts on the adapter's estimates (ε for DDPM-trained models, the velocity v for flow
models); the guided estimate becomes a data prediction (``model.to_data``) for the solver step.

Per step ``j`` one network call evaluates the base rows (``c_∅``, plus ``c_src`` when the
inversion used a source prompt) and the rows of the concepts active at ``j`` (warm-up and
cool-down drop inactive rows). The guided estimate goes through the same solver step as the
inversion, with the stored noise map ``z_j``.

With no active concept a step replays the inversion (γ = 0), so the loop begins at the first
step where some concept acts, from the stored ``y_j`` and ``D_{j−1}``; when none ever acts, the
result is the input latent ``x0`` itself.

``preserve = k`` (opt-in): after each step, outside the region R (the running union of every
step's concept masks, dilated by k cells: :func:`~leditspp.masking.edit_region`) the latents and
the solver history are set back to the source trajectory's, ``y_{j+1}`` and ``D_j`` (``x0``
after the last step) — so the unmasked background ends exactly at the input latent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import defaults
from .attention import AttentionRecorder
from .edits import Edit
from .guidance import base_estimate, direction_terms, is_active, rescale
from .inversion import Inversion
from .masking import edit_region, implicit_masks, keep_outside
from .models.base import Conditioning, ModelAdapter
from .rows import RowLayout
from .solvers import NoiseLevel, StepTable, add_noise_map, step_mean

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ConceptBatch:
    """The edit concepts of one call, as tensors. ``E`` concepts, ``L`` tokens."""

    edits: tuple[Edit, ...]
    cond: Conditioning  # E rows
    token_weights: torch.Tensor  # (E, L): 1 on each concept's word tokens
    directions: torch.Tensor  # (E,) ±1
    scales: torch.Tensor  # (E,)
    thresholds: torch.Tensor  # (E,)

    def active(self, step: int) -> list[int]:
        return [i for i, e in enumerate(self.edits) if is_active(step, e.warmup_steps, e.cooldown_steps)]


@dataclass(frozen=True)
class EditSettings:
    """How the concepts of an edit act, beside the concepts themselves (checked by the caller).

    ``mask_mode``: which masks gate the guidance (:data:`~leditspp.masking.MASK_MODES`);
    ``user_mask``: (1 or B, 1, h, w) on the latent grid, 1 where the edit may act, or None;
    ``guidance_rescale``: Lin et al.'s φ (0: off); ``preserve``: the region's dilation k in latent
    cells (None: off); ``groups_per_call``: the most groups of B rows one network call takes
    (:func:`~leditspp.memory.edit_groups`; None: all of a step's rows in one call).
    """

    mask_mode: str = defaults.MASK_MODE
    user_mask: torch.Tensor | None = None
    guidance_rescale: float = defaults.GUIDANCE_RESCALE
    preserve: int | None = None
    groups_per_call: int | None = None


def edit_loop(
    model: ModelAdapter,
    inversion: Inversion,
    table: StepTable,
    base: list[Conditioning],
    concepts: ConceptBatch,
    settings: EditSettings,
    recorder: AttentionRecorder | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the edit steps on ``inversion`` (on the model's device) with the solver ``table``.

    ``base``: ``[c_∅]`` or ``[c_∅, c_src]``, B rows each, the source prompt guided as in the
    inversion (``inversion.info.source_guidance``); ``recorder``: the attention capture (needed
    by the mask modes that read M¹). Returns the final latents (B, C, h, w), the last mask of
    every concept and each concept's mask averaged over the steps it acted, both (E, B, h, w)
    (zeros for a concept that never acted), and with ``settings.preserve`` the region R
    (B, 1, h, w) outside which the source was kept (None without).
    """
    source_guidance = inversion.info.source_guidance  # the inversion's: its steps are replayed
    preserve = settings.preserve
    batch, _, h, w = inversion.source_latents.shape
    device = inversion.source_latents.device
    masks = torch.zeros(len(concepts.edits), batch, h, w, device=device)
    mask_sums = torch.zeros_like(masks)
    region = None if preserve is None else torch.zeros(batch, 1, h, w, device=device)
    plan = [tuple(concepts.active(j)) for j in range(len(table))]
    first = next((j for j, active in enumerate(plan) if active), None)
    if first is None:
        return inversion.source_latents.clone(), masks, mask_sums, region
    k = len(base)
    calls = {active: _call_inputs(concepts, base, active, batch) for active in set(plan)}
    levels = table.levels(device)
    grid = model.mask_grid(h, w)
    x = inversion.noisy_latents[first]
    prev_x0 = inversion.denoised[first - 1] if first > 0 else None
    for j in range(first, len(table)):
        call = calls[plan[j]]
        layout = RowLayout(k + len(plan[j]), batch)
        eps, attn = estimate_in_chunks(model, x, levels, j, layout, call, k, recorder, grid, settings.groups_per_call)
        guided = base_estimate(eps[0], eps[1] if k > 1 else None, source_guidance)
        if plan[j]:
            psi = direction_terms(eps[k:], eps[0], call.directions, call.scales, settings.user_mask)  # (A, B, C, h, w)
            m = implicit_masks(settings.mask_mode, psi.flatten(0, 1), call.thresholds, attn).view(-1, batch, 1, h, w)
            guided = rescale(guided + (m * psi).sum(dim=0), eps[k:].mean(dim=0), settings.guidance_rescale)
            masks.index_copy_(0, call.index, m[:, :, 0])
            mask_sums.index_add_(0, call.index, m[:, :, 0])
            if region is not None:
                region = torch.maximum(region, edit_region(m, preserve))
        x0 = model.to_data(guided, x, levels.at(j, batch))
        mean, prev_x0 = step_mean(x, x0, prev_x0, table, j)
        x = add_noise_map(mean, inversion.noise_maps[j], table, j)
        if region is not None:
            x, prev_x0 = _keep_source(region, x, prev_x0, inversion, j)
        if progress is not None:
            progress("edit", j + 1, len(table))
    acted = torch.tensor([sum(i in active for active in plan) for i in range(len(concepts.edits))], device=device)
    return x, masks, mask_sums / acted.clamp(min=1)[:, None, None, None], region


def estimate_in_chunks(
    model: ModelAdapter,
    x: torch.Tensor,
    levels: NoiseLevel,
    j: int,
    layout: RowLayout,
    call: _CallInputs,
    k: int,
    recorder: AttentionRecorder | None,
    grid: tuple[int, int],
    groups_per_call: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step ``j``'s estimates (G, B, C, h, w) for the latents ``x`` (B, C, h, w) under every group of
    ``layout`` (the ``k`` base conditions, then the active concepts), and with a ``recorder`` the
    concept rows' attention (A·B, h', w') on ``grid``.

    The groups go through the network ``groups_per_call`` at a time (:meth:`RowLayout.calls`; one
    call when they fit, as every step does when memory is ample); rows are independent, so the split changes the
    estimates by float rounding only. Each call's estimates are copied out before the next call:
    a CUDA-graphed network (``Editor.compile`` on a GPU) returns them in buffers that its next
    replay overwrites.
    """
    calls = layout.calls(groups_per_call)
    eps, maps = None, []
    for part in calls:
        concept_rows = None if recorder is None else part.rows_from(k)
        if concept_rows is not None:
            in_call, of_concepts = concept_rows
            recorder.arm(in_call, call.token_weights[of_concepts])
        rows = part.rows
        out = model.estimate(
            part.layout.repeat(x), levels.at(j, part.layout.rows), call.cond.map(lambda t, r=rows: t[r])
        )
        if len(calls) == 1:
            eps = out  # one call: nothing to keep across calls
        else:
            eps = out.new_empty((layout.rows, *out.shape[1:])) if eps is None else eps
            eps[rows] = out
        if concept_rows is not None:
            maps.append(recorder.take(grid))
            recorder.disarm()
    return layout.split(eps), (torch.cat(maps) if maps else None)


def _keep_source(
    region: torch.Tensor, x: torch.Tensor, prev_x0: torch.Tensor, inversion: Inversion, j: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outside ``region``, step ``j``'s result and solver history become the source
    trajectory's: ``y_{j+1}`` (``x0`` after the last step) and ``D_j``."""
    last = j + 1 == inversion.noisy_latents.shape[0]
    target = inversion.source_latents if last else inversion.noisy_latents[j + 1]
    return keep_outside(region, x, target), keep_outside(region, prev_x0, inversion.denoised[j])


@dataclass(frozen=True)
class _CallInputs:
    """What one network call needs for a set of ``A`` active concepts, built before the loop so
    that the loop itself makes no host-to-device copies (and hence no host syncs)."""

    cond: Conditioning  # (k + A)·B rows in the RowLayout: the base conditions, then each concept's B rows
    index: torch.Tensor  # (A,) the concepts' indices
    token_weights: torch.Tensor  # (A·B, L)
    directions: torch.Tensor  # (A,)
    scales: torch.Tensor  # (A,)
    thresholds: torch.Tensor  # (A·B,) λ for every (concept, image) row


def _call_inputs(concepts: ConceptBatch, base: list[Conditioning], active: tuple[int, ...], batch: int) -> _CallInputs:
    index = torch.tensor(active, dtype=torch.long).to(concepts.scales.device)
    concept_rows = RowLayout(len(active), batch)  # the concept groups, after the base ones
    return _CallInputs(
        cond=RowLayout(len(base) + len(active), batch).conditions([*base, *(concepts.cond.row(i) for i in active)]),
        index=index,
        token_weights=concept_rows.per_row(concepts.token_weights.index_select(0, index)),
        directions=concepts.directions.index_select(0, index),
        scales=concepts.scales.index_select(0, index),
        thresholds=concept_rows.per_row(concepts.thresholds.index_select(0, index)),
    )
