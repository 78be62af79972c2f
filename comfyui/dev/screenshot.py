"""A picture of an example workflow in ComfyUI's front end (docs/comfyui.png).

Starts a ComfyUI server offline in a temp base directory with this pack linked into its
``custom_nodes`` (run by ``--python``, an environment with ComfyUI's requirements), opens it in
headless Chromium through Playwright (run this script with a Python that has ``playwright``),
loads the workflow with the app's own ``app.loadGraphData`` and saves a screenshot::

    python comfyui/dev/screenshot.py --python ~/.cache/leditspp/venv-comfy-*/bin/python \\
        --comfyui ../shared/comfyui --out docs/comfyui.png
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from frontend import CHROMIUM, apply_settings, load, open_app
from PIL import Image
from playwright.sync_api import sync_playwright

PACK = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(base: Path, image: str) -> None:
    """The server's base directory: the pack linked, the workflow's input image."""
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "leditspp").symlink_to(PACK, target_is_directory=True)
    (base / "input").mkdir()
    Image.new("RGB", (512, 512), (128, 144, 160)).save(base / "input" / image)


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 180.0) -> None:
    """Until the server lists the pack's nodes (or exits, or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/object_info/LeditsEdit", timeout=5).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"ComfyUI did not start at {url}")


def shoot(url: str, graph: dict, out: Path, size: tuple[int, int]) -> None:
    """Open ``url`` in headless Chromium, load ``graph`` into the canvas and save ``out``."""
    apply_settings(url)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page, errors = open_app(browser, url, size)
        report = load(page, errors, graph)
        page.keyboard.press("Escape")  # any dialog the front end opened over the canvas
        page.wait_for_timeout(1000)
        if sorted(report["types"]) != sorted(n["type"] for n in graph["nodes"]) or report["flagged"]:
            raise SystemExit(f"the front end loaded {report['types']}, flagged {report['flagged']}")
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="Python of an environment with ComfyUI's requirements")
    parser.add_argument("--comfyui", required=True, type=Path, help="a ComfyUI v0.3.64 checkout")
    parser.add_argument("--workflow", type=Path, default=PACK / "example_workflows" / "ledits_sd15.json")
    parser.add_argument("--out", type=Path, default=Path("docs/comfyui.png"))
    args = parser.parse_args()
    graph = json.loads(args.workflow.read_text())
    image = next(n["widgets_values"][0] for n in graph["nodes"] if n["type"] == "LoadImage")
    with tempfile.TemporaryDirectory() as tmp:
        base, port = Path(tmp), free_port()
        prepare(base, image)
        command = [args.python, "-B", str(args.comfyui / "main.py"), "--cpu", "--listen", "127.0.0.1"]
        command += ["--port", str(port), "--disable-auto-launch", "--base-directory", str(base)]
        command += ["--database-url", "sqlite:///:memory:"]
        with (base / "server.log").open("w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=base)
            try:
                wait_for(f"http://127.0.0.1:{port}", process)
                shoot(f"http://127.0.0.1:{port}", graph, args.out, (1600, 1000))
            finally:
                process.terminate()
                process.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
