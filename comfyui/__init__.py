"""LEDITS++ nodes for ComfyUI (this folder goes into ``ComfyUI/custom_nodes/``)."""

from .leditspp_comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
