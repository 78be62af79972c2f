"""The pack in a real ComfyUI server: each example workflow posted to its HTTP API on small models.

Every example (SD 1.5, SDXL, FLUX.1) runs as it ships — its loaders load tiny random files the test
writes under the names the example gives — beside an edit with no concept and VAEEncode → VAEDecode
of the same image. With no concept the edit's latent is the VAE's (SaveLatent, bit for bit) and its
image the VAE round trip; with the example's first concept the image changes, more inside the
concept's mask than outside. FLUX.1's T5 is the one part ComfyUI's loaders cannot make small: its
DualCLIPLoader becomes ``server_nodes.TinyDualCLIPLoader`` (same files, same FLUX.1 text stack).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .comfy_env import PACK, require_comfyui

ROOT = require_comfyui()

from safetensors.torch import load_file  # noqa: E402

from . import tiny  # noqa: E402

#: The example workflows (each as ``NAME.json`` for the front end and ``NAME_api.json`` for the API).
EXAMPLES = ("ledits_sd15", "ledits_sdxl", "ledits_flux")
#: The family each example's single-file checkpoint is written as.
CHECKPOINTS = {"ledits_sd15": "SD15", "ledits_sdxl": "SDXL"}
#: Image side (latents of 16 × 16).
SIZE = 128
#: The Python that drives the browser (it needs ``playwright``; ComfyUI's environment has none):
#: comfyui/dev/test.sh names the project's test environment.
BROWSER_PYTHON = os.environ.get("LEDITSPP_BROWSER_PYTHON", sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
        return json.loads(response.read())


def example(name: str) -> dict:
    return json.loads((PACK / "example_workflows" / f"{name}_api.json").read_text())


def inputs_of(graph: dict, class_type: str) -> dict:
    """The inputs of the one node of ``class_type`` in ``graph``."""
    (node,) = (n for n in graph.values() if n["class_type"] == class_type)
    return node["inputs"]


def write_models(base: Path, name: str) -> None:
    """The files example ``name`` loads, tiny and random, under the names it gives them: a
    checkpoint, or FLUX.1's diffusion model, CLIP-L and T5 (in the example's order) and VAE."""
    graph, models = example(name), base / "models"
    if name in CHECKPOINTS:
        path = models / "checkpoints" / inputs_of(graph, "CheckpointLoaderSimple")["ckpt_name"]
        tiny.write_checkpoint(str(path), family=CHECKPOINTS[name])
        return
    text = inputs_of(graph, "DualCLIPLoader")
    tiny.write_flux(
        str(models / "diffusion_models" / inputs_of(graph, "UNETLoader")["unet_name"]),
        str(models / "text_encoders" / text["clip_name1"]),
        str(models / "text_encoders" / text["clip_name2"]),
        str(models / "vae" / inputs_of(graph, "VAELoader")["vae_name"]),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ComfyUI server with its base directory in a temp folder, the pack and the test's node
    linked into custom_nodes, every example's models and input image written."""
    base = tmp_path_factory.mktemp("comfyui")
    for folder in ("custom_nodes", "input", "models/checkpoints", "models/diffusion_models", "models/text_encoders"):
        (base / folder).mkdir(parents=True)
    (base / "models" / "vae").mkdir()
    (base / "custom_nodes" / "leditspp").symlink_to(PACK, target_is_directory=True)
    (base / "custom_nodes" / "leditspp_test_nodes.py").symlink_to(Path(__file__).with_name("server_nodes.py"))
    pixels = (tiny.image(seed=4, size=SIZE)[0].numpy() * 255).round().astype(np.uint8)
    for name in EXAMPLES:
        write_models(base, name)
        Image.fromarray(pixels).save(base / "input" / inputs_of(example(name), "LoadImage")["image"])
    port = free_port()
    log = (base / "server.log").open("w")
    command = [
        sys.executable,
        "-B",
        str(ROOT / "main.py"),
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-auto-launch",
        "--base-directory",
        str(base),
        "--database-url",
        "sqlite:///:memory:",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see comfy_env.require_comfyui
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=base, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited: {(base / 'server.log').read_text()[-3000:]}")
            try:
                call(f"{url}/object_info/LeditsEdit")
                break
            except OSError:
                time.sleep(0.5)
        yield url, base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def workflow(name: str, steps: int = 3) -> dict:
    """Example ``name`` at ``steps`` steps, its edit on its first concept, beside an edit with no
    concept and the VAE round trip of the same image (each saved as an image and as latents)."""
    graph = example(name)
    ids = {node["class_type"]: node_id for node_id, node in reversed(graph.items())}  # each type's first
    graph[ids["LeditsInvert"]]["inputs"]["steps"] = steps
    if "DualCLIPLoader" in ids:
        graph[ids["DualCLIPLoader"]]["class_type"] = "TinyDualCLIPLoader"
    edit = graph[ids["LeditsEdit"]]["inputs"]
    edit["concepts"] = [ids["LeditsConcept"], 0]
    vae = graph[ids["VAEDecode"]]["inputs"]["vae"]
    graph["none"] = {"class_type": "LeditsEdit", "inputs": {k: v for k, v in edit.items() if k != "concepts"}}
    graph["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": [ids["LoadImage"], 0], "vae": vae}}
    for kind, node in {"edit": ids["LeditsEdit"], "none": "none", "encode": "encode"}.items():
        graph[f"decode_{kind}"] = {"class_type": "VAEDecode", "inputs": {"samples": [node, 0], "vae": vae}}
        graph[f"save_{kind}"] = {
            "class_type": "SaveImage",
            "inputs": {"images": [f"decode_{kind}", 0], "filename_prefix": f"{name}/{kind}"},
        }
        graph[f"latent_{kind}"] = {
            "class_type": "SaveLatent",
            "inputs": {"samples": [node, 0], "filename_prefix": f"latents/{name}/{kind}"},
        }
    del graph[ids["SaveImage"]]
    return graph


def run_prompt(url: str, prompt: dict) -> dict:
    prompt_id = call(f"{url}/prompt", {"prompt": prompt})["prompt_id"]
    for _ in range(1200):
        entry = call(f"{url}/history/{prompt_id}").get(prompt_id)
        if (entry and entry["status"].get("completed")) or (entry and entry["status"].get("status_str") == "error"):
            assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
            return entry["outputs"]
        time.sleep(0.5)
    pytest.fail("the workflow did not finish in 10 minutes")


def test_the_nodes_are_listed(server):
    url, _ = server
    info = call(f"{url}/object_info")
    assert {"LeditsInvert", "LeditsConcept", "LeditsEdit"} <= set(info)
    assert info["LeditsEdit"]["output"] == ["LATENT", "MASK"]


def read_image(base: Path, saved: dict) -> np.ndarray:
    """A saved image (an entry of a node's ``images`` output) as an array."""
    return np.asarray(Image.open(base / saved["type"] / saved["subfolder"] / saved["filename"]))


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_reconstructs_exactly_without_a_concept_and_edits_with_one(server, name):
    url, base = server
    graph = workflow(name)
    outputs = run_prompt(url, graph)
    kinds = ("edit", "none", "encode")
    pixels = {kind: read_image(base, outputs[f"save_{kind}"]["images"][0]) for kind in kinds}
    latents = {
        kind: load_file(str(next((base / "output" / "latents" / name).glob(f"{kind}_*.latent"))))["latent_tensor"]
        for kind in kinds
    }
    assert (latents["none"] == latents["encode"]).all()
    assert np.array_equal(pixels["none"], pixels["encode"])
    assert np.abs(pixels["edit"].astype(int) - pixels["encode"]).mean() > 1.0
    # the concept's mask (the example previews it), from image size back to the latents' cells
    (preview,) = (n for n, node in graph.items() if node["class_type"] == "PreviewImage")
    (mask_image,) = outputs[preview]["images"]
    h, w = latents["edit"].shape[-2:]
    mask = read_image(base, mask_image)[..., 0].reshape(h, SIZE // h, w, SIZE // w).mean((1, 3)) / 255
    assert 0 < mask.mean() < 1, mask
    change = (latents["edit"] - latents["encode"]).abs()[0].mean(0).numpy()
    inside, outside = (change * mask).sum() / mask.sum(), (change * (1 - mask)).sum() / (1 - mask).sum()
    assert inside > 1.5 * outside, (inside, outside)
    log = (base / "server.log").read_text()
    for warning in ("Missing VAE keys", "clip missing", "unet missing", "unet unexpected"):
        assert warning not in log, log[-3000:]


def widgets(spec: dict) -> list[list | None]:
    """The widgets the front end draws for a node of ``spec`` (``/object_info``), in order: one per
    value input (its choices for a choice, else None), plus a seed's control and an image upload."""
    out: list[list | None] = []
    for name, (kind, *options) in {**spec["input"]["required"], **spec["input"].get("optional", {})}.items():
        if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            extra = options[0] if options else {}
            out.append(kind if isinstance(kind, list) else None)
            out += [None] * ((name in ("seed", "noise_seed")) + bool(extra.get("image_upload")))
    return out


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_ui_examples_match_the_node_definitions(server, name):
    """A UI-format example: every node exists, every link joins an output and an input of its
    type, and every node carries a value for each of its widgets (a valid one for the pack's choices)."""
    url, _ = server
    info = call(f"{url}/object_info")
    ui = json.loads((PACK / "example_workflows" / f"{name}.json").read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link, source, slot, target, target_slot, kind in ui["links"]:
        assert info[nodes[source]["type"]]["output"][slot] == kind == nodes[target]["inputs"][target_slot]["type"], link
    for node in ui["nodes"]:
        expected = widgets(info[node["type"]])
        assert len(node["widgets_values"]) == len(expected), node["type"]
        if node["type"].startswith("Ledits"):
            assert all(c is None or v in c for v, c in zip(node["widgets_values"], expected, strict=True)), node


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_api_examples_match_the_node_definitions(server, name):
    """An API-format example: every node exists and gets each required input, only inputs it
    declares, links from an output of the input's type, and valid choices for the pack's nodes."""
    url, _ = server
    info = call(f"{url}/object_info")
    graph = json.loads((PACK / "example_workflows" / f"{name}_api.json").read_text())
    for node_id, node in graph.items():
        spec = info[node["class_type"]]["input"]
        declared = {**spec["required"], **spec.get("optional", {})}
        assert set(spec["required"]) <= set(node["inputs"]) <= set(declared), (node_id, node)
        for input_name, value in node["inputs"].items():
            kind = declared[input_name][0]
            if isinstance(value, list):
                source, slot = value
                assert info[graph[source]["class_type"]]["output"][slot] == kind, (node_id, input_name)
            elif isinstance(kind, list) and node["class_type"].startswith("Ledits"):
                assert value in kind, (node_id, input_name, value)


def browser_missing() -> str | None:
    """Why the front end cannot be driven here, or None."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "Chromium is not installed (Debian: apt-get install chromium)"
    try:
        found = subprocess.run([BROWSER_PYTHON, "-c", "import playwright.sync_api"], capture_output=True).returncode
    except OSError:  # no such Python
        found = 1
    if found:
        return f"{BROWSER_PYTHON} has no playwright: set LEDITSPP_BROWSER_PYTHON to a Python that has it"
    return None


BROWSER_MISSING = browser_missing()


@pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))
def test_the_ui_examples_load_in_the_front_end_as_their_api_twins(server):
    """Each UI example loaded into ComfyUI's front end (headless Chromium, ``comfyui/dev/frontend.py``):
    every node is defined (none loads empty or flagged), no dialog, toast or error shows, and the
    front end's API prompt of the graph is the API example's (which the tests above run)."""
    url, _ = server
    paths = [PACK / "example_workflows" / f"{name}.json" for name in EXAMPLES]
    script = [BROWSER_PYTHON, str(PACK / "dev" / "frontend.py"), url, *map(str, paths)]
    done = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, path, report in zip(EXAMPLES, paths, json.loads(done.stdout), strict=True):
        ui = json.loads(path.read_text())
        assert sorted(report["types"]) == sorted(n["type"] for n in ui["nodes"]), (name, report["types"])
        assert {"LeditsInvert", "LeditsConcept", "LeditsEdit"} <= set(report["types"]), name
        assert not (report["flagged"] or report["dialogs"] or report["toasts"] or report["errors"]), (name, report)
        prompt = {i: {"class_type": n["class_type"], "inputs": n["inputs"]} for i, n in report["prompt"].items()}
        assert prompt == example(name), name
