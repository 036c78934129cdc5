"""VATT nodes: an EnCodec codec (AUDIO <-> codec tokens), the VATT audio decoder, video features at
5 fps pooled to a few tokens, and the sampler that turns video (+ text) into audio as long as the
video."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..audio.codec_tokenizer import CodecTokens, CodecTokenizer, load_codec
from ..audio.prepare import prepare_waveform
from ..audio.transforms import join_caption
from ..encoders.vatt_converter import CAPTION_SAMPLING, LAYOUTS, clip_frames, load_vatt_converter
from ..loaders.audiocraft_encodec import AUDIOCRAFT_EXTENSIONS, COMPRESSION_FILE
from ..loaders.vatt_checkpoints import load_vatt_decoder
from ..networks.vatt_decoder import VATTDecoder
from ..samplers.vatt import DEFAULTS, default_overlap, pool_frame_features, vatt_generate, vatt_sample, window_starts
from .audio_input import audio_input
from . import socket_types as st
from .device import HostProgress, check_interrupt, compute_dtype, on_compute_device
from .encoders import require_encoder, run_encoder
from .model_folders import list_config_folders, list_models, load_once, resolve_config_folder, resolve_model
from .payloads import Embedding, joined_embeddings
from .tokenizers import hidden_graph, linked_decoders
from .video_input import encode_sampled_frames

# Codec tokens [B, K, N] with their codec's rate and length (audio.codec_tokenizer.CodecTokens).
# TODO(coordinator): move to nodes/socket_types.py as CodecTokens.
CodecTokensType = st.CodecTokens


@dataclass(frozen=True)
class VideoFeatures(Embedding):
    """An Embedding sequence of pooled frame features that also knows the video's length, so the
    sampler makes audio exactly as long as the video.
    TODO(coordinator): an optional ``duration_s`` on payloads.Embedding would replace this class."""

    duration_s: float = 0.0
    rate_hz: float = 0.0
    # the per-frame features before pooling [frames, width] (frames at rate_hz) and the pooled token
    # count: decoders trained on fixed-length clips generate long videos window by window from them
    frame_vectors: torch.Tensor | None = None
    tokens: int = 0


# ----------------------------------------------------------------------------------------------
# codec
# ----------------------------------------------------------------------------------------------
def _codec_folders() -> list[str]:
    """Codecs under the av_codecs folders: folders with a config.json (transformers EnCodec, spectrogram
    codec) or audiocraft's compression_state_dict.bin (AudioGen's folder as downloaded), and audiocraft
    compression checkpoint files put there directly."""
    import folder_paths

    names = set()
    for base in folder_paths.get_folder_paths("av_codecs"):
        if os.path.isdir(base):
            for entry in os.listdir(base):
                path = os.path.join(base, entry)
                if (os.path.isfile(os.path.join(path, "config.json")) or os.path.isfile(os.path.join(path, COMPRESSION_FILE))
                        or (os.path.isfile(path) and entry.lower().endswith(AUDIOCRAFT_EXTENSIONS))):
                    names.add(entry)
    return sorted(names)


def _require_codec(codec, node: str) -> CodecTokenizer:
    if not isinstance(codec, CodecTokenizer):
        raise ValueError(f"{node}: connect a codec from Load Codec")
    return codec


def audio_for_codec(audio: dict, codec: CodecTokenizer, node: str) -> torch.Tensor:
    """Host AUDIO -> [B, C, T] at the codec's rate and channel count (per channel through
    prepare_waveform; mono -> stereo by copying, more channels -> stereo/mono by averaging)."""
    waveform, rate = audio_input(audio, node)
    batch, channels, _ = waveform.shape
    try:
        if codec.channels == 1 or channels != codec.channels:
            mono = prepare_waveform(waveform, rate, codec.sample_rate_hz, what="audio", allow_silent=False)
            return mono.unsqueeze(1).expand(-1, codec.channels, -1).contiguous()
        per_channel = prepare_waveform(waveform.reshape(batch * channels, 1, -1), rate, codec.sample_rate_hz,
                                       what="audio", allow_silent=False)
        return per_channel.reshape(batch, channels, -1)
    except ValueError as e:
        raise ValueError(f"{node}: {e}") from None


class LoadCodec(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadCodec",
            display_name="Load Codec",
            category=st.category("loaders"),
            description="Loads an audio codec from models/audiovisual/codecs: an EnCodec transformers folder (config.json + "
                        "model.safetensors, e.g. facebook/encodec_24khz, facebook/encodec_48khz, or a 16 kHz 4-codebook EnCodec "
                        "for VATT), audiocraft's EnCodec checkpoint as downloaded (AudioGen's compression_state_dict.bin, the 16 kHz "
                        "4 x 2048 codec of the official VATT decoders: its folder or the file), or a spectrogram codec folder (a spectrogram VQ and a vocoder named in its config.json; the "
                        "embedded SynthAV default 'synthav_spec_codec' is one).",
            inputs=[io.Combo.Input("codec_name", options=_codec_folders(),
                                   tooltip="A codec in models/audiovisual/codecs: an EnCodec folder, audiocraft's "
                                           "compression_state_dict.bin (or a folder holding it), or a spectrogram codec.")],
            outputs=[st.CodecTokenizer.Output(display_name="codec")],
        )

    @classmethod
    def execute(cls, codec_name) -> io.NodeOutput:
        node = "Load Codec"
        path = resolve_model("av_codecs", codec_name, node)
        try:
            return io.NodeOutput(load_once("codec", path, load_codec))  # the VATT Sampler's decoder check shares it
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{node}: {e}") from None


class EncodeCodecTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EncodeCodecTokens",
            display_name="Encode Codec Tokens",
            category=st.category("encode"),
            description="AUDIO -> codec tokens [batch, codebooks, frames]. The audio is resampled to the codec's rate and "
                        "brought to its channel count first.",
            inputs=[
                st.CodecTokenizer.Input("codec", tooltip="From Load Codec."),
                io.Audio.Input("audio", tooltip="Any rate and channel count; empty, silent or NaN audio is refused."),
                io.Int.Input("codebooks", default=0, min=0, max=64,
                             tooltip="How many codebooks (RVQ levels, coarse first) to keep: fewer = lower bitrate. "
                                     "0 = all the codec has. VATT decoders use 4."),
            ],
            outputs=[CodecTokensType.Output(display_name="codec_tokens")],
        )

    @classmethod
    def execute(cls, codec, audio, codebooks=0) -> io.NodeOutput:
        node = "Encode Codec Tokens"
        codec = _require_codec(codec, node)
        waveform = audio_for_codec(audio, codec, node)
        check_interrupt()
        try:
            with on_compute_device(codec.model, half=False):
                return io.NodeOutput(codec.encode(waveform, num_codebooks=int(codebooks) or None))
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None


class DecodeCodecTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_DecodeCodecTokens",
            display_name="Decode Codec Tokens",
            category=st.category("decode"),
            description="Codec tokens -> AUDIO at the codec's own rate and channel count, as long as the tokens say.",
            inputs=[
                st.CodecTokenizer.Input("codec", tooltip="From Load Codec: the codec the tokens were made for."),
                CodecTokensType.Input("codec_tokens", tooltip="From Encode Codec Tokens or the VATT Sampler."),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )

    @classmethod
    def execute(cls, codec, codec_tokens) -> io.NodeOutput:
        node = "Decode Codec Tokens"
        codec = _require_codec(codec, node)
        if not isinstance(codec_tokens, CodecTokens):
            raise ValueError(f"{node}: connect codec tokens (from Encode Codec Tokens or the VATT Sampler)")
        return io.NodeOutput(_decode(codec, codec_tokens, node))


def _decode(codec: CodecTokenizer, tokens: CodecTokens, node: str) -> dict:
    check_interrupt()
    try:
        with on_compute_device(codec.model, half=False):
            waveform = codec.decode(tokens)
    except ValueError as e:
        raise ValueError(f"{node}: {e}") from None
    return {"waveform": waveform, "sample_rate": codec.sample_rate_hz}


# ----------------------------------------------------------------------------------------------
# decoder and video features
# ----------------------------------------------------------------------------------------------
class LoadVATT(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadVATT",
            display_name="Load VATT Decoder",
            category=st.category("loaders"),
            description="Loads a VATT audio decoder from models/audiovisual/vatt: a safetensors file of this pack (config "
                        "inside), or an official VATT checkpoint (.ckpt; its decoder is mapped, the LLM ignored).",
            inputs=[io.Combo.Input("model_name", options=list_models("av_vatt"),
                                   tooltip="The decoder file in models/audiovisual/vatt.")],
            outputs=[st.VATTDecoder.Output(display_name="vatt")],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        node = "Load VATT Decoder"
        path = resolve_model("av_vatt", model_name, node)
        try:
            return io.NodeOutput(load_vatt_decoder(path))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{node}: {e}") from None


class VATTVideoFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_VATTVideoFeatures",
            display_name="VATT Video Features",
            category=st.category("encode"),
            description="Video -> the VATT decoder's visual condition: frames taken at a fixed rate (VATT: 5 per second, "
                        "whatever the video's fps), encoded by an image encoder (a CLIP, or eva-CLIP for the official "
                        "decoders), and averaged into a fixed "
                        "number of tokens in time order. The result also carries the video's duration, so the sampler "
                        "makes audio exactly as long as the video.",
            inputs=[
                st.Encoder.Input("encoder", tooltip="From Load Encoder: the image encoder the VATT decoder was trained with (a CLIP; "
                                                    "the official 768-wide decoders: eva-CLIP EVA02-L-14-336, an open_clip folder)."),
                io.Video.Input("video", optional=True, tooltip="A VIDEO (e.g. from Load Video); its own frame rate is used."),
                io.Image.Input("frames", optional=True, tooltip="Instead of a VIDEO: an IMAGE batch of frames in order, with 'fps'."),
                io.Float.Input("fps", default=24.0, min=0.01, max=1000.0, step=0.01,
                               tooltip="Frame rate of the 'frames' batch (its duration is frames / fps). Ignored with a VIDEO."),
                io.Float.Input("rate_hz", default=5.0, min=0.1, max=120.0, step=0.1,
                               tooltip="Frames per second to encode (VATT: 5)."),
                io.Int.Input("tokens", default=10, min=0, max=4096,
                             tooltip="Tokens the frames are pooled to, in time order (VATT: 10). 0 = one token per sampled frame."),
            ],
            outputs=[st.Embedding.Output(display_name="video_features")],
        )

    @classmethod
    def execute(cls, encoder, rate_hz, tokens, fps=24.0, video=None, frames=None) -> io.NodeOutput:
        node = "VATT Video Features"
        require_encoder(encoder, "image", node)
        parts, duration_s = run_encoder(encoder, node, lambda: encode_sampled_frames(video, frames, fps, rate_hz, node,
                                                                                   encoder.encode_images))
        per_frame = joined_embeddings(parts)
        try:
            pooled = pool_frame_features(per_frame.vectors, int(tokens))
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None
        return io.NodeOutput(VideoFeatures(vectors=pooled, family=per_frame.family, model=per_frame.model, modality="video",
                                           duration_s=duration_s, rate_hz=float(rate_hz),
                                           frame_vectors=per_frame.vectors, tokens=int(tokens)))


# ----------------------------------------------------------------------------------------------
# the sampler
# ----------------------------------------------------------------------------------------------
def match_codec(decoder: VATTDecoder, codec: CodecTokenizer, node: str) -> None:
    """The decoder's token space must be the codec's: same codebook size, enough codebooks, and the
    very codebook tables it was trained with (official checkpoints take them from the codec)."""
    config = decoder.config
    if codec.codebook_size != config.codebook_size:
        raise ValueError(f"{node}: the decoder predicts {config.codebook_size} codes per codebook, the codec "
                         f"'{codec.name}' has {codec.codebook_size}")
    if codec.max_codebooks < config.num_codebooks:
        raise ValueError(f"{node}: the decoder needs {config.num_codebooks} codebooks, the codec '{codec.name}' has {codec.max_codebooks}")
    if codec.codebook_dim != config.latent_dim:
        raise ValueError(f"{node}: the decoder embeds {config.latent_dim}-wide codec latents, the codec '{codec.name}' has "
                         f"{codec.codebook_dim}-wide codebooks")
    tables = codec.codebook_latents(config.num_codebooks)
    # loose tolerance: the tables went through half precision when the decoder last ran on a GPU;
    # another codec's tables are unrelated numbers, far outside it
    if not decoder.codebooks_from_codec and not torch.allclose(decoder.codebook_latents.float().cpu(), tables, rtol=1e-2, atol=1e-3):
        trained = f" ('{config.codec}')" if config.codec else ""
        raise ValueError(f"{node}: the decoder was trained with another codec{trained}; the codebooks of '{codec.name}' differ")
    decoder.set_codebooks(tables)  # exact values again


def check_codec_decoders(prompt, unique_id, codec: CodecTokenizer, codebooks: int, node: str) -> None:
    """Refuses, before sampling, a Decode Codec Tokens fed the sampler's codec_tokens whose Load Codec file is a codec of
    another sample rate or codebook size, or with fewer than the `codebooks` sampled (codec.decode would refuse it only
    after the whole sampling). The graph walk is nodes.tokenizers.linked_decoders; names both ends. A decoder fed by
    the sampler's own Load Codec node or file, or by a node other than Load Codec, passes."""
    if not isinstance(prompt, dict) or unique_id is None:
        return
    own_input = ((prompt.get(str(unique_id)) or {}).get("inputs") or {}).get("codec")
    own = prompt.get(str(own_input[0])) if isinstance(own_input, (list, tuple)) and len(own_input) == 2 else None
    own_name = (own.get("inputs") or {}).get("codec_name") if isinstance(own, dict) and own.get("class_type") == "AV_LoadCodec" else None
    walked = {"AV_DecodeCodecTokens": ("codec_tokens", "codec", "AV_LoadCodec", "codec_name")}
    for decoder_id, _, _, loader_id, name in linked_decoders(prompt, unique_id, (1,), walked):
        if loader_id is None or name == own_name:
            continue
        try:
            other = load_once("codec", resolve_model("av_codecs", name, "Load Codec"), load_codec)
        except (OSError, ValueError):
            continue  # the loader node says what is wrong with its own file when it runs
        mine = f"the sampler's codec '{codec.name or own_name or 'connected'}'"
        theirs = f"Decode Codec Tokens (node {decoder_id}) decodes them with '{name}' (Load Codec, node {loader_id})"
        if other.sample_rate_hz != codec.sample_rate_hz or other.codebook_size != codec.codebook_size:
            raise ValueError(f"{node}: its codec tokens are {codec.codebook_size} codes at {codec.sample_rate_hz} Hz "
                             f"({mine}), but {theirs}, a codec of {other.codebook_size} codes at {other.sample_rate_hz} Hz; "
                             f"expected the sampler's codec")
        if other.max_codebooks < codebooks:
            raise ValueError(f"{node}: its codec tokens have {codebooks} codebooks, but {theirs}, a codec of "
                             f"{other.max_codebooks}; expected the sampler's codec")


def condition_tensors(decoder: VATTDecoder, video_features, text, node: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    config = decoder.config
    if not isinstance(video_features, Embedding):
        raise ValueError(f"{node}: connect video features (from VATT Video Features)")
    video_features.expect(node, config.video_family, dim=config.video_dim, model=config.video_model or None, sequence=True)
    text_vectors = None
    if text is not None:
        if not isinstance(text, Embedding):
            raise ValueError(f"{node}: 'text' must be an embedding from Encode Text")
        if not config.text_dim:
            raise ValueError(f"{node}: this decoder was trained without text; disconnect 'text'")
        text.expect(node, config.text_family, dim=config.text_dim, model=config.text_model or None)
        text_vectors = text.vectors if text.is_sequence else text.vectors.unsqueeze(1)
        if config.text_tokens and text_vectors.shape[1] != config.text_tokens:
            raise ValueError(f"{node}: the decoder was trained on captions of {config.text_tokens} text tokens, this one has "
                             f"{text_vectors.shape[1]}; set Encode Text's t5_tokens to {config.text_tokens}")
        if text_vectors.shape[0] not in (1, video_features.vectors.shape[0]):
            raise ValueError(f"{node}: {text_vectors.shape[0]} text rows for {video_features.vectors.shape[0]} videos")
    return video_features.vectors, text_vectors


class VATTSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_VATTSampler",
            display_name="VATT Sampler",
            category=st.category("sample"),
            description="Video (+ optional text) -> audio with the VATT decoder: all codec codebooks are generated jointly "
                        "by iterative unmasking (cosine schedule, top-k sampling, classifier-free guidance against a zeroed "
                        "condition), then decoded by the codec. The audio lasts exactly as long as the video; a decoder "
                        "trained on fixed-length clips (the SynthAV default: 2 s) generates longer videos window by window, "
                        "each from its own frames.",
            inputs=[
                st.VATTDecoder.Input("vatt", tooltip="From Load VATT Decoder."),
                st.CodecTokenizer.Input("codec", tooltip="From Load Codec: the codec the decoder was trained with."),
                st.Embedding.Input("video_features", tooltip="From VATT Video Features (same encoder as the decoder's training)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of every random draw: the same seed gives the same sound."),
                io.Int.Input("steps", default=DEFAULTS["steps"], min=1, max=256,
                             tooltip="Unmasking steps (VATT: 16). Each runs the decoder once on a doubled batch with guidance."),
                io.Float.Input("cfg", default=DEFAULTS["cfg"], min=0.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance scale (VATT: 5). 1 turns guidance off."),
                io.Int.Input("top_k", default=DEFAULTS["top_k"], min=0, max=65536,
                             tooltip="Sample each token among the k most likely codes (VATT: 256); 0 = all codes."),
                io.Float.Input("temperature", default=DEFAULTS["temperature"], min=0.0, max=100.0, step=0.1,
                               tooltip="Confidence noise that decides which tokens are kept at each step, annealed to 0 "
                                       "(VATT's release: 25.5). Higher explores more."),
                io.Float.Input("duration_s", default=0.0, min=0.0, max=600.0, step=0.01,
                               tooltip="0 = exactly the video's duration (from the video features). Otherwise the audio length in seconds."),
                st.Embedding.Input("text", optional=True,
                                   tooltip="Optional: an audio caption encoded by Encode Text, for decoders trained with text."),
            ],
            outputs=[io.Audio.Output(display_name="audio"), CodecTokensType.Output(display_name="codec_tokens")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, vatt, codec, video_features, seed, steps, cfg, top_k, temperature, duration_s=0.0, text=None) -> io.NodeOutput:
        import comfy.utils

        node = "VATT Sampler"
        if not isinstance(vatt, VATTDecoder):
            raise ValueError(f"{node}: connect a decoder from Load VATT Decoder")
        codec = _require_codec(codec, node)
        match_codec(vatt, codec, node)
        check_codec_decoders(*hidden_graph(cls), codec, vatt.config.num_codebooks, node)
        video, text_vectors = condition_tensors(vatt, video_features, text, node)
        duration = float(duration_s) if duration_s and duration_s > 0 else float(getattr(video_features, "duration_s", 0.0))
        if not duration > 0:
            raise ValueError(f"{node}: the video features do not say how long the video is; set duration_s")
        num_samples = codec.samples_for_duration(duration)
        num_frames = codec.frames_for_samples(num_samples)

        frame_vectors = getattr(video_features, "frame_vectors", None)
        windowed = vatt.config.clip_s > 0 and frame_vectors is not None and video.shape[0] == 1
        clip_frames = max(1, round(vatt.config.clip_s * vatt.config.frame_rate_hz))
        windows = len(window_starts(num_frames, clip_frames, default_overlap(clip_frames))) if windowed else 1
        progress = comfy.utils.ProgressBar(int(steps) * windows)
        options = dict(steps=int(steps), cfg=float(cfg), top_k=int(top_k) or None, temperature=float(temperature),
                       callback=lambda step, total, *_: progress.update_absolute(step + 1, total), check_interrupt=check_interrupt)
        with on_compute_device(vatt, half=True) as (device, _):
            generator = torch.Generator(device=device).manual_seed(int(seed))
            try:
                if windowed:  # a decoder trained on fixed-length clips: windows of that length, each from its own frames,
                    # each continuing the previous one (samplers/vatt.py)
                    codes = vatt_generate(vatt, frame_vectors, video_features.rate_hz, num_frames,
                                          tokens=int(video_features.tokens or video.shape[1]), text=text_vectors,
                                          generator=generator, **options)
                else:
                    codes = vatt_sample(vatt, video, num_frames, text=text_vectors, generator=generator, **options)
            except ValueError as e:
                raise ValueError(f"{node}: {e}") from None
        tokens = codec.tokens_for(codes.cpu(), num_samples)
        return io.NodeOutput(_decode(codec, tokens, node), tokens)


# ----------------------------------------------------------------------------------------------
# the official VATT Converter (encoders/vatt_converter.py): video features + LLM -> caption and states
# ----------------------------------------------------------------------------------------------
# Host folder keys searched for the converter's LLM (a transformers folder whose config.json says llama or gemma):
# the host's text_encoders, and models/LLM where an extra_model_paths.yaml (or another pack) registers it.
CONVERTER_LLM_KEYS = ("text_encoders", "LLM")
CONVERTER_FAMILY = "vatt_converter"  # loaders.vatt_checkpoints.LLM_CONDITION_FAMILY: what the official decoders read


def _is_converter_llm_folder(_key: str, path: str) -> bool:
    import json

    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("model_type") in LAYOUTS
    except (OSError, ValueError, AttributeError):
        return False


def _stored_dtype(folder: str) -> torch.dtype:
    """bfloat16 for a folder whose config.json says its weights are bfloat16 (Gemma's Hub folders: float16 may
    overflow there), else float32 (-> float16 on a GPU)."""
    import json

    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return torch.float32
    return torch.bfloat16 if str(config.get("torch_dtype", config.get("dtype", ""))) == "bfloat16" else torch.float32


def list_converter_llms() -> list[str]:
    return list_config_folders(CONVERTER_LLM_KEYS, accept=_is_converter_llm_folder)


class VATTConverterNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_VATTConverter",
            display_name="VATT Converter (official)",
            category=st.category("encode"),
            description="The official VATT converter: eva-CLIP frame features (VATT Video Features, 5 per second) are "
                        "projected into the LLM (VATT-LLaMA: Vicuna-7B, VATT-Gemma: Gemma-2B, with the checkpoint's LoRA "
                        "merged), which writes an audio caption (shown on the node) and reads it back; its hidden states over "
                        "the video and the caption are the condition the released VATT decoders take. The LLM runs in half precision on a GPU (float32 on a "
                        "CPU) and leaves the GPU before the sampler runs.",
            inputs=[
                st.Embedding.Input("video_features", tooltip="From VATT Video Features with the eva-CLIP encoder (EVA02-L-14-336, "
                                                             "768 wide) at rate_hz 5: the official converter reads 10 s as 50 "
                                                             "frames; another length is stretched or squeezed to 50."),
                io.Combo.Input("checkpoint", options=list_models("av_vatt"),
                               tooltip="The official VATT checkpoint in models/audiovisual/vatt (e.g. vatt_llama.ckpt, or a "
                                       "VATT-Gemma one): its projector and LoRA are read; the base LLM comes from 'llm'."),
                io.Combo.Input("llm", options=list_converter_llms(),
                               tooltip="The converter's LLM: a transformers LLaMA or Gemma folder (config.json, safetensors or "
                                       "pytorch_model*.bin weights, tokenizer) in models/text_encoders (or models/LLM where registered), e.g. "
                                       "text_encoders/vicuna: the Vicuna-7B the VATT authors publish beside the checkpoints "
                                       "(Gemma-2B for a VATT-Gemma checkpoint)."),
                io.String.Input("caption", multiline=True, default="",
                                tooltip="Empty: the converter writes the caption from the video (shown on the node). Text here "
                                        "is used instead (e.g. the shown caption, edited); nothing is generated then."),
                io.String.Input("instruction", multiline=True, default="",
                                tooltip="What the LLM is asked when it writes the caption. Empty: the release's own (VATT-LLaMA: "
                                        f"'{LAYOUTS['llama'].instruction}', VATT-Gemma: '{LAYOUTS['gemma'].instruction}')."),
                io.Int.Input("max_new_tokens", default=CAPTION_SAMPLING["max_new_tokens"], min=1, max=1024,
                             tooltip="The most tokens of the written caption (official: 400; it stops at its end token)."),
                io.Float.Input("temperature", default=CAPTION_SAMPLING["temperature"], min=0.0, max=5.0, step=0.01,
                               tooltip="Sampling temperature of the caption (official: 0.1); 0 = the most likely token each time."),
                io.Float.Input("top_p", default=CAPTION_SAMPLING["top_p"], min=0.0, max=1.0, step=0.01,
                               tooltip="Nucleus sampling of the caption (official: 0.95); 1 = off."),
                io.Int.Input("top_k", default=CAPTION_SAMPLING["top_k"], min=0, max=1_000_000,
                             tooltip="Sample among the k most likely tokens (official: 500); 0 = all."),
                io.Float.Input("repetition_penalty", default=CAPTION_SAMPLING["repetition_penalty"], min=1.0, max=5.0, step=0.01,
                               tooltip="Penalty on tokens already in the prompt or the caption (official: 1.1); 1 = off."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the caption's sampling: the same seed gives the same caption."),
                io.String.Input("prefix", default="", tooltip="Text put before the caption (may be empty)."),
                io.String.Input("suffix", default="", tooltip="Text put after the caption (may be empty)."),
            ],
            outputs=[st.Embedding.Output(display_name="condition"), io.String.Output(display_name="caption")],
        )

    @classmethod
    def execute(cls, video_features, checkpoint, llm, caption, instruction, max_new_tokens, temperature, top_p, top_k,
                repetition_penalty, seed, prefix="", suffix="") -> io.NodeOutput:
        import comfy.model_management as mm

        node = "VATT Converter (official)"
        if not isinstance(video_features, Embedding):
            raise ValueError(f"{node}: connect video features (from VATT Video Features with the eva-CLIP encoder)")
        video_features.expect(node, "eva_clip", dim=768, sequence=True)
        frame_vectors = getattr(video_features, "frame_vectors", None)
        if frame_vectors is None:
            raise ValueError(f"{node}: the video features carry no per-frame vectors; connect VATT Video Features")
        checkpoint_path = resolve_model("av_vatt", checkpoint, node)
        llm_path = resolve_config_folder(llm, CONVERTER_LLM_KEYS, node, "an LLM")
        dtype = compute_dtype(mm.get_torch_device(), _stored_dtype(llm_path))  # float16 (a bfloat16 folder: bfloat16) on a GPU, float32 on a CPU
        try:
            # keyed by both files as they are now: the checkpoint and the LLM folder (weights replaced in place are
            # read anew); another LLM for the same checkpoint replaces the cached one (one LLM in memory)
            converter = load_once(f"vatt_converter|{dtype}", checkpoint_path,
                                  lambda path: load_vatt_converter(path, llm_path, dtype=dtype, with_tokenizer=True),
                                  also=(llm_path,))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{node}: {e}") from None
        frames = clip_frames(frame_vectors)
        check_interrupt()
        with on_compute_device(converter, half=True) as (device, _):
            try:
                text = (caption or "").strip()
                if not text:
                    generator = torch.Generator(device=device).manual_seed(int(seed))
                    text = converter.caption(frames, (instruction or "").strip() or None, generator=generator,
                                             progress=HostProgress(), max_new_tokens=int(max_new_tokens),
                                             temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                                             repetition_penalty=float(repetition_penalty))
                text = join_caption(prefix or "", text, suffix or "")
                states, _mask = converter.condition(frames, text)
            except ValueError as e:
                raise ValueError(f"{node}: {e}") from None
            states = states.float().cpu()
        condition = VideoFeatures(vectors=states, family=CONVERTER_FAMILY, model="", modality="video",
                                  duration_s=float(getattr(video_features, "duration_s", 0.0)),
                                  rate_hz=float(getattr(video_features, "rate_hz", 0.0)))
        return io.NodeOutput(condition, text, ui={"text": [text]})


NODES = [LoadCodec, EncodeCodecTokens, DecodeCodecTokens, LoadVATT, VATTVideoFeatures, VATTConverterNode, VATTSampler]
