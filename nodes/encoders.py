"""Encoder nodes: load a CLIP / CLAP / AST / T5 transformers folder; encode images, video, audio, text
into AV_EMBEDDING (vectors that carry their space: family, model, modality)."""

from comfy_api.latest import io

from ..encoders.pretrained import LONG_AUDIO, load_encoder
from ..encoders.video_frames import AGGREGATIONS, aggregate
from . import socket_types as st
from .device import HostProgress, check_interrupt, on_compute_device
from .model_folders import list_config_folders, resolve_config_folder
from .payloads import Embedding
from .video_input import sampled_video_frames

# Host folder keys searched for encoder folders (a folder = a directory holding config.json).
# The first three are the host's own (users already keep CLIP / CLAP / T5 there); av_encoders is the pack's.
ENCODER_FOLDER_KEYS = ("clip_vision", "audio_encoders", "text_encoders", "av_encoders")


def list_encoder_folders() -> list[str]:
    """'<key>/<relative folder>' for every transformers folder under the encoder keys' paths."""
    return list_config_folders(ENCODER_FOLDER_KEYS)


def resolve_encoder_folder(name: str, node: str) -> str:
    return resolve_config_folder(name, ENCODER_FOLDER_KEYS, node, "an encoder")


def require_encoder(encoder, modality: str, node: str):
    if encoder is None or not hasattr(encoder, "check_modality"):
        raise ValueError(f"{node}: connect an encoder from Load Encoder")
    try:
        encoder.check_modality(modality)
    except ValueError as e:
        raise ValueError(f"{node}: {e}") from None
    return encoder


def run_encoder(encoder, node: str, fn):
    """Runs `fn()` with the encoder's module on the host's compute device; errors get the node's name."""
    check_interrupt()
    try:
        with on_compute_device(encoder.module, half=encoder.family != "t5"):  # T5 overflows in float16
            return fn()
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{node}: {e}") from None


ENCODER_TOOLTIP = "From Load Encoder."


class LoadEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadEncoder",
            display_name="Load Encoder",
            category=st.category("loaders"),
            description="Loads a CLIP (image + text), CLAP (audio + text), AST (audio), T5 or CLIP text encoder from a "
                        "transformers folder (config.json, weights, tokenizer / preprocessor files) in models/clip_vision, "
                        "models/audio_encoders, models/text_encoders or models/audiovisual/encoders. The kind is read from "
                        "config.json.",
            inputs=[io.Combo.Input("encoder_name", options=list_encoder_folders(),
                                   tooltip="A transformers folder, shown as <models folder>/<folder name>: e.g. "
                                           "clip_vision/clip-vit-large-patch14, audio_encoders/clap-htsat-unfused.")],
            outputs=[st.Encoder.Output(display_name="encoder")],
        )

    @classmethod
    def execute(cls, encoder_name) -> io.NodeOutput:
        path = resolve_encoder_folder(encoder_name, "Load Encoder")
        try:
            return io.NodeOutput(load_encoder(path))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"Load Encoder: {e}") from None


class EncodeImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EncodeImage",
            display_name="Encode Image",
            category=st.category("encode"),
            description="Image(s) -> one embedding per image [batch, width] with an image encoder (CLIP image_embeds). "
                        "Images are resized and centre-cropped to the encoder's input size.",
            inputs=[
                st.Encoder.Input("encoder", tooltip=ENCODER_TOOLTIP + " Must encode images (CLIP)."),
                io.Image.Input("image", tooltip="One image or a batch; each gives one vector."),
            ],
            outputs=[st.Embedding.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, encoder, image) -> io.NodeOutput:
        node = "Encode Image"
        require_encoder(encoder, "image", node)
        return io.NodeOutput(run_encoder(encoder, node, lambda: encoder.encode_images(image, progress=HostProgress())))


class EncodeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EncodeVideo",
            display_name="Encode Video",
            category=st.category("encode"),
            description="Video frames -> an image-encoder embedding. Frames are taken at an explicit rate in Hz (the frame "
                        "shown at 0, 1/rate, 2/rate, ... s), so the result does not depend on the video's own fps. Connect "
                        "a VIDEO, or an IMAGE batch of frames together with its fps.",
            inputs=[
                st.Encoder.Input("encoder", tooltip=ENCODER_TOOLTIP + " Must encode images (CLIP)."),
                io.Video.Input("video", optional=True, tooltip="A VIDEO (e.g. from Load Video); its own frame rate is used."),
                io.Image.Input("frames", optional=True, tooltip="Instead of a VIDEO: an IMAGE batch of frames in order, with 'fps'."),
                io.Float.Input("fps", default=24.0, min=0.01, max=1000.0, step=0.01,
                               tooltip="Frame rate of the 'frames' batch. Ignored when a VIDEO is connected (it carries its own)."),
                io.Float.Input("sample_rate_hz", default=5.0, min=0.01, max=1000.0, step=0.01,
                               tooltip="Frames per second to encode (VATT: 5). Above the video's fps, frames repeat."),
                io.Combo.Input("aggregation", options=list(AGGREGATIONS), default="mean",
                               tooltip="mean: the average of the frames' embeddings [1, width] (V2A-Mapper); middle: the middle "
                                       "sampled frame's [1, width]; per-frame: all of them as a sequence [1, frames, width]."),
            ],
            outputs=[st.Embedding.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, encoder, sample_rate_hz, aggregation, fps=24.0, video=None, frames=None) -> io.NodeOutput:
        node = "Encode Video"
        require_encoder(encoder, "image", node)
        sampled, _duration_s = sampled_video_frames(video, frames, fps, sample_rate_hz, node)
        per_frame = run_encoder(encoder, node, lambda: encoder.encode_images(sampled, progress=HostProgress()))
        try:
            vectors = aggregate(per_frame.vectors, aggregation)
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None
        return io.NodeOutput(Embedding(vectors=vectors, family=per_frame.family, model=per_frame.model, modality="video"))


class EncodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EncodeAudio",
            display_name="Encode Audio",
            category=st.category("encode"),
            description="AUDIO -> an audio-encoder embedding. Resampled to the encoder's rate and downmixed to mono; cut "
                        "into the encoder's windows (CLAP 10 s, AST 1024 frames = 10.26 s; shorter clips are padded the "
                        "encoder's way). CLAP gives one normalised vector per clip, AST its token sequence.",
            inputs=[
                st.Encoder.Input("encoder", tooltip=ENCODER_TOOLTIP + " Must encode audio (CLAP, AST)."),
                io.Audio.Input("audio", tooltip="Any rate and channel count; empty, silent or NaN audio is refused."),
                io.Combo.Input("long_audio", options=list(LONG_AUDIO), default="mean",
                               tooltip="For clips longer than one window: mean = average the windows' outputs (CLAP "
                                       "re-normalised, AST token by token; keeps the usual shape); first = only the first "
                                       "window; all = every window (CLAP: a [1, windows, 512] sequence, AST: the token "
                                       "sequences joined)."),
            ],
            outputs=[st.Embedding.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, encoder, audio, long_audio="mean") -> io.NodeOutput:
        node = "Encode Audio"
        require_encoder(encoder, "audio", node)
        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise ValueError(f"{node}: expected an AUDIO input (waveform and sample_rate)")
        return io.NodeOutput(run_encoder(encoder, node, lambda: encoder.encode_audio(audio["waveform"], audio["sample_rate"], long_audio,
                                                                               progress=HostProgress())))


class EncodeText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EncodeText",
            display_name="Encode Text",
            category=st.category("encode"),
            description="Text -> a text-encoder embedding: CLIP / CLAP / CLIP text give one pooled vector [1, width], "
                        "T5 its token sequence [1, tokens, width].",
            inputs=[
                st.Encoder.Input("encoder", tooltip=ENCODER_TOOLTIP + " Must encode text (CLIP, CLAP, T5, CLIP text)."),
                io.String.Input("text", multiline=True, default="", tooltip="The prompt, e.g. 'a dog barking in a park'."),
                io.Int.Input("t5_tokens", default=0, min=0, max=4096,
                             tooltip="T5 only: pad or cut the prompt to this many tokens (FLUX: 256 schnell, 512 dev); "
                                     "0 = the prompt's own length. Other encoders ignore it."),
            ],
            outputs=[st.Embedding.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, encoder, text, t5_tokens=0) -> io.NodeOutput:
        node = "Encode Text"
        require_encoder(encoder, "text", node)
        if not isinstance(text, str):
            raise ValueError(f"{node}: expected text, got {type(text).__name__}")
        length = int(t5_tokens) if t5_tokens else None
        return io.NodeOutput(run_encoder(encoder, node, lambda: encoder.encode_text([text], sequence_length=length)))


NODES = [LoadEncoder, EncodeImage, EncodeVideo, EncodeAudio, EncodeText]
