"""LEDITS++ for ComfyUI: leditspp's exact inversion and multi-concept edit on ComfyUI's own models."""
