"""The web UI (``leditspp serve``): a Gradio app over one shared :class:`~leditspp.Editor`.

Importing this module loads nothing: the model is loaded at the first request, by one thread,
and shared by every user (Gradio's queue runs one job at a time on it). Inversions are cached,
keyed by the image's hash, the model and the inversion settings, so changing only the edits
re-runs only the edit loop.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import __version__, defaults
from .edits import Edit
from .errors import LeditsError

EXAMPLES_DIR = Path(__file__).resolve().parent.parent.parent / "examples"
CONCEPT_COLUMNS = ["concept", "direction", "scale", "threshold", "warm-up", "cool-down"]
MAX_PIXELS = 2048 * 2048


@dataclass
class EditorService:
    """The model, loaded once on first use, and a small LRU cache of inversions."""

    model: str = defaults.MODEL
    device: str | None = None
    compile: bool = False  # torch.compile the UNet once loaded (Editor.compile)
    cache_size: int = 8
    max_pixels: int = MAX_PIXELS
    hits: int = 0
    misses: int = 0
    _editor: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: OrderedDict = field(default_factory=OrderedDict)

    @property
    def editor(self) -> Any:
        with self._lock:
            if self._editor is None:
                from .editor import Editor

                self._editor = Editor.from_pretrained(self.model, device=self.device)
                if self.compile:
                    self._editor.compile()
            return self._editor

    def check_image(self, image: Any) -> Image.Image:
        """An uploaded image as RGB, or a clear error (missing, empty, huge, animated)."""
        if image is None:
            raise LeditsError("upload an image first (or pick an example)")
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise LeditsError(f"cannot read the upload as an image ({type(image).__name__})")
        if getattr(image, "n_frames", 1) > 1:
            raise LeditsError("animated images are not supported; upload a single frame (PNG or JPEG)")
        w, h = image.size
        if w == 0 or h == 0:
            raise LeditsError("the image is empty (0 pixels)")
        if w * h > self.max_pixels:
            raise LeditsError(f"the image is {w}×{h}; downscale it to at most {self.max_pixels:,} pixels and retry")
        from .io import to_rgb

        return to_rgb(image)

    def invert(
        self, image: Image.Image, settings: dict[str, Any], progress: Callable | None = None
    ) -> tuple[Any, Image.Image]:
        """The cached inversion of ``image`` with ``settings`` and its decoded reconstruction
        (what no edit gives), both computed once, on a miss."""
        digest = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()
        key = (digest, self.model, json.dumps(settings, sort_keys=True))
        if key in self._cache:
            self.hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.misses += 1
        inversion = self.editor.invert(image, progress=progress, **settings)
        self._cache[key] = (inversion, self.editor.decode(inversion.source_latents)[0])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return self._cache[key]


def parse_concepts(rows: Any) -> list[Edit]:
    """Edits from the concepts table: (concept, direction, scale, threshold, warm-up, cool-down)."""
    if rows is None:
        return []
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas DataFrame
        rows = rows.values.tolist()
    edits = []
    for i, row in enumerate(rows, start=1):
        cells = [("" if c is None else c) for c in list(row) + [""] * (6 - len(row))]
        text = str(cells[0]).strip()
        if not text:
            continue
        try:
            edits.append(
                Edit(
                    text,
                    remove=str(cells[1]).strip().lower() in ("-", "remove", "−"),
                    scale=_number(cells[2], defaults.EDIT_SCALE, float),
                    threshold=_number(cells[3], defaults.EDIT_THRESHOLD, float),
                    warmup_steps=_number(cells[4], defaults.WARMUP_STEPS, int),
                    cooldown_steps=_number(cells[5], None, int),
                )
            )
        except (TypeError, ValueError) as exc:
            raise LeditsError(f"concept row {i} ({text!r}): {exc}") from exc
    return edits


def _number(cell: Any, default: Any, kind: type) -> Any:
    if cell is None or (isinstance(cell, str) and not cell.strip()) or (isinstance(cell, float) and np.isnan(cell)):
        return default
    return kind(float(cell)) if kind is int else kind(cell)


def user_mask_from(editor_value: Any) -> np.ndarray | None:
    """The strokes drawn on the image (any layer, any colour) as a (H, W) mask, or None."""
    if not isinstance(editor_value, dict):
        return None
    layers = [np.asarray(layer) for layer in editor_value.get("layers") or [] if layer is not None]
    masks = [(layer[..., 3] > 0) if layer.ndim == 3 and layer.shape[-1] == 4 else None for layer in layers]
    masks = [m for m in masks if m is not None and m.any()]
    if not masks:
        return None
    return np.logical_or.reduce(masks).astype(np.float32)


def run_edit(service: EditorService, editor_value: Any, rows: Any, settings: dict[str, Any], progress: Any = None):
    """One request: (edited image, mask overlays, reconstruction, PNG path, status text)."""
    from .cli import mask_overlays, save_image

    background = editor_value.get("background") if isinstance(editor_value, dict) else editor_value
    image = service.check_image(background)
    edits = parse_concepts(rows)
    inv_settings = {k: settings[k] for k in ("steps", "skip", "solver", "seed", "source_prompt", "source_guidance")}

    def report(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1), desc=stage)

    hits = service.hits
    t0 = time.perf_counter()
    inversion, reconstruction = service.invert(image, inv_settings, report)
    cached = service.hits > hits
    t1 = time.perf_counter()
    mask = user_mask_from(editor_value)
    result = service.editor.edit(inversion, edits, mask_mode=settings["mask_mode"], user_mask=mask, progress=report)
    t2 = time.perf_counter()
    edited = result.images[0]
    recipe = {
        "leditspp": __version__,
        "model": service.model,
        **inv_settings,
        "height": inversion.info.height,
        "width": inversion.info.width,
        "mask_mode": settings["mask_mode"],
        "fingerprint": inversion.info.model,
        "edits": [e.to_dict() for e in edits],
    }
    out = Path(tempfile.mkdtemp(prefix="leditspp-")) / "edited.png"
    save_image(edited, out, recipe)
    overlays = [(im, e.to_text()) for im, e in zip(mask_overlays(edited, result.masks[:, 0]), edits, strict=True)]
    status = (
        f"inversion: {'cached' if cached else f'{t1 - t0:.1f} s'} · edit: {t2 - t1:.1f} s · "
        f"{len(edits)} concept(s) · {inversion.info.width}×{inversion.info.height}"
    )
    return edited, overlays, reconstruction, str(out), status


def build_app(service: EditorService | None = None, examples_dir: Path = EXAMPLES_DIR) -> Any:
    """The Gradio Blocks app (nothing is loaded until the first request)."""
    import gradio as gr

    service = service or EditorService()
    examples = sorted(str(p) for p in examples_dir.glob("*.png")) if examples_dir.is_dir() else []

    def on_run(
        editor_value,
        rows,
        steps,
        skip,
        solver,
        seed,
        source_prompt,
        source_guidance,
        mask_mode,
        progress=gr.Progress(),  # noqa: B008 — Gradio's way to ask for a progress tracker
    ):
        settings = {
            "steps": int(steps),
            "skip": float(skip),
            "solver": solver,
            "seed": int(seed),
            "source_prompt": source_prompt or "",
            "source_guidance": float(source_guidance),
            "mask_mode": mask_mode,
        }
        try:
            return run_edit(service, editor_value, rows, settings, progress)
        except LeditsError as exc:
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title="leditspp — LEDITS++ image editing") as app:
        gr.Markdown(
            f"## leditspp — exact LEDITS++ editing · model `{service.model}`\n"
            "Upload an image, list concepts to add (+) or remove (−), press **Edit**. Draw on the image "
            "to limit where edits may act. Changing only the concepts re-uses the cached inversion."
        )
        with gr.Row():
            with gr.Column():
                image = gr.ImageEditor(
                    label="image (draw to restrict the edit)",
                    type="pil",
                    format="png",
                    sources=("upload", "clipboard"),
                    elem_id="input-image",
                )
                if examples:
                    gr.Examples(examples=[[e] for e in examples], inputs=[image], label="examples")
                concepts = gr.Dataframe(
                    headers=CONCEPT_COLUMNS,
                    datatype=["str", "str", "number", "number", "number", "number"],
                    value=[["", "+", defaults.EDIT_SCALE, defaults.EDIT_THRESHOLD, 0, None] for _ in range(3)],
                    row_count=3,
                    column_count=6,
                    interactive=True,
                    label="concepts: direction + adds, − removes; empty rows are ignored; more rows: a cell's ⋮ menu",
                    elem_id="concepts",
                )
                with gr.Accordion("settings", open=False):
                    steps = gr.Slider(1, 100, value=defaults.STEPS, step=1, label="steps")
                    skip = gr.Slider(0.0, 0.9, value=defaults.SKIP, step=0.05, label="skip")
                    solver = gr.Radio(["dpmsolver++", "ddpm"], value=defaults.SOLVER, label="solver")
                    seed = gr.Number(value=0, precision=0, label="seed")
                    source_prompt = gr.Textbox(label="source prompt (describes the input; optional)")
                    source_guidance = gr.Slider(0.0, 15.0, value=defaults.SOURCE_GUIDANCE, label="source guidance")
                    mask_mode = gr.Radio(
                        ["intersect", "attention", "noise", "none"], value=defaults.MASK_MODE, label="mask mode"
                    )
                run = gr.Button("Edit", variant="primary", elem_id="run")
            with gr.Column():
                edited = gr.Image(label="edited", type="pil", elem_id="edited", interactive=False, height=320)
                status = gr.Markdown(elem_id="status")
                masks = gr.Gallery(label="masks (last step)", elem_id="masks", columns=3, height="auto")
                reconstruction = gr.Image(label="reconstruction (no edit)", type="pil", interactive=False, height=320)
                download = gr.File(label="PNG with the edit recipe", elem_id="download")
        run.click(
            on_run,
            inputs=[image, concepts, steps, skip, solver, seed, source_prompt, source_guidance, mask_mode],
            outputs=[edited, masks, reconstruction, download, status],
            concurrency_limit=1,
        )
    app.service = service  # for tests and for embedding apps
    return app


def serve(
    model: str = defaults.MODEL,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_mb: float = 20,
    device: str | None = None,
    block: bool = True,
    compile: bool = False,
) -> Any:
    """Start the app; ``block=False`` returns the running app (for tests and notebooks).
    ``compile``: ``torch.compile`` the UNet (worth it for a long-running server on a GPU)."""
    app = build_app(EditorService(model=model, device=device, compile=compile))
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=f"{max_upload_mb}mb",
        prevent_thread_lock=not block,
        show_error=True,
        quiet=True,
    )
    return app


__all__ = ["EditorService", "build_app", "parse_concepts", "run_edit", "serve", "user_mask_from"]
