"""Results that are not an image of anything, refused wherever they are made.

An absurd guidance scale, a damaged inversion or a model in too low a precision can drive the
latents to NaN or inf, or saturate the decoder so that every pixel has one colour (black, most
often). Such a result still has a file name and a PSNR, so the editor itself refuses it with
:class:`DivergedEdit` — the API, ``leditspp edit``, ``invert``, the web UI and ``eval`` all report it
instead of writing a black image with success.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .errors import LeditsError


class DivergedEdit(LeditsError):
    """An edit or inversion whose output is not an image of anything (NaN / inf, a single colour)."""


def check_finite(tensor: torch.Tensor, what: str, fix: str) -> None:
    """Refuse ``tensor`` holding NaN or inf (:class:`DivergedEdit` naming ``what`` and the share)."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        share = 1 - float(finite.float().mean())
        raise DivergedEdit(f"the {what} diverged: {share:.0%} of its values are NaN or inf; {fix}")


def single_colour(image: Image.Image) -> tuple[int, ...] | None:
    """The colour of an image that has one colour at every pixel, else None."""
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    first = pixels[0]
    return tuple(int(v) for v in first) if (pixels == first).all() else None


def check_edited(latents: torch.Tensor, edited: Image.Image, source: Image.Image) -> None:
    """Refuse a diverged edit (:class:`DivergedEdit`): ``latents`` (B, C, h, w) holding NaN or inf,
    or an ``edited`` image of one colour everywhere while ``source`` (the input) has several."""
    check_finite(latents, "edit", "no image can be read from its latents; lower the edit scale")
    colour = single_colour(edited)
    if colour is not None and single_colour(source) is None:
        raise DivergedEdit(
            f"the edit diverged: the edited image is one colour {colour} everywhere while its input is not; "
            "lower the edit scale"
        )
