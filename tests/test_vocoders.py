"""Vocoders: SpecVQGAN MelGAN checkpoints, transformers HiFiGAN folders, Griffin-Lim."""

import json
import math
import os

import pytest
import torch

from comfyui_audiovisual.audio import mel_bin_centres_hz, waveform_to_mel
from comfyui_audiovisual.loaders.vocoders import (
    GriffinLimVocoder,
    HifiGanVocoder,
    MelGANVocoder,
    load_vocoder,
)
from comfyui_audiovisual.networks.melgan import MelGANGenerator, melgan_hparams_from_state_dict
from tiny_checkpoints import tiny_melgan, write_melgan_checkpoint, write_speecht5_hifigan_folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_melgan_checkpoint_loads_and_matches_the_reference(tmp_path):
    reference = tiny_melgan(seed=3, ngf=4, n_residual_layers=2)
    path = write_melgan_checkpoint(reference, str(tmp_path / "best_netG.pt"))
    vocoder = load_vocoder(path)
    assert isinstance(vocoder, MelGANVocoder)
    assert (vocoder.sample_rate_hz, vocoder.hop_samples, vocoder.n_mels) == (22050, 256, 80)
    mel = torch.rand(1, 80, 12, generator=torch.Generator().manual_seed(0))
    wave = vocoder(mel)
    assert wave.shape == (1, 256 * 12)
    with torch.no_grad():
        expected = reference(mel)[:, 0]
    assert torch.allclose(wave, expected, atol=1e-5)
    assert float(wave.abs().max()) <= 1.0
    assert isinstance(load_vocoder(tmp_path), MelGANVocoder)  # SpecVQGAN's folder with best_netG.pt


def test_melgan_safetensors_and_default_specvqgan_shape(tmp_path):
    generator = MelGANGenerator()  # SpecVQGAN's: ngf 32, 3 residual layers
    hparams = melgan_hparams_from_state_dict(generator.state_dict())
    assert hparams == {"n_mels": 80, "ngf": 32, "n_residual_layers": 3, "ratios": (8, 8, 2, 2)}
    path = write_melgan_checkpoint(tiny_melgan(ngf=2, n_residual_layers=1), str(tmp_path / "vocoder.safetensors"))
    vocoder = load_vocoder(path)
    assert vocoder(torch.rand(2, 80, 3)).shape == (2, 768)


def test_hifigan_folder_rate_and_input_come_from_its_config(tmp_path):
    folder = write_speecht5_hifigan_folder(str(tmp_path / "hifigan"), sampling_rate=24000, normalize_before=True)
    vocoder = load_vocoder(folder)
    assert isinstance(vocoder, HifiGanVocoder)
    assert (vocoder.sample_rate_hz, vocoder.hop_samples, vocoder.n_mels) == (24000, 16, 80)
    assert vocoder.log_base == "10"  # SpeechT5's vocoder takes log10 mels
    mel = torch.rand(2, 80, 7, generator=torch.Generator().manual_seed(1))
    wave = vocoder(mel)
    assert wave.shape == (2, 7 * 16)
    with torch.no_grad():
        expected = vocoder.model(vocoder.log_mel(mel))
    assert torch.allclose(wave, expected)
    full_scale = torch.ones(1, 80, 1)  # mel 1.0 is +20 dB: magnitude 10 -> log10 = 1
    assert torch.allclose(vocoder.log_mel(full_scale), torch.ones(1, 1, 80))
    natural = load_vocoder(write_speecht5_hifigan_folder(str(tmp_path / "audioldm_like"), normalize_before=False))
    assert natural.log_base == "e" and natural.sample_rate_hz == 16000


def test_hifigan_refuses_a_mel_of_another_size(tmp_path):
    vocoder = load_vocoder(write_speecht5_hifigan_folder(str(tmp_path / "h64"), model_in_dim=64))
    with pytest.raises(ValueError, match="80 bins.*takes 64"):
        vocoder(torch.rand(1, 80, 5))


def test_griffin_lim_recovers_a_sines_frequency():
    vocoder = load_vocoder("griffin-lim")
    assert isinstance(vocoder, GriffinLimVocoder) and vocoder.sample_rate_hz == 22050
    rate, freq_hz = 22050, 1000.0
    wave = 0.5 * torch.sin(2 * math.pi * freq_hz * torch.arange(rate) / rate)
    mel = waveform_to_mel(wave[None])
    rebuilt = vocoder(mel)
    assert rebuilt.shape == (1, mel.shape[-1] * 256)
    spectrum = torch.fft.rfft(rebuilt[0] * torch.hann_window(rebuilt.shape[-1])).abs()
    peak_hz = float(spectrum.argmax()) * rate / rebuilt.shape[-1]
    centres = mel_bin_centres_hz()
    bin_width_hz = float(centres[1:][centres[1:] > freq_hz][0] - centres[:-1][centres[1:] > freq_hz][0])
    assert abs(peak_hz - freq_hz) <= bin_width_hz, (peak_hz, bin_width_hz)


def test_bad_vocoder_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_vocoder(tmp_path / "missing.pt")
    torch.save({"conv_pre.weight": torch.zeros(4, 80, 7)}, str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match=r"other\.pt.*not a MelGAN.*'model\.1\.weight_v'"):
        load_vocoder(tmp_path / "other.pt")
    state = dict(tiny_melgan(ngf=2, n_residual_layers=1).state_dict())
    del state["model.3.weight_g"]
    torch.save(state, str(tmp_path / "broken.pt"))
    with pytest.raises(ValueError, match=r"broken\.pt.*'model\.3\.weight_g'"):
        load_vocoder(tmp_path / "broken.pt")
    os.makedirs(tmp_path / "not_hifigan")
    (tmp_path / "not_hifigan" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not_hifigan.*model_type"):
        load_vocoder(tmp_path / "not_hifigan")
    (tmp_path / "vocoder.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="vocoder.onnx"):
        load_vocoder(tmp_path / "vocoder.onnx")
    with pytest.raises(ValueError, match="bins"):
        load_vocoder("griffin-lim")(torch.rand(1, 64, 5))


def test_griffin_lim_vocodes_a_long_mel_in_pieces_giving_the_whole_mels_samples():
    vocoder = load_vocoder("griffin-lim")
    vocoder.CHUNK_FRAMES = 150  # pieces of 150 frames (+ 133 of context either side) instead of 1024: a short test
    assert vocoder.context_frames == 133  # (32 iterations + the last ISTFT) x 4 frames an FFT reaches, + 1
    mel = torch.nn.functional.avg_pool1d(torch.rand(2, 80, 700, generator=torch.Generator().manual_seed(0)), 5, 1, 2)
    pieces = vocoder(mel)
    whole = vocoder._vocode(mel).clamp(-1, 1)
    assert pieces.shape == whole.shape == (2, 700 * 256)
    assert torch.allclose(pieces, whole, atol=1e-6), float((pieces - whole).abs().max())
    short = mel[..., :150 + 2 * 133]  # one piece: vocoded at once as before
    assert torch.equal(vocoder(short), vocoder._vocode(short).clamp(-1, 1))
