"""VATT's optional captioner: a vision-language model the user brings (a transformers folder) writes
an audio caption for a video; the caption is a STRING that can be edited before Encode Text turns it
into the VATT decoder's text condition."""

from __future__ import annotations

from comfy_api.latest import io

from ..audio.transforms import join_caption
from ..encoders.video_frames import evenly_spaced
from ..encoders.captioner import DEFAULT_INSTRUCTION, LAYOUTS, is_captioner_folder, load_captioner, Captioner
from . import socket_types as st
from .device import HostProgress, check_interrupt, on_compute_device
from .model_folders import list_config_folders, resolve_config_folder
from .video_input import sampled_video_frames

# Host folder keys searched for captioner folders (a folder = a directory holding config.json).
# av_captioners is the pack's (every folder is listed); in the host's text_encoders and LLM folders
# only those whose config.json names a vision-language model are listed.
CAPTIONER_FOLDER_KEYS = ("av_captioners", "text_encoders", "LLM")


def _is_captioner(key: str, path: str) -> bool:
    return key == "av_captioners" or is_captioner_folder(path)


def list_captioner_folders() -> list[str]:
    """'<key>/<relative folder>' for every captioner folder under the keys' paths."""
    return list_config_folders(CAPTIONER_FOLDER_KEYS, accept=_is_captioner)


def resolve_captioner_folder(name: str, node: str) -> str:
    return resolve_config_folder(name, CAPTIONER_FOLDER_KEYS, node, "a captioner")


class LoadCaptioner(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadCaptioner",
            display_name="Load Video Captioner",
            category=st.category("loaders"),
            description="Loads a vision-language model that writes text from images, for Caption Video: a transformers "
                        "folder (config.json, .safetensors weights, processor and tokenizer files) in "
                        "models/audiovisual/captioners, or one of the host's text_encoders / LLM folders. Chat models "
                        "(LLaVA, Qwen2-VL, SmolVLM, Idefics3, Gemma 3, ...) and image captioners (BLIP, BLIP-2, GIT, "
                        "PaliGemma) are read; only safetensors weights, and no code from the folder is run. The pack ships "
                        "av_captioners/synthav_captioner, a tiny BLIP that writes the SynthAV VATT default's captions "
                        "(SynthAV videos only).",
            inputs=[io.Combo.Input("captioner_name", options=list_captioner_folders(),
                                   tooltip="A vision-language model folder, shown as <models folder>/<folder name>: e.g. "
                                           "av_captioners/Qwen2-VL-2B-Instruct, av_captioners/blip-image-captioning-base.")],
            outputs=[st.Captioner.Output(display_name="captioner")],
        )

    @classmethod
    def execute(cls, captioner_name) -> io.NodeOutput:
        node = "Load Video Captioner"
        path = resolve_captioner_folder(captioner_name, node)
        try:
            return io.NodeOutput(load_captioner(path))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{node}: {e}") from None


class CaptionVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_CaptionVideo",
            display_name="Caption Video (audio)",
            category=st.category("encode"),
            description="Video -> an audio caption (STRING) written by a vision-language model, as VATT's captioning "
                        "stage does: frames taken at rate_hz (at most max_frames, evenly spaced), shown to the model with "
                        "the instruction. The caption is shown on the node; connect it to Encode Text's text (through the "
                        "host's string nodes to edit it, or with prefix / suffix here) to steer the VATT decoder.",
            inputs=[
                st.Captioner.Input("captioner", tooltip="From Load Video Captioner."),
                io.Video.Input("video", optional=True, tooltip="A VIDEO (e.g. from Load Video); its own frame rate is used."),
                io.Image.Input("frames", optional=True, tooltip="Instead of a VIDEO: an IMAGE batch of frames in order, with 'fps'."),
                io.Float.Input("fps", default=24.0, min=0.01, max=1000.0, step=0.01,
                               tooltip="Frame rate of the 'frames' batch. Ignored when a VIDEO is connected (it carries its own)."),
                io.Float.Input("rate_hz", default=2.0, min=0.01, max=120.0, step=0.01,
                               tooltip="Frames per second taken from the video for the model (2 = one frame every half "
                                       "second: a 2 s clip gives 4 frames)."),
                io.Int.Input("max_frames", default=4, min=1, max=64,
                             tooltip="At most this many frames reach the model (evenly spaced over the video, first and last "
                                     "included; 4 = a 2 x 2 sheet in the grid layout, the most the SynthAV captioner was "
                                     "trained on). More frames cost more time and memory."),
                io.Combo.Input("layout", options=list(LAYOUTS), default="grid",
                               tooltip="grid: one contact sheet of the frames (left to right, top to bottom; works with every "
                                       "model); frames: one image per frame (multi-image chat models such as Qwen2-VL, "
                                       "SmolVLM); middle: the middle frame alone."),
                io.String.Input("instruction", multiline=True, default=DEFAULT_INSTRUCTION,
                                tooltip="What the model is asked. Chat models: the request (a user turn). Captioning models "
                                        "(BLIP, GIT): the start of the caption to continue, e.g. 'the sound of', or empty; "
                                        "BLIP-2 / PaliGemma: their prompt, e.g. 'Question: what sounds does this make? Answer:'."),
                io.Int.Input("max_new_tokens", default=60, min=1, max=1024,
                             tooltip="The most tokens the model writes (a short caption needs 20-60)."),
                io.Float.Input("temperature", default=0.0, min=0.0, max=5.0, step=0.05,
                               tooltip="0 = the model's most likely caption (greedy, the same every run); above 0 = sampled "
                                       "at that temperature, seeded by 'seed'."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the sampling when temperature > 0: the same seed gives the same caption."),
                io.String.Input("prefix", default="", tooltip="Text put before the generated caption (may be empty)."),
                io.String.Input("suffix", default="",
                                tooltip="Text put after the generated caption, e.g. ', early' (a leading comma or full stop "
                                        "is attached without a space)."),
            ],
            outputs=[io.String.Output(display_name="caption")],
        )

    @classmethod
    def execute(cls, captioner, rate_hz, max_frames, layout, instruction, max_new_tokens, temperature, seed, fps=24.0,
                video=None, frames=None, prefix="", suffix="") -> io.NodeOutput:
        node = "Caption Video (audio)"
        if not isinstance(captioner, Captioner):
            raise ValueError(f"{node}: connect a captioner from Load Video Captioner")
        sampled, _duration_s = sampled_video_frames(video, frames, fps, rate_hz, node)
        sampled = evenly_spaced(sampled, int(max_frames))
        check_interrupt()
        try:
            with on_compute_device(captioner.model, half=True):
                caption = captioner.caption(sampled, instruction, max_new_tokens=int(max_new_tokens), seed=int(seed),
                                            temperature=float(temperature), layout=layout, progress=HostProgress())
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{node}: {e}") from None
        caption = join_caption(prefix or "", caption, suffix or "")
        return io.NodeOutput(caption, ui={"text": [caption]})


NODES = [LoadCaptioner, CaptionVideo]
