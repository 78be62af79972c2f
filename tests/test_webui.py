"""The web UI: request handling without a browser, then end to end in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leditspp import LeditsError
from leditspp.webui import EditorService, build_app, parse_concepts, run_edit, user_mask_from

from .conftest import scene

SETTINGS = {
    "steps": 5,
    "skip": 0.15,
    "solver": "dpmsolver++",
    "seed": 0,
    "source_prompt": "",
    "source_guidance": 3.5,
    "mask_mode": "intersect",
}


@pytest.fixture(scope="module")
def service(sd_folder):
    return EditorService(model=str(sd_folder), device="cpu")


def test_building_the_app_loads_no_model(sd_folder):
    service = EditorService(model=str(sd_folder))
    build_app(service)
    assert service._editor is None


def test_a_compiling_service_compiles_its_editor_once(sd_folder, monkeypatch):
    from leditspp import Editor

    compiled = []
    monkeypatch.setattr(Editor, "compile", lambda self, **options: compiled.append(self) or self)
    service = EditorService(model=str(sd_folder), device="cpu", compile=True)
    assert service.editor is service.editor and compiled == [service.editor]


def test_concept_rows_become_edits():
    rows = [
        ["a red hat", "+", 6, 0.8, 2, None],
        ["", "+", 5, 0.9, 0, None],  # an empty row is ignored
        ["a cat", "-", None, "", "", 12],
    ]
    hat, cat = parse_concepts(rows)
    assert (hat.prompt, hat.remove, hat.scale, hat.threshold, hat.warmup_steps) == ("a red hat", False, 6, 0.8, 2)
    assert (cat.remove, cat.scale, cat.threshold, cat.cooldown_steps) == (True, 5.0, 0.9, 12)
    with pytest.raises(LeditsError, match="row 1"):
        parse_concepts([["hat", "+", "big", 0.9, 0, None]])
    with pytest.raises(LeditsError, match=r"did you mean 0\.9"):
        parse_concepts([["hat", "+", 5, 90, 0, None]])


def test_strokes_drawn_on_the_image_become_the_user_mask():
    layer = np.zeros((8, 8, 4), np.uint8)
    layer[2:4, 5:7, 3] = 255
    mask = user_mask_from({"background": None, "layers": [layer], "composite": None})
    assert mask.shape == (8, 8) and mask.sum() == 4 and mask[2, 5] == 1
    assert user_mask_from({"background": None, "layers": [np.zeros((8, 8, 4), np.uint8)]}) is None


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (None, "upload an image"),
        (Image.new("RGB", (5000, 5000)), "downscale"),
        ("not an image", "cannot read"),
    ],
)
def test_bad_uploads_get_a_clear_message(service, upload, message):
    with pytest.raises(LeditsError, match=message):
        service.check_image(upload)


def test_animated_uploads_are_refused(service, tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "a.gif") as gif, pytest.raises(LeditsError, match="animated"):
        service.check_image(gif)


def test_changing_only_the_concepts_reuses_the_inversion(service, monkeypatch):
    image = scene(64, 64, seed=50)
    decoded = []
    decode = service.editor.decode
    monkeypatch.setattr(service.editor, "decode", lambda latents: decoded.append(1) or decode(latents))
    rows = [["a red hat", "+", 6, 0.8, 0, None], ["a cat", "-", 4, 0.9, 0, None]]
    hits, misses = service.hits, service.misses
    edited, overlays, recon, png, status = run_edit(service, {"background": image, "layers": []}, rows, SETTINGS)
    assert service.misses == misses + 1 and len(overlays) == 2 and edited.size == (64, 64)
    recipe = json.loads(Image.open(png).text["leditspp"])
    assert [e["prompt"] for e in recipe["edits"]] == ["a red hat", "a cat"] and recipe["steps"] == 5
    rows[0][2] = 8
    *_, status = run_edit(service, {"background": image, "layers": []}, rows, SETTINGS)
    assert service.hits == hits + 1 and service.misses == misses + 1 and "cached" in status
    assert len(decoded) == 3  # reconstruction, edit, edit: the cached reconstruction is not decoded again
    recon_again = run_edit(service, image, [], SETTINGS)[0]  # no concept: the exact reconstruction
    assert np.array_equal(np.asarray(recon_again), np.asarray(recon))


# --- end to end in a real browser ------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shapes.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: LEDITSPP_SCREENSHOT=docs/webui.png pytest tests/test_webui.py -k browser  refreshes the README's picture
SCREENSHOT = os.environ.get("LEDITSPP_SCREENSHOT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_the_app_in_a_real_browser():
    """The built-in demo model on the bundled example: add a red circle, remove the blue square."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    photo = EXAMPLE
    service = EditorService(model="demo", device="cpu")
    app = build_app(service)
    app.queue(default_concurrency_limit=1)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            page.goto(f"http://127.0.0.1:{port}", wait_until="networkidle")
            page.locator("#input-image input[type=file]").set_input_files(str(photo))
            _fill(page, 0, 0, "red circle")
            _fill(page, 0, 2, "8")
            _fill(page, 1, 0, "blue square")
            _fill(page, 1, 1, "-")
            _fill(page, 1, 2, "8")
            page.locator("#run").click()
            page.locator("#edited img").wait_for(timeout=120_000)
            page.wait_for_function("document.querySelectorAll('#masks img').length >= 2", timeout=60_000)
            assert service.misses == 1 and service.hits == 0
            _fill(page, 0, 2, "10")  # a new scale for the first concept, then run again
            page.locator("#run").click()
            page.wait_for_function(
                "document.querySelector('#status') && document.querySelector('#status').innerText.includes('cached')",
                timeout=120_000,
            )
            assert service.misses == 1 and service.hits == 1
            assert page.locator("#download a").count() >= 1
            if SCREENSHOT:
                page.screenshot(path=SCREENSHOT, full_page=True)
            browser.close()
    finally:
        app.close()


def _fill(page, row: int, col: int, text: str) -> None:
    """Type ``text`` into a cell of the concepts table."""
    cell = page.locator(f"#concepts [data-testid=cell-{row}-{col}]")
    cell.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    time.sleep(0.2)
