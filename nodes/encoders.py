"""Encoder nodes: load a CLIP / CLAP / AST / T5 transformers folder or ComfyUI single file; encode
images, video, audio, text into AV_EMBEDDING (vectors that carry their space: family, model, modality);
take the host's CLIP Vision Encode output as an embedding."""

import os

import torch
from comfy_api.latest import io

from ..encoders.eva_clip import OPEN_CLIP_CONFIG, WEIGHT_FILES as OPEN_CLIP_WEIGHTS, is_eva_clip_folder, is_open_clip_folder
from ..encoders.pretrained import LONG_AUDIO, SUPPORTED_MODEL_TYPES, load_encoder, read_config, weights_fingerprint
from ..encoders.single_file import SINGLE_FILE_EXTENSIONS, load_single_file_encoder, single_file_kind
from ..encoders.video_frames import AGGREGATIONS, aggregate
from .audio_input import audio_input
from . import socket_types as st
from .device import HostProgress, check_interrupt, on_compute_device
from .model_folders import folder_roots, list_config_folders, resolve_config_folder
from .payloads import Embedding, joined_embeddings
from .video_input import encode_sampled_frames

# Host folder keys searched for encoder folders (a folder = a directory holding config.json).
# The first three are the host's own (users already keep CLIP / CLAP / T5 there); av_encoders is the pack's;
# diffusers holds whole pipelines, whose text_encoder / text_encoder_2 folders (FLUX: CLIP-L, T5-XXL) are
# listed as diffusers/<pipeline>/text_encoder_2 (their tokenizers are the sibling tokenizer* folders).
ENCODER_FOLDER_KEYS = ("clip_vision", "audio_encoders", "text_encoders", "av_encoders", "diffusers")
# A folder is a transformers one (config.json) or an open_clip one as the Hub has it (open_clip_config.json,
# open_clip_model.safetensors / open_clip_pytorch_model.bin: eva-CLIP, encoders/eva_clip.py).
ENCODER_FOLDER_MARKERS = ("config.json", OPEN_CLIP_CONFIG, *OPEN_CLIP_WEIGHTS)


# Host folder keys whose single .safetensors files (ComfyUI's own layouts) are encoders, and the kinds
# each may hold (encoders/single_file.py): clip_vision_*.safetensors; clip_l / t5xxl_*.safetensors.
SINGLE_FILE_KINDS = {"clip_vision": ("clip_vision",), "text_encoders": ("clip_text", "t5")}


def list_single_file_encoders() -> list[str]:
    """'<key>/<relative file>' for every single-file encoder the pack reads (the header is checked, so
    only loadable kinds are listed); files inside a transformers folder (one with config.json) are that
    folder's, not listed on their own."""
    import folder_paths

    names = []
    for key, kinds in SINGLE_FILE_KINDS.items():
        try:
            files = folder_paths.get_filename_list(key)
        except KeyError:
            continue
        for relative in files:
            if not relative.lower().endswith(SINGLE_FILE_EXTENSIONS):
                continue
            path = folder_paths.get_full_path(key, relative)
            if path and not os.path.isfile(os.path.join(os.path.dirname(path), "config.json")) and single_file_kind(path) in kinds:
                names.append(f"{key}/{relative}")
    return sorted(set(names))


def is_encoder_folder(_key: str, path: str) -> bool:
    """Whether the transformers folder's config.json names a kind Load Encoder reads (a captioner, an
    LLM or a BERT in text_encoders is not offered), or an open_clip folder holds an eva-CLIP tower."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        return is_eva_clip_folder(path)
    try:
        return read_config(path).get("model_type") in SUPPORTED_MODEL_TYPES
    except (OSError, ValueError):
        return False


def list_encoder_folders() -> list[str]:
    """'<key>/<relative folder>' for every encoder transformers folder under the encoder keys' paths
    (`is_encoder_folder`), and '<key>/<file>.safetensors' for every single-file encoder in clip_vision /
    text_encoders."""
    return sorted(set(list_config_folders(ENCODER_FOLDER_KEYS, accept=is_encoder_folder, markers=ENCODER_FOLDER_MARKERS)) | set(list_single_file_encoders()))


def resolve_encoder_folder(name: str, node: str) -> str:
    """The folder, or the single file, a Load Encoder entry names."""
    key, _, relative = str(name).partition("/")
    if key in SINGLE_FILE_KINDS and relative.lower().endswith(SINGLE_FILE_EXTENSIONS):
        roots = folder_roots(key)
        for root in roots:
            path = os.path.join(root, *relative.split("/"))
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(f"{node}: encoder file '{relative}' not found in {', '.join(roots) or key}")
    return resolve_config_folder(name, ENCODER_FOLDER_KEYS, node, "an encoder", markers=ENCODER_FOLDER_MARKERS)


def host_tokenizer_folders() -> tuple[str, str]:
    """The host's own CLIP and T5 tokenizer files (what it uses for clip_l / t5xxl single files)."""
    import comfy.sd1_clip  # the host module that reads sd1_tokenizer beside itself

    base = os.path.dirname(os.path.realpath(comfy.sd1_clip.__file__))
    return os.path.join(base, "sd1_tokenizer"), os.path.join(base, "text_encoders", "t5_tokenizer")


def load_encoder_entry(path: str):
    """A folder through load_encoder, a single file through load_single_file_encoder (with the host's tokenizers)."""
    if os.path.isfile(path):
        clip_tokenizer, t5_tokenizer = host_tokenizer_folders()
        return load_single_file_encoder(path, clip_tokenizer=clip_tokenizer, t5_tokenizer=t5_tokenizer)
    return load_encoder(path)


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
        message = str(e)
        raise ValueError(message if message.startswith(f"{node}: ") else f"{node}: {message}") from None


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
                        "models/audio_encoders, models/text_encoders or models/audiovisual/encoders (the kind is read from "
                        "config.json), or from one of ComfyUI's single files: clip_vision/*.safetensors (CLIP-L/H/G vision) "
                        "and text_encoders/*.safetensors (clip_l, t5xxl fp16 / fp8; the kind is read from the weights, the "
                        "tokenizer is the host's own), or an eva-CLIP image encoder as open_clip publishes it "
                        "(clip_vision/<folder>/ with open_clip_config.json and open_clip_model.safetensors, e.g. "
                        "timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k: the official VATT frame encoder).",
            inputs=[io.Combo.Input("encoder_name", options=list_encoder_folders(),
                                   tooltip="A transformers folder or a single file, shown as <models folder>/<name>: e.g. "
                                           "clip_vision/clip-vit-large-patch14, audio_encoders/clap-htsat-unfused, "
                                           "clip_vision/clip_vision_h.safetensors, text_encoders/t5xxl_fp16.safetensors.")],
            outputs=[st.Encoder.Output(display_name="encoder")],
        )

    @classmethod
    def validate_inputs(cls, encoder_name):
        """Refuses, before the run, an entry that is not a loadable encoder (a stale or hand-written name)."""
        node = "Load Encoder"
        try:
            path = resolve_encoder_folder(encoder_name, node)
            if os.path.isfile(path):
                if single_file_kind(path) is None:
                    return (f"{node}: {os.path.basename(path)}: not an encoder file this pack reads; expected a CLIP vision, "
                            f"CLIP text or T5 file in the host's key layout")
            elif not os.path.isfile(os.path.join(path, "config.json")) and is_open_clip_folder(path):
                if not is_eva_clip_folder(path):
                    return (f"{node}: '{path}' is an open_clip folder of another image tower; expected an eva-CLIP one "
                            f"({OPEN_CLIP_CONFIG} naming a timm eva02_* model, e.g. eva02_large_patch14_clip_336)")
            else:
                model_type = read_config(path).get("model_type")
                if model_type not in SUPPORTED_MODEL_TYPES:
                    return (f"{node}: '{path}' holds model_type '{model_type}' in config.json; supported encoder kinds: "
                            f"{', '.join(SUPPORTED_MODEL_TYPES)}")
        except (OSError, ValueError) as e:
            return f"{node}: {e}" if not str(e).startswith(node) else str(e)
        return True

    @classmethod
    def execute(cls, encoder_name) -> io.NodeOutput:
        path = resolve_encoder_folder(encoder_name, "Load Encoder")
        try:
            return io.NodeOutput(load_encoder_entry(path))
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
        parts, _duration_s = run_encoder(encoder, node, lambda: encode_sampled_frames(
            video, frames, fps, sample_rate_hz, node, lambda chunk: encoder.encode_images(chunk, progress=HostProgress())))
        per_frame = joined_embeddings(parts)
        try:
            vectors = aggregate(per_frame.vectors, aggregation)
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None
        return io.NodeOutput(Embedding(vectors=vectors, family=per_frame.family, model=per_frame.model, modality="video",
                                       weights=per_frame.weights))


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
        waveform, rate = audio_input(audio, node)
        return io.NodeOutput(run_encoder(encoder, node, lambda: encoder.encode_audio(waveform, rate, long_audio,
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


class CLIPVisionOutputToEmbedding(io.ComfyNode):
    """The host's CLIP Vision Encode output (Load CLIP Vision -> CLIP Vision Encode) as an embedding."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_CLIPVisionOutputToEmbedding",
            display_name="CLIP Vision Output to Embedding",
            category=st.category("encode"),
            description="The host's CLIP_VISION_OUTPUT (from its CLIP Vision Encode node) -> a CLIP image embedding "
                        "[batch, width]: its projected image_embeds, the vectors Encode Image gives for the same weights.",
            inputs=[io.ClipVisionOutput.Input("clip_vision_output", tooltip="From the host's CLIP Vision Encode "
                                                                            "(crop: center, as Encode Image does)."),
                    io.ClipVision.Input("clip_vision", optional=True,
                                        tooltip="Optional: the Load CLIP Vision output that encoded it. Its weights' "
                                                "fingerprint goes with the embedding, so a mapper trained on the same "
                                                "CLIP (as a folder or file under any name) accepts it.")],
            outputs=[st.Embedding.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, clip_vision_output, clip_vision=None) -> io.NodeOutput:
        node = "CLIP Vision Output to Embedding"
        vectors = getattr(clip_vision_output, "image_embeds", None)
        if vectors is None or not hasattr(vectors, "ndim") or vectors.ndim != 2:
            raise ValueError(f"{node}: expected the host's CLIP_VISION_OUTPUT with image_embeds [batch, width] "
                             f"(a CLIP vision model with a projection), got {type(clip_vision_output).__name__}")
        if not bool(vectors.isfinite().all()):
            raise ValueError(f"{node}: the CLIP vision output holds NaN or infinite values")
        # the host's CLIP_VISION does not say which file it came from: the model name stays unknown (""); its
        # weights, when given, are fingerprinted as the pack's own encoders are (the same key names)
        weights = ""
        if clip_vision is not None:
            module = getattr(clip_vision, "model", None)
            if not isinstance(module, torch.nn.Module):
                raise ValueError(f"{node}: 'clip_vision' must be the host's CLIP_VISION (Load CLIP Vision), "
                                 f"got {type(clip_vision).__name__}")
            weights = weights_fingerprint(module, "clip")
        return io.NodeOutput(Embedding(vectors=vectors.detach().to(device="cpu", dtype=torch.float32),
                                       family="clip", model="", modality="image", weights=weights))


# The text encoders inside the host's CLIP (Load CLIP, DualCLIPLoader) the pack has spaces for:
# choice -> (the cond_stage_model attribute, the tokenize() key, the embedding family).
HOST_TEXT_PARTS = {"t5xxl": ("t5xxl", "t5xxl", "t5"), "clip_l": ("clip_l", "l", "clip_text")}


class CLIPTextToEmbedding(io.ComfyNode):
    """The host's own CLIP (Load CLIP / DualCLIPLoader) encoding a prompt, as an embedding of the pack."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_CLIPTextToEmbedding",
            display_name="CLIP Text to Embedding",
            category=st.category("encode"),
            description="Encodes text with the host's own CLIP (Load CLIP, DualCLIPLoader: e.g. clip_l + t5xxl for FLUX) "
                        "into an embedding of the pack: the T5 token sequence [1, tokens, 4096] (family t5, padded as the host "
                        "pads it: at least 256 tokens for FLUX, 77 for SD3) or the CLIP-L pooled vector [1, 768] (family clip_text, as FLUX takes "
                        "it), the vectors Encode Text gives for the same weights. It carries the weights' fingerprint.",
            inputs=[
                io.Clip.Input("clip", tooltip="From the host's Load CLIP or DualCLIPLoader holding a clip_l and / or t5xxl text encoder."),
                io.String.Input("text", multiline=True, default="", tooltip="The prompt, e.g. 'a dog barking in a park'."),
                io.Combo.Input("encoder", options=list(HOST_TEXT_PARTS), default="t5xxl",
                               tooltip="Which of the CLIP's text encoders: t5xxl = its T5 token sequence (for a VATT decoder "
                                       "trained with T5 text); clip_l = its CLIP-L pooled vector."),
            ],
            outputs=[st.Embedding.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, clip, text, encoder="t5xxl") -> io.NodeOutput:
        node = "CLIP Text to Embedding"
        model = getattr(clip, "cond_stage_model", None)
        if not isinstance(model, torch.nn.Module) or not hasattr(clip, "tokenize"):
            raise ValueError(f"{node}: 'clip' must be the host's CLIP (Load CLIP, DualCLIPLoader), got {type(clip).__name__}")
        if encoder not in HOST_TEXT_PARTS:
            raise ValueError(f"{node}: encoder must be one of {', '.join(HOST_TEXT_PARTS)}, got {encoder!r}")
        if not isinstance(text, str):
            raise ValueError(f"{node}: expected text, got {type(text).__name__}")
        attribute, key, family = HOST_TEXT_PARTS[encoder]
        part = getattr(model, attribute, None)
        if not isinstance(part, torch.nn.Module):
            held = [name for name, (a, _, _) in HOST_TEXT_PARTS.items() if isinstance(getattr(model, a, None), torch.nn.Module)]
            raise ValueError(f"{node}: this CLIP ({type(model).__name__}) holds no {encoder} text encoder"
                             f"{' (it holds ' + ', '.join(held) + ')' if held else ''}; load a {encoder} file with Load CLIP "
                             f"or DualCLIPLoader")
        check_interrupt()
        tokens = clip.tokenize(text)
        if not isinstance(tokens, dict) or key not in tokens:
            raise ValueError(f"{node}: the CLIP's tokenizer gives no '{key}' tokens for its {encoder} encoder")
        model.reset_clip_options()
        if encoder == "clip_l":
            part.set_clip_options({"projected_pooled": False})  # pooler_output, as FLUX takes it and Encode Text gives
        try:
            clip.load_model()
            with torch.inference_mode():
                cond, pooled = part.encode_token_weights(tokens[key])[:2]
        finally:
            model.reset_clip_options()
        vectors = cond if encoder == "t5xxl" else pooled
        if vectors is None or not bool(torch.isfinite(vectors).all()):
            raise ValueError(f"{node}: the {encoder} encoder gave no finite vectors (NaN, infinite or none) for this text")
        # the host's CLIP does not say which files it loaded: the model name stays unknown; its weights are
        # fingerprinted as the pack's encoders are (the same identity tensors)
        return io.NodeOutput(Embedding(vectors=vectors.detach().to(device="cpu", dtype=torch.float32), family=family, model="",
                                       modality="text", weights=weights_fingerprint(part, family)))


NODES = [LoadEncoder, EncodeImage, EncodeVideo, EncodeAudio, EncodeText, CLIPVisionOutputToEmbedding, CLIPTextToEmbedding]
