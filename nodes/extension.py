"""The extension object the host asks `comfy_entrypoint` for: it lists every node of the pack."""

from comfy_api.latest import ComfyExtension, io

from . import masked_generation, tokenizers, vocoders
from .audio_output import SaveAudioWAV
from .example_inputs import install_example_inputs
from .model_folders import register_model_folders

register_model_folders()
install_example_inputs()


class AudioVisualExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*tokenizers.NODES, *masked_generation.NODES, *vocoders.NODES, SaveAudioWAV]
