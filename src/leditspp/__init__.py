"""leditspp: exact LEDITS++ image editing (Brack et al., CVPR 2024) on diffusers models.

from leditspp import Editor, Edit
editor = Editor.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
inversion = editor.invert("photo.png", seed=0)
result = editor.edit(inversion, ["+sunglasses", Edit("beard", remove=True, scale=7)])
result.images[0].save("edited.png")
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

from .errors import LeditsError

if TYPE_CHECKING:  # imported on first use (below): ``leditspp --help`` needs no torch
    from .editor import Editor, EditResult
    from .edits import Edit
    from .inversion import Inversion
    from .models.base import Conditioning

#: Where each public name lives, imported on first access (PEP 562).
_LAZY = {
    "Editor": ".editor",
    "EditResult": ".editor",
    "Edit": ".edits",
    "Inversion": ".inversion",
    "Conditioning": ".models.base",
}

__all__ = ["Conditioning", "Edit", "EditResult", "Editor", "Inversion", "LeditsError", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'leditspp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
