"""The extension object the host asks `comfy_entrypoint` for: it lists every node of the pack."""

from comfy_api.latest import ComfyExtension, io

from . import (audio_adapter, audio_control, audioldm, captioning, embedding_to_audio, encoders, mapper,
               masked_generation, tokenizers, vatt, vocoders)
from .audio_output import SaveAudioWAV
from .example_inputs import install_example_inputs
from .model_folders import register_model_folders

register_model_folders()
install_example_inputs()

NODE_MODULES = [tokenizers, masked_generation, vocoders, encoders, mapper, audioldm, audio_adapter, audio_control, vatt,
                embedding_to_audio, captioning]


class AudioVisualExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in NODE_MODULES for node in module.NODES] + [SaveAudioWAV]
