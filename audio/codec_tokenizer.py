"""EnCodec as a tokenizer: waveform [B, C, T] <-> codes [B, K, N], through transformers' ``EncodecModel``.

Layouts (``ENCODEC_LAYOUTS`` holds their configurations):

* ``encodec_24khz`` (facebook/encodec_24khz): mono, 24 kHz, hop 320 = 75 frames/s, codebooks of
  1024, up to 32 codebooks (24 kbps), the whole clip encoded at once.
* ``encodec_48khz`` (facebook/encodec_48khz): stereo, 48 kHz, 150 frames/s, codebooks of 1024, up
  to 16 codebooks; the clip is cut into 1 s chunks overlapping by 1 %, each chunk normalised to unit
  RMS (its scale is kept beside the codes) and decoded with a linear overlap-add.
* ``vatt_16khz``: mono, 16 kHz, hop 320 = 50 frames/s, 4 codebooks of 2048 (2.2 kbps): the
  token layout of the EnCodec VATT decodes with (AudioGen's compression model: 10 s -> (4, 500)).
  No transformers checkpoint of it is published; this is the configuration to hold one.

Token layout. ``CodecTokens.codes`` is [B, K, N]: K codebooks (RVQ levels, coarse first) by N
frames. A chunked codec's chunks are concatenated along N (``chunk_frames`` frames each, the last
one padded), so ``N = chunks * chunk_frames``; ``frames_for_samples`` says how many frames a clip
of a given length takes, which is what a generator must produce. Decoding trims (or zero-pads) the
waveform to ``num_samples``.

Fewer codebooks. RVQ codes are sequential: the first K codes of a clip do not depend on how many
levels follow, so any ``num_codebooks`` up to the model's maximum can be encoded and decoded (a
lower bitrate). ``codebook_latents(K)`` gives the K codebook tables [K, V, D] that VATT's decoder
embeds tokens with.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Optional

import torch

from .prepare import fit_length

__all__ = [
    "ENCODEC_LAYOUTS",
    "CodecTokens",
    "CodecTokenizer",
    "SpectrogramCodec",
    "encodec_config",
    "load_codec",
    "save_codec",
    "write_spectrogram_codec",
]

ENCODEC_LAYOUTS: dict[str, dict] = {
    "encodec_24khz": dict(sampling_rate=24_000, audio_channels=1, normalize=False, chunk_length_s=None, overlap=None,
                          codebook_size=1024, target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0],
                          upsampling_ratios=[8, 5, 4, 2], norm_type="weight_norm", use_causal_conv=True),
    "encodec_48khz": dict(sampling_rate=48_000, audio_channels=2, normalize=True, chunk_length_s=1.0, overlap=0.01,
                          codebook_size=1024, target_bandwidths=[3.0, 6.0, 12.0, 24.0],
                          upsampling_ratios=[8, 5, 4, 2], norm_type="time_group_norm", use_causal_conv=False),
    "vatt_16khz": dict(sampling_rate=16_000, audio_channels=1, normalize=False, chunk_length_s=None, overlap=None,
                       codebook_size=2048, target_bandwidths=[2.2], upsampling_ratios=[8, 5, 4, 2],
                       norm_type="weight_norm", use_causal_conv=False, num_filters=64),
}


def encodec_config(layout: str, **overrides):
    """A transformers ``EncodecConfig`` of a named layout (see ``ENCODEC_LAYOUTS``); ``overrides``
    change sizes (tests build tiny models this way, keeping the layout's rate, channels, chunking and
    codebooks)."""
    from transformers import EncodecConfig

    if layout not in ENCODEC_LAYOUTS:
        raise ValueError(f"encodec_config: unknown layout {layout!r}; expected one of {', '.join(ENCODEC_LAYOUTS)}")
    return EncodecConfig(**{**ENCODEC_LAYOUTS[layout], **overrides})


@dataclass(frozen=True)
class CodecTokens:
    """Codec codes of a batch of clips, with what is needed to turn them back into sound.

    codes: LongTensor [B, K, N] (K codebooks, N frames; chunks of a chunked codec concatenated).
    codebook_size: V, every id lies in [0, V).
    sample_rate_hz / channels: the codec's waveform rate and channel count.
    frame_rate_hz: codec frames per second (sample_rate / hop).
    num_samples: length of the waveform the codes stand for (decoding trims or pads to it).
    chunk_frames: frames per chunk of a chunked codec (EnCodec 48 kHz: 150); None = one chunk.
    scales: [chunks, B] per-chunk RMS of a normalising codec, None when unknown or not used
        (generated codes: the decoder then outputs the codec's unit-RMS level).
    codec: the codec's name (folder), "" when unknown.
    """

    codes: torch.Tensor
    codebook_size: int
    sample_rate_hz: int
    channels: int
    frame_rate_hz: float
    num_samples: int
    chunk_frames: Optional[int] = None
    scales: Optional[torch.Tensor] = None
    codec: str = ""

    @property
    def num_codebooks(self) -> int:
        return int(self.codes.shape[1])

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[2])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz

    def describe(self) -> str:
        return (f"{self.codes.shape[0]} x {self.num_codebooks} codebooks x {self.num_frames} frames of "
                f"{self.codec or 'a codec'} ({self.codebook_size} codes, {self.sample_rate_hz} Hz, {self.duration_s:.2f} s)")


@dataclass
class _Chunking:
    chunks: int
    chunk_frames: int
    last_chunk_frames: int

    @property
    def total_frames(self) -> int:
        return self.chunks * self.chunk_frames


class CodecTokenizer:
    """A transformers ``EncodecModel`` (in eval mode) used as audio <-> tokens.

    Waveforms are [B, C, T] at the codec's own rate and channel count (nodes bring AUDIO there with
    ``audio.prepare``)."""

    def __init__(self, model, name: str = ""):
        self.model = model.eval()
        self.name = name
        config = model.config
        self.sample_rate_hz = int(config.sampling_rate)
        self.channels = int(config.audio_channels)
        self.hop_samples = int(math.prod(config.upsampling_ratios))
        self.frame_rate_hz = self.sample_rate_hz / self.hop_samples
        self.codebook_size = int(config.codebook_size)
        self.max_codebooks = len(model.quantizer.layers)
        self.codebook_dim = int(model.quantizer.layers[0].codebook.embed.shape[1])
        self.chunk_samples = config.chunk_length
        self.chunk_stride = config.chunk_stride
        self.normalizes = bool(config.normalize)

    # ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> str:
        chunking = f", {self.chunk_samples / self.sample_rate_hz:g} s chunks" if self.chunk_samples else ""
        return (f"EnCodec {self.name or ''} ({self.sample_rate_hz} Hz, {self.channels} channel(s), "
                f"{self.max_codebooks} x {self.codebook_size} codes at {self.frame_rate_hz:g} frames/s{chunking})").replace("  ", " ")

    def _chunking(self, num_samples: int) -> _Chunking:
        if num_samples < 1:
            raise ValueError(f"codec: a clip needs at least one sample, got {num_samples}")
        if not self.chunk_samples:
            frames = math.ceil(num_samples / self.hop_samples)
            return _Chunking(1, frames, frames)
        stride = self.chunk_stride or self.chunk_samples
        chunks = math.ceil(num_samples / stride)
        # a clip shorter than one chunk is encoded as one short chunk
        chunk_frames = math.ceil(min(self.chunk_samples, num_samples) / self.hop_samples)
        last = math.ceil((num_samples - (chunks - 1) * stride) / self.hop_samples)
        return _Chunking(chunks, chunk_frames, min(last, chunk_frames))

    def frames_for_samples(self, num_samples: int) -> int:
        """N, the number of token frames of a clip of ``num_samples`` samples (what a generator must
        fill for the codes to decode to that length)."""
        return self._chunking(int(num_samples)).total_frames

    def samples_for_duration(self, duration_s: float) -> int:
        """Waveform samples of ``duration_s`` seconds at the codec's rate (rounded)."""
        if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"codec: duration must be a positive number of seconds, got {duration_s!r}")
        return max(1, round(duration_s * self.sample_rate_hz))

    def _check_codebooks(self, num_codebooks: Optional[int]) -> int:
        k = self.max_codebooks if num_codebooks in (None, 0) else num_codebooks
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_codebooks:
            raise ValueError(f"codec: number of codebooks must be 1..{self.max_codebooks} for this codec, got {num_codebooks!r}")
        return k

    def _bandwidth_for(self, num_codebooks: int) -> float:
        """The smallest of the model's target bandwidths that encodes at least ``num_codebooks`` levels."""
        quantizer = self.model.quantizer
        for bandwidth in sorted(self.model.config.target_bandwidths):
            if quantizer.get_num_quantizers_for_bandwidth(bandwidth) >= num_codebooks:
                return bandwidth
        return max(self.model.config.target_bandwidths)

    def codebook_latents(self, num_codebooks: Optional[int] = None) -> torch.Tensor:
        """The first K codebook tables, float32 [K, V, D] on the CPU (a copy)."""
        k = self._check_codebooks(num_codebooks)
        return torch.stack([layer.codebook.embed.detach().float().cpu().clone()
                            for layer in self.model.quantizer.layers[:k]])

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, waveform: torch.Tensor, num_codebooks: Optional[int] = None) -> CodecTokens:
        """[B, C, T] float at the codec's rate -> CodecTokens with K = ``num_codebooks`` (None/0: all)."""
        k = self._check_codebooks(num_codebooks)
        if not isinstance(waveform, torch.Tensor) or waveform.dim() != 3:
            shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise ValueError(f"codec: expected a waveform [batch, channels, samples], got {shape}")
        batch, channels, num_samples = waveform.shape
        if channels != self.channels:
            raise ValueError(f"codec: this codec takes {self.channels} channel(s), got {channels}")
        if batch < 1 or num_samples < 1:
            raise ValueError(f"codec: the clip is empty (shape {tuple(waveform.shape)})")
        if not bool(torch.isfinite(waveform).all()):
            raise ValueError("codec: the waveform holds NaN or infinite samples")
        device = self.device
        dtype = next(self.model.parameters()).dtype
        out = self.model.encode(waveform.to(device=device, dtype=dtype), bandwidth=self._bandwidth_for(k), return_dict=True)
        codes = out.audio_codes[:, :, :k]  # [chunks, B, K, F]
        chunks, _, _, frames = codes.shape
        flat = codes.permute(1, 2, 0, 3).reshape(batch, k, chunks * frames).long()
        layout = self._chunking(num_samples)
        if flat.shape[-1] != layout.total_frames:
            raise ValueError(f"codec: the model returned {flat.shape[-1]} frames for {num_samples} samples, "
                             f"expected {layout.total_frames} (is the config's hop {self.hop_samples} right?)")
        scales = None
        if self.normalizes and all(s is not None for s in out.audio_scales):
            scales = torch.stack([s.reshape(batch).float() for s in out.audio_scales]).cpu()
        return CodecTokens(codes=flat.cpu(), codebook_size=self.codebook_size, sample_rate_hz=self.sample_rate_hz,
                           channels=self.channels, frame_rate_hz=self.frame_rate_hz, num_samples=int(num_samples),
                           chunk_frames=layout.chunk_frames if self.chunk_samples else None, scales=scales, codec=self.name)

    def tokens_for(self, codes: torch.Tensor, num_samples: int) -> CodecTokens:
        """Wrap generated codes [B, K, N] (N = ``frames_for_samples(num_samples)``) as CodecTokens."""
        layout = self._chunking(int(num_samples))
        self._check_codes(codes, layout)
        return CodecTokens(codes=codes.long().cpu(), codebook_size=self.codebook_size, sample_rate_hz=self.sample_rate_hz,
                           channels=self.channels, frame_rate_hz=self.frame_rate_hz, num_samples=int(num_samples),
                           chunk_frames=layout.chunk_frames if self.chunk_samples else None, scales=None, codec=self.name)

    def _check_codes(self, codes: torch.Tensor, layout: _Chunking) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codec: expected integer codes [batch, codebooks, frames], got {shape}")
        self._check_codebooks(int(codes.shape[1]))
        if codes.shape[2] != layout.total_frames:
            raise ValueError(f"codec: got {codes.shape[2]} frames, expected {layout.total_frames} for this length")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codec: code ids must lie in [0, {self.codebook_size - 1}], found "
                             f"[{int(codes.min())}, {int(codes.max())}]")

    @torch.no_grad()
    def decode(self, tokens: CodecTokens) -> torch.Tensor:
        """CodecTokens -> waveform float32 [B, C, num_samples] at the codec's rate, on the CPU."""
        if tokens.codebook_size != self.codebook_size:
            raise ValueError(f"codec: the tokens use {tokens.codebook_size} codes per codebook, this codec {self.codebook_size}"
                             f" ({tokens.codec or 'another codec'})")
        if tokens.sample_rate_hz != self.sample_rate_hz:
            raise ValueError(f"codec: the tokens come from a {tokens.sample_rate_hz} Hz codec, this one runs at {self.sample_rate_hz} Hz")
        layout = self._chunking(tokens.num_samples)
        self._check_codes(tokens.codes, layout)
        batch, k, _ = tokens.codes.shape
        device = self.device
        codes = tokens.codes.to(device).reshape(batch, k, layout.chunks, layout.chunk_frames).permute(2, 0, 1, 3)
        if tokens.scales is not None and tuple(tokens.scales.shape) == (layout.chunks, batch):
            scales = [s.reshape(batch, 1).to(device=device, dtype=next(self.model.parameters()).dtype) for s in tokens.scales]
        else:
            scales = [None] * layout.chunks
        pad = layout.chunk_frames - layout.last_chunk_frames
        out = self.model.decode(codes, scales, last_frame_pad_length=pad, return_dict=True).audio_values
        return fit_length(out.float().cpu(), tokens.num_samples)


# ----------------------------------------------------------------------------------------------
# a spectrogram VQ as a codec
# ----------------------------------------------------------------------------------------------
SPECTROGRAM_CODEC_TYPE = "spectrogram_vq"


class SpectrogramCodec(CodecTokenizer):
    """A spectrogram VQ tokenizer (SpecVQGAN mel, ``vq.tokenizer.VQTokenizer``) and a mel vocoder used
    as a codec, so a VATT decoder can generate its tokens with the same nodes.

    Frames are the token grid's time columns (``hop_samples`` = mel hop x the VQ's downsampling:
    256 x 8 = 2048 samples, 10.77 frames/s at 22050 Hz) and "codebooks" are its frequency rows (80 mel
    bins / 8 = 10 rows), all reading the VQ's one table. So codes are ``[B, rows, columns]``: the grid
    itself. Unlike an RVQ the rows are not coarse-to-fine levels, so every row is always used.
    Encoding pads the mel to whole columns; decoding runs the VQ decoder, then the vocoder, and trims
    to ``num_samples``.

    A grid longer than the VQ's training clip (``window_columns``: its file's ``mel_frames`` metadata,
    else SpecVQGAN's 848 frames) is decoded window by window, as VATT generates it
    (``VQTokenizer.decode_mel``); a grid of one window decodes as before.

    A codec folder holds ``config.json``: ``{"model_type": "spectrogram_vq", "vq_model": <path of
    the VQ file, relative to the folder>, "vocoder": "griffin-lim" | <path>, "griffin_lim_iterations": 32}``.
    """

    def __init__(self, tokenizer, vocoder, name: str = "", mel_frames: Optional[int] = None):
        from .mel_frontend import SPECVQGAN_MEL

        if tokenizer.modality != "audio":
            raise ValueError("spectrogram codec: the VQ tokenizer must be a spectrogram (audio) tokenizer")
        self.tokenizer, self.vocoder = tokenizer, vocoder
        self.model = tokenizer.vq.eval()
        self.name = name
        self.mel_config = SPECVQGAN_MEL
        self.factor = int(tokenizer.downsample_factor)
        self.sample_rate_hz = int(self.mel_config.sample_rate_hz)
        if int(vocoder.sample_rate_hz) != self.sample_rate_hz or int(vocoder.n_mels) != self.mel_config.n_mels:
            raise ValueError(f"spectrogram codec: the vocoder runs at {vocoder.sample_rate_hz} Hz on {vocoder.n_mels} mels, "
                             f"the tokenizer's mels are {self.mel_config.n_mels} at {self.sample_rate_hz} Hz")
        self.channels = 1
        self.hop_samples = int(self.mel_config.hop_samples) * self.factor
        self.frame_rate_hz = self.sample_rate_hz / self.hop_samples
        self.codebook_size = int(tokenizer.codebook_size)
        self.max_codebooks = self.mel_config.n_mels // self.factor
        self.codebook_dim = int(tokenizer.embed_dim)
        self.chunk_samples = None
        self.chunk_stride = None
        self.normalizes = False
        self.window_columns = max(1, int(mel_frames) // self.factor) if mel_frames else None

    def describe(self) -> str:
        return (f"spectrogram codec {self.name} ({self.sample_rate_hz} Hz mono, {self.max_codebooks} rows x "
                f"{self.codebook_size} codes at {self.frame_rate_hz:.2f} columns/s, {self.vocoder.name})").replace("  ", " ")

    def _chunking(self, num_samples: int) -> _Chunking:
        if num_samples < 1:
            raise ValueError(f"codec: a clip needs at least one sample, got {num_samples}")
        mel_frames = 1 + int(num_samples) // int(self.mel_config.hop_samples)
        frames = math.ceil(mel_frames / self.factor)
        return _Chunking(1, frames, frames)

    def _check_codebooks(self, num_codebooks: Optional[int]) -> int:
        if num_codebooks not in (None, 0, self.max_codebooks) or isinstance(num_codebooks, bool):
            raise ValueError(f"codec: a spectrogram codec's codebooks are its {self.max_codebooks} frequency rows and all of "
                             f"them are needed; got {num_codebooks!r} (use 0 = all)")
        return self.max_codebooks

    def codebook_latents(self, num_codebooks: Optional[int] = None) -> torch.Tensor:
        k = self._check_codebooks(num_codebooks)
        table = self.model.quantize.embedding.weight.detach().float().cpu()
        return table.unsqueeze(0).repeat(k, 1, 1)

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor, num_codebooks: Optional[int] = None) -> CodecTokens:
        from .mel_frontend import waveform_to_mel

        self._check_codebooks(num_codebooks)
        if not isinstance(waveform, torch.Tensor) or waveform.dim() != 3 or waveform.shape[1] != 1:
            shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise ValueError(f"codec: expected a mono waveform [batch, 1, samples], got {shape}")
        if waveform.shape[0] < 1 or waveform.shape[2] < 1:
            raise ValueError(f"codec: the clip is empty (shape {tuple(waveform.shape)})")
        if not bool(torch.isfinite(waveform).all()):
            raise ValueError("codec: the waveform holds NaN or infinite samples")
        num_samples = int(waveform.shape[2])
        grid = self.tokenizer.encode_mel(waveform_to_mel(waveform[:, 0].float().cpu()), mode="pad")
        return self.tokens_for(grid.cpu(), num_samples)

    @torch.no_grad()
    def decode(self, tokens: CodecTokens) -> torch.Tensor:
        if tokens.codebook_size != self.codebook_size or tokens.sample_rate_hz != self.sample_rate_hz:
            raise ValueError(f"codec: the tokens ({tokens.describe()}) do not belong to this spectrogram codec")
        layout = self._chunking(tokens.num_samples)
        self._check_codes(tokens.codes, layout)
        mel = self.decode_mel(tokens.codes)
        wave = self.vocoder(mel.to(self.tokenizer.device)).float().cpu()
        return fit_length(wave.reshape(wave.shape[0], 1, -1), tokens.num_samples)

    @torch.no_grad()
    def decode_mel(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, rows, N] -> normalised mel [B, n_mels, N * factor] in [0, 1] on the CPU, window by
        window when N exceeds ``window_columns`` (``VQTokenizer.decode_mel``)."""
        return self.tokenizer.decode_mel(codes, window_columns=self.window_columns).clamp(0.0, 1.0)


def load_spectrogram_codec(path: str, config: dict, device: str | torch.device = "cpu") -> SpectrogramCodec:
    from ..loaders.vocoders import GriffinLimVocoder, load_vocoder
    from ..loaders.vq_checkpoints import load_vq_model
    from ..vq.tokenizer import VQTokenizer

    name = os.path.basename(os.path.normpath(path))
    vq_name = config.get("vq_model")
    if not isinstance(vq_name, str) or not vq_name:
        raise ValueError(f"{name}/config.json: a spectrogram codec names its VQ file in 'vq_model'")
    vq_path = os.path.normpath(os.path.join(path, vq_name))
    if not os.path.isfile(vq_path):
        raise FileNotFoundError(f"{name}/config.json: 'vq_model' points at {vq_path}, which does not exist")
    vocoder_name = config.get("vocoder", "griffin-lim")
    if str(vocoder_name).lower() in ("griffin-lim", "griffin_lim", "griffinlim"):
        vocoder = GriffinLimVocoder(n_iter=int(config.get("griffin_lim_iterations", 32)))
    else:
        vocoder = load_vocoder(os.path.normpath(os.path.join(path, vocoder_name)))
    try:
        tokenizer = VQTokenizer(load_vq_model(vq_path)[0].to(device).eval(), "audio")
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"{name}: could not load its VQ model ({error})") from error
    return SpectrogramCodec(tokenizer, vocoder, name, mel_frames=_training_mel_frames(vq_path))


def _training_mel_frames(vq_path: str) -> int:
    """The mel length a spectrogram VQ was trained on: its safetensors metadata's ``mel_frames`` (the
    pack's files say so), else SpecVQGAN's clips."""
    from .mel_frontend import SPECVQGAN_NATIVE_FRAMES

    if vq_path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(vq_path, framework="pt") as handle:
            frames = (handle.metadata() or {}).get("mel_frames")
        if frames and str(frames).isdigit() and int(frames) > 0:
            return int(frames)
    return SPECVQGAN_NATIVE_FRAMES


def write_spectrogram_codec(folder: str, vq_model: str, vocoder: str = "griffin-lim", griffin_lim_iterations: int = 32) -> str:
    """Writes a spectrogram codec folder (config.json only) whose VQ file is ``vq_model`` (stored relative to the folder)."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    config = {"model_type": SPECTROGRAM_CODEC_TYPE, "vq_model": os.path.relpath(os.path.abspath(vq_model), os.path.abspath(folder)),
              "vocoder": vocoder, "griffin_lim_iterations": int(griffin_lim_iterations)}
    with open(os.path.join(folder, "config.json.partial"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    os.replace(os.path.join(folder, "config.json.partial"), os.path.join(folder, "config.json"))
    return folder


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------
def load_codec(path: str, device: str | torch.device = "cpu") -> CodecTokenizer:
    """A codec folder -> CodecTokenizer: a transformers EnCodec folder (config.json + weights, as
    ``save_pretrained`` writes it), audiocraft's EnCodec compression checkpoint (the
    ``compression_state_dict.bin`` file or a folder holding it, e.g. AudioGen's 16 kHz codec:
    ``loaders.audiocraft_encodec``), or a spectrogram codec folder (``SpectrogramCodec``). Raises
    FileNotFoundError / ValueError naming the folder."""
    from ..loaders.audiocraft_encodec import is_audiocraft_codec, load_audiocraft_codec

    path = os.fspath(path)
    name = os.path.basename(os.path.normpath(path))
    config_path = os.path.join(path, "config.json")
    if is_audiocraft_codec(path):
        return load_audiocraft_codec(path, device)
    if not os.path.isdir(path):
        if os.path.isfile(path):
            raise ValueError(f"{name}: an EnCodec codec is a transformers folder (config.json + model.safetensors) or "
                             f"audiocraft's compression_state_dict.bin, not a single file of another kind")
        raise FileNotFoundError(f"{path}: no such codec folder")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{name}: no config.json in the folder; expected a transformers EnCodec folder")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{name}/config.json: not readable JSON ({error})") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type == SPECTROGRAM_CODEC_TYPE:
        return load_spectrogram_codec(path, config, device)
    if model_type != "encodec":
        raise ValueError(f"{name}/config.json: holds a {model_type!r} model, expected an EnCodec codec (model_type 'encodec') "
                         f"or a spectrogram codec (model_type '{SPECTROGRAM_CODEC_TYPE}')")
    from transformers import EncodecModel

    try:
        model = EncodecModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name}: could not load the EnCodec weights ({str(error).splitlines()[0]})") from error
    return CodecTokenizer(model.to(device).eval(), name)


def save_codec(model, folder: str) -> str:
    """Write an EncodecModel as a transformers folder (through a temporary folder + rename)."""
    import shutil
    import tempfile

    folder = os.fspath(folder)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".tmp-codec-", dir=parent)
    try:
        model.save_pretrained(temporary)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder
