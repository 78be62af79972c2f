"""The README and the docs site's sources: short, every relative link resolves, no internal notes
cited. (``make docs`` builds the site with ``mkdocs build --strict``, which checks the pages' links,
anchors and API references; these checks cover the README, which the site does not include.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))

from public_text import internal_references  # noqa: E402 — the hooks folder is not a package

LINK = re.compile(r"\]\(([^)\s]+)\)")
PAGES = sorted((ROOT / "docs").rglob("*.md"))


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_the_readme_starts_with_the_two_commands():
    head = (ROOT / "README.md").read_text().splitlines()[:20]
    assert any(line.startswith("make demo") for line in head) and any(line.startswith("make test") for line in head)


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_and_no_internal_notes_are_cited(path):
    text = path.read_text()
    assert internal_references(text) == []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (path.parent / target.split("#")[0]).exists(), f"{path.name}: broken link {target}"


def test_no_page_tells_to_pip_install_the_package_by_name():
    # leditspp is not on PyPI: a clone (-e ".[web]") or a git URL installs it
    for path in [ROOT / "README.md", *PAGES]:
        for line in path.read_text().splitlines():
            for rest in re.findall(r"pip install ['\"]?leditspp\b(.*)", line):
                assert " @ " in rest, f"{path.name}: {line.strip()}"


def test_docstrings_lose_internal_references_and_sphinx_roles():
    pytest.importorskip("griffe", reason="the docs extra: pip install -e '.[docs]'")
    from docstrings import clean

    assert clean("fp32 regardless (SPEC A5).") == "fp32 regardless."
    assert clean("guidance (paper Eqs. 8–12; SPEC B §5): pure") == "guidance (paper Eqs. 8–12): pure"
    assert clean("a UNet one (SD-shaped, issue 3) and") == "a UNet one (SD-shaped) and"
    assert clean("see :meth:`from_pipe` and :class:`~leditspp.offload.MemoryPlan`") == (
        "see ``from_pipe`` and ``MemoryPlan``"
    )
    assert clean("a (2k+1)² max filter (tested)") == "a (2k+1)² max filter (tested)"


def test_the_command_line_page_renders_every_command_and_option_of_the_parser():
    import argparse

    from cli_reference import _parser, render

    page = render()
    top = _parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, parser in commands.items():
        assert f"## `leditspp {name}`" in page
        for action in parser._actions:
            if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
                assert all(f"`{flag}" in page for flag in action.option_strings), (name, action.option_strings)


def test_the_web_ui_http_api_example_runs_as_written(sd_folder, monkeypatch):
    """docs/webui.md's gradio_client example, run against a served app (a tiny SD model instead of
    the demo one, for speed): the endpoints' names, inputs and outputs are the server's."""
    pytest.importorskip("gradio", reason="the web extra")
    import socket

    from PIL import Image

    from leditspp.model_options import ModelOptions
    from leditspp.webui import EditorService, build_app

    code = re.search(r"## HTTP API.*?```python\n(.*?)```", (ROOT / "docs" / "webui.md").read_text(), re.S).group(1)
    app = build_app(EditorService(model=str(sd_folder), options=ModelOptions(device="cpu")))
    app.queue(default_concurrency_limit=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    monkeypatch.chdir(ROOT)  # the example's image path is the repository's
    namespace: dict = {}
    try:
        exec(code.replace("http://127.0.0.1:7860/", f"http://127.0.0.1:{port}/"), namespace)
    finally:
        app.close()
    assert namespace["status"].startswith("inversion: cached") and "2 concept(s)" in namespace["status"]
    assert "leditspp" in Image.open(namespace["edited"]).text
