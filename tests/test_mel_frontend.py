"""SpecVQGAN mel front end and the one audio-preparation helper."""

import math

import pytest
import torch

from comfyui_audiovisual.audio import (
    SPECVQGAN_MEL,
    fit_length,
    mel_bin_centres_hz,
    mel_filterbank,
    mel_frames_for,
    mel_to_magnitude,
    mel_to_picture,
    prepare_waveform,
    waveform_to_mel,
)
from comfyui_audiovisual.audio.mel_frontend import apply_colormap, magnitude_to_mel01


def sine(freq_hz, seconds, rate, amplitude=0.5):
    t = torch.arange(int(seconds * rate)) / rate
    return amplitude * torch.sin(2 * math.pi * freq_hz * t)


def test_constants_are_specvqgans():
    c = SPECVQGAN_MEL
    assert (c.sample_rate_hz, c.n_fft_samples, c.hop_samples, c.n_mels) == (22050, 1024, 256, 80)
    assert (c.f_min_hz, c.f_max_hz) == (125.0, 7600.0)
    with pytest.raises(Exception):
        c.hop_samples = 128  # frozen


def test_ten_seconds_gives_about_860_frames_in_unit_range():
    wave = 0.3 * torch.randn(1, 10 * 22050, generator=torch.Generator().manual_seed(0))
    mel = waveform_to_mel(wave)
    assert mel.shape == (1, 80, mel_frames_for(10 * 22050)) == (1, 80, 862)
    assert abs(mel.shape[-1] - 860) <= 2
    assert float(mel.min()) >= 0 and float(mel.max()) <= 1
    assert float(mel.mean()) > 0.3  # loud noise is well above the floor


def test_normalisation_formula_and_inverse():
    magnitudes = torch.tensor([1e-7, 1e-5, 1e-4, 1e-2, 1.0, 10.0, 100.0])
    mel01 = magnitude_to_mel01(magnitudes)
    expected = ((20 * torch.log10(magnitudes.clamp_min(1e-5)) - 20 + 100) / 100).clamp(0, 1)
    assert torch.allclose(mel01, expected)
    inside = (magnitudes >= 1e-4) & (magnitudes <= 10)
    assert torch.allclose(mel_to_magnitude(mel01)[inside], magnitudes[inside], rtol=1e-4)


def test_filterbank_is_slaney_normalised_triangles():
    fb = mel_filterbank()
    assert fb.shape == (80, 513)
    freqs = torch.linspace(0, 11025, 513)
    assert float(fb[:, freqs < 125].abs().max()) == 0 and float(fb[:, freqs > 7600].abs().max()) == 0
    # slaney normalisation: each triangle's area is ~1 (in Hz units: peak * width / 2 = 1)
    centres = mel_bin_centres_hz()
    assert torch.all(centres[1:] > centres[:-1])
    peak_bins = fb.argmax(dim=1)
    assert torch.all((freqs[peak_bins] - centres).abs() <= 11025 / 512)


def test_440hz_sine_peaks_in_its_mel_bin():
    mel = waveform_to_mel(sine(440.0, 1.0, 22050)[None])
    expected = int((mel_bin_centres_hz() - 440.0).abs().argmin())
    found = int(mel[0].mean(dim=1).argmax())
    assert abs(found - expected) <= 1, (found, expected)


def test_stereo_44k_is_downmixed_and_resampled():
    left, right = sine(440.0, 1.0, 44100), sine(880.0, 1.0, 44100)
    stereo = torch.stack([left, right])[None]  # [1, 2, 44100]
    mono = prepare_waveform(stereo, 44100, 22050)
    assert mono.shape == (1, 22050) and mono.dtype == torch.float32
    reference = (sine(440.0, 1.0, 22050) + sine(880.0, 1.0, 22050)) / 2
    assert torch.allclose(mono[0, 100:-100], reference[100:-100], atol=2e-2)
    same_rate = prepare_waveform(stereo[0], 44100, 44100)  # [C, T] accepted
    assert torch.allclose(same_rate[0], (left + right) / 2)


@pytest.mark.parametrize(
    "wave, rate, message",
    [
        (torch.zeros(1, 1, 0), 22050, "empty"),
        (torch.tensor([[[0.1, float("nan"), 0.2]]]), 22050, "NaN"),
        (torch.tensor([[[0.1, float("inf"), 0.2]]]), 22050, "NaN or infinite"),
        (torch.ones(1, 1, 10) * 0.1, 0, "positive"),
        (torch.ones(1, 1, 10) * 0.1, -8000, "positive"),
        (torch.ones(10), 22050, "shape"),
    ],
)
def test_bad_clips_are_refused_with_clear_messages(wave, rate, message):
    with pytest.raises(ValueError, match=message) as error:
        prepare_waveform(wave, rate, 22050, what="my audio")
    assert "my audio" in str(error.value)


def test_silence_is_refused_only_when_asked():
    silent = torch.zeros(1, 2, 1000)
    assert prepare_waveform(silent, 22050, 22050).shape == (1, 1000)
    with pytest.raises(ValueError, match="silent"):
        prepare_waveform(silent, 22050, 22050, allow_silent=False)


def test_fit_length_crops_and_pads():
    x = torch.arange(10.0)[None]
    assert fit_length(x, 4).tolist() == [[0, 1, 2, 3]]
    padded = fit_length(x, 12)
    assert padded.shape == (1, 12) and padded[0, -2:].tolist() == [0, 0]


def test_short_clip_still_gives_frames():
    mel = waveform_to_mel(0.1 * torch.ones(1, 100))
    assert mel.shape == (1, 80, mel_frames_for(100)) == (1, 80, 1)


def test_mel_picture_has_low_frequencies_at_the_bottom():
    mel = torch.zeros(2, 80, 30)
    mel[:, :5] = 1.0  # loud low bins
    picture = mel_to_picture(mel)
    assert picture.shape == (2, 80, 30, 3)
    assert float(picture.min()) >= 0 and float(picture.max()) <= 1
    bottom, top = picture[0, -1].mean(0), picture[0, 0].mean(0)
    luminance = torch.tensor([0.2126, 0.7152, 0.0722])
    assert float(bottom @ luminance) > float(top @ luminance) + 0.5
    assert mel_to_picture(mel[0], height_px=160, width_px=300).shape == (1, 160, 300, 3)


def test_colormap_luminance_rises():
    ramp = apply_colormap(torch.linspace(0, 1, 64))
    luminance = ramp @ torch.tensor([0.2126, 0.7152, 0.0722])
    assert torch.all(luminance[1:] >= luminance[:-1])
