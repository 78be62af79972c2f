"""The web UI: request handling without a browser, then end to end in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leditspp import LeditsError, defaults
from leditspp.model_options import ModelOptions
from leditspp.webui import (
    EXAMPLES_DIR,
    EditorService,
    build_app,
    parse_concepts,
    read_settings,
    run_edit,
    user_mask_from,
)

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
    return EditorService(model=str(sd_folder), options=ModelOptions(device="cpu"))


def test_building_the_app_loads_no_model_and_writes_nothing(sd_folder):
    import leditspp.webui

    service = EditorService(model=str(sd_folder))
    build_app(service)
    assert service._editor is None
    assert not Path(leditspp.webui.__file__).with_suffix(".pyi").exists()  # Gradio stubs a component subclass


def test_the_web_ui_does_not_import_the_command_line():
    """The CLI starts the web UI (``serve``); the web UI takes what they share from io, never from
    the CLI, at import time or inside a function (no import loop)."""
    import ast

    import leditspp.webui

    tree = ast.parse(Path(leditspp.webui.__file__).read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "io" in modules and not {"cli", "leditspp.cli"} & modules


def test_the_settings_panel_reads_the_schema_and_the_declared_choices(sd_folder, monkeypatch):
    from leditspp.masking import MASK_MODES
    from leditspp.recipes import SETTINGS as SCHEMA
    from leditspp.solvers import SOLVERS

    monkeypatch.setitem(SOLVERS, "toy", SOLVERS["ddpm"])  # a solver declared where solvers are
    app = build_app(EditorService(model=str(sd_folder)))
    panel = {b.label: b for b in app.blocks.values() if getattr(b, "label", None) in ("solver", "mask mode", "seed")}
    assert [value for _, value in panel["solver"].choices] == list(SOLVERS)
    assert [value for _, value in panel["mask mode"].choices] == list(MASK_MODES)
    assert panel["solver"].value == SCHEMA["solver"]
    assert panel["seed"].value == defaults.SEED  # as in the API and the CLI


def test_the_examples_ship_inside_the_package():
    """A wheel install has no repository: the web UI's examples live in the package (package data),
    the same image as the repository's examples/shapes.png that the README and `make demo` use."""
    import leditspp

    package = Path(leditspp.__file__).resolve().parent
    assert EXAMPLES_DIR.is_dir() and EXAMPLES_DIR.resolve().is_relative_to(package)
    shipped = sorted(p.name for p in EXAMPLES_DIR.glob("*.png"))
    assert "shapes.png" in shipped
    readme_copy = package.parent.parent / "examples" / "shapes.png"
    if readme_copy.exists():  # a checkout, not an installed wheel
        assert readme_copy.read_bytes() == (EXAMPLES_DIR / "shapes.png").read_bytes()


def test_a_compiling_service_compiles_its_editor_once(sd_folder, monkeypatch):
    from leditspp import Editor

    compiled = []
    monkeypatch.setattr(Editor, "compile", lambda self, **options: compiled.append(self) or self)
    service = EditorService(model=str(sd_folder), options=ModelOptions(device="cpu", compile=True))
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


def test_the_direction_cell_accepts_only_add_or_remove():
    rows = [[f"c{i}", d, None, None, None, None] for i, d in enumerate(["+", " ADD ", "", "-", "−", "Remove"])]
    assert [e.remove for e in parse_concepts(rows)] == [False, False, False, True, True, True]
    with pytest.raises(LeditsError, match=r"row 2 \('hat'\): direction must be one of \+ add - − remove; got 'x'"):
        parse_concepts([["cat", "+", 5, 0.9, 0, None], ["hat", "x", 5, 0.9, 0, None]])
    with pytest.raises(LeditsError, match=r"row 1 .*warmup_steps must be an integer"):
        parse_concepts([["hat", "+", 5, 0.9, 2.5, None]])  # not truncated to 2


def test_settings_are_checked_with_their_range():
    settings = read_settings({**SETTINGS, "steps": 5.0, "seed": 3.0, "source_prompt": None})
    assert (settings["steps"], settings["seed"], settings["source_prompt"]) == (5, 3, "")
    assert type(settings["steps"]) is int and type(settings["seed"]) is int
    for name, value, message in [
        ("seed", 1e30, r"seed must be an integer in \[0, 2\*\*64\); got 1e\+30"),
        ("seed", 2**64, r"seed must be an integer in \[0, 2\*\*64\)"),
        ("seed", -1, r"seed must be an integer in \[0, 2\*\*64\)"),
        ("seed", 2.5, r"seed must be an integer"),
        ("seed", None, r"seed must be an integer"),
        ("steps", 0, r"steps must be an integer in \[1, 1000\]"),
        ("steps", 2.5, r"steps must be an integer"),
        ("skip", float("nan"), r"skip is a fraction in \[0, 1\)"),
        ("solver", "euler", "settings: solver must be one of"),
        ("mask_mode", "all", "settings: mask_mode must be one of"),
    ]:
        with pytest.raises(LeditsError, match=message):
            read_settings({**SETTINGS, name: value})


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
        (42, "cannot read"),
    ],
)
def test_bad_uploads_get_a_clear_message(service, upload, message):
    with pytest.raises(LeditsError, match=message):
        service.check_image(upload)


def test_animated_uploads_are_refused(service, tmp_path):
    with Image.open(_animated_gif(tmp_path)) as gif, pytest.raises(LeditsError, match="animated"):
        service.check_image(gif)


def _animated_gif(folder: Path) -> Path:
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    frames[0].save(folder / "a.gif", save_all=True, append_images=frames[1:])
    return folder / "a.gif"


def _component(app, elem_id: str):
    return next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == elem_id)


@pytest.mark.parametrize("kind", ["animated", "text", "empty", "huge"])
def test_bad_upload_files_reach_our_message(sd_folder, tmp_path, kind):
    """The image editor hands over the uploaded file undecoded, so Gradio's own decoding cannot fail
    first with its generic "Could not preprocess" error; the message names the file, not its folder."""
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    service = EditorService(model=str(sd_folder), max_pixels=64 * 64)
    path = tmp_path / "upload.png"
    if kind == "animated":
        path = _animated_gif(tmp_path)
    elif kind == "text":
        path.write_text("not an image")
    elif kind == "empty":
        path.touch()
    else:
        Image.new("RGB", (65, 64)).save(path)
    layer = np.zeros((64, 65, 4), np.uint8)
    layer[1:3, 2:5, 3] = 255
    Image.fromarray(layer).save(tmp_path / "layer.png")
    upload = EditorData(background=FileData(path=str(path)), layers=[FileData(path=str(tmp_path / "layer.png"))])
    value = _component(build_app(service), "input-image").preprocess(upload)
    assert value["background"] == str(path) and user_mask_from(value).sum() == 6  # the drawn mask still works
    message = {"animated": "animated", "text": "cannot read", "empty": "cannot read", "huge": "over the limit of 4,096"}
    with pytest.raises(LeditsError, match=message[kind]) as caught:
        run_edit(service, value, [["hat", "+", 5, 0.9, 0, None]], SETTINGS)
    assert str(tmp_path) not in str(caught.value) and path.name in str(caught.value)
    assert service._editor is None  # refused before the model loads


def test_previews_are_lossless_png(sd_folder):
    """Gradio's default preview format is lossy WebP: the exact reconstruction would not look exact."""
    app = build_app(EditorService(model=str(sd_folder)))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    masks = _component(app, "masks").postprocess([(image, "+hat")])
    shown = [_component(app, e).postprocess(image).path for e in ("edited", "reconstruction")]
    for path in [*shown, masks.root[0].image.path]:
        with Image.open(path) as im:
            assert im.format == "PNG" and np.array_equal(np.asarray(im.convert("RGB")), np.asarray(image))


def test_the_running_app_answers_bad_requests_with_our_message(sd_folder, tmp_path):
    """Through Gradio's API and queue: the messages reach the client, the model never loads."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    service = EditorService(model=str(sd_folder))
    app = build_app(service)
    app.queue(default_concurrency_limit=1)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.png")
    try:
        client = Client(f"http://127.0.0.1:{port}", verbose=False)
        for upload, concept, seed, message in [
            ("text.png", "+hat", 0, "text.png: cannot read it as an image"),
            ("ok.png", "+hat:abc", 0, "the ':' suffix gives the scale"),
            ("ok.png", "+hat", 1e30, r"seed must be an integer in \[0, 2\*\*64\)"),
        ]:
            with pytest.raises(AppError, match=message):
                client.predict(handle_file(str(tmp_path / upload)), [concept], 5, seed=seed, api_name="/edit")
            if concept == "+hat":  # /invert takes no concepts: the other two reach it too
                with pytest.raises(AppError, match=message):
                    client.predict(handle_file(str(tmp_path / upload)), 5, seed=seed, api_name="/invert")
        assert service._editor is None
    finally:
        app.close()


def test_the_http_api_has_named_endpoints_that_share_the_page_cache(sd_folder, tmp_path):
    """The documented example: /invert, then /edit of the same image reuses its inversion; the
    edited PNG carries the recipe; no other endpoint is offered."""
    from gradio_client import Client, handle_file

    service = EditorService(model=str(sd_folder), options=ModelOptions(device="cpu"))
    app = build_app(service)
    app.queue(default_concurrency_limit=1)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    scene(64, 64, seed=52).save(tmp_path / "photo.png")
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == {"/edit", "/invert"}
        reconstruction, status = client.predict(handle_file(str(tmp_path / "photo.png")), 4, api_name="/invert")
        assert Image.open(reconstruction).size == (64, 64) and "inversion" in status
        edited, again, status = client.predict(
            handle_file(str(tmp_path / "photo.png")), ["+a red hat:6", "-a cat"], 4, api_name="/edit"
        )
        assert "cached" in status and service.misses == 1
        recipe = json.loads(Image.open(edited).text["leditspp"])
        assert [(e["prompt"], e["remove"], e["scale"]) for e in recipe["edits"]] == [
            ("a red hat", False, 6.0),
            ("a cat", True, service.recommended["scale"]),
        ]
        assert recipe["steps"] == 4 and recipe["mask_mode"] == service.settings["mask_mode"]
        assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(reconstruction)))
    finally:
        app.close()


def test_an_error_in_the_page_is_said_there_and_keeps_the_results(sd_folder):
    import gradio as gr

    from leditspp.webui import _on_run

    on_run = _on_run(gr, EditorService(model=str(sd_folder)))
    values = [SETTINGS[k] for k in ("steps", "skip", "solver", "seed", "source_prompt", "source_guidance")]
    with pytest.warns(UserWarning, match="upload an image first"):
        out = on_run(None, [["hat", "+", 5, 0.9, 0, None]], *values, "intersect", "off", progress=None)
    assert [type(x).__name__ for x in out[:4]] == [type(gr.skip()).__name__] * 4  # the earlier results stay
    assert "upload an image first" in out[4]


def test_examples_fill_the_image_and_the_concepts(sd_folder):
    from leditspp.demo import EXAMPLE_EDITS

    for model, edits in (("demo-flow", EXAMPLE_EDITS["demo-flow"]), (str(sd_folder), EXAMPLE_EDITS["demo"])):
        app = build_app(EditorService(model=model))
        examples = [c for c in app.blocks.values() if type(c).__name__ == "Dataset"]
        (sample,) = examples[0].samples
        rows = sample[1]["data"] if isinstance(sample[1], dict) else sample[1]
        assert [f"{'-' if r[1] == '-' else '+'}{r[0]}:{r[2]:g}" for r in rows] == list(edits)


def test_small_results_are_shown_enlarged_and_files_do_not_pile_up(service):
    from leditspp.webui import SCRATCH_KEPT, shown

    assert shown(Image.new("RGB", (128, 96))).size == (512, 384)
    assert shown(Image.new("RGB", (1024, 640))).size == (1024, 640)
    image = scene(64, 64, seed=53)
    paths = [run_edit(service, image, [["hat", "+", 5, 0.9, 0, None]], SETTINGS)[3] for _ in range(SCRATCH_KEPT)]
    folder = Path(paths[0]).parent
    assert {Path(p).parent for p in paths} == {folder}  # one folder per service, not one per request
    assert len(list(folder.iterdir())) <= SCRATCH_KEPT and Path(paths[-1]).exists()


def test_a_service_removes_its_scratch_folder(sd_folder):
    import gc

    service = EditorService(model=str(sd_folder))
    folder = service.scratch_file("x.png").parent
    assert folder.is_dir()
    del service
    gc.collect()
    assert not folder.exists()


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

EXAMPLE = EXAMPLES_DIR / "shapes.png"
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
    service = EditorService(model="demo", options=ModelOptions(device="cpu"))
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
            _fill(page, 0, 2, "6")
            _fill(page, 1, 0, "blue square")
            _fill(page, 1, 1, "-")
            _fill(page, 1, 2, "4")
            page.locator("#run").click()
            page.locator("#edited img").wait_for(timeout=120_000)
            assert page.locator("#edited img").get_attribute("src").endswith(".png")
            page.wait_for_function("document.querySelectorAll('#masks img').length >= 2", timeout=60_000)
            assert service.misses == 1 and service.hits == 0
            _fill(page, 0, 2, "8")  # a new scale for the first concept (make demo's), then run again
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
    """Set a cell of the concepts table to ``text`` (its editor's whole content: on a slow page a
    select-all keystroke can miss, and typing would append, e.g. "+-")."""
    from playwright.sync_api import expect

    cell = page.locator(f"#concepts [data-testid=cell-{row}-{col}]")
    cell.dblclick()
    cell.locator("textarea").fill(text)
    cell.locator("textarea").press("Enter")
    expect(cell.locator("[data-editable]")).to_have_text(text)


def test_the_service_loads_its_editor_with_the_memory_plan_it_was_given(sd_folder):
    service = EditorService(model=str(sd_folder), options=ModelOptions(device="cpu", offload="model"))
    assert service.editor.plan.offload == "model"
    assert hasattr(service.editor.model.text.text_encoder, "_hf_hook")  # the encoder visits the device per call
