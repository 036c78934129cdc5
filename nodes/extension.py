"""The extension object the host asks `comfy_entrypoint` for: it lists every node of the pack."""

from comfy_api.latest import ComfyExtension, io

from .audio_output import SaveAudioWAV


class AudioVisualExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            SaveAudioWAV,
        ]
