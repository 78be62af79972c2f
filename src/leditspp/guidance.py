"""Edit guidance (paper Eqs. 8–12; SPEC B §5): pure functions on noise estimates.

    ψ_i = d_i·(ε_i − ε_∅)                 direction term of concept i (d_i = −1 removes)
    γ_i = s_i·M_i ⊙ (U ⊙ ψ_i)             masked, scaled guidance (U: optional user mask)
    ε_g = ε_base + Σ_{i active} γ_i        the estimate given to the solver (Eq. 8, 11)

``ε_base`` is ``ε_∅`` or, when the inversion used a source prompt, the same guided estimate
``ε_∅ + g·(ε_src − ε_∅)`` the inversion used, so that γ = 0 reconstructs exactly (SPEC A1).
"""

from __future__ import annotations

import torch


def is_active(step: int, warmup: int, cooldown: int | None) -> bool:
    """A concept acts at edit-loop step ``step`` iff ``warmup ≤ step < cooldown``."""
    return step >= warmup and (cooldown is None or step < cooldown)


def base_estimate(eps_uncond: torch.Tensor, eps_source: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Classifier-free guidance towards the source prompt (B §4.3), or ``ε_∅`` without one."""
    if eps_source is None:
        return eps_uncond
    return eps_uncond + scale * (eps_source - eps_uncond)


def direction_terms(
    eps_concepts: torch.Tensor,
    eps_uncond: torch.Tensor,
    directions: torch.Tensor,
    scales: torch.Tensor,
    user_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``s_i·d_i·(ε_i − ε_∅)·U`` for every concept: (A, B, C, h, w).

    ``eps_concepts``: (A, B, C, h, w); ``eps_uncond``: (B, C, h, w); ``directions``, ``scales``:
    (A,); ``user_mask``: broadcastable to (B, C, h, w) or None.
    """
    w = (directions * scales).to(eps_concepts)[:, None, None, None, None]
    psi = w * (eps_concepts - eps_uncond[None])
    return psi if user_mask is None else psi * user_mask[None]


def rescale(eps_guided: torch.Tensor, eps_reference: torch.Tensor, factor: float) -> torch.Tensor:
    """Lin et al. (2023) §3.4: match the std of ``eps_guided`` to ``eps_reference`` per image.

    ``eps_guided``, ``eps_reference``: (B, C, h, w); mixes the rescaled and the plain estimate
    by ``factor`` in [0, 1].
    """
    if factor == 0.0:
        return eps_guided
    dims = list(range(1, eps_guided.dim()))
    ratio = eps_reference.std(dim=dims, keepdim=True) / eps_guided.std(dim=dims, keepdim=True)
    return factor * eps_guided * ratio + (1 - factor) * eps_guided
