"""The ``shapes`` suite: LEDITS++ on the demo world's scenes, measured against exact ground truth.

No data is needed: scene ``k`` is :func:`leditspp.demo.shapes.scene` of seed ``k`` (held out: the demo
model trained on seeds ≥ 1,000,000). Every edited image is read back by pixel analysis against the
palette (:mod:`leditspp.demo.shapes`). Per scene, one item per edit:

    reconstruction  no edits: max |Δ| of the latents and of the decoded pixels, and the VAE's own
                    round trip (mean |Δ| of the decoded input from the rendered scene)
    add             "+<colour> <shape>" (a colour not in the scene): success when ≥ 60 px of it
                    appear; the requested shape; change_ratio = mean |Δ| outside the new object's
                    box (dilated by 6 px) ÷ inside it (locality: lower is better); others_kept =
                    the fraction of the other objects' pixels that keep their colour
    remove          "-<colour> <shape>" (an object of the scene): gone = fraction of its pixels
                    that lost its colour, cleared = fraction that reads as the background (an
                    object turned orange is gone but not cleared), success when cleared ≥ 0.8;
                    change_ratio, others_kept; mask_iou of the last step's mask and mask_iou_mean
                    of the mask averaged over steps (≥ ½) with the object's exact mask — once per
                    mask mode (intersect, attention, noise)
    recolour        "-<old> <shape>", "+<new> <shape>": success when ≥ ½ of the object reads as
                    the new colour
    multi           add one object and remove another at once: both succeed (the removed one's
                    pixels cleared to the background or taken by the added colour: a replacement)

The choices per scene (which colour to add, which object to remove…) are drawn from
``random.Random(seed)`` in one fixed order, as ``benchmarks/demo_quality.py`` drew them. An edit
that diverged (NaN latents, a one-colour image: "gone" would read 1.0) is a failed item (:mod:`.checks`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..caching import LRUCache
from ..demo import shapes
from ..divergence import check_edited
from ..errors import LeditsError, is_int
from ..jobs import Item
from .checks import check_given, preserve_of, whole
from .runner import Row, expand_sweep
from .suites import Plan, Request, first

SUITE = "shapes"
SCENES = 20  # scenes of a run that gives no number
DILATE = 6  # px around an object's box that still count as "inside" for change_ratio
MIN_ADDED = 60  # px of a colour that count as an added object
REMOVED = 0.8  # fraction of a removed object's pixels that must read as the background
MASK_MODES = ("intersect", "attention", "noise")
EDIT_TYPES = {  # id slug → edit type (the summary's groups)
    "reconstruction": "reconstruction",
    "add": "add",
    "remove": "remove",
    "remove-attention": "remove (attention mask)",
    "remove-noise": "remove (noise mask)",
    "recolour": "recolour",
    "multi": "multi",
}
SWEEPABLE = ("scale", "threshold", "steps", "skip", "preserve")
METRICS = (
    "success",
    "add_shape",
    "gone",
    "cleared",
    "change_ratio",
    "others_kept",
    "mask_iou",
    "mask_iou_mean",
    "recon_latent",
    "recon_pixel",
    "vae_roundtrip",
)
PLOT = ("change_ratio", "success")  # the report's trade-off plot: locality (x) against success (y)


@dataclass(frozen=True)
class ScenePlan:
    """What the suite does to one scene, drawn once from ``random.Random(seed)``."""

    add: tuple[str, str]  # (colour, shape) to add
    remove: int  # index of the object to remove (and recolour)
    recolour_to: str
    multi_add: tuple[str, str]

    @classmethod
    def of(cls, scene: shapes.Scene, seed: int) -> ScenePlan:
        rng = random.Random(seed)
        absent = [c for c in shapes.COLORS if c not in {o.color for o in scene.objects}]
        add = (rng.choice(absent), rng.choice(shapes.SHAPES))
        remove = rng.randrange(len(scene.objects))
        to = rng.choice(absent)
        multi_color = rng.choice([c for c in absent if c != to] or absent)
        return cls(add, remove, to, (multi_color, rng.choice(shapes.SHAPES)))


def items(scenes: int, params: dict[str, Any], first_seed: int = 0) -> list[Item]:
    """One item per scene and edit, scenes ``first_seed …``; ``params``: steps, skip, scale,
    threshold (before any sweep)."""
    if not is_int(scenes) or scenes < 1:
        raise LeditsError(f"--scenes must be a whole number ≥ 1; got {scenes!r}")
    return [
        Item(f"scene{seed:04d}.{slug}", SUITE, edit_type, dict(params), data=seed, group=f"scene{seed:04d}")
        for seed in range(first_seed, first_seed + scenes)
        for slug, edit_type in EDIT_TYPES.items()
    ]


def check_settings(flags: dict[str, Any], sweep: dict[str, list[float]], recommended: dict[str, Any]) -> None:
    """Refuse, before the model loads, sweep keys the suite does not read and any steps, skip,
    scale or threshold (a flag, a sweep value, the model's recommended) that every item would fail with."""
    for key in sweep:
        if key not in SWEEPABLE:
            raise LeditsError(f"the shapes suite cannot sweep {key!r}; sweepable: {', '.join(SWEEPABLE)}")
    check_given(flags, sweep, {k: recommended[k] for k in SWEEPABLE if k in recommended})


def check_metrics(names: list[str] | None) -> None:
    """Refuse metric names the suite does not measure."""
    unknown = [n for n in names or [] if n not in METRICS]
    if unknown:
        raise LeditsError(f"the shapes suite has no metric {', '.join(unknown)}; choose from {', '.join(METRICS)}")


class ShapesSuite:
    """The suite as :class:`~.suites.Suite`: built in (no DATA), measured by pixels (no metric models)."""

    name = SUITE

    def check_data(self, data: str | None) -> None:
        if data:
            raise LeditsError(f"the shapes suite is built in and takes no DATA; drop {data!r}")

    def plan(self, request: Request, recommended: dict[str, Any]) -> Plan:
        """The scenes' items with the settings given over the model's ``recommended``, checked."""
        metrics = _metric_names(request.metrics)
        check_metrics(metrics)
        if request.clip_model or request.dino_model:
            raise LeditsError("--clip-model/--dino-model are for tedbench and piebench; shapes measures by pixels")
        given, sweep = request.settings or {}, request.sweep or {}
        check_settings(given, sweep, recommended)
        params = {k: recommended[k] for k in ("steps", "skip", "scale", "threshold")} | given
        scenes = SCENES if request.scenes is None else request.scenes
        return Plan(
            expand_sweep(first(items(scenes, params), request.limit), sweep),
            lambda editor: ShapesEvaluator(editor, metrics),
            f"shapes, {scenes} scenes",
            PLOT,
        )


def _metric_names(metrics: str | Sequence[str] | None) -> list[str] | None:
    """Metric names from a comma-separated text or a sequence (None, or none given: all)."""
    if not metrics:
        return None
    names = metrics.split(",") if isinstance(metrics, str) else metrics
    return [m.strip() for m in names if m.strip()]


class ShapesEvaluator:
    """``evaluate_item`` of the suite: item → :class:`Row`, over the public :class:`Editor` API.

    Inversions are cached by (scene, steps, skip): the edit types and sweep values of a scene
    share one (the runner hands a scene's items out together); results depend on the item alone.
    ``metrics``: keep only these (None: all).
    """

    def __init__(self, editor: Any, metrics: list[str] | None = None) -> None:
        self.editor = editor
        self.metrics = metrics
        self.inversions: LRUCache[Any] = LRUCache()

    def __call__(self, item: Item) -> Row:
        seed = int(item.data)
        scene = shapes.scene(seed)
        plan = ScenePlan.of(scene, seed)
        inversion = self._invert(scene, seed, item.params)
        slug = item.id.split(".")[1]
        row = MEASURES[slug](self.editor, inversion, scene, plan, item.params)
        if self.metrics is not None:
            row = Row({k: v for k, v in row.metrics.items() if k in self.metrics or k not in METRICS}, row.images)
        return row

    def _invert(self, scene: shapes.Scene, seed: int, params: dict[str, Any]) -> Any:
        steps, skip = whole(params["steps"]), float(params["skip"])
        return self.inversions.get(
            (seed, steps, skip), lambda: self.editor.invert(scene.image, steps=steps, skip=skip, seed=0)
        )


# -- one function per edit type: (editor, inversion, scene, plan, params) → Row ----------------------


def _edit(
    editor: Any, inv: Any, scene: shapes.Scene, concepts: list[str], params: dict[str, Any], **options: Any
) -> Any:
    """``editor.edit(inv, concepts, **options)`` with the item's ``preserve``, refused if it
    diverged (a failed item, never a measured one); its images at the scene's size."""
    result = editor.edit(inv, concepts, preserve=preserve_of(params), **options)
    images = [at_scene_size(im, scene) for im in result.images]
    check_edited(result.latents, images[0], scene.image)
    return result if all(a is b for a, b in zip(images, result.images, strict=True)) else replace(result, images=images)


def at_scene_size(image: Image.Image, scene: shapes.Scene) -> Image.Image:
    """``image`` resized (bicubic) to the scene's size where a model returns another (DeepFloyd IF:
    its stage I's 64², its upscaler's 256²), so every measure reads scene coordinates."""
    return image if image.size == scene.image.size else image.resize(scene.image.size, Image.Resampling.BICUBIC)


def _concept(sign: str, color: str, shape: str, params: dict[str, Any]) -> str:
    return f"{sign}{color} {shape}:{params['scale']}@{params['threshold']}"


def _reconstruction(editor: Any, inv: Any, scene: shapes.Scene, plan: ScenePlan, params: dict[str, Any]) -> Row:
    same = _edit(editor, inv, scene, [], params)
    source = at_scene_size(editor.decode(inv.source_latents)[0], scene)
    return Row(
        {
            "recon_latent": (same.latents - inv.source_latents).abs().max().item(),
            "recon_pixel": float(np.abs(_pixels(same.images[0]) - _pixels(source)).max()),
            "vae_roundtrip": float(np.abs(_pixels(source) - _pixels(scene.image)).mean()),
        },
        {"input": scene.image, "edited": same.images[0]},
    )


def _add(editor: Any, inv: Any, scene: shapes.Scene, plan: ScenePlan, params: dict[str, Any]) -> Row:
    color, shape = plan.add
    result = _edit(editor, inv, scene, [_concept("+", color, shape, params)], params)
    out = result.images[0]
    found = shapes.color_mask(out, scene.background, color)
    success = bool(found.sum() >= MIN_ADDED)
    metrics: dict[str, Any] = {"success": success, "add_shape": None, "change_ratio": None}
    if success:
        metrics["add_shape"] = shapes.find_objects(out, scene.background).get(color) == shape
        metrics["change_ratio"] = change_ratio(scene.image, out, box_mask(bbox(found), out.size[0]))
    metrics["others_kept"] = others_kept(out, scene)
    return Row(metrics, _images(scene, out, result.masks[0, 0]))


def _remove_in(mode: str) -> Any:
    """The remove measurement with ``mode``'s masks."""

    def measure(editor: Any, inv: Any, scene: shapes.Scene, plan: ScenePlan, params: dict[str, Any]) -> Row:
        k = plan.remove
        obj, truth = scene.objects[k], scene.masks[k]
        result = _edit(editor, inv, scene, [_concept("-", obj.color, obj.shape, params)], params, mask_mode=mode)
        out = result.images[0]
        cleared = cleared_fraction(out, scene, k)
        metrics = {
            "mask_mode": mode,
            "success": cleared >= REMOVED,
            "gone": colour_gone(out, scene, k),
            "cleared": cleared,
            "change_ratio": change_ratio(scene.image, out, box_mask(obj.box, out.size[0])),
            "others_kept": others_kept(out, scene, skip=k),
            "mask_iou": iou(result.masks[0, 0], truth),
            "mask_iou_mean": iou(result.mask_means[0, 0] >= 0.5, truth),
        }
        return Row(metrics, _images(scene, out, result.masks[0, 0]))

    return measure


def _recolour(editor: Any, inv: Any, scene: shapes.Scene, plan: ScenePlan, params: dict[str, Any]) -> Row:
    k = plan.remove
    obj, truth = scene.objects[k], scene.masks[k]
    concepts = [_concept("-", obj.color, obj.shape, params), _concept("+", plan.recolour_to, obj.shape, params)]
    result = _edit(editor, inv, scene, concepts, params)
    out = result.images[0]
    recoloured = (shapes.color_mask(out, scene.background, plan.recolour_to) & truth).sum() / truth.sum()
    metrics = {"success": bool(recoloured >= 0.5), "others_kept": others_kept(out, scene, skip=k)}
    return Row(metrics, _images(scene, out, result.masks[0, 0]))


def _multi(editor: Any, inv: Any, scene: shapes.Scene, plan: ScenePlan, params: dict[str, Any]) -> Row:
    k = plan.remove
    obj = scene.objects[k]
    color, shape = plan.multi_add
    concepts = [_concept("+", color, shape, params), _concept("-", obj.color, obj.shape, params)]
    result = _edit(editor, inv, scene, concepts, params)
    out = result.images[0]
    added = shapes.color_mask(out, scene.background, color).sum() >= MIN_ADDED
    cleared = cleared_fraction(out, scene, k, also=color)
    metrics = {"success": bool(added and cleared >= REMOVED), "gone": colour_gone(out, scene, k), "cleared": cleared}
    return Row(metrics, _images(scene, out, result.masks[1, 0]))


MEASURES = {
    "reconstruction": _reconstruction,
    "add": _add,
    "remove": _remove_in("intersect"),
    "remove-attention": _remove_in("attention"),
    "remove-noise": _remove_in("noise"),
    "recolour": _recolour,
    "multi": _multi,
}


# -- pixel analysis ------------------------------------------------------------------------------------


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def colour_gone(image: Image.Image, scene: shapes.Scene, k: int) -> float:
    """Fraction of object ``k``'s pixels no longer read as its colour."""
    truth = scene.masks[k]
    return float(1 - (shapes.color_mask(image, scene.background, scene.objects[k].color) & truth).sum() / truth.sum())


def cleared_fraction(image: Image.Image, scene: shapes.Scene, k: int, also: str | None = None) -> float:
    """Fraction of object ``k``'s pixels that read as the background (or as colour ``also``: an
    added object that took the removed one's place)."""
    truth = scene.masks[k]
    free = shapes.background_mask(image, scene.background)
    if also is not None:
        free |= shapes.color_mask(image, scene.background, also)
    return float((free & truth).sum() / truth.sum())


def box_mask(box: tuple[int, int, int, int], size: int, dilate: int = DILATE) -> np.ndarray:
    """(size, size) bool: the box (x0, y0, x1, y1) grown by ``dilate`` px."""
    x0, y0, x1, y1 = box
    m = np.zeros((size, size), bool)
    m[max(0, y0 - dilate) : y1 + dilate, max(0, x0 - dilate) : x1 + dilate] = True
    return m


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1), end exclusive, of a non-empty (H, W) bool mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def change_ratio(before: Image.Image, after: Image.Image, region: np.ndarray) -> float:
    """Mean |Δ| (RGB, 0–255) outside ``region`` (H, W) ÷ mean |Δ| inside it."""
    delta = np.abs(_pixels(after) - _pixels(before)).mean(-1)
    inside = delta[region].mean()
    return float(delta[~region].mean() / max(inside, 1e-6))


def others_kept(image: Image.Image, scene: shapes.Scene, skip: int | None = None) -> float:
    """Mean over the scene's objects (but ``skip``) of the fraction of their pixels still read as
    their colour; 1.0 when there is no other object."""
    kept = [
        float((shapes.color_mask(image, scene.background, o.color) & m).sum() / m.sum())
        for i, (o, m) in enumerate(zip(scene.objects, scene.masks, strict=True))
        if i != skip
    ]
    return float(np.mean(kept)) if kept else 1.0


def iou(mask: torch.Tensor, truth: np.ndarray) -> float:
    """IoU of a latent-grid mask (h, w), upsampled to the image, with a ground-truth (H, W) mask."""
    up = _upsample(mask, truth.shape) > 0.5
    return float((up & truth).sum() / max((up | truth).sum(), 1))


def _upsample(mask: torch.Tensor, size: tuple[int, ...]) -> np.ndarray:
    """(h, w) mask → (H, W) float array, nearest neighbour."""
    return F.interpolate(mask[None, None].float(), size=tuple(size), mode="nearest")[0, 0].cpu().numpy()


def _images(scene: shapes.Scene, edited: Image.Image, mask: torch.Tensor) -> dict[str, Image.Image]:
    """Input, edited image and the (first) concept's mask at image size, for the report's grid."""
    up = _upsample(mask, scene.masks.shape[1:])
    mask_image = Image.fromarray((np.clip(up, 0, 1) * 255).astype(np.uint8), mode="L")
    return {"input": scene.image, "edited": edited, "mask": mask_image}
