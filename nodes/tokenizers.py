"""VQ tokenizer nodes: load an image or spectrogram VQGAN; image/audio -> tokens -> image/mel."""

import math

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..audio.mel_frontend import SPECVQGAN_MEL, SPECVQGAN_NATIVE_FRAMES, mel_to_picture, waveform_to_mel
from ..audio.prepare import prepare_waveform
from ..loaders.vq_checkpoints import is_vq_entry, load_vq_model
from ..vq.tokenizer import VQTokenizer
from . import socket_types as st
from .audio_output import mel_preview_ui
from .model_folders import list_models, load_once, resolve_model
from .payloads import MelSpectrogram, TokenGrid



def read_file_metadata(path: str) -> dict:
    """The string metadata of a .safetensors file ({} for other formats)."""
    if not path.endswith(".safetensors"):
        return {}
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def _check_image(image: torch.Tensor, node: str) -> torch.Tensor:
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{node}: expected an IMAGE [batch, height, width, 3], got shape {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{node}: the image holds NaN or infinite values")
    return image[..., :3]


ANALYSIS_MARGIN_S = 0.5
"""Audio kept past the last mel frame needed, so the frames kept are those of the whole clip (the STFT
window and the resampling filter reach a little past a frame)."""


def audio_to_mel01(audio: dict, node: str, max_frames: int | None = None) -> torch.Tensor:
    """Host AUDIO -> SpecVQGAN mel [B, 80, frames] in 0..1 (resampled, downmixed, checked). With
    `max_frames`, only the audio those frames need (plus ANALYSIS_MARGIN_S) is analysed: an hour of
    audio costs what its first seconds cost."""
    waveform, rate = audio["waveform"], audio["sample_rate"]
    if max_frames and isinstance(waveform, torch.Tensor) and isinstance(rate, (int, float)) and rate > 0:
        seconds = max_frames * SPECVQGAN_MEL.hop_samples / SPECVQGAN_MEL.sample_rate_hz + ANALYSIS_MARGIN_S
        waveform = waveform[..., :math.ceil(seconds * rate)]
    try:
        wave = prepare_waveform(waveform, rate, SPECVQGAN_MEL.sample_rate_hz, allow_silent=False)
    except ValueError as e:
        raise ValueError(f"{node}: {e}") from None
    return waveform_to_mel(wave)


def fit_image_to_model(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Centre-crops IMAGE [B,H,W,3] to a square and resizes it to the tokenizer's training size."""
    if not size:
        return image
    height, width = image.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[:, top:top + side, left:left + side].movedim(-1, 1)
    if side != size:
        square = F.interpolate(square, size=(size, size), mode="bilinear" if side < size else "area", antialias=False)
    return square.movedim(1, -1).clamp(0, 1)


def window_columns(tokenizer: VQTokenizer) -> int | None:
    """The token columns of the spectrogram tokenizer's training clip: longer grids are decoded window by window."""
    frames = getattr(tokenizer, "native_mel_frames", None)
    return max(1, int(frames) // tokenizer.downsample_factor) if frames else None


def vq_entry_problem(name: str) -> str | None:
    """Why an entry of Load VQ Tokenizer cannot load, or None: not found, or not a VQ checkpoint load_vq_model reads."""
    try:
        path = resolve_model("av_vq", name, "Load VQ Tokenizer")
    except FileNotFoundError as e:
        return str(e)
    if not is_vq_entry(path):
        return (f"Load VQ Tokenizer: '{name}' is not a VQ tokenizer this node reads; expected a diffusers VQModel folder or "
                f"a taming / SpecVQGAN checkpoint (.ckpt / .safetensors with quantize.embedding.weight)")
    return None


def list_vq_tokenizers() -> list[str]:
    """The entries of models/audiovisual/vq that load (`vq_entry_problem`): another model's file is not offered."""
    return [name for name in list_models("av_vq") if vq_entry_problem(name) is None]


class LoadVQTokenizer(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadVQTokenizer",
            display_name="Load VQ Tokenizer",
            category=st.category("loaders"),
            description="Loads an image VQGAN or a spectrogram VQGAN (diffusers folder, taming/SpecVQGAN .ckpt or .safetensors) "
                        "from models/audiovisual/vq. Whether it tokenizes images or mel spectrograms is read from the file.",
            inputs=[io.Combo.Input("model_name", options=list_vq_tokenizers(), tooltip="The tokenizer file or folder in models/audiovisual/vq (the synthav_* files ship with the pack); only entries that hold a VQ codebook are listed.")],
            outputs=[st.VQTokenizer.Output(display_name="tokenizer")],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        """Refuses, before the run, an entry that is not a VQ tokenizer (a stale or hand-written name)."""
        return vq_entry_problem(model_name) or True

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        path = resolve_model("av_vq", model_name, "Load VQ Tokenizer")
        try:
            tokenizer = load_once("vq_tokenizer", path, _load_tokenizer)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"Load VQ Tokenizer: {e}") from None
        return io.NodeOutput(tokenizer)


def _load_tokenizer(path: str) -> VQTokenizer:
    vq, info = load_vq_model(path)
    modality = "audio" if info["in_channels"] == 1 else "image"
    tokenizer = VQTokenizer(vq, modality)
    # The size the tokenizer was trained at (our files say so in their metadata; SpecVQGAN's is 10 s).
    extras = read_file_metadata(path)
    tokenizer.native_image_size = int(extras["image_size"]) if "image_size" in extras else None
    tokenizer.native_mel_frames = int(extras["mel_frames"]) if "mel_frames" in extras else (SPECVQGAN_NATIVE_FRAMES if modality == "audio" else None)
    return tokenizer


# The nodes that decode tokens: class -> (modality they decode, their token input, display name).
TOKEN_DECODERS = {"AV_DecodeMelTokens": ("audio", "audio_tokens", "Tokens to Mel"),
                  "AV_DecodeImageTokens": ("image", "image_tokens", "Tokens to Image")}


def _linked_widget(prompt: dict, link, class_type: str, widget: str):
    """(node id, widget value) of the node a link comes from, when it is `class_type` with a string widget."""
    if not (isinstance(link, (list, tuple)) and len(link) == 2):
        return None, None
    source = prompt.get(str(link[0])) or {}
    value = (source.get("inputs") or {}).get(widget)
    if source.get("class_type") != class_type or not isinstance(value, str):
        return None, None
    return str(link[0]), value


def hidden_graph(node_class) -> tuple:
    """(prompt, unique_id) of the run a V3 node executes in, or (None, None) when it is called outside one
    (a direct `execute`, as scripts and tests do): the graph checks then have nothing to read and pass."""
    hidden = getattr(node_class, "hidden", None)
    return (getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None)) if hidden is not None else (None, None)


def linked_decoders(prompt, unique_id, slots, decoders: dict):
    """The nodes of the graph (the hidden PROMPT) that take this node's outputs to decode them: for each node whose
    class is in `decoders` (class -> (its token input, its model input, the loader class feeding that, the loader's
    file widget)) and whose token input comes from one of `slots` of node `unique_id`, yields (decoder id, decoder
    class, slot, loader id, file name); loader id and file name are None when the model input comes from another
    node. Yields nothing for a graph it cannot read (no prompt). The one graph walk behind the generating nodes'
    up-front decoder checks (the host's validator, 0.3.75, does not see linked values)."""
    if not isinstance(prompt, dict) or unique_id is None:
        return
    for decoder_id, decoder in sorted(prompt.items(), key=lambda item: str(item[0])):
        if not isinstance(decoder, dict) or decoder.get("class_type") not in decoders:
            continue
        token_input, model_input, loader_class, widget = decoders[decoder["class_type"]]
        inputs = decoder.get("inputs") or {}
        link = inputs.get(token_input)
        if not (isinstance(link, (list, tuple)) and len(link) == 2 and str(link[0]) == str(unique_id) and link[1] in slots):
            continue
        loader_id, name = _linked_widget(prompt, inputs.get(model_input), loader_class, widget)
        yield str(decoder_id), decoder["class_type"], link[1], loader_id, name


def check_token_decoders(prompt, unique_id, node: str, produced: dict, source: tuple[str, str, str]) -> None:
    """Refuses, before a generating node does any work, a graph whose decoder cannot take its tokens: a Tokens to
    Mel / Tokens to Image fed by it that decodes the other modality, or whose Load VQ Tokenizer file has another
    codebook size. `produced`: output slot -> (modality, codebook size); `source`: (the node's model input, the
    loader class feeding it, a word for the model), to name its file. The decoders run after the generation, so
    without this the whole run is lost. Names both ends (the nodes and their files). Graphs this cannot read (no
    prompt, other loaders) pass."""
    if not isinstance(prompt, dict) or unique_id is None:
        return
    me = prompt.get(str(unique_id)) or {}
    model_input, loader_class, word = source
    _, model_file = _linked_widget(prompt, (me.get("inputs") or {}).get(model_input), loader_class, "model_name")
    model_text = f"the {word} '{model_file}'" if model_file else f"the {word}"
    walked = {cls: (token_input, "tokenizer", "AV_LoadVQTokenizer", "model_name") for cls, (_, token_input, _) in TOKEN_DECODERS.items()}
    for decoder_id, decoder_class, slot, loader_id, vq_name in linked_decoders(prompt, unique_id, produced, walked):
        decodes, _, decoder_name = TOKEN_DECODERS[decoder_class]
        made, codes = produced[slot]
        if made != decodes:
            other = next(name for modality, _, name in TOKEN_DECODERS.values() if modality == made)
            raise ValueError(f"{node}: its {made} tokens go to {decoder_name} (node {decoder_id}), which decodes {decodes} tokens; "
                             f"connect them to {other}")
        if loader_id is None:
            continue
        try:
            tokenizer = load_once("vq_tokenizer", resolve_model("av_vq", vq_name, "Load VQ Tokenizer"), _load_tokenizer)
        except (OSError, ValueError):
            continue  # the loader node says what is wrong with its own file when it runs
        if tokenizer.modality != made:
            raise ValueError(f"{node}: its {made} tokens go to {decoder_name} (node {decoder_id}), whose tokenizer '{vq_name}' "
                             f"(Load VQ Tokenizer, node {loader_id}) is an {tokenizer.modality} tokenizer; expected a "
                             f"{'spectrogram' if made == 'audio' else 'image'} tokenizer")
        if tokenizer.codebook_size != codes:
            raise ValueError(f"{node}: {model_text} makes {made} tokens of {codes} codes, but {decoder_name} "
                             f"(node {decoder_id}) decodes them with '{vq_name}' (Load VQ Tokenizer, node {loader_id}), a tokenizer "
                             f"of {tokenizer.codebook_size} codes; expected the tokenizer the {word} was trained with "
                             f"({codes} codes)")


class EncodeImageTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EncodeImageTokens",
            display_name="Image to Tokens",
            category=st.category("encode"),
            description="Turns an IMAGE into a grid of VQ tokens with an image tokenizer.",
            inputs=[
                st.VQTokenizer.Input("tokenizer", tooltip="An image tokenizer from Load VQ Tokenizer."),
                io.Image.Input("image", tooltip="The picture to tokenize."),
                io.Boolean.Input("fit_to_model", default=True, tooltip="Centre-crop to a square and resize to the size the tokenizer was trained at, so the grid matches the transformer."),
            ],
            outputs=[st.Tokens.Output(display_name="image_tokens")],
        )

    @classmethod
    def execute(cls, tokenizer, image, fit_to_model=True) -> io.NodeOutput:
        node = "Image to Tokens"
        if tokenizer.modality != "image":
            raise ValueError(f"{node}: the tokenizer is a {tokenizer.modality} tokenizer; connect an image tokenizer")
        image = _check_image(image, node)
        if fit_to_model:
            image = fit_image_to_model(image, tokenizer.native_image_size)
        with torch.inference_mode():
            grid = tokenizer.encode_image(image.to(tokenizer.device, tokenizer.dtype))
        return io.NodeOutput(TokenGrid(grid.cpu(), "image", tokenizer.codebook_size))


class EncodeAudioTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EncodeAudioTokens",
            display_name="Audio to Tokens",
            category=st.category("encode"),
            description="Resamples and downmixes the AUDIO to the SpecVQGAN mel front end (22050 Hz, 80 mels, hop 256) and "
                        "tokenizes the mel with a spectrogram tokenizer. The clip is cut or padded to the tokenizer's length "
                        "(its training length: 2.0 s for the embedded SynthAV one, 9.8 s for SpecVQGAN's): longer audio is cut before "
                        "it is analysed.",
            inputs=[
                st.VQTokenizer.Input("tokenizer", tooltip="A spectrogram tokenizer from Load VQ Tokenizer."),
                io.Audio.Input("audio", tooltip="Any rate and channel count, resampled to 22050 Hz mono; empty, silent or NaN audio is refused."),
            ],
            outputs=[st.Tokens.Output(display_name="audio_tokens"), st.Mel.Output(display_name="mel")],
        )

    @classmethod
    def execute(cls, tokenizer, audio) -> io.NodeOutput:
        node = "Audio to Tokens"
        if tokenizer.modality != "audio":
            raise ValueError(f"{node}: the tokenizer is an {tokenizer.modality} tokenizer; connect a spectrogram tokenizer")
        frames = tokenizer.native_mel_frames
        mel = audio_to_mel01(audio, node, max_frames=frames)
        if frames:
            mel = F.pad(mel, (0, max(0, frames - mel.shape[-1])))[..., :frames]
        with torch.inference_mode():
            grid = tokenizer.encode_mel(mel.to(tokenizer.device, tokenizer.dtype), mode="pad")
        mel = mel[..., : grid.shape[-1] * tokenizer.downsample_factor]
        return io.NodeOutput(TokenGrid(grid.cpu(), "audio", tokenizer.codebook_size),
                             MelSpectrogram(mel.cpu(), SPECVQGAN_MEL.sample_rate_hz, SPECVQGAN_MEL.hop_samples))


class DecodeImageTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_DecodeImageTokens",
            display_name="Tokens to Image",
            category=st.category("decode"),
            description="Decodes a grid of image tokens into an IMAGE with the image tokenizer.",
            inputs=[
                st.VQTokenizer.Input("tokenizer", tooltip="The image tokenizer the tokens belong to."),
                st.Tokens.Input("image_tokens", tooltip="Image tokens from a sampler or Image to Tokens."),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, tokenizer, image_tokens) -> io.NodeOutput:
        node = "Tokens to Image"
        image_tokens.expect("image", node)
        _check_vocabulary(tokenizer, image_tokens, node)
        with torch.inference_mode():
            image = tokenizer.decode_image(image_tokens.indices.to(tokenizer.device))
        return io.NodeOutput(image.clamp(0, 1))


class DecodeMelTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_DecodeMelTokens",
            display_name="Tokens to Mel",
            category=st.category("decode"),
            description="Decodes a grid of audio tokens into a mel spectrogram with the spectrogram tokenizer; a vocoder turns it into sound. "
                        "A grid longer than the tokenizer's training clip (2.04 s on the embedded one) is decoded window by window, "
                        "each window a quarter over the previous one, crossfaded there: memory stays that of one window.",
            inputs=[
                st.VQTokenizer.Input("tokenizer", tooltip="The spectrogram tokenizer the tokens belong to."),
                st.Tokens.Input("audio_tokens", tooltip="Audio tokens from a sampler or Audio to Tokens."),
            ],
            outputs=[st.Mel.Output(display_name="mel")],
        )

    @classmethod
    def execute(cls, tokenizer, audio_tokens) -> io.NodeOutput:
        node = "Tokens to Mel"
        audio_tokens.expect("audio", node)
        _check_vocabulary(tokenizer, audio_tokens, node)
        with torch.inference_mode():
            mel = tokenizer.decode_mel(audio_tokens.indices.to(tokenizer.device), window_columns=window_columns(tokenizer))
        mel = MelSpectrogram(mel.clamp(0, 1), SPECVQGAN_MEL.sample_rate_hz, SPECVQGAN_MEL.hop_samples)
        return io.NodeOutput(mel, ui=mel_preview_ui(mel))


class AudioToMel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_AudioToMel",
            display_name="Audio to Mel",
            category=st.category("encode"),
            description="The SpecVQGAN mel front end (22050 Hz, 80 mels, hop 256, its dB normalisation) applied to any AUDIO.",
            inputs=[io.Audio.Input("audio", tooltip="Any rate and channel count, resampled to 22050 Hz mono; empty, silent or NaN audio is refused.")],
            outputs=[st.Mel.Output(display_name="mel")],
        )

    @classmethod
    def execute(cls, audio) -> io.NodeOutput:
        mel = MelSpectrogram(audio_to_mel01(audio, "Audio to Mel"), SPECVQGAN_MEL.sample_rate_hz, SPECVQGAN_MEL.hop_samples)
        return io.NodeOutput(mel, ui=mel_preview_ui(mel))


class MelToPicture(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_MelToPicture",
            display_name="Mel to Picture",
            category=st.category("decode"),
            description="Renders a mel spectrogram as an IMAGE (low frequencies at the bottom, time to the right) for previews and saving.",
            inputs=[
                st.Mel.Input("mel", tooltip="A mel spectrogram from Tokens to Mel or Audio to Mel."),
                io.Int.Input("pixels_per_frame", default=2, min=1, max=16, tooltip="Horizontal pixels per mel frame."),
                io.Int.Input("pixels_per_bin", default=3, min=1, max=16, tooltip="Vertical pixels per mel bin."),
            ],
            outputs=[io.Image.Output(display_name="picture")],
        )

    @classmethod
    def execute(cls, mel, pixels_per_frame=2, pixels_per_bin=3) -> io.NodeOutput:
        picture = mel_to_picture(mel.mel01.float())
        picture = picture.repeat_interleave(pixels_per_bin, dim=1).repeat_interleave(pixels_per_frame, dim=2)
        return io.NodeOutput(picture)


def _check_vocabulary(tokenizer: VQTokenizer, tokens: TokenGrid, node: str) -> None:
    if tokens.codebook_size != tokenizer.codebook_size:
        raise ValueError(f"{node}: the tokens come from a codebook of {tokens.codebook_size} codes, this tokenizer has {tokenizer.codebook_size}")


NODES = [LoadVQTokenizer, EncodeImageTokens, EncodeAudioTokens, DecodeImageTokens, DecodeMelTokens, AudioToMel, MelToPicture]
