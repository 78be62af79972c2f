"""The web UI (``leditspp serve``): a Gradio app over one shared :class:`~leditspp.Editor`.

Importing this module loads nothing: the model is loaded at the first request, by one thread,
and shared by every user (Gradio's queue runs one job at a time on it). Inversions are cached,
keyed by the image's hash, the model and the inversion settings, so changing only the edits
re-runs only the edit loop.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import __version__, defaults
from .caching import LRUCache, image_key
from .edits import Edit
from .errors import LeditsError, is_number
from .io import check_pixels, mask_overlays, open_image, save_image, to_rgb
from .masking import MASK_MODES
from .model_options import ModelOptions
from .recipes import INVERSION_SETTINGS, SETTINGS, check_settings
from .solvers import SOLVERS, validate_steps
from .validation import check_seed

#: The example images the app offers, shipped inside the package (a wheel install has no repository).
EXAMPLES_DIR = Path(__file__).resolve().parent / "demo" / "examples"
CONCEPT_COLUMNS = ["concept", "direction", "scale", "threshold", "warm-up", "cool-down"]
#: The settings panel's preserve menu: off, or the dilation in latent cells.
PRESERVE_OFF = "off"
PRESERVE_CHOICES = (0, 1, 2, 3, 4)
#: The settings the page's panel sends (the HTTP API sends the same).
PANEL_SETTINGS = ("steps", "skip", "solver", "seed", "source_prompt", "source_guidance", "mask_mode", "preserve")
#: Files of recent requests kept in a service's scratch folder (Gradio copies each as it answers).
SCRATCH_KEPT = 16
#: Results smaller than this (pixels, longer side) are shown enlarged (nearest neighbour) in the page.
DISPLAY_SIDE = 512
#: The largest --max-upload-mb accepted (1 TB: beyond, a typo).
MAX_UPLOAD_MB = 2**20
#: The direction cell (any case, spaces around): True removes the concept; empty means add.
DIRECTIONS = {"": False, "+": False, "add": False, "-": True, "−": True, "remove": True}


@dataclass
class EditorService:
    """The model, loaded once on first use, and a small LRU cache of inversions."""

    model: str = defaults.MODEL
    options: ModelOptions = field(default_factory=ModelOptions)  # how it loads (device, memory plan, …)
    cache_size: int = 8
    max_pixels: int = defaults.MAX_PIXELS
    _editor: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: LRUCache = field(init=False)
    _scratch: str | None = None  # the folder of the files requests return
    _files: int = 0

    def __post_init__(self) -> None:
        self._cache = LRUCache(self.cache_size)

    @property
    def hits(self) -> int:
        return self._cache.hits

    @property
    def misses(self) -> int:
        return self._cache.misses

    @property
    def editor(self) -> Any:
        with self._lock:
            if self._editor is None:
                self._editor = self.options.load(self.model)
            return self._editor

    @property
    def settings(self) -> dict[str, Any]:
        """The settings panel's defaults: the model's recommended settings over the schema's."""
        return {**SETTINGS, **self.recommended}

    def scratch_file(self, name: str) -> Path:
        """A new file path in this service's one scratch folder (removed when the service goes or
        the process ends); only the newest :data:`SCRATCH_KEPT` files stay — Gradio copies what a
        request returns into its own cache as it answers."""
        with self._lock:
            if self._scratch is None:
                self._scratch = tempfile.mkdtemp(prefix="leditspp-web-")
                weakref.finalize(self, shutil.rmtree, self._scratch, True)
            folder = Path(self._scratch)
            for old in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)[: -SCRATCH_KEPT + 1]:
                old.unlink(missing_ok=True)
            self._files += 1
            return folder / f"{self._files:06d}-{name}"

    def invert_to_file(self, image: Image.Image, settings: dict[str, Any]) -> tuple[str, str]:
        """Invert ``image`` (cached) with the inversion ``settings`` among ``settings``: the
        reconstruction as a PNG file, and a status line."""
        hits, t0 = self.hits, time.perf_counter()
        inversion, reconstruction = self.invert(image, {k: settings[k] for k in INVERSION_SETTINGS if k in settings})
        path = self.scratch_file("reconstruction.png")
        reconstruction.save(path)
        took = "cached" if self.hits > hits else f"{time.perf_counter() - t0:.1f} s"
        return str(path), f"inversion: {took} · {inversion.info.width}×{inversion.info.height}"

    @functools.cached_property
    def recommended(self) -> dict[str, Any]:
        """The model's recommended settings (its ``leditspp.json``), defaults filled in: read once,
        without loading the model, so the table's defaults and bad rows need no model."""
        from .models import RECOMMENDABLE, model_settings

        return {**RECOMMENDABLE, **model_settings(self.model).get("recommended", {})}

    def check_image(self, image: Any) -> Image.Image:
        """An uploaded image as RGB, or a clear error (missing, not an image, empty, huge, animated).

        A file path (what the app's image editor hands over) is read by :func:`~leditspp.io.open_image`,
        which refuses a huge image from its header, before decoding it."""
        if image is None:
            raise LeditsError("upload an image first (or pick an example)")
        if isinstance(image, (str, os.PathLike)):
            try:
                return open_image(image, max_pixels=self.max_pixels)
            except LeditsError as exc:  # name the file, not the server's temporary folder
                raise LeditsError(str(exc).replace(str(image), Path(image).name)) from None
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise LeditsError(f"cannot read the upload as an image ({type(image).__name__})")
        if getattr(image, "n_frames", 1) > 1:
            raise LeditsError("animated images are not supported; upload a single frame (PNG or JPEG)")
        check_pixels(image.size, self.max_pixels)
        return to_rgb(image)

    def invert(
        self, image: Image.Image, settings: dict[str, Any], progress: Callable | None = None
    ) -> tuple[Any, Image.Image]:
        """The cached inversion of ``image`` with ``settings`` and its decoded reconstruction
        (what no edit gives), both computed once, on a miss."""
        key = (image_key(image), self.model, json.dumps(settings, sort_keys=True))

        def compute() -> tuple[Any, Image.Image]:
            inversion = self.editor.invert(image, max_pixels=self.max_pixels, progress=progress, **settings)
            return inversion, self.editor.decode(inversion.source_latents)[0]

        return self._cache.get(key, compute)


def parse_concepts(rows: Any, recommended: dict[str, Any] | None = None) -> list[Edit]:
    """Edits from the concepts table: (concept, direction, scale, threshold, warm-up, cool-down);
    an empty scale or threshold cell takes the model's ``recommended`` value, else the default."""
    from .models import RECOMMENDABLE

    recommended = {**RECOMMENDABLE, **(recommended or {})}
    if rows is None:
        return []
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas DataFrame
        rows = rows.values.tolist()
    edits = []
    for i, row in enumerate(rows, start=1):
        cells = [("" if _blank(c) else c) for c in list(row) + [""] * (6 - len(row))]
        text = str(cells[0]).strip()
        if not text:
            continue
        direction = str(cells[1]).strip().lower()
        try:
            if direction not in DIRECTIONS:
                raise LeditsError(f"direction must be one of + add - − remove; got {cells[1]!r}")
            edits.append(
                Edit(
                    text,
                    remove=DIRECTIONS[direction],
                    scale=_number(cells[2], "scale", recommended["scale"]),
                    threshold=_number(cells[3], "threshold", recommended["threshold"]),
                    warmup_steps=_whole(_number(cells[4], "warm-up", defaults.WARMUP_STEPS)),
                    cooldown_steps=_whole(_number(cells[5], "cool-down", None)),
                )
            )
        except LeditsError as exc:
            raise LeditsError(f"concept row {i} ({text!r}): {exc}") from None
    return edits


def concept_row(edit: Edit) -> list[Any]:
    """An edit as a row of the concepts table (the inverse of :func:`parse_concepts`)."""
    return [
        edit.prompt,
        "-" if edit.remove else "+",
        edit.scale,
        edit.threshold,
        edit.warmup_steps,
        edit.cooldown_steps,
    ]


def example_rows(model: str, recommended: dict[str, Any]) -> list[list[Any]]:
    """The concepts the bundled example is edited with: the edit the built-in model does right on
    it (the built-in SD demo's for any other model), at the model's recommended threshold."""
    from .demo import EXAMPLE_EDITS

    texts = EXAMPLE_EDITS.get(model, EXAMPLE_EDITS["demo"])
    return [concept_row(Edit.parse(text, threshold=recommended["threshold"])) for text in texts]


def _blank(cell: Any) -> bool:
    """An empty table cell: None, NaN (pandas' empty number) or only spaces."""
    return cell is None or (isinstance(cell, float) and math.isnan(cell)) or not str(cell).strip()


def _number(cell: Any, name: str, default: float | None) -> float | None:
    """A number cell as a float (its default when blank); the edit's own checks judge its range."""
    if _blank(cell):
        return default
    try:
        return float(cell)
    except (TypeError, ValueError):
        raise LeditsError(f"{name} must be a number; got {cell!r}") from None


def _whole(value: Any) -> Any:
    """A whole float (Gradio's number fields and the table send floats) as an int, up to 2**53 where
    floats hold integers exactly; other values unchanged, for the checks that follow to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53 else value


def _preserve_choice(value: Any) -> Any:
    """The preserve menu's choice: ``"off"`` (or absent) → None, ``"1"`` → 1; anything else is
    left for the settings check to refuse."""
    if value in (None, PRESERVE_OFF):
        return None
    try:
        return _whole(float(value))
    except (TypeError, ValueError):
        return value


def read_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings panel's values (keys of :data:`~leditspp.recipes.SETTINGS`) with steps and seed
    as ints (Gradio's number fields send floats), all checked before the model loads."""
    steps, seed = _whole(settings["steps"]), _whole(settings["seed"])
    validate_steps(steps, settings["skip"])
    preserve = _preserve_choice(settings.get("preserve"))
    settings = {
        **settings,
        "steps": steps,
        "seed": check_seed(seed),
        "source_prompt": settings["source_prompt"] or "",
        "preserve": preserve,
    }
    check_settings(settings, "settings")
    return settings


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


@dataclass(frozen=True)
class EditOutput:
    """What one edit request gives: the images, the files it wrote and a status line."""

    edited: Image.Image
    overlays: list[tuple[Image.Image, str]]  # each concept's mask over the edit, with its text
    reconstruction: Image.Image  # what no edit gives
    png: str  # the edited image with its recipe
    reconstruction_png: str
    status: str


def run_edit(service: EditorService, editor_value: Any, rows: Any, settings: dict[str, Any], progress: Any = None):
    """One request from the page: (edited image, mask overlays, reconstruction, PNG path, status).
    ``settings``: the settings panel's values as sent (see :func:`read_settings`)."""
    settings = read_settings(settings)
    background = editor_value.get("background") if isinstance(editor_value, dict) else editor_value
    out = edit_request(service, background, rows, settings, progress, user_mask_from(editor_value))
    return out.edited, out.overlays, out.reconstruction, out.png, out.status


def edit_request(
    service: EditorService,
    image: Any,
    rows: Any,
    settings: dict[str, Any],
    progress: Any = None,
    user_mask: np.ndarray | None = None,
) -> EditOutput:
    """Invert ``image`` (cached) and edit it with the concepts table ``rows`` and the checked
    ``settings`` (:func:`read_settings`); the page and the HTTP API both come here."""
    image = service.check_image(image)
    edits = parse_concepts(rows, service.recommended)
    inv_settings = {k: settings[k] for k in INVERSION_SETTINGS if k in settings}

    def report(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1), desc=stage)

    hits = service.hits
    t0 = time.perf_counter()
    inversion, reconstruction = service.invert(image, inv_settings, report)
    cached = service.hits > hits
    t1 = time.perf_counter()
    result = service.editor.edit(
        inversion,
        edits,
        mask_mode=settings["mask_mode"],
        user_mask=user_mask,
        preserve=settings["preserve"],
        progress=report,
    )
    t2 = time.perf_counter()
    edited = result.images[0]
    recipe = {
        "leditspp": __version__,
        "model": service.model,
        **inv_settings,
        "height": inversion.info.height,
        "width": inversion.info.width,
        "mask_mode": settings["mask_mode"],
        "preserve": settings["preserve"],
        "fingerprint": inversion.info.model,
        "edits": [e.to_dict() for e in edits],
    }
    out = save_image(edited, service.scratch_file("edited.png"), recipe)
    recon = service.scratch_file("reconstruction.png")
    reconstruction.save(recon)
    overlays = [(im, e.to_text()) for im, e in zip(mask_overlays(edited, result.masks[:, 0]), edits, strict=True)]
    status = (
        f"inversion: {'cached' if cached else f'{t1 - t0:.1f} s'} · edit: {t2 - t1:.1f} s · "
        f"{len(edits)} concept(s) · {inversion.info.width}×{inversion.info.height}"
    )
    return EditOutput(edited, overlays, reconstruction, str(out), str(recon), status)


def shown(image: Image.Image) -> Image.Image:
    """``image`` as the page shows it: a small result enlarged by a whole factor (nearest
    neighbour: every pixel stays visible) to at least :data:`DISPLAY_SIDE` on its longer side."""
    factor = math.ceil(DISPLAY_SIDE / max(image.size))
    return image if factor <= 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _hand_over_background_path(editor: Any) -> None:
    """Make Gradio's image editor hand over the background as its file path, undecoded, so a bad
    upload (not an image, empty, huge, animated) gets EditorService.check_image's message instead
    of Gradio's generic preprocessing error; the drawn layers are decoded as usual. (Browsers send
    the background as a PNG of the canvas; API clients send the file itself.) Set on the instance,
    not in a subclass: Gradio writes a ``.pyi`` stub next to the module of every component class."""
    decode = editor.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is None or payload.background is None:
            return decode(payload)
        value = decode(payload.model_copy(update={"background": None, "composite": None}))
        return {**value, "background": payload.background.path}

    editor.preprocess = preprocess


def build_app(service: EditorService | None = None, examples_dir: Path = EXAMPLES_DIR) -> Any:
    """The Gradio Blocks app (nothing is loaded until the first request): the image, concepts and
    settings on the left, the results on the right, one button that runs :func:`run_edit`."""
    import gradio as gr

    from .webapi import add_endpoints

    service = service or EditorService()
    with gr.Blocks(title="leditspp — LEDITS++ image editing") as app:
        gr.Markdown(
            f"## leditspp — exact LEDITS++ editing · model `{service.model}`{_loras_line(service.options.loras)}\n"
            "Upload an image, list concepts to add (+) or remove (−), press **Edit**. Draw on the image "
            "to limit where edits may act. Changing only the concepts re-uses the cached inversion."
        )
        with gr.Row():
            with gr.Column():
                inputs = _input_panel(gr, service, examples_dir)
                run = gr.Button("Edit", variant="primary", elem_id="run")
            with gr.Column():
                outputs = _result_panel(gr)
        run.click(_on_run(gr, service), inputs=inputs, outputs=outputs, concurrency_limit=1, api_visibility="private")
        add_endpoints(service)
    app.service = service  # for tests and for embedding apps
    return app


def _input_panel(gr: Any, service: EditorService, examples_dir: Path) -> list[Any]:
    """The image (with examples), the concepts table and the settings: the inputs of :func:`_on_run`."""
    rec = {**SETTINGS, **service.recommended}  # the model's recommended settings over the defaults
    image = gr.ImageEditor(
        label="image (draw to restrict the edit)",
        type="pil",
        format="png",
        sources=("upload", "clipboard"),
        elem_id="input-image",
    )
    _hand_over_background_path(image)
    examples = sorted(str(p) for p in examples_dir.glob("*.png")) if examples_dir.is_dir() else []
    blank_timing = [defaults.WARMUP_STEPS, defaults.COOLDOWN_STEPS]  # warm-up, cool-down
    concepts = gr.Dataframe(
        headers=CONCEPT_COLUMNS,
        datatype=["str", "str", "number", "number", "number", "number"],
        value=[["", "+", rec["scale"], rec["threshold"], *blank_timing] for _ in range(3)],
        row_count=3,
        column_count=6,
        interactive=True,
        label="concepts: direction + adds, − removes; empty rows are ignored; more rows: a cell's ⋮ menu",
        elem_id="concepts",
    )
    if examples:  # each example fills the image and its concepts
        rows = example_rows(service.model, rec)
        gr.Examples(
            examples=[[e, rows] for e in examples], inputs=[image, concepts], label="examples", api_visibility="private"
        )
    with gr.Accordion("settings", open=False):
        settings = [
            gr.Slider(1, 100, value=rec["steps"], step=1, label="steps"),
            gr.Slider(0.0, 0.9, value=rec["skip"], step=0.05, label="skip"),
            gr.Radio(list(SOLVERS), value=rec["solver"], label="solver"),
            gr.Number(value=rec["seed"], label="seed"),  # no rounding: a fraction is refused
            gr.Textbox(label="source prompt (describes the input; optional)"),
            gr.Slider(0.0, 15.0, value=rec["source_guidance"], label="source guidance"),
            gr.Radio(list(MASK_MODES), value=rec["mask_mode"], label="mask mode"),
            gr.Dropdown(
                [PRESERVE_OFF, *map(str, PRESERVE_CHOICES)],
                value=PRESERVE_OFF,
                label="preserve: keep the input outside the masks grown by this many latent cells",
            ),
        ]
    return [image, concepts, *settings]


def _result_panel(gr: Any) -> list[Any]:
    """The edited image, the masks, the reconstruction, the PNG and the status: what
    :func:`run_edit` returns, in its order."""
    # PNG, not Gradio's default lossy WebP: the reconstruction must show exact on screen
    edited = gr.Image(label="edited", format="png", elem_id="edited", interactive=False, height=320)
    status = gr.Markdown(elem_id="status")
    masks = gr.Gallery(label="masks (last step)", format="png", elem_id="masks", columns=3, height="auto")
    reconstruction = gr.Image(
        label="reconstruction (no edit)", format="png", elem_id="reconstruction", interactive=False, height=320
    )
    download = gr.File(label="PNG with the edit recipe", elem_id="download")
    return [edited, masks, reconstruction, download, status]


def _on_run(gr: Any, service: EditorService) -> Callable[..., Any]:
    """The button's handler: the inputs of :func:`_input_panel`, in order, to :func:`run_edit`;
    our errors are said in the page (a notice and the status line) and the earlier results stay."""

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
        preserve,
        progress=gr.Progress(),  # noqa: B008 — Gradio's way to ask for a progress tracker
    ):
        settings = {
            "steps": steps,
            "skip": skip,
            "solver": solver,
            "seed": seed,
            "source_prompt": source_prompt,
            "source_guidance": source_guidance,
            "mask_mode": mask_mode,
            "preserve": preserve,
        }
        try:
            edited, overlays, reconstruction, png, status = run_edit(service, editor_value, rows, settings, progress)
        except LeditsError as exc:  # said in the page; the earlier results stay
            gr.Warning(str(exc))
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"**Not run:** {exc}"
        return shown(edited), [(shown(im), text) for im, text in overlays], shown(reconstruction), png, status

    return on_run


def upload_limit(max_upload_mb: Any) -> int:
    """The largest upload in bytes, from megabytes (any positive number: 20, 0.5); a clear error
    for anything else."""
    if not (is_number(max_upload_mb) and 0 < max_upload_mb <= MAX_UPLOAD_MB):
        raise LeditsError(f"--max-upload-mb must be a number in (0, {MAX_UPLOAD_MB}]; got {max_upload_mb!r}")
    return max(1, int(max_upload_mb * 2**20))


def _loras_line(loras: tuple[str, ...]) -> str:
    """The page title's LoRAs (after the model), "" for none."""
    return " with LoRA " + ", ".join(f"`{lora}`" for lora in loras) if loras else ""


def serve(
    model: str = defaults.MODEL,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_mb: float = 20,
    options: ModelOptions | None = None,
    block: bool = True,
) -> Any:
    """Start the app; ``block=False`` returns the running app (for tests and notebooks).
    ``options``: how the model loads — device, memory plan (:mod:`leditspp.offload`), a
    single-file model's base, LoRAs, and ``compile=True`` (worth it for a long-running server on
    a GPU); None: the defaults."""
    upload_bytes = upload_limit(max_upload_mb)
    service = EditorService(model=model, options=options or ModelOptions())
    app = build_app(service)
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=upload_bytes,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=True,
    )
    return app


__all__ = [
    "EditOutput",
    "EditorService",
    "build_app",
    "concept_row",
    "edit_request",
    "parse_concepts",
    "read_settings",
    "run_edit",
    "serve",
    "user_mask_from",
]
