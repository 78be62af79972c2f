"""Images in and out: reading, validating, resizing to a model-friendly size, PIL conversion,
writing (atomically, with the recipe embedded in PNGs) and mask overlays."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from . import defaults
from .errors import LeditsError
from .files import atomic_write

ImageInput = Any  # PIL.Image | str | os.PathLike | np.ndarray | torch.Tensor, or a list of these
#: The PNG text chunk that holds the recipe of an image leditspp wrote (see :mod:`leditspp.recipes`).
PNG_KEY = "leditspp"


def open_image(path: str | os.PathLike[str], max_pixels: int | None = defaults.MAX_DECODE_PIXELS) -> Image.Image:
    """Read one image file as upright RGB (see :func:`to_rgb`).

    The size is read from the header before any pixel is decoded: images over ``max_pixels``
    (None: no limit) are refused, as are unreadable, animated and empty files.
    """
    p = Path(path)
    if not p.is_file():
        raise LeditsError(f"image file {str(path)!r} does not exist")
    try:
        with Image.open(p) as im:
            check_pixels(im.size, max_pixels, f"{path}: ")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise LeditsError(
                    f"{path}: an animated image with {frames} frames; save the frame to edit as PNG first"
                )
            im.load()
            return to_rgb(im)
    except Image.DecompressionBombError as exc:  # over Pillow's own limit, before our check could run
        raise LeditsError(
            f"{path}: the image is over the limit of {max_pixels:,} pixels that leditspp decodes ({exc}); "
            "downscale it first"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, LeditsError):
            raise
        raise LeditsError(f"{path}: cannot read it as an image ({exc}); use a PNG, JPEG or WebP file") from exc


def check_pixels(size: tuple[int, int], max_pixels: int | None, where: str = "") -> None:
    """Refuse a (width, height) over ``max_pixels`` with the limit and how to get past it."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise LeditsError(
            f"{where}the image is {w}×{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
            "downscale it, pass a smaller --height/--width (height=, width=), or raise the limit "
            "with --max-pixels (max_pixels=)"
        )


def to_rgb(im: Image.Image) -> Image.Image:
    """Upright 8-bit RGB copy of ``im``.

    EXIF orientation is applied (phone photos); 16-bit and 32-bit integer grayscale (``I;16``,
    ``I``) is scaled from 0–65535 to 0–255 and float grayscale (``F``) from 0–1 (or 0–255 when
    its values exceed 1), instead of Pillow's clipping to white; CMYK and palettes are converted;
    transparent pixels are composited on white (not left black).
    """
    if im.width == 0 or im.height == 0:
        raise LeditsError("the image is empty (zero width or height)")
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F" and np.nanmax(arr, initial=0) <= 1.0:
            arr = arr * 255.0
        elif im.mode != "F" and (im.mode.startswith("I;16") or arr.max(initial=0) > 255):
            arr = arr / 257.0
        if not np.isfinite(arr).all():
            raise LeditsError("the image holds NaN or infinite values")
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def as_pixel_batch(images: ImageInput) -> list[torch.Tensor]:
    """Any supported input → list of (3, H, W) float tensors in [0, 1] (one per image).

    Tensors: (3, H, W) or (B, 3, H, W) in [0, 1]. Arrays: (H, W), (H, W, 3) or (B, H, W, 3),
    uint8 or float in [0, 1]. A list means a batch.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise LeditsError("no images given")
        return [t for im in images for t in as_pixel_batch(im)]
    if isinstance(images, (str, os.PathLike)):
        images = open_image(images)
    if isinstance(images, Image.Image):
        images = np.asarray(to_rgb(images))
    if isinstance(images, np.ndarray):
        arr = images
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise LeditsError(f"image arrays must be (H, W, 3) or (B, H, W, 3); got {images.shape}")
        images = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(0, 3, 1, 2)
    if isinstance(images, torch.Tensor):
        t = images.detach().float().cpu()
        if t.dim() == 3:
            t = t[None]
        if t.dim() != 4 or t.shape[1] != 3:
            raise LeditsError(f"image tensors must be (3, H, W) or (B, 3, H, W); got {tuple(images.shape)}")
        if t.numel() == 0:
            raise LeditsError("the image is empty (zero width or height)")
        if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise LeditsError("image values must be finite and in [0, 1] (floats) or 0–255 (uint8 arrays)")
        return list(t)
    raise LeditsError(f"unsupported image input {type(images).__name__}; pass a path, PIL image, array or tensor")


def target_size(
    pixels: list[torch.Tensor],
    height: int | None,
    width: int | None,
    multiple: int,
    max_pixels: int | None = defaults.MAX_PIXELS,
) -> tuple[int, int]:
    """The processing size: given, or each side rounded down to ``multiple`` (same for the batch);
    refused over ``max_pixels`` (None: no limit)."""
    for name, v in (("height", height), ("width", width)):
        if v is not None and (not isinstance(v, int) or v <= 0 or v % multiple):
            raise LeditsError(f"{name} must be a positive multiple of {multiple} for this model; got {v!r}")
    sizes = {
        (height or (p.shape[1] // multiple) * multiple, width or (p.shape[2] // multiple) * multiple) for p in pixels
    }
    if len(sizes) > 1:
        raise LeditsError(
            f"the images would be processed at different sizes {sorted(sizes)}; pass height= and width= "
            "to resize them all to one size"
        )
    size = sizes.pop()
    check_pixels((size[1], size[0]), max_pixels)
    if min(size) < multiple:
        raise LeditsError(f"the image is too small: each side needs at least {multiple} pixels for this model")
    return size


def centre_crop(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The largest centred part of an image (3, H, W) with the aspect of ``size`` (height, width)."""
    height, width = pixels.shape[-2:]
    if width * size[0] > height * size[1]:  # wider than ``size``: the sides go
        h, w = height, height * size[1] // size[0]
    else:
        h, w = width * size[0] // size[1], width
    top, left = (height - h) // 2, (width - w) // 2
    return pixels[..., top : top + h, left : left + w]


def resize_pixels(pixels: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Stack images (3, H, W) in [0, 1], resizing (bicubic, antialiased) where needed → (B, 3, h, w)."""
    out = []
    for p in pixels:
        if tuple(p.shape[1:]) != tuple(size):
            p = F.interpolate(p[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
        out.append(p.clamp(0, 1))
    return torch.stack(out)


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [−1, 1] → PIL images."""
    arr = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def load_mask(mask: Any) -> torch.Tensor:
    """A user mask as a float tensor in [0, 1]: a path, PIL image, array or tensor of any size."""
    if isinstance(mask, (str, os.PathLike)):
        mask = open_image(mask).convert("L")
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0))
    if not isinstance(mask, torch.Tensor):
        raise LeditsError(f"user_mask must be a path, PIL image, array or tensor; got {type(mask).__name__}")
    if mask.numel() == 0 or not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise LeditsError("user_mask values must be in [0, 1] (1 = may be edited)")
    return mask.float()


def save_image(image: Image.Image, path: str | os.PathLike[str], recipe: dict[str, Any]) -> Path:
    """Write ``image`` atomically (:func:`leditspp.files.atomic_write`), in the format its suffix
    names; PNGs carry ``recipe`` as JSON text under :data:`PNG_KEY`."""
    path = Path(path)
    options: dict[str, Any] = {"format": Image.registered_extensions()[path.suffix.lower()]}
    if options["format"] == "PNG":
        options["pnginfo"] = PngImagePlugin.PngInfo()
        options["pnginfo"].add_text(PNG_KEY, json.dumps(recipe))
    return atomic_write(path, lambda tmp: image.save(tmp, **options))


def png_recipe_text(path: str | os.PathLike[str]) -> str | None:
    """The recipe text (JSON) a PNG written by leditspp carries under :data:`PNG_KEY`; None where
    there is none. Raises ``OSError`` (or PIL's ``UnidentifiedImageError``) for an unreadable file."""
    with Image.open(path) as im:
        return getattr(im, "text", {}).get(PNG_KEY)


def mask_overlays(
    image: Image.Image, masks: torch.Tensor, color: tuple[int, int, int] = (255, 0, 80)
) -> list[Image.Image]:
    """Each concept's mask (E, h, w) over a dimmed copy of ``image``, upsampled to its size."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    overlays = []
    for mask in masks.float().cpu().numpy():
        m = np.asarray(Image.fromarray(mask * 255).convert("L").resize(image.size, Image.NEAREST)) > 127
        out = base * 0.45
        out[m] = base[m] * 0.35 + np.array(color, dtype=np.float32) * 0.65
        overlays.append(Image.fromarray(out.round().astype(np.uint8)))
    return overlays
