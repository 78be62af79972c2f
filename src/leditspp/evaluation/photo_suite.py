"""The photo benchmarks ``tedbench`` and ``piebench``: manifest items edited and scored.

:mod:`.manifests` reads the published folders into :class:`~.manifests.EvalItem` values; this
module turns them into runner items and gives the pure ``evaluate_item``: invert the image with
the item's settings, apply its edits, and score the edited image against the input (resized to
the processed size) with the chosen :mod:`.metrics`. Where the benchmark gives an edited region
(PIE-Bench's mask) the fidelity metrics (PSNR, LPIPS, MSE, SSIM, structure distance) look only
outside it and ``clip_score_edit_region`` inside it, as PIE-Bench's evaluation does. An edit that
diverged (NaN latents, a one-colour image) is a failed item, not a score (:mod:`.checks`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import defaults
from ..caching import LRUCache, image_key
from ..divergence import check_edited
from ..edits import Edit
from ..errors import LeditsError
from ..io import open_image
from ..jobs import Item
from . import metrics as M
from .checks import check_given, preserve_of, whole
from .manifests import READERS, EvalItem
from .runner import Row, expand_sweep
from .suites import Plan, Request, first

#: The metrics a run computes without --metrics: the paper's pair for TEdBench++, PIE-Bench's set.
DEFAULT_METRICS = {
    "tedbench": ("clip_score", "lpips", "time"),
    "piebench": ("psnr", "lpips", "mse", "ssim", "clip_score", "clip_score_edit_region", "structure_distance", "time"),
}
CLIP_MODEL = "openai/clip-vit-large-patch14"  # --clip-model default
DINO_MODEL = "facebook/dino-vitb8"  # --dino-model default, as PIE-Bench
SWEEPABLE = ("scale", "threshold", "steps", "skip", "preserve")
PLOT = ("lpips", "clip_score")  # the paper's Fig. 5: CLIP score against LPIPS over the scales


class PhotoSuite:
    """A photo benchmark as :class:`~.suites.Suite`: its manifest read from DATA and checked, the
    metric models loaded, all before the editor loads."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check_data(self, data: str | None) -> None:
        if not data:
            raise LeditsError(
                f"the {self.name} suite needs DATA, the benchmark's folder: leditspp eval {self.name} DIR -o OUT"
            )
        if not Path(data).is_dir():
            raise LeditsError(f"DATA {data!r} is not a folder; give the {self.name} benchmark's folder")

    def plan(self, request: Request, recommended: dict[str, Any]) -> Plan:
        """The manifest's items with the settings given over its own, checked; the metric models loaded."""
        if request.scenes is not None:
            raise LeditsError(f"--scenes is for the shapes suite; {self.name} takes its items from DATA (see --limit)")
        given, sweep = request.settings or {}, request.sweep or {}
        check_settings(given, sweep, {k: recommended[k] for k in ("steps", "skip")})
        names = M.check_metrics(request.metrics) if request.metrics else DEFAULT_METRICS[self.name]
        entries = READERS[self.name](request.data)
        todo = expand_sweep(first(items(entries, self.name, given), request.limit), sweep)
        scorers = load_scorers(
            names, clip_model=request.clip_model, dino_model=request.dino_model, device=request.device
        )
        fallback = {"steps": recommended["steps"], "skip": recommended["skip"], "seed": defaults.SEED}
        return Plan(
            todo,
            lambda editor: PhotoEvaluator(editor, names, scorers, fallback),
            f"{self.name} ({request.data})",
            PLOT,
            with_pixels,
        )


def items(entries: list[EvalItem], suite: str, overrides: dict[str, Any]) -> list[Item]:
    """Runner items of manifest entries; ``overrides`` (steps, skip, scale, threshold given on the
    command line) replace the manifest's values."""
    out = []
    for e in entries:
        params = {**e.params, **overrides}
        out.append(Item(e.item_id, suite, e.edit_type or suite, params, data=e, group=str(e.image_path)))
    return out


def with_pixels(item: Item) -> Item:
    """The item with its image read (on the Ray driver, just before a worker gets it), so workers
    on machines that cannot see DATA still edit it."""
    return replace(item, data=replace(item.data, pixels=open_image(item.data.image_path)))


def check_settings(flags: dict[str, Any], sweep: dict[str, list[float]], recommended: dict[str, Any]) -> None:
    """Refuse, before the model loads, sweep keys the photo suites do not read and any steps,
    skip, scale or threshold (a flag, a sweep value, the model's recommended) every item would
    fail with; the manifest's own rows are checked as they are read (:mod:`.manifests`)."""
    for key in sweep:
        if key not in SWEEPABLE:
            raise LeditsError(f"the photo suites cannot sweep {key!r}; sweepable: {', '.join(SWEEPABLE)}")
    check_given(flags, sweep, recommended)


def load_scorers(names: tuple[str, ...], *, clip_model: str | None, dino_model: str | None, device: Any) -> dict:
    """The metric models ``names`` need, loaded now so that a missing one stops the run before any
    edit (a LeditsError naming the flag), never a per-item failure or a silent zero."""
    scorers: dict[str, Any] = {}
    if any(n.startswith("clip") for n in names):
        scorers["clip"] = M.ClipScorer.from_pretrained(clip_model or CLIP_MODEL, device=device or "cpu")
    if "lpips" in names:
        scorers["lpips"] = M.LpipsScorer(device=device or "cpu")
    if "structure_distance" in names:
        scorers["structure"] = M.StructureScorer.from_pretrained(dino_model or DINO_MODEL, device=device or "cpu")
    return scorers


class PhotoEvaluator:
    """``evaluate_item`` of the photo suites: item → :class:`Row` (metrics and input / edited / mask images).

    Inversions are cached by (image, inversion settings), so the sweep values of an image share
    one; ``time`` still counts the inversion (its first computation's seconds), so it is the time
    of one edit from the image whether or not the inversion was cached.
    """

    def __init__(self, editor: Any, names: tuple[str, ...], scorers: dict[str, Any], defaults: dict[str, Any]) -> None:
        self.editor, self.names, self.scorers, self.defaults = editor, names, scorers, defaults
        self.inversions: LRUCache[tuple[Any, float]] = LRUCache()

    def __call__(self, item: Item) -> Row:
        entry: EvalItem = item.data
        image = entry.pixels if entry.pixels is not None else open_image(entry.image_path)
        params = {**self.defaults, **item.params}
        edits = [_with_params(e, params) for e in entry.edits]
        inversion, result, seconds = self._edit(entry, image, edits, params)
        edited = result.images[0]
        source = image.convert("RGB").resize(edited.size, Image.Resampling.BICUBIC)
        check_edited(result.latents, edited, source)  # a diverged edit is a failed item, never a scored row
        region = _region(entry.mask, edited.size)
        values = self._scores(_tensor(source), _tensor(edited), region, entry)
        if "latent_error" in self.names:
            same = self.editor.edit(inversion, [], decode=False)
            values.update(M.latent_error(same.latents, inversion.source_latents))
        if "time" in self.names:
            values["time"] = seconds
        values["edits"] = "; ".join(e.to_text() for e in edits)  # as applied, with any swept scale
        images = {"input": source, "edited": edited}
        if region is not None:
            images["mask"] = Image.fromarray(region.astype(np.uint8) * 255, mode="L")
        return Row(values, images)

    def _edit(
        self, entry: EvalItem, image: Image.Image, edits: list[Edit], p: dict[str, Any]
    ) -> tuple[Any, Any, float]:
        """Invert ``image`` with the settings ``p`` and apply ``edits``: (inversion, edit result, seconds)."""
        settings = {
            "steps": whole(p["steps"]),
            "skip": float(p["skip"]),
            "seed": p.get("seed", 0),
            "source_prompt": entry.source_prompt or "",
        }

        def invert() -> tuple[Any, float]:
            start = time.perf_counter()
            return self.editor.invert(image, **settings), time.perf_counter() - start

        key = (image_key(image), tuple(sorted(settings.items())))
        inversion, invert_seconds = self.inversions.get(key, invert)
        start = time.perf_counter()
        result = self.editor.edit(inversion, edits, preserve=preserve_of(p))
        return inversion, result, invert_seconds + time.perf_counter() - start

    def _scores(self, a: torch.Tensor, b: torch.Tensor, region: np.ndarray | None, entry: EvalItem) -> dict[str, Any]:
        """The chosen metrics of input ``a`` and edited ``b`` (1, 3, H, W): fidelity outside
        ``region`` (H, W) where there is one, CLIP with the target text."""
        outside = None if region is None else ~region
        fidelity = {"mse": M.mse, "psnr": M.psnr, "ssim": M.ssim}
        fidelity |= {"lpips": self.scorers.get("lpips"), "structure_distance": self.scorers.get("structure")}
        values = {name: float(fidelity[name](a, b, mask=outside)[0]) for name in self.names if name in fidelity}
        clip = self.scorers.get("clip")
        text = entry.target_prompt or ""
        if "clip_score" in self.names:
            values["clip_score"] = float(clip.text_score(b, [text])[0])
        if "clip_score_edit_region" in self.names and region is not None and region.any():
            values["clip_score_edit_region"] = float(clip.text_score(b, [text], mask=region)[0])
        if "clip_image" in self.names:
            values["clip_image"] = float(clip.image_similarity(a, b)[0])
        return values


def _with_params(edit: Edit, params: dict[str, Any]) -> Edit:
    """The edit with a swept or given scale / threshold."""
    return replace(edit, **{k: float(params[k]) for k in ("scale", "threshold") if k in params})


def _tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB → (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def _region(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """The benchmark's (H0, W0) bool mask resized (nearest) to the edited image's (W, H) ``size``."""
    if mask is None:
        return None
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127
