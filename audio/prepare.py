"""The one helper every audio input goes through: validate, downmix to mono, resample.

Waveforms follow the host's AUDIO layout: float tensors [B, C, T] (batch, channels, samples)
with values nominally in [-1, 1]. `prepare_waveform` returns [B, T] mono at the rate a model
needs, or raises a ValueError that says what is wrong with the clip.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF

SILENCE_THRESHOLD = 1e-8
"""A clip whose every |sample| is below this is treated as silent."""


def prepare_waveform(
    waveform: torch.Tensor,
    sample_rate: int,
    target_rate: int,
    *,
    what: str = "audio",
    allow_silent: bool = True,
) -> torch.Tensor:
    """Mono float32 waveform at `target_rate`.

    Args:
        waveform: [B, C, T] or [C, T] samples (a [C, T] clip is treated as a batch of one).
        sample_rate: rate of `waveform` in Hz (> 0).
        target_rate: rate wanted in Hz (> 0).
        what: the input's name, used in error messages (e.g. the node input "audio").
        allow_silent: when False, a clip whose samples are all below 1e-8 in magnitude is refused.

    Returns:
        [B, T'] float32, channels averaged (mean downmix), resampled with
        `torchaudio.functional.resample` (T' = ceil(T * target_rate / sample_rate)).

    Raises:
        ValueError: wrong rank, no samples, NaN/inf samples, non-positive rates, or (if not allowed)
            a silent clip.
    """
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(f"{what}: expected a waveform tensor [B, C, T], got {type(waveform).__name__}")
    if waveform.dim() == 2:
        waveform = waveform.unsqueeze(0)
    if waveform.dim() != 3:
        raise ValueError(f"{what}: expected a waveform of shape [B, C, T] or [C, T], got {tuple(waveform.shape)}")
    rate_in = _check_rate(sample_rate, f"{what}: sample rate")
    rate_out = _check_rate(target_rate, f"{what}: target sample rate")
    batch, channels, n_samples = waveform.shape
    if batch == 0 or channels == 0 or n_samples == 0:
        raise ValueError(f"{what}: the clip is empty (shape {tuple(waveform.shape)}); expected at least one sample")
    waveform = waveform.detach().to(torch.float32)
    if not torch.isfinite(waveform).all():
        n_bad = int((~torch.isfinite(waveform)).sum())
        raise ValueError(f"{what}: {n_bad} sample(s) are NaN or infinite; expected finite values")
    if not allow_silent and bool((waveform.abs() < SILENCE_THRESHOLD).all()):
        raise ValueError(f"{what}: the clip is silent (every |sample| < {SILENCE_THRESHOLD:g}); expected some sound")
    mono = waveform.mean(dim=1)
    if rate_in != rate_out:
        mono = AF.resample(mono, rate_in, rate_out)
    return mono.contiguous()


def fit_length(x: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Crop or zero-pad the last axis of `x` to exactly `n_samples` (padding goes at the end)."""
    if n_samples < 0:
        raise ValueError(f"fit_length: n_samples must be >= 0, got {n_samples}")
    length = x.shape[-1]
    if length >= n_samples:
        return x[..., :n_samples]
    return torch.nn.functional.pad(x, (0, n_samples - length))


def _check_rate(rate, name: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ValueError(f"{name} must be a positive number of Hz, got {rate!r}")
    if rate <= 0:
        raise ValueError(f"{name} must be positive, got {rate!r} Hz")
    if int(rate) != rate:
        raise ValueError(f"{name} must be a whole number of Hz, got {rate!r}")
    return int(rate)
