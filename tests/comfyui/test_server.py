"""The pack in a real ComfyUI server: a workflow posted to its HTTP API on a tiny checkpoint.

checkpoint loader → LeditsInvert → LeditsConcept → LeditsEdit → VAEDecode → SaveImage, beside
VAEEncode → VAEDecode of the same image. With no concept the edit's latent is the VAE's (SaveLatent,
bit for bit) and its image the VAE round trip; with a concept the image changes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from .comfy_env import PACK, require_comfyui

ROOT = require_comfyui()

from safetensors.torch import load_file  # noqa: E402

from . import tiny  # noqa: E402

CHECKPOINT = "tiny_sd15.safetensors"
#: The example's nodes the test rewires, in the order they appear in it.
NAMED = ("CheckpointLoaderSimple", "LoadImage", "LeditsInvert", "LeditsEdit", "VAEDecode", "SaveImage")
#: The example workflows (each as ``NAME.json`` for the front end and ``NAME_api.json`` for the API).
EXAMPLES = ("ledits_sd15", "ledits_sdxl", "ledits_flux")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ComfyUI server with its base directory in a temp folder, the pack linked into custom_nodes."""
    base = tmp_path_factory.mktemp("comfyui")
    for folder in ("custom_nodes", "models/checkpoints", "input"):
        (base / folder).mkdir(parents=True)
    (base / "custom_nodes" / "leditspp").symlink_to(PACK, target_is_directory=True)
    tiny.write_checkpoint(str(base / "models" / "checkpoints" / CHECKPOINT))
    pixels = (tiny.image(seed=4, size=128)[0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(base / "input" / "in.png")
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


def workflow(steps: int) -> dict:
    """The pack's example SD 1.5 workflow on the tiny checkpoint, beside an edit with no concept and
    the VAE round trip of the same image (each saved as an image and the latents also as files)."""
    graph = json.loads((PACK / "example_workflows" / "ledits_sd15_api.json").read_text())
    ckpt, image, invert, edit, decode, save = (n for n in graph if graph[n]["class_type"] in NAMED)
    graph[ckpt]["inputs"]["ckpt_name"] = CHECKPOINT
    graph[image]["inputs"]["image"] = "in.png"
    graph[invert]["inputs"]["steps"] = steps
    vae = graph[decode]["inputs"]["vae"]
    graph["none"] = {"class_type": "LeditsEdit", "inputs": {**graph[edit]["inputs"]}}
    del graph["none"]["inputs"]["concepts"]
    graph["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": [image, 0], "vae": vae}}
    saved = {"edit": edit, "none": "none", "encode": "encode"}
    for name, node in saved.items():
        graph[f"decode_{name}"] = {"class_type": "VAEDecode", "inputs": {"samples": [node, 0], "vae": vae}}
        graph[f"save_{name}"] = {
            "class_type": "SaveImage",
            "inputs": {"images": [f"decode_{name}", 0], "filename_prefix": name},
        }
        graph[f"latent_{name}"] = {
            "class_type": "SaveLatent",
            "inputs": {"samples": [node, 0], "filename_prefix": f"latents/{name}"},
        }
    del graph[save]
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


def test_a_workflow_reconstructs_exactly_without_a_concept_and_edits_with_one(server):
    url, base = server
    outputs = run_prompt(url, workflow(steps=4))
    output = base / "output"
    pixels = {
        n: np.asarray(Image.open(output / outputs[f"save_{n}"]["images"][0]["filename"]))
        for n in ("edit", "none", "encode")
    }
    latents = {
        n: load_file(str(next((output / "latents").glob(f"{n}_*.latent"))))["latent_tensor"]
        for n in ("edit", "none", "encode")
    }
    assert (latents["none"] == latents["encode"]).all()
    assert (latents["edit"] != latents["encode"]).float().mean() > 0.5
    assert np.array_equal(pixels["none"], pixels["encode"])
    assert np.abs(pixels["edit"].astype(int) - pixels["encode"]).mean() > 1.0
    assert outputs["9"]["images"], "the example previews the concepts' masks"
    log = (base / "server.log").read_text()
    assert "Missing VAE keys" not in log and "clip missing" not in log, log[-3000:]


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
