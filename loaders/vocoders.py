"""Vocoders: SpecVQGAN's normalised mel [B, 80, T] in [0, 1] -> waveform [B, T * hop].

Three implementations share one interface (`Vocoder`):
  * `MelGANVocoder`: SpecVQGAN's own MelGAN (`best_netG.pt`), fed the normalised mel directly.
  * `HifiGanVocoder`: a transformers `SpeechT5HifiGan` folder (microsoft/speecht5_hifigan,
    AudioLDM's vocoder, ...). HiFiGANs take log mel magnitudes (B, T, n_mels); the normalisation is
    undone and the log taken: log10 for SpeechT5's (its feature extractor uses log10, and its
    config has `normalize_before` with mean/scale, applied inside the model), natural log otherwise
    (AudioLDM / original HiFiGAN `log(clamp(x, 1e-5))`). Its sample rate and hop come from its
    config. T frames last T * hop / sample_rate_hz seconds at the vocoder's own rate, so only a HiFiGAN at
    SpecVQGAN's 22050 Hz and hop 256 can vocode the pack's mels in time: a 16 kHz one (SpeechT5's,
    AudioLDM's) would make each 11.6 ms frame 16 ms of sound, 22050 / 16000 = 1.38x too long; Load Vocoder
    does not offer it (`vocoder_mel_timing`, nodes/vocoders.py).
    Such a model was still trained on its own mel filters (SpeechT5's: 80..7600 Hz, SpecVQGAN's 125..7600 Hz),
    so even at 22050 Hz the result is an approximation unless the filters are SpecVQGAN's.
  * `GriffinLimVocoder`: no weights: mel magnitude -> linear magnitude through the filterbank's
    pseudo-inverse (clamped at 0) -> torchaudio Griffin-Lim, 22050 Hz, hop 256.

`load_vocoder(path_or_name)` picks the right one.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod

import torch

from ..audio.mel_frontend import SPECVQGAN_MEL, MelFrontendConfig, mel_filterbank, mel_to_magnitude
from ..networks.melgan import melgan_from_state_dict
from .checkpoint_io import PICKLE_EXTENSIONS, SAFETENSORS_EXTENSIONS, file_fact, holds_key, read_state_dict

GRIFFIN_LIM_NAMES = ("griffin-lim", "griffinlim", "griffin_lim")
SPECVQGAN_MELGAN_FILE = "best_netG.pt"
HIFIGAN_MODEL_TYPES = ("hifigan", "speecht5_hifigan")  # transformers 4.x writes the first, 5.x the second


class Vocoder(ABC):
    """mel01 [B, n_mels, T] in [0, 1] (SpecVQGAN normalisation) -> waveform [B, T * hop_samples] at sample_rate_hz."""

    name: str = "vocoder"
    sample_rate_hz: int
    hop_samples: int
    n_mels: int

    def check_mel(self, mel01: torch.Tensor) -> torch.Tensor:
        if mel01.dim() == 2:
            mel01 = mel01.unsqueeze(0)
        if mel01.dim() != 3:
            raise ValueError(f"{self.name}: expected a mel [B, n_mels, frames], got {tuple(mel01.shape)}")
        if mel01.shape[1] != self.n_mels:
            raise ValueError(f"{self.name}: the mel has {mel01.shape[1]} bins, this vocoder takes {self.n_mels}")
        if mel01.shape[2] == 0:
            raise ValueError(f"{self.name}: the mel has no frames")
        if not torch.isfinite(mel01).all():
            raise ValueError(f"{self.name}: the mel holds NaN or infinite values")
        return mel01.to(torch.float32)

    @abstractmethod
    def __call__(self, mel01: torch.Tensor) -> torch.Tensor: ...

    def to(self, device) -> "Vocoder":
        return self


class MelGANVocoder(Vocoder):
    """SpecVQGAN's MelGAN (22050 Hz, hop 256), taking the normalised mel as trained."""

    name = "MelGAN vocoder"

    def __init__(self, generator, sample_rate_hz: int = SPECVQGAN_MEL.sample_rate_hz):
        self.generator = generator.eval()
        self.sample_rate_hz = int(sample_rate_hz)
        self.hop_samples = int(generator.hop_samples)
        self.n_mels = int(generator.n_mels)

    min_frames = 4  # the generator's reflection pads need more frames than this many

    @torch.no_grad()
    def __call__(self, mel01: torch.Tensor) -> torch.Tensor:
        mel01 = self.check_mel(mel01)
        frames = mel01.shape[-1]
        if frames < self.min_frames:  # repeat the last frame, cut the extra samples afterwards
            mel01 = torch.nn.functional.pad(mel01, (0, self.min_frames - frames), mode="replicate")
        parameter = next(self.generator.parameters())
        wave = self.generator(mel01.to(parameter.device, parameter.dtype))
        return wave[:, 0, : frames * self.hop_samples].float()

    def to(self, device) -> "MelGANVocoder":
        self.generator.to(device)
        return self


class HifiGanVocoder(Vocoder):
    """A transformers `SpeechT5HifiGan`; converts the normalised mel to its log-mel input.

    Args:
        model: the SpeechT5HifiGan.
        log_base: "10" or "e"; default: "10" when the config has `normalize_before` (SpeechT5's
            vocoder, trained on log10 mels), else "e" (AudioLDM and original HiFiGAN recipes).
    """

    name = "HiFiGAN vocoder"

    def __init__(self, model, log_base: str | None = None, mel_config: MelFrontendConfig = SPECVQGAN_MEL):
        self.model = model.eval()
        config = model.config
        self.sample_rate_hz = int(config.sampling_rate)
        self.hop_samples = int(torch.tensor(list(config.upsample_rates)).prod())
        self.n_mels = int(config.model_in_dim)
        if log_base is None:
            log_base = "10" if getattr(config, "normalize_before", False) else "e"
        if log_base not in ("10", "e"):
            raise ValueError(f"{self.name}: log_base must be '10' or 'e', got {log_base!r}")
        self.log_base = log_base
        self.mel_config = mel_config

    def log_mel(self, mel01: torch.Tensor) -> torch.Tensor:
        """Normalised mel [B, n_mels, T] -> log mel magnitude [B, T, n_mels] as the model expects."""
        magnitude = mel_to_magnitude(mel01, self.mel_config).clamp_min(1e-5)
        logged = torch.log10(magnitude) if self.log_base == "10" else torch.log(magnitude)
        return logged.transpose(1, 2).contiguous()

    @torch.no_grad()
    def __call__(self, mel01: torch.Tensor) -> torch.Tensor:
        mel01 = self.check_mel(mel01)
        parameter = next(self.model.parameters())
        wave = self.model(self.log_mel(mel01).to(parameter.device, parameter.dtype))
        return wave.reshape(mel01.shape[0], -1).float()

    def to(self, device) -> "HifiGanVocoder":
        self.model.to(device)
        return self


class GriffinLimVocoder(Vocoder):
    """Weight-free vocoder: pseudo-inverse of the mel filterbank, then Griffin-Lim phase recovery."""

    name = "Griffin-Lim vocoder"

    def __init__(self, n_iter: int = 32, mel_config: MelFrontendConfig = SPECVQGAN_MEL, momentum: float = 0.99):
        import torchaudio.transforms as T

        self.mel_config = mel_config
        self.sample_rate_hz = mel_config.sample_rate_hz
        self.hop_samples = mel_config.hop_samples
        self.n_mels = mel_config.n_mels
        self.inverse_filterbank = torch.linalg.pinv(mel_filterbank(mel_config).double()).float()  # [n_freq, n_mels]
        self.griffin_lim = T.GriffinLim(
            n_fft=mel_config.n_fft_samples,
            n_iter=n_iter,
            win_length=mel_config.window_samples,
            hop_length=mel_config.hop_samples,
            power=1.0,
            momentum=momentum,
            rand_init=False,
        )

    def linear_magnitude(self, mel01: torch.Tensor) -> torch.Tensor:
        """Normalised mel [B, n_mels, T] -> non-negative STFT magnitude estimate [B, n_fft//2+1, T]."""
        magnitude = mel_to_magnitude(mel01, self.mel_config)
        return torch.matmul(self.inverse_filterbank.to(magnitude.device), magnitude).clamp_min(0.0)

    # A long mel is vocoded in pieces of CHUNK_FRAMES, each with context_frames of mel on either side:
    # memory stays that of one piece, whatever the length (a minute at once held ~180 MB of STFTs).
    CHUNK_FRAMES = 1024  # 11.9 s at hop 256

    @property
    def context_frames(self) -> int:
        """How far the edge of a piece reaches into it: each iteration's ISTFT -> STFT spreads a frame's
        value over the frames within one FFT length (n_fft / hop on either side), so after n_iter
        iterations (and the final ISTFT) samples farther than this from a piece's edge are what the whole
        mel would give (the same sums of the same frames; float rounding aside)."""
        reach = -(-self.griffin_lim.n_fft // self.hop_samples)
        return (self.griffin_lim.n_iter + 1) * reach + 1

    def _vocode(self, mel01: torch.Tensor) -> torch.Tensor:
        frames = mel01.shape[-1]
        self.griffin_lim.to(mel01.device)
        wave = self.griffin_lim(self.linear_magnitude(mel01))
        n_samples = frames * self.hop_samples
        if wave.shape[-1] < n_samples:
            wave = torch.nn.functional.pad(wave, (0, n_samples - wave.shape[-1]))
        return wave[..., :n_samples]

    @torch.no_grad()
    def __call__(self, mel01: torch.Tensor) -> torch.Tensor:
        mel01 = self.check_mel(mel01)
        frames, context, hop = mel01.shape[-1], self.context_frames, self.hop_samples
        if frames <= self.CHUNK_FRAMES + 2 * context:
            return self._vocode(mel01).clamp(-1.0, 1.0)
        wave = torch.empty(mel01.shape[0], frames * hop, dtype=torch.float32)
        for start in range(0, frames, self.CHUNK_FRAMES):
            end = min(frames, start + self.CHUNK_FRAMES)
            first, last = max(0, start - context), min(frames, end + context)
            piece = self._vocode(mel01[..., first:last])
            wave[:, start * hop:end * hop] = piece[:, (start - first) * hop:(end - first) * hop].to(wave.device, torch.float32)
        return wave.to(mel01.device).clamp(-1.0, 1.0)


def load_vocoder(path_or_name: str | os.PathLike, *, log_base: str | None = None) -> Vocoder:
    """A `Vocoder` for a name or a file/folder.

    Accepts:
      * "griffin-lim": `GriffinLimVocoder` (no weights);
      * a folder whose config.json has model_type "hifigan"/"speecht5_hifigan": `HifiGanVocoder` (transformers
        SpeechT5HifiGan; `log_base` as in `HifiGanVocoder`);
      * a SpecVQGAN/MelGAN generator state dict (`.pt`/`.ckpt`/`.pth`/`.safetensors`, keys
        `model.1.weight_g`, ...), or a folder holding SpecVQGAN's `best_netG.pt`: `MelGANVocoder`.

    Raises:
        FileNotFoundError: no such file/folder. ValueError: anything else, naming the file and key.
    """
    text = os.fspath(path_or_name)
    if text.strip().lower() in GRIFFIN_LIM_NAMES:
        return GriffinLimVocoder()
    source = os.path.basename(os.path.normpath(text))
    if os.path.isdir(text):
        config_path = os.path.join(text, "config.json")
        if os.path.isfile(config_path):
            return _load_hifigan_folder(text, config_path, source, log_base)
        melgan_file = os.path.join(text, SPECVQGAN_MELGAN_FILE)
        if os.path.isfile(melgan_file):
            return load_vocoder(melgan_file)
        raise FileNotFoundError(
            f"{source}: a vocoder folder needs config.json (a transformers HiFiGAN) or {SPECVQGAN_MELGAN_FILE} (SpecVQGAN)"
        )
    if not os.path.exists(text):
        raise FileNotFoundError(f"{text}: no such vocoder file or folder (or use the name 'griffin-lim')")
    ext = os.path.splitext(text)[1].lower()
    if ext not in SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS:
        raise ValueError(f"{source}: unknown vocoder file type {ext!r}; expected a MelGAN .pt/.ckpt/.safetensors "
                         f"or a HiFiGAN folder")
    state_dict, _ = read_state_dict(text)
    if not any(k.startswith("model.1.") for k in state_dict):
        raise ValueError(f"{source}: not a MelGAN vocoder checkpoint: missing key 'model.1.weight_v' "
                         f"(a transformers HiFiGAN must be given as its folder with config.json)")
    return MelGANVocoder(melgan_from_state_dict(state_dict, source))


def vocoder_entry_kind(path: str | os.PathLike) -> str | None:
    """"hifigan" or "melgan" when `load_vocoder` can read `path` (for listing only loadable entries),
    else None. Cheap: a folder's config.json or best_netG.pt, a safetensors header's key names, the key
    names in a torch zip's pickle (never unpickled); a legacy (non-zip) pickle is read with
    `read_state_dict`. Cached by size and mtime."""
    text = os.fspath(path)
    if os.path.isdir(text):
        config_path = os.path.join(text, "config.json")
        if os.path.isfile(config_path):
            try:
                with open(config_path, encoding="utf-8") as handle:
                    model_type = json.load(handle).get("model_type")
            except (OSError, ValueError, AttributeError):
                return None
            return "hifigan" if model_type in HIFIGAN_MODEL_TYPES else None
        return "melgan" if os.path.isfile(os.path.join(text, SPECVQGAN_MELGAN_FILE)) else None
    return file_fact("vocoder kind", text, lambda file: "melgan" if _has_melgan_keys(file) else None)


def vocoder_mel_bins(path: str | os.PathLike) -> int | None:
    """The mel bins a vocoder entry takes, read cheaply (a HiFiGAN folder's config.json `model_in_dim`, a
    MelGAN safetensors header's first convolution); None when that needs the whole file."""
    text = os.fspath(path)
    try:
        if os.path.isdir(text) and os.path.isfile(os.path.join(text, "config.json")):
            with open(os.path.join(text, "config.json"), encoding="utf-8") as handle:
                return int(json.load(handle).get("model_in_dim", 80))  # SpeechT5HifiGanConfig's default
        if os.path.isfile(text) and os.path.splitext(text)[1].lower() in SAFETENSORS_EXTENSIONS:
            from safetensors import safe_open

            with safe_open(text, framework="pt", device="cpu") as handle:
                for key in ("model.1.weight_v", "model.1.weight"):
                    if key in handle.keys():
                        return int(handle.get_slice(key).get_shape()[1])
    except (OSError, ValueError, TypeError):
        return None
    return None


def vocoder_mel_timing(path: str | os.PathLike) -> tuple[int, int] | None:
    """(sample rate in Hz, hop in samples) of a HiFiGAN folder, read from its config.json (`sampling_rate`,
    the product of `upsample_rates`; SpeechT5HifiGanConfig's defaults 16000 and 4*4*4*4 where absent): the
    mel frames it takes last hop / rate seconds. None for other entries: a MelGAN file holds no rate (the pack
    reads it as SpecVQGAN's, 22050 Hz, the mel it was trained on)."""
    config_path = os.path.join(os.fspath(path), "config.json")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
        rates = [int(rate) for rate in config.get("upsample_rates", [4, 4, 4, 4])]
        return int(config.get("sampling_rate", 16000)), int(torch.tensor(rates).prod())
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _has_melgan_keys(path: str) -> bool:
    return holds_key(path, lambda key: key.startswith("model.1."), b"model.1.weight")


def _load_hifigan_folder(folder: str, config_path: str, source: str, log_base: str | None) -> HifiGanVocoder:
    with open(config_path, encoding="utf-8") as handle:
        try:
            config = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}/config.json: not valid JSON ({error})") from error
    if config.get("model_type") not in HIFIGAN_MODEL_TYPES:
        raise ValueError(
            f"{source}/config.json: model_type is {config.get('model_type')!r}, expected one of "
            f"{', '.join(repr(t) for t in HIFIGAN_MODEL_TYPES)} (transformers SpeechT5HifiGan)"
        )
    from transformers import SpeechT5HifiGan

    try:
        model, loading = SpeechT5HifiGan.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{source}: could not load the HiFiGAN weights ({error})") from error
    problems = [(kind, key) for kind in ("missing_keys", "mismatched_keys") for key in loading.get(kind) or ()]
    if problems:
        kind, key = problems[0]
        what = "missing key" if kind == "missing_keys" else "key with the wrong shape"
        raise ValueError(f"{source}: {what} {key!r} in the HiFiGAN weights ({len(problems)} problem(s) in all)")
    return HifiGanVocoder(model, log_base=log_base)
