"""The extension object the host asks `comfy_entrypoint` for: it lists every node of the pack."""

import functools
import math

from comfy_api.latest import ComfyExtension, io

from . import (audio_adapter, audio_control, audio_splice, audioldm, captioning, embedding_to_audio, encoders, mapper,
               masked_generation, tokenizers, vatt, video_output, vocoders)
from .audio_output import SaveAudioWAV
from .example_inputs import install_example_inputs
from .model_folders import register_model_folders

register_model_folders()
install_example_inputs()

NODE_MODULES = [tokenizers, masked_generation, vocoders, encoders, mapper, audioldm, audio_adapter, audio_control, vatt,
                embedding_to_audio, video_output, captioning, audio_splice]


def refuse_non_finite_floats(node_class: type[io.ComfyNode]) -> type[io.ComfyNode]:
    """Makes the node refuse NaN and infinities in its FLOAT inputs before it runs: the host's range
    check lets NaN through (NaN < min is false), so a prompt from any client could run with cfg = NaN.
    (The headless runner refuses them earlier, for every node: workflow_format.find_non_finite_number.)"""
    if getattr(node_class, "_av_finite_floats", False):
        return node_class
    schema = node_class.define_schema()
    names = [i.id for i in schema.inputs if isinstance(i, io.Float.Input)]
    node_class._av_finite_floats = True
    if not names:
        return node_class
    execute = node_class.execute.__func__

    @functools.wraps(execute)
    def checked_execute(cls, *args, **kwargs):
        for name in names:
            value = kwargs.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{schema.display_name}: {name} is {value}; expected a finite number")
        return execute(cls, *args, **kwargs)

    node_class.execute = classmethod(checked_execute)
    return node_class


class AudioVisualExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [refuse_non_finite_floats(node) for node in [node for module in NODE_MODULES for node in module.NODES] + [SaveAudioWAV]]
