"""The library stays Apache-2.0: nothing under src/leditspp imports ComfyUI (GPL-3.0); only the
pack in comfyui/ does."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "leditspp"


def comfy_imports(path: Path) -> list[str]:
    """The ``comfy``/``comfy_*`` modules ``path`` imports."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return [n for n in names if n.split(".")[0] == "comfy" or n.startswith("comfy_")]


def test_the_library_never_imports_comfyui() -> None:
    found = {str(p.relative_to(SRC)): comfy_imports(p) for p in SRC.rglob("*.py")}
    assert {p: names for p, names in found.items() if names} == {}


def test_the_check_sees_a_comfy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom comfy.model_base import BaseModel\nimport comfy_extras.nodes_mask\n")
    assert comfy_imports(module) == ["os", "comfy.model_base", "comfy_extras.nodes_mask"][1:]
