"""The edit loop (paper Eqs. 8–14; SPEC B §7): predict → guidance → masked sum → solver step.

Per step ``j`` one network call evaluates the base rows (``c_∅``, plus ``c_src`` when the
inversion used a source prompt) and the rows of the concepts active at ``j`` (warm-up and
cool-down drop inactive rows). The guided estimate goes through the same solver step as the
inversion, with the stored noise map ``z_j``.

With no active concept a step replays the inversion (γ = 0), so the loop begins at the first
step where some concept acts, from the stored ``y_j`` and ``D_{j−1}``; when none ever acts, the
result is the input latent ``x0`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import AttentionRecorder
from .edits import Edit
from .guidance import base_estimate, direction_terms, is_active, rescale
from .inversion import Inversion
from .masking import implicit_masks
from .models.base import Conditioning, ModelAdapter
from .solvers import StepTable, add_noise_map, step_mean, to_epsilon

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


def edit_loop(
    model: ModelAdapter,
    inversion: Inversion,
    table: StepTable,
    base: list[Conditioning],
    source_guidance: float,
    concepts: ConceptBatch,
    mask_mode: str,
    user_mask: torch.Tensor | None,
    guidance_rescale: float,
    recorder: AttentionRecorder | None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the edit steps on ``inversion`` (on the model's device) with the solver ``table``.

    ``base``: ``[c_∅]`` or ``[c_∅, c_src]``, B rows each. Returns the final latents (B, C, h, w)
    and the last mask of every concept (E, B, h, w) (zeros for a concept that never acted).
    """
    batch, _, h, w = inversion.source_latents.shape
    masks = torch.zeros(len(concepts.edits), batch, h, w, device=inversion.source_latents.device)
    first = next((j for j in range(len(table)) if concepts.active(j)), None)
    if first is None:
        return inversion.source_latents.clone(), masks
    x = inversion.noisy_latents[first]
    prev_x0 = inversion.denoised[first - 1] if first > 0 else None
    k = len(base)
    base_cond = Conditioning.cat(base)
    zs = inversion.noise_maps
    for j in range(first, len(table)):
        active = concepts.active(j)
        rows = k + len(active)
        cond = base_cond
        if active:
            cond = Conditioning.cat(
                [base_cond, Conditioning.cat([concepts.cond.row(i) for i in active]).repeat_rows(batch)]
            )
        if recorder is not None and active:
            recorder.arm(slice(k * batch, None), concepts.token_weights[active].repeat_interleave(batch, 0))
        latents = x.repeat(rows, 1, 1, 1)
        raw = model.predict(latents, table.timesteps[j].repeat(rows * batch), cond)
        a, s = float(table.alpha[j]), float(table.sigma[j])
        eps = to_epsilon(raw, latents, a, s, model.schedule.prediction_type).view(rows, batch, -1, h, w)
        guided = base_estimate(eps[0], eps[1] if k > 1 else None, source_guidance)
        if active:
            sel = torch.tensor(active, device=x.device)
            psi = direction_terms(
                eps[k:], eps[0], concepts.directions[sel], concepts.scales[sel], user_mask
            )  # (A, B, C, h, w)
            attn = recorder.take((h // 4, w // 4)) if recorder is not None else None
            q = concepts.thresholds[sel].repeat_interleave(batch)
            m = implicit_masks(mask_mode, psi.flatten(0, 1), q, attn).view(len(active), batch, 1, h, w)
            guided = rescale(guided + (m * psi).sum(dim=0), eps[k:].mean(dim=0), guidance_rescale)
            masks[sel] = m[:, :, 0]
        if recorder is not None:
            recorder.disarm()
        mean, prev_x0 = step_mean(x, guided, prev_x0, table, j)
        x = add_noise_map(mean, zs[j], table, j)
        if progress is not None:
            progress("edit", j + 1, len(table))
    return x, masks
