"""Audio front end: the one resample/downmix/validity helper and SpecVQGAN's mel spectrogram."""

from .prepare import fit_length, prepare_waveform
from .mel_frontend import (
    SPECVQGAN_MEL,
    MelFrontendConfig,
    mel_bin_centres_hz,
    mel_filterbank,
    mel_frames_for,
    mel_to_magnitude,
    mel_to_picture,
    waveform_to_mel,
)

__all__ = [
    "SPECVQGAN_MEL",
    "MelFrontendConfig",
    "fit_length",
    "mel_bin_centres_hz",
    "mel_filterbank",
    "mel_frames_for",
    "mel_to_magnitude",
    "mel_to_picture",
    "prepare_waveform",
    "waveform_to_mel",
]
