"""Image-editing metrics: pixel fidelity (MSE, PSNR, SSIM), latent reconstruction error, CLIP and LPIPS.

Images are float tensors (B, 3, H, W) in [0, 1]; every metric returns one value per image, (B,).
A ``mask`` restricts a metric to a region as PIE-Bench's evaluation does (Ju et al. 2024,
DirectInversion's ``MetricsCalculator``): both images are multiplied by the region and the metric
is taken over the whole frame, so numbers match the published tables; PIE-Bench's "unedited part"
is ``mask=~item.mask``. An empty region gives NaN, as there. Masks are (H, W), (B, H, W) or
(B, 1, H, W), bool or {0, 1}, True where the metric looks.

Pixel metrics use torchmetrics' functional API; CLIP is transformers' ``CLIPModel`` from a hub id
or local folder (:class:`ClipScorer`); LPIPS is torchmetrics' (:class:`LpipsScorer`); PIE-Bench's
structure distance uses a DINO ViT through transformers' ``ViTModel`` (:class:`StructureScorer`). A metric
whose model cannot be loaded raises :class:`~leditspp.errors.LeditsError` naming the flag that
fixes it — never a silent zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..errors import LeditsError

T = TypeVar("T")

#: Metric name → what it measures. ``--metrics`` takes a comma-separated subset.
METRICS: dict[str, str] = {
    "clip_score": "CLIP score of the edited image and the target text: 100·max(cos, 0) of their CLIP "
    "embeddings (Hessel et al. 2021; torchmetrics' and PIE-Bench's convention); higher = closer to the text",
    "clip_score_edit_region": "clip_score of the edited region only (image × mask), PIE-Bench's 'edit part'",
    "clip_image": "cosine similarity of the CLIP image embeddings of input and edited image; higher = closer",
    "lpips": "LPIPS (AlexNet) between input and edited image (Zhang et al. 2018); lower = more alike",
    "psnr": "peak signal-to-noise ratio of edited vs input image in dB (inf if identical); higher = more alike",
    "ssim": "structural similarity of edited vs input image (Wang et al. 2004), in [-1, 1]; higher = more alike",
    "mse": "mean squared error of edited vs input image, pixels in [0, 1]; lower = more alike",
    "structure_distance": "PIE-Bench's structure distance: MSE of the DINO ViT key self-similarities of input and "
    "edited image (Tumanyan et al. 2022); lower = same layout; needs --dino-model",
    "latent_error": "max and mean |Δ| between the reconstruction's latents and the encoded input latents",
    "time": "seconds per edit (inversion and edit), wall clock",
}

#: Metrics that need a model, and the flag that chooses it.
MODEL_FLAGS: dict[str, str] = {
    "clip_score": "--clip-model",
    "clip_score_edit_region": "--clip-model",
    "clip_image": "--clip-model",
    "lpips": "--metrics (leave lpips out)",
    "structure_distance": "--dino-model",
}


def check_metrics(names: str | Iterable[str]) -> tuple[str, ...]:
    """The metric names in ``names`` (a comma-separated text or a sequence), checked against :data:`METRICS`."""
    if isinstance(names, str):
        names = names.split(",")
    names = tuple(n.strip() for n in names if n.strip())
    if not names:
        raise LeditsError(f"--metrics is empty; choose from {', '.join(METRICS)}")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise LeditsError(f"unknown metric(s) {', '.join(unknown)} in --metrics; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


# --- pixel metrics ----------------------------------------------------------------------------


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    """Refuse image pairs that are not both (B, 3, H, W) of the same shape."""
    if a.dim() != 4 or a.shape[1] != 3 or a.shape != b.shape:
        raise LeditsError(
            f"metrics compare images shaped (B, 3, H, W) alike; got {tuple(a.shape)} and {tuple(b.shape)} "
            "— resize the edited image to the input's size first"
        )


def as_region(mask: torch.Tensor | np.ndarray, images: torch.Tensor) -> torch.Tensor:
    """A mask (H, W), (B, H, W) or (B, 1, H, W) as a float (B|1, 1, H, W) region for ``images`` (B, 3, H, W)."""
    m = torch.as_tensor(mask, device=images.device)
    if m.dim() == 2:
        m = m[None]
    if m.dim() == 3:
        m = m[:, None]
    if m.dim() != 4 or m.shape[1] != 1 or m.shape[-2:] != images.shape[-2:] or m.shape[0] not in (1, images.shape[0]):
        raise LeditsError(
            f"a metric mask must be (H, W), (B, H, W) or (B, 1, H, W) for images {tuple(images.shape)}; "
            f"got {tuple(torch.as_tensor(mask).shape)} — resize the mask to the image (nearest) first"
        )
    return m.to(images.dtype)


def _restrict(
    a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``a``, ``b`` (B, 3, H, W) times the region, and a (B,) bool that is False where the region is empty."""
    _check_pair(a, b)
    if mask is None:
        return a, b, torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
    region = as_region(mask, a)
    present = (region.flatten(1).sum(1) > 0).expand(a.shape[0])
    return a * region, b * region, present


def _nan_where_empty(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    return torch.where(present, values, torch.full_like(values, math.nan))


def mse(a: torch.Tensor, b: torch.Tensor, *, mask: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """Mean squared error per image: a, b (B, 3, H, W) in [0, 1] → (B,)."""
    a, b, present = _restrict(a, b, mask)
    return _nan_where_empty((a.float() - b.float()).pow(2).flatten(1).mean(1), present)


def psnr(a: torch.Tensor, b: torch.Tensor, *, mask: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """PSNR in dB per image, data range 1: a, b (B, 3, H, W) in [0, 1] → (B,); inf for identical images."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    a, b, present = _restrict(a, b, mask)
    values = peak_signal_noise_ratio(a.float(), b.float(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    return _nan_where_empty(values, present)


def ssim(a: torch.Tensor, b: torch.Tensor, *, mask: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, σ 1.5, data range 1): a, b (B, 3, H, W) in [0, 1] → (B,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b, present = _restrict(a, b, mask)
    values = structural_similarity_index_measure(a.float(), b.float(), data_range=1.0, reduction="none")
    return _nan_where_empty(values, present)


def latent_error(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Reconstruction error of latents a, b (B, C, h, w): ``{"latent_max_abs", "latent_mean_abs"}`` of |a − b|."""
    if a.shape != b.shape:
        raise LeditsError(f"latent_error compares latents of one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = (a.float() - b.float()).abs()
    return {"latent_max_abs": diff.max().item(), "latent_mean_abs": diff.mean().item()}


# --- CLIP -------------------------------------------------------------------------------------


def _loaded(load: Callable[[], T], what: str, fix: str) -> T:
    """``load()`` of a metric model, or a :class:`LeditsError`: "cannot load ``what`` (why); ``fix``"."""
    try:
        return load()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise LeditsError(f"cannot load {what} ({_first_line(e)}); {fix}") from None


class ClipScorer:
    """CLIP text-image and image-image similarity with transformers' ``CLIPModel``.

    Images are preprocessed by the model's own image processor from 8-bit pixels, as the images a
    benchmark saves and torchmetrics' ``CLIPScore`` (used by PIE-Bench) would see them.
    """

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> ClipScorer:
        """Load a CLIP model, its tokenizer and image processor from a hub id or a local folder."""
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        name = str(name_or_path)
        return _loaded(
            lambda: cls(
                CLIPModel.from_pretrained(name).to(device, dtype),
                AutoTokenizer.from_pretrained(name),
                AutoImageProcessor.from_pretrained(name),
            ),
            f"the CLIP model {name!r} for the CLIP metrics",
            "pass --clip-model with a hub id (e.g. openai/clip-vit-large-patch14) or a local folder holding a "
            "CLIPModel with its tokenizer and preprocessor_config.json, or leave the clip metrics out of --metrics",
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_embeds(
        self, images: torch.Tensor, *, mask: torch.Tensor | np.ndarray | None = None, crop: bool = False
    ) -> torch.Tensor:
        """Unit CLIP image embeddings: images (B, 3, H, W) in [0, 1] → (B, D).

        With ``mask`` the image is multiplied by it first (PIE-Bench's edit region); ``crop`` also
        cuts each image to its mask's bounding box, so the region fills CLIP's view.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise LeditsError(f"CLIP scores images shaped (B, 3, H, W); got {tuple(images.shape)}")
        pixels = [_to_uint8(x) for x in _regions(images, mask, crop)]
        inputs = self.image_processor(images=pixels, return_tensors="pt")
        values = inputs["pixel_values"].to(self.device, self.model.dtype)
        return _unit(_features(self.model.get_image_features(pixel_values=values)))

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        """Unit CLIP text embeddings: B texts (truncated to the model's context) → (B, D)."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        return _unit(_features(self.model.get_text_features(**tokens)))

    def text_score(
        self,
        images: torch.Tensor,
        texts: list[str],
        *,
        mask: torch.Tensor | np.ndarray | None = None,
        crop: bool = False,
    ) -> torch.Tensor:
        """CLIP score 100·max(cos, 0) of each image with its text: (B, 3, H, W), B texts → (B,)."""
        if len(texts) != images.shape[0]:
            raise LeditsError(f"text_score needs one text per image; got {len(texts)} for {images.shape[0]}")
        cos = (self.image_embeds(images, mask=mask, crop=crop) * self.text_embeds(texts)).sum(-1)
        return 100 * cos.clamp(min=0).float().cpu()

    def image_similarity(
        self, a: torch.Tensor, b: torch.Tensor, *, mask: torch.Tensor | np.ndarray | None = None, crop: bool = False
    ) -> torch.Tensor:
        """Cosine similarity of the CLIP embeddings of a and b, each (B, 3, H, W) in [0, 1] → (B,)."""
        if a.shape[0] != b.shape[0]:
            raise LeditsError(f"image_similarity pairs images one to one; got {a.shape[0]} and {b.shape[0]}")
        cos = (self.image_embeds(a, mask=mask, crop=crop) * self.image_embeds(b, mask=mask, crop=crop)).sum(-1)
        return cos.float().cpu()


def _regions(images: torch.Tensor, mask: torch.Tensor | np.ndarray | None, crop: bool) -> list[torch.Tensor]:
    """Each image (3, H, W) times its region, cut to the region's bounding box with ``crop``."""
    if mask is None:
        return list(images)
    region = as_region(mask, images).expand(images.shape[0], -1, -1, -1)
    out = []
    for image, m in zip(images * region, region, strict=True):
        rows, cols = torch.nonzero(m[0] > 0, as_tuple=True)
        if rows.numel() == 0:
            raise LeditsError("the CLIP region mask is empty; give a mask with at least one pixel inside")
        if crop:
            image = image[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        out.append(image)
    return out


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] → (H, W, 3) uint8, rounded as an 8-bit image file stores it."""
    return (image.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _features(out: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features``: a tensor (transformers 4) or its pooler_output (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --- LPIPS ------------------------------------------------------------------------------------


class LpipsScorer:
    """LPIPS (Zhang et al. 2018) through torchmetrics: its linear layers ship with torchmetrics; the
    backbone (AlexNet by default) is torchvision's ImageNet model, which torchvision downloads once
    into ``$TORCH_HOME/hub/checkpoints`` (offline: copy the file there)."""

    def __init__(self, net: str = "alex", *, device: str | torch.device = "cpu") -> None:
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self.metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).to(device)
        except (ImportError, ModuleNotFoundError, RuntimeError, OSError) as e:
            raise LeditsError(
                f"cannot load LPIPS ({_first_line(e)}); it needs torchvision built for your torch "
                "(pip install 'leditspp[lpips]') and the backbone's ImageNet weights, which torchvision downloads to "
                "$TORCH_HOME/hub/checkpoints (offline: copy them there) — or leave lpips out of --metrics"
            ) from None

    @torch.no_grad()
    def __call__(
        self, a: torch.Tensor, b: torch.Tensor, *, mask: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """LPIPS distance per image: a, b (B, 3, H, W) in [0, 1] → (B,); lower = more alike."""
        a, b, present = _restrict(a, b, mask)
        device = next(iter(self.metric.parameters())).device
        values = []
        for x, y in zip(a, b, strict=True):
            values.append(self.metric(x[None].float().to(device), y[None].float().to(device)).cpu())
            self.metric.reset()
        return _nan_where_empty(torch.stack(values), present.cpu())


# --- structure distance -----------------------------------------------------------------------

#: ImageNet normalisation of DINO's inputs.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class StructureScorer:
    """PIE-Bench's structure distance (Ju et al. 2024, after Splice, Tumanyan et al. 2022): the MSE
    between the cosine self-similarity matrices of a DINO ViT's last-layer keys for two images.

    Loaded as transformers' ``ViTModel`` (PIE-Bench uses DINO ViT-B/8: ``facebook/dino-vitb8``).
    Preprocessing is PIE-Bench's, kept for comparable numbers: pixels on the 0–255 scale (not
    0–1) normalised with ImageNet's mean and std, resized so the short side is 224 (long side at
    most 480). PIE-Bench reports the value × 10³.
    """

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        self.keys = _last_key_projection(model)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> StructureScorer:
        """Load a DINO ViT from a hub id or a local folder."""
        from transformers import ViTModel

        name = str(name_or_path)
        return _loaded(
            lambda: cls(ViTModel.from_pretrained(name, add_pooling_layer=False).to(device, dtype)),
            f"the DINO ViT {name!r} for the structure distance",
            "pass --dino-model with a hub id (facebook/dino-vitb8, as PIE-Bench) or a local folder holding a "
            "ViTModel, or leave structure_distance out of --metrics",
        )

    @torch.no_grad()
    def self_similarity(self, image: torch.Tensor) -> torch.Tensor:
        """Cosine self-similarity of the last layer's keys: image (3, H, W) in [0, 1] → (T, T), T tokens with CLS."""
        param = next(self.model.parameters())
        x = _dino_input(image).to(param.device, param.dtype)
        captured: list[torch.Tensor] = []
        handle = self.keys.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.model(pixel_values=x[None], interpolate_pos_encoding=True)
        finally:
            handle.remove()
        keys = captured[-1][0].float()  # (T, heads · head_dim), the heads' keys side by side
        unit = keys / keys.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        return unit @ unit.T

    def __call__(
        self, a: torch.Tensor, b: torch.Tensor, *, mask: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """Structure distance per image: a, b (B, 3, H, W) in [0, 1] → (B,); 0 for the same structure."""
        a, b, present = _restrict(a, b, mask)
        values = [
            torch.nn.functional.mse_loss(self.self_similarity(x), self.self_similarity(y)).cpu()
            for x, y in zip(a, b, strict=True)
        ]
        return _nan_where_empty(torch.stack(values), present.cpu())


def _last_key_projection(model: torch.nn.Module) -> torch.nn.Module:
    """The key projection of the ViT's last attention layer (``…attention.key`` in transformers 4,
    ``…attention.k_proj`` in 5)."""
    keys = [m for name, m in model.named_modules() if name.endswith(("attention.key", "attention.k_proj"))]
    if not keys:
        raise LeditsError(
            f"{type(model).__name__} has no attention key projection; "
            "--dino-model must name a ViT (facebook/dino-vitb8)"
        )
    return keys[-1]


def _dino_input(image: torch.Tensor) -> torch.Tensor:
    """PIE-Bench's DINO input: (3, H, W) in [0, 1] → (3, h, w), short side 224 (long ≤ 480), 0–255 scale normalised."""
    h, w = image.shape[-2:]
    short, long = sorted((h, w))
    new_short, new_long = 224, int(224 * long / short)
    if new_long > 480:
        new_short, new_long = int(480 * short / long), 480
    size = (new_short, new_long) if h <= w else (new_long, new_short)
    x = torch.nn.functional.interpolate(
        image[None].float() * 255, size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]
    mean = torch.tensor(_IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(_IMAGENET_STD, device=x.device)[:, None, None]
    return (x - mean) / std
