"""Implicit masks (paper Eqs. 12–14; SPEC A3, B §6): pure functions on tensors.

Shapes use ``R`` for rows (active concepts × images, flattened concept-major), ``h × w`` for the
latent grid and ``h' × w'`` for the attention grid the adapter reads M¹ on (``model.mask_grid``: a
UNet's cross-attention level, ¼ of the latents by default; a flow transformer's patch grid).

* ``M¹`` (Eq. 13): cross-attention of the concept's tokens at ``h' × w'``, 3×3 smoothed,
  thresholded at the per-image λ-quantile, nearest-upsampled to ``h × w``.
* ``M²`` (Eq. 14): the channel-summed ``|ψ|`` thresholded at its per-image λ-quantile.
* Mask modes: ``intersect`` = M¹⊙M², ``attention`` = M¹, ``noise`` = M², ``none`` = 1.
* ``preserve`` (opt-in, not in the paper): the region R where the edit may change the image —
  the running union over steps of every concept's mask, dilated by ``k`` cells. Outside R the
  edit loop keeps the source trajectory and the decoded image keeps the decoded input.
"""

from __future__ import annotations

import functools
import math
from typing import Final

import torch
import torch.nn.functional as F

from . import defaults
from .errors import LeditsError, is_int

MASK_MODES: Final = defaults.MASK_MODES
#: The largest ``preserve`` dilation taken, in latent cells (beyond it R covers any image).
MAX_PRESERVE: Final = 64


def needs_attention(mode: str) -> bool:
    """Whether ``mode`` uses the cross-attention mask M¹."""
    return mode in ("intersect", "attention")


def quantile(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Row-wise quantile with linear interpolation (same values as ``torch.quantile``).

    ``values``: (R, n); ``q``: (R,) in [0, 1]. Returns (R,) in fp32. One sort for all rows,
    so every concept's threshold comes from one batched op.
    """
    v = values.float().sort(dim=-1).values
    rank = q.to(v).clamp(0, 1) * (v.shape[-1] - 1)
    lo = rank.floor().long()
    hi = rank.ceil().long()
    v_lo = v.gather(-1, lo[:, None])[:, 0]
    v_hi = v.gather(-1, hi[:, None])[:, 0]
    return torch.lerp(v_lo, v_hi, rank - lo.to(v))


def threshold(maps: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Binary mask ``maps ≥ quantile(maps, q)`` per row; ``maps``: (R, ...) → same shape, fp32."""
    flat = maps.flatten(1).float()
    cut = quantile(flat, q)
    return (flat >= cut[:, None]).to(torch.float32).view(maps.shape)


def noise_mask(guidance: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """M² (Eq. 14): ``guidance`` (R, C, h, w) → (R, 1, h, w) mask of ``Σ_c |ψ| ≥ λ-quantile``."""
    return threshold(guidance.abs().sum(dim=1, keepdim=True), q)


@functools.cache
def _smoothing_kernel(device: torch.device) -> torch.Tensor:
    """The port's 3×3 kernel ``g gᵀ`` with ``g ∝ [e⁻¹, 1, e⁻¹]`` (SPEC B §6.1 step 5), (1,1,3,3).

    Cached per device: copied there once, not at every step."""
    g = torch.tensor([math.exp(-1.0), 1.0, math.exp(-1.0)], dtype=torch.float32)
    k = torch.outer(g, g)
    return (k / k.sum())[None, None].to(device)


def smooth(maps: torch.Tensor) -> torch.Tensor:
    """Reflect-pad by 1 and apply the 3×3 smoothing: (R, h', w') → (R, h', w'), fp32."""
    x = maps.float()[:, None]
    mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
    x = F.pad(x, (1, 1, 1, 1), mode=mode)
    return F.conv2d(x, _smoothing_kernel(x.device))[:, 0]


def attention_mask(maps: torch.Tensor, q: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """M¹ (Eq. 13): token-summed attention (R, h', w') → (R, 1, h, w) binary mask.

    Smoothed, thresholded on the attention grid ``h' × w'``, then nearest-upsampled to ``size = (h, w)``.
    """
    m = threshold(smooth(maps), q)
    return F.interpolate(m[:, None], size=size, mode="nearest")


def implicit_masks(
    mode: str,
    guidance: torch.Tensor,
    q: torch.Tensor,
    attention_maps: torch.Tensor | None,
) -> torch.Tensor:
    """The mask ``M`` of each row for ``mode``: (R, 1, h, w) fp32.

    ``guidance``: the scaled, user-masked ψ of each row (R, C, h, w); ``q``: λ per row (R,);
    ``attention_maps``: token-summed maps on the attention grid (R, h', w'), needed by attention modes.
    """
    size = tuple(guidance.shape[-2:])
    if mode == "none":
        return torch.ones_like(guidance[:, :1], dtype=torch.float32)
    if mode == "noise":
        return noise_mask(guidance, q)
    if attention_maps is None:
        raise ValueError(f"mask mode {mode!r} needs attention maps")
    m1 = attention_mask(attention_maps, q, size)
    if mode == "attention":
        return m1
    return m1 * noise_mask(guidance, q)


def check_preserve(preserve: object, mask_mode: str) -> int | None:
    """``preserve``: None (off) or a whole number of cells 0 … :data:`MAX_PRESERVE` (Python or
    NumPy), with a mask mode that has masks (with ``none`` every cell may change, so it would do
    nothing). Returns it as a Python int (or None)."""
    if preserve is None:
        return None
    if not is_int(preserve) or not 0 <= preserve <= MAX_PRESERVE:
        raise LeditsError(
            f"preserve must be a whole number of latent cells from 0 to {MAX_PRESERVE} (or None: off); got {preserve!r}"
        )
    if mask_mode == "none":
        raise LeditsError(
            "preserve keeps the source outside the edit masks, and mask_mode 'none' has none; "
            "use intersect, attention or noise, or leave preserve out"
        )
    return int(preserve)


def edit_region(masks: torch.Tensor, cells: int) -> torch.Tensor:
    """One step's part of the region R for ``preserve``: the union over concepts of ``masks``
    (A, B, 1, h, w), dilated by ``cells`` latent cells (a (2k+1)² max filter) → (B, 1, h, w)."""
    union = masks.amax(dim=0)
    return F.max_pool2d(union, 2 * cells + 1, stride=1, padding=cells) if cells else union


def keep_outside(region: torch.Tensor, edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``edited`` inside ``region`` (B, 1, h, w) and ``source`` elsewhere, exactly (no blending
    arithmetic: a cell is one or the other). ``region`` is nearest-resized to the tensors' grid,
    so one latent-grid R serves latents and decoded images (B, C, H, W) alike."""
    if tuple(region.shape[-2:]) != tuple(edited.shape[-2:]):
        region = F.interpolate(region, size=tuple(edited.shape[-2:]), mode="nearest")
    return torch.where(region > 0, edited, source)


def resize_user_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A user mask of any size, (H, W), (B, H, W) or (B, 1, H, W) → (B|1, 1, h, w) in [0, 1].

    Area-averaged when shrinking (a pixel mask becomes the covered fraction of each latent
    cell), bilinear when growing.
    """
    m = mask.float()
    while m.dim() < 4:
        m = m[None]
    if m.shape[1] != 1:
        m = m.mean(dim=1, keepdim=True)
    if tuple(m.shape[-2:]) != tuple(size):
        shrink = m.shape[-2] >= size[0] and m.shape[-1] >= size[1]
        m = F.interpolate(m, size=size, mode="area" if shrink else "bilinear", align_corners=None)
    return m.clamp(0, 1)
