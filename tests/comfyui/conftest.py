"""Collection rules of the pack's tests."""

#: A ComfyUI custom node the server test links into ``custom_nodes``, not a test module: it imports
#: ComfyUI at its top, so the docstring-example collection must not import it.
collect_ignore = ["server_nodes.py"]
