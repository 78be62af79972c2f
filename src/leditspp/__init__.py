"""leditspp: exact LEDITS++ image editing (Brack et al., CVPR 2024) on diffusers models.

from leditspp import Editor, Edit
editor = Editor.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
inversion = editor.invert("photo.png", seed=0)
result = editor.edit(inversion, ["+sunglasses", Edit("beard", remove=True, scale=7)])
result.images[0].save("edited.png")
"""

__version__ = "0.1.0"

from .editor import Editor, EditResult
from .edits import Edit
from .errors import LeditsError
from .inversion import Inversion
from .models.base import Conditioning

__all__ = ["Conditioning", "Edit", "EditResult", "Editor", "Inversion", "LeditsError", "__version__"]
