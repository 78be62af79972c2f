"""The shapes world: procedural scenes, captions and ground truth for the built-in demo model.

A scene is a plain background (white, gray or black) with 1–3 objects — {circle, square,
triangle} × {red, green, blue, yellow, purple, orange}, each colour at most once per scene, axis
aligned, never overlapping — rendered without anti-aliasing, so every pixel is either the
background or exactly one palette colour and each object's mask is exact. Everything is a pure
function of the seed.

The pixel analysis (:func:`classify_pixels`, :func:`find_objects`) reads images back in the same
terms: nearest palette colour per pixel, and a shape from the fill ratio of a colour's region
(square ≈ 1, circle ≈ π/4, triangle ≈ ½ of the bounding box).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 50, 180),
    "orange": (250, 130, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "gray": (128, 128, 128), "black": (0, 0, 0)}
SIZE = 128  # px; the demo model's native resolution
FILL_RATIO = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}


@dataclass(frozen=True)
class ShapeObject:
    """One object: colour, shape and its box (x0, y0, x1, y1), pixel coordinates, end exclusive."""

    color: str
    shape: str
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A rendered scene. ``masks`` is (K, H, W) bool, one exact mask per object in ``objects`` order."""

    image: Image.Image
    background: str
    objects: tuple[ShapeObject, ...]
    masks: np.ndarray

    @property
    def caption(self) -> str:
        return caption(self.objects, self.background)


def caption(objects: tuple[ShapeObject, ...] | list[ShapeObject], background: str | None) -> str:
    """ "a red circle, a blue square and a green triangle on a gray background"."""
    names = [f"a {o.name}" for o in objects]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return text if background is None else f"{text} on a {background} background"


def short_caption(objects: tuple[ShapeObject, ...] | list[ShapeObject]) -> str:
    """The concept form an edit uses: "red circle and blue square"."""
    return " and ".join(o.name for o in objects)


def draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = obj.box
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=fill)


def render(objects: tuple[ShapeObject, ...], background: str, size: int = SIZE) -> Scene:
    """Draw ``objects`` on ``background``; masks come from drawing each object alone."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    masks = []
    for obj in objects:
        draw_object(draw, obj, COLORS[obj.color])
        alone = Image.new("L", (size, size), 0)
        draw_object(ImageDraw.Draw(alone), obj, 255)
        masks.append(np.asarray(alone) > 0)
    return Scene(image, background, objects, np.stack(masks) if masks else np.zeros((0, size, size), bool))


def random_objects(
    rng: random.Random, count: int, size: int = SIZE, avoid: tuple[ShapeObject, ...] = ()
) -> tuple[ShapeObject, ...]:
    """``count`` objects with distinct colours (also distinct from ``avoid``), boxes apart by ≥ 4 px."""
    objects = list(avoid)
    colors = [c for c in COLORS if c not in {o.color for o in avoid}]
    rng.shuffle(colors)
    for color in colors[:count]:
        for _ in range(200):
            side = rng.randint(size * 7 // 32, size * 3 // 8)  # 28–48 px at 128
            x0, y0 = rng.randint(4, size - side - 4), rng.randint(4, size - side - 4)
            box = (x0, y0, x0 + side, y0 + side)
            if all(_apart(box, o.box, 4) for o in objects):
                objects.append(ShapeObject(color, rng.choice(SHAPES), box))
                break
    return tuple(objects[len(avoid) :])


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def scene(seed: int, size: int = SIZE, count: int | None = None, background: str | None = None) -> Scene:
    """The scene of ``seed``: 1–3 objects (or ``count``) on a random (or given) background."""
    rng = random.Random(seed)
    count = rng.randint(1, 3) if count is None else count
    background = rng.choice(list(BACKGROUNDS)) if background is None else background
    return render(random_objects(rng, count, size), background, size)


def _nearest(image: Image.Image | np.ndarray, background: str, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) index of each pixel's nearest palette entry (0 the background, i + 1 ``COLORS``' i-th)
    and (H, W) bool: further than ``max_distance`` (RGB Euclidean) from every entry."""
    rgb = np.asarray(image, dtype=np.float32)[..., :3]
    palette = np.array([BACKGROUNDS[background], *COLORS.values()], dtype=np.float32)
    dist = np.linalg.norm(rgb[:, :, None, :] - palette[None, None], axis=-1)
    return dist.argmin(-1), dist.min(-1) > max_distance


def classify_pixels(image: Image.Image | np.ndarray, background: str, max_distance: float = 80.0) -> np.ndarray:
    """(H, W) int: index into ``list(COLORS)`` of each pixel's nearest palette colour, −1 for the
    background or a pixel further than ``max_distance`` (RGB Euclidean) from every colour."""
    nearest, far = _nearest(image, background, max_distance)
    return np.where(far | (nearest == 0), -1, nearest - 1)


def color_mask(image: Image.Image | np.ndarray, background: str, color: str) -> np.ndarray:
    """(H, W) bool: the pixels read as ``color``."""
    return classify_pixels(image, background) == list(COLORS).index(color)


def background_mask(image: Image.Image | np.ndarray, background: str, max_distance: float = 80.0) -> np.ndarray:
    """(H, W) bool: the pixels read as the ``background`` colour itself (nearest of the palette and
    within ``max_distance``) — not merely "no object colour", which a smudge also is."""
    nearest, far = _nearest(image, background, max_distance)
    return (nearest == 0) & ~far


def shape_of(mask: np.ndarray) -> str | None:
    """The shape whose fill ratio (area / bounding-box area) is nearest that of ``mask``."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    ratio = len(ys) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    return min(FILL_RATIO, key=lambda s: abs(FILL_RATIO[s] - ratio))


def find_objects(image: Image.Image | np.ndarray, background: str, min_pixels: int = 60) -> dict[str, str | None]:
    """{colour: shape} for every palette colour covering at least ``min_pixels`` pixels."""
    labels = classify_pixels(image, background)
    found: dict[str, str | None] = {}
    for i, color in enumerate(COLORS):
        mask = labels == i
        if mask.sum() >= min_pixels:
            found[color] = shape_of(_largest_component(mask))
    return found


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``mask`` (so stray pixels do not spoil the fill ratio)."""
    labels = np.zeros(mask.shape, np.int32)
    best, best_size, current = 0, 0, 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if labels[y, x]:
            continue
        current += 1
        stack, size = [(y, x)], 0
        labels[y, x] = current
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best
