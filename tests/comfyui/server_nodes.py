"""A node the server test adds to ComfyUI (linked into its ``custom_nodes``): ``DualCLIPLoader`` for
the test's small T5. ComfyUI's loaders fix T5-XXL's size (4.8 B parameters, too big for a test);
this one loads the same files into the same FLUX.1 text stack through ``comfy.sd.load_clip``, with
the T5 made small by ``model_options`` (:data:`tiny.FLUX_TEXT_OPTIONS`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import comfy.sd
import folder_paths
import nodes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import FLUX_TEXT_OPTIONS


class TinyDualCLIPLoader(nodes.DualCLIPLoader):
    """``DualCLIPLoader`` (same inputs, same ``CLIP``) for text encoders of ``FLUX_TEXT_OPTIONS``' sizes."""

    CATEGORY = "testing"

    def load_clip(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple[Any]:
        paths = [folder_paths.get_full_path_or_raise("text_encoders", name) for name in (clip_name1, clip_name2)]
        clip = comfy.sd.load_clip(
            ckpt_paths=paths,
            embedding_directory=folder_paths.get_folder_paths("embeddings"),
            clip_type=getattr(comfy.sd.CLIPType, type.upper()),
            model_options={k: dict(v) for k, v in FLUX_TEXT_OPTIONS.items()},
        )
        return (clip,)


NODE_CLASS_MAPPINGS = {"TinyDualCLIPLoader": TinyDualCLIPLoader}
