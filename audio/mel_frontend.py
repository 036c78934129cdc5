"""SpecVQGAN's mel spectrogram, exactly, and a picture of it.

SpecVQGAN (Iashin & Rahtu, 2021) computes, for 22050 Hz mono audio:
  |STFT| (n_fft 1024, hop 256, hann window, centred with reflect padding, magnitude = power 1)
  -> 80 librosa-style mel filters (slaney mel scale, slaney area normalisation, 125..7600 Hz)
  -> clip((20 * log10(max(x, 1e-5)) - 20 + 100) / 100, 0, 1)
so a "mel" here is a float tensor [B, 80, frames] in [0, 1], 0 meaning -80 dB (floor) and 1
meaning +20 dB. 10 s of audio gives 1 + 220500 // 256 = 862 frames (SpecVQGAN crops to 848).
The same normalised mel is what its VQGAN tokenizes and what its MelGAN vocoder takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
import torchaudio.functional as AF


@dataclass(frozen=True)
class MelFrontendConfig:
    """Constants of one mel front end (units in the names)."""

    sample_rate_hz: int
    n_fft_samples: int
    hop_samples: int
    window_samples: int
    f_min_hz: float
    f_max_hz: float
    n_mels: int
    magnitude_floor: float  # linear magnitude floor before the log
    ref_level_db: float  # subtracted from 20*log10(magnitude)
    min_level_db: float  # negative: -100 means 0 in the normalised mel is -100 dB after ref
    pad_mode: str  # centred STFT padding

    @property
    def n_freq_bins(self) -> int:
        """Number of STFT frequency bins (n_fft // 2 + 1)."""
        return self.n_fft_samples // 2 + 1

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate_hz / self.hop_samples


SPECVQGAN_MEL = MelFrontendConfig(
    sample_rate_hz=22050,
    n_fft_samples=1024,
    hop_samples=256,
    window_samples=1024,
    f_min_hz=125.0,
    f_max_hz=7600.0,
    n_mels=80,
    magnitude_floor=1e-5,
    ref_level_db=20.0,
    min_level_db=-100.0,
    pad_mode="reflect",
)
SPECVQGAN_NATIVE_FRAMES = 848  # SpecVQGAN's tokenizers were trained on 10 s clips, cropped from 860 frames


def mel_frames_for(n_samples: int, config: MelFrontendConfig = SPECVQGAN_MEL) -> int:
    """Number of mel frames a clip of `n_samples` gives (centred STFT: 1 + n // hop)."""
    return 1 + int(n_samples) // config.hop_samples


@lru_cache(maxsize=8)
def _filterbank_cpu(config: MelFrontendConfig) -> torch.Tensor:
    fb = AF.melscale_fbanks(
        n_freqs=config.n_freq_bins,
        f_min=config.f_min_hz,
        f_max=config.f_max_hz,
        n_mels=config.n_mels,
        sample_rate=config.sample_rate_hz,
        norm="slaney",
        mel_scale="slaney",
    )
    return fb.T.contiguous()  # [n_mels, n_freq_bins], as librosa.filters.mel


def mel_filterbank(config: MelFrontendConfig = SPECVQGAN_MEL) -> torch.Tensor:
    """Mel filterbank [n_mels, n_fft//2 + 1], float32, equal to librosa.filters.mel(htk=False, norm='slaney')."""
    return _filterbank_cpu(config).clone()


def mel_bin_centres_hz(config: MelFrontendConfig = SPECVQGAN_MEL) -> torch.Tensor:
    """Centre frequency in Hz of each mel bin [n_mels] (slaney mel scale)."""
    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        f_sp = 200.0 / 3
        min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, torch.log(torch.tensor(6.4)) / 27.0
        mel = f / f_sp
        return torch.where(f >= min_log_hz, min_log_mel + torch.log(f / min_log_hz) / logstep, mel)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        f_sp = 200.0 / 3
        min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, torch.log(torch.tensor(6.4)) / 27.0
        return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)

    lo, hi = hz_to_mel(torch.tensor(config.f_min_hz, dtype=torch.float64)), hz_to_mel(
        torch.tensor(config.f_max_hz, dtype=torch.float64)
    )
    points = torch.linspace(float(lo), float(hi), config.n_mels + 2, dtype=torch.float64)
    return mel_to_hz(points[1:-1]).to(torch.float32)


def waveform_to_mel(wave: torch.Tensor, config: MelFrontendConfig = SPECVQGAN_MEL) -> torch.Tensor:
    """Normalised mel spectrogram.

    Args:
        wave: [B, T] (or [T]) mono samples at `config.sample_rate_hz` (use `prepare_waveform` first).

    Returns:
        [B, n_mels, 1 + T // hop] float32 in [0, 1].
    """
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.dim() != 2:
        raise ValueError(f"waveform_to_mel: expected a mono waveform [B, T], got {tuple(wave.shape)}")
    if wave.shape[-1] == 0:
        raise ValueError("waveform_to_mel: the waveform has no samples")
    wave = wave.to(torch.float32)
    n_frames = mel_frames_for(wave.shape[-1], config)
    if config.pad_mode == "reflect" and wave.shape[-1] <= config.n_fft_samples // 2:
        # reflect padding needs more samples than the pad: a very short clip is zero-padded first
        wave = F.pad(wave, (0, config.n_fft_samples // 2 + 1 - wave.shape[-1]))
    window = torch.hann_window(config.window_samples, periodic=True, device=wave.device)
    spec = torch.stft(
        wave,
        n_fft=config.n_fft_samples,
        hop_length=config.hop_samples,
        win_length=config.window_samples,
        window=window,
        center=True,
        pad_mode=config.pad_mode,
        return_complex=True,
    ).abs()[..., :n_frames]  # [B, n_freq, frames]
    mel = torch.matmul(_filterbank_cpu(config).to(wave.device), spec)
    return magnitude_to_mel01(mel, config)


def magnitude_to_mel01(mel_magnitude: torch.Tensor, config: MelFrontendConfig = SPECVQGAN_MEL) -> torch.Tensor:
    """Linear mel magnitude -> normalised mel in [0, 1] (SpecVQGAN's normalisation)."""
    db = 20.0 * torch.log10(mel_magnitude.clamp_min(config.magnitude_floor)) - config.ref_level_db
    return ((db - config.min_level_db) / -config.min_level_db).clamp(0.0, 1.0)


def mel_to_magnitude(mel01: torch.Tensor, config: MelFrontendConfig = SPECVQGAN_MEL) -> torch.Tensor:
    """Normalised mel in [0, 1] -> linear mel magnitude (inverse of the normalisation; clipped values stay clipped).

    0 maps to 10**(-80/20) = 1e-4, 1 maps to 10**(20/20) = 10.
    """
    db = mel01.to(torch.float32).clamp(0.0, 1.0) * -config.min_level_db + config.min_level_db + config.ref_level_db
    return torch.pow(10.0, db / 20.0)


# A viridis-like ramp (approximate stops; luminance rises monotonically from dark blue to yellow).
_COLORMAP_STOPS = torch.tensor(
    [
        [0.267, 0.005, 0.329],
        [0.283, 0.141, 0.458],
        [0.254, 0.265, 0.530],
        [0.207, 0.372, 0.553],
        [0.164, 0.471, 0.558],
        [0.128, 0.567, 0.551],
        [0.135, 0.659, 0.518],
        [0.478, 0.821, 0.318],
        [0.993, 0.906, 0.144],
    ],
    dtype=torch.float32,
)


def apply_colormap(values01: torch.Tensor) -> torch.Tensor:
    """Map values in [0, 1] (any shape S) to RGB [*S, 3] in [0, 1] with a perceptual (viridis-like) ramp."""
    stops = _COLORMAP_STOPS.to(values01.device)
    pos = values01.to(torch.float32).clamp(0, 1) * (len(stops) - 1)
    lower = pos.floor().long().clamp(max=len(stops) - 2)
    frac = (pos - lower.to(pos.dtype)).unsqueeze(-1)
    return stops[lower] * (1 - frac) + stops[lower + 1] * frac


def mel_to_picture(
    mel01: torch.Tensor, *, height_px: int | None = None, width_px: int | None = None
) -> torch.Tensor:
    """Picture of a normalised mel, IMAGE-like.

    Args:
        mel01: [B, n_mels, frames] (or [n_mels, frames]) in [0, 1].
        height_px, width_px: optional output size (bilinear resize); default one pixel per bin/frame.

    Returns:
        [B, H, W, 3] float32 in [0, 1]; low frequencies at the bottom, time left to right.
    """
    if mel01.dim() == 2:
        mel01 = mel01.unsqueeze(0)
    if mel01.dim() != 3:
        raise ValueError(f"mel_to_picture: expected a mel [B, n_mels, frames], got {tuple(mel01.shape)}")
    values = mel01.to(torch.float32).clamp(0, 1).flip(1)  # row 0 = highest frequency
    if height_px is not None or width_px is not None:
        size = (height_px or values.shape[1], width_px or values.shape[2])
        values = F.interpolate(values.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    return apply_colormap(values)
