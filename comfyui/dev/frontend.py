"""Load workflows into ComfyUI's front end in headless Chromium and report what it made of them.

Against a running ComfyUI server, with a Python that has ``playwright`` (and Chromium installed)::

    python comfyui/dev/frontend.py http://127.0.0.1:8188 comfyui/example_workflows/ledits_sd15.json

prints, per workflow, a JSON object: the node types the front end loaded (a type it has no
definition for loads as an empty node), the nodes it flagged with errors, the dialogs and toasts it
showed, the errors it logged or threw (but failed fetches: the server is offline) and the API
prompt it makes of the graph (``app.graphToPrompt``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

#: Front-end settings: no first-run template gallery, no minimap over the graph.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: How Chromium logs a failed fetch.
OFFLINE = "Failed to load resource"
#: What the page reports after a load (``app.graph``'s nodes, open dialogs and toasts, the prompt).
REPORT = """async () => {
  const nodes = window.app.graph._nodes;
  const texts = selector => [...document.querySelectorAll(selector)].map(e => e.innerText);
  let prompt = null, errors = [];
  try {
    prompt = (await window.app.graphToPrompt()).output;
  } catch (e) {
    errors.push(String(e));
  }
  return {
    types: nodes.map(n => n.type),
    flagged: nodes.filter(n => n.has_errors).map(n => n.last_serialization?.type ?? n.type),
    dialogs: texts(".p-dialog"),
    toasts: texts(".p-toast-message"),
    prompt,
    errors,
  };
}"""


def apply_settings(url: str) -> None:
    """Store :data:`SETTINGS` for the server's default user (before the page reads them)."""
    request = urllib.request.Request(f"{url}/settings", data=json.dumps(SETTINGS).encode(), method="POST")
    urllib.request.urlopen(request, timeout=30).close()


def open_app(browser: Any, url: str, size: tuple[int, int]) -> tuple[Any, list[str]]:
    """A page with the app loaded from ``url``, and the list its console errors collect in."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    errors: list[str] = []
    # the app's own fetches that fail offline (user.css, templates, release notes) are not the graph's
    page.on(
        "console", lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith(OFFLINE) else None
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("window.app && window.app.graph", timeout=60_000)
    return page, errors


def load(page: Any, errors: list[str], graph: dict) -> dict[str, Any]:
    """Load ``graph`` (UI format) into the canvas as the app's own menu does; the page's report,
    with the console errors logged meanwhile."""
    errors.clear()
    page.evaluate("graph => window.app.loadGraphData(graph)", graph)
    page.wait_for_timeout(2000)
    report = page.evaluate(REPORT)
    return {**report, "errors": report["errors"] + errors}


def check(url: str, workflows: list[Path], size: tuple[int, int] = (1600, 1000)) -> list[dict[str, Any]]:
    """The front end's report on each of ``workflows``, each loaded into a page of its own."""
    from playwright.sync_api import sync_playwright

    apply_settings(url)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        reports = []
        for path in workflows:
            page, errors = open_app(browser, url, size)
            reports.append(load(page, errors, json.loads(path.read_text())))
            page.close()
        browser.close()
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the ComfyUI server, e.g. http://127.0.0.1:8188")
    parser.add_argument("workflows", nargs="+", type=Path, help="UI-format workflow files")
    args = parser.parse_args()
    print(json.dumps(check(args.url.rstrip("/"), args.workflows), indent=1))


if __name__ == "__main__":
    main()
