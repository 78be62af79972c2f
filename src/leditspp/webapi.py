"""The web UI's HTTP API: the named endpoints ``/edit`` and ``/invert``, over the same service
(model, inversion cache) as the page, for ``gradio_client`` or any HTTP client::

    from gradio_client import Client, handle_file

    client = Client("http://127.0.0.1:7860/")
    edited, reconstruction, status = client.predict(
        handle_file("photo.png"), ["+sunglasses", "-beard:7"], api_name="/edit"
    )

Settings left out take the model's recommended values (its ``leditspp.json``), else the
defaults. A bad value is refused with the page's message (``gradio_client`` raises ``AppError``).
Imported by :func:`leditspp.webui.build_app` only: it needs Gradio.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from .edits import Edit
from .errors import LeditsError
from .webui import PANEL_SETTINGS, concept_row, edit_request, read_settings


def add_endpoints(service: Any) -> None:
    """Register ``/edit`` and ``/invert`` in the Blocks being built, computing with ``service``
    (a :class:`~leditspp.webui.EditorService`)."""

    def edit(
        image: FileData,
        concepts: list[str],
        steps: int | None = None,
        skip: float | None = None,
        solver: str | None = None,
        seed: int | None = None,
        source_prompt: str = "",
        source_guidance: float | None = None,
        mask_mode: str | None = None,
        preserve: int | None = None,
    ) -> tuple[FileData, FileData, str]:
        """Edit IMAGE with CONCEPTS ("+sunglasses", "-beard:7@0.8"): the edited PNG (it carries
        the edit's recipe), the reconstruction (what no edit gives) and a status line."""
        given = dict(steps=steps, skip=skip, solver=solver, seed=seed, source_guidance=source_guidance)
        settings = _settings(service, given, source_prompt, mask_mode=mask_mode, preserve=preserve)
        try:
            defaults = _edit_defaults(service)
            rows = [concept_row(Edit.parse(text, **defaults)) for text in concepts]
            result = edit_request(service, _path(image), rows, read_settings(settings))
        except LeditsError as exc:
            raise gr.Error(str(exc)) from None
        return _served(result.png), _served(result.reconstruction_png), result.status

    def invert(
        image: FileData,
        steps: int | None = None,
        skip: float | None = None,
        solver: str | None = None,
        seed: int | None = None,
        source_prompt: str = "",
        source_guidance: float | None = None,
    ) -> tuple[FileData, str]:
        """Invert IMAGE (cached for later ``/edit`` calls with the same image and settings): the
        reconstruction PNG and a status line."""
        given = dict(steps=steps, skip=skip, solver=solver, seed=seed, source_guidance=source_guidance)
        try:
            settings = read_settings(_settings(service, given, source_prompt))
            path, status = service.invert_to_file(service.check_image(_path(image)), settings)
        except LeditsError as exc:
            raise gr.Error(str(exc)) from None
        return _served(path), status

    gr.api(edit, api_name="edit")
    gr.api(invert, api_name="invert")


def _settings(service: Any, given: dict[str, Any], source_prompt: str, **edit: Any) -> dict[str, Any]:
    """The settings panel's values for a request: those given, else the model's recommended (the
    same keys as the page sends, so the page and the API share cached inversions)."""
    values = {**given, **edit, "source_prompt": source_prompt or ""}
    return {key: service.settings[key] if values.get(key) is None else values[key] for key in PANEL_SETTINGS}


def _edit_defaults(service: Any) -> dict[str, Any]:
    """Scale and threshold of a concept text that gives none: the model's recommended."""
    return {key: service.recommended[key] for key in ("scale", "threshold")}


def _served(path: str) -> FileData:
    """A file the endpoint returns, copied into Gradio's cache (what Gradio serves to clients)."""
    from gradio.processing_utils import save_file_to_cache
    from gradio.utils import get_upload_folder

    return FileData(path=save_file_to_cache(path, get_upload_folder()))


def _path(image: Any) -> Any:
    """The uploaded file's path (``FileData`` or its dict form), or None."""
    if image is None:
        return None
    return image.get("path") if isinstance(image, dict) else image.path
