"""comfyui-audiovisual: audio-visual generation nodes for ComfyUI.

This file is the host's entry point only. It imports nothing from the host at import time, so
the package can also be imported outside ComfyUI (as `comfyui_audiovisual`, for the CLI, the
training code and the tests).
"""

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]


async def comfy_entrypoint():
    """Called by ComfyUI's custom-node loader: returns the extension that lists every node."""
    from .nodes.extension import AudioVisualExtension

    return AudioVisualExtension()
