"""EnCodec tokenizer: tiny random models of the three layouts (24 kHz mono, 48 kHz stereo chunked
and normalised, 16 kHz with 4 codebooks of 2048 like VATT's), saved as transformers folders and
loaded back; AUDIO -> tokens [B, K, N] -> AUDIO checked against transformers' own forward."""

import json
import math
import os

import pytest
import torch

from comfyui_audiovisual.audio.codec_tokenizer import (
    CodecTokenizer,
    encodec_config,
    load_codec,
    save_codec,
)

TINY = dict(num_filters=4, hidden_size=8, num_lstm_layers=1)


def tiny_encodec(layout: str, seed: int = 0):
    from transformers import EncodecModel

    torch.manual_seed(seed)
    model = EncodecModel(encodec_config(layout, **TINY)).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:  # transformers initialises codebooks to zeros
            layer.codebook.embed.normal_()
    return model


@pytest.fixture(scope="module", params=["encodec_24khz", "encodec_48khz", "vatt_16khz"])
def codec(request, tmp_path_factory, one_torch_thread):
    folder = tmp_path_factory.mktemp("codecs") / f"tiny_{request.param}"
    save_codec(tiny_encodec(request.param), str(folder))
    return request.param, load_codec(str(folder))


EXPECTED = {  # rate, channels, max codebooks, codebook size, frames per second, chunked
    "encodec_24khz": (24000, 1, 32, 1024, 75.0, False),
    "encodec_48khz": (48000, 2, 16, 1024, 150.0, True),
    "vatt_16khz": (16000, 1, 4, 2048, 50.0, False),
}


def test_loaded_layout_reports_the_published_rates_and_sizes(codec):
    layout, tokenizer = codec
    rate, channels, codebooks, size, frame_rate, chunked = EXPECTED[layout]
    assert (tokenizer.sample_rate_hz, tokenizer.channels, tokenizer.max_codebooks) == (rate, channels, codebooks)
    assert (tokenizer.codebook_size, tokenizer.frame_rate_hz) == (size, frame_rate)
    assert bool(tokenizer.chunk_samples) == chunked
    latents = tokenizer.codebook_latents(4)
    assert latents.shape == (4, size, 8)
    assert torch.equal(latents[2], tokenizer.model.quantizer.layers[2].codebook.embed)


def test_round_trip_matches_transformers_forward(codec):
    layout, tokenizer = codec
    rate = tokenizer.sample_rate_hz
    num_samples = int(1.3 * rate) + 77  # not a whole number of hops; two chunks at 48 kHz
    torch.manual_seed(1)
    wave = 0.1 * torch.randn(2, tokenizer.channels, num_samples)
    tokens = tokenizer.encode(wave, num_codebooks=4)
    assert tokens.codes.shape == (2, 4, tokenizer.frames_for_samples(num_samples))
    assert tokens.codes.dtype == torch.long
    assert 0 <= int(tokens.codes.min()) and int(tokens.codes.max()) < tokenizer.codebook_size
    if layout == "encodec_48khz":
        assert tokens.chunk_frames == 150 and tokens.codes.shape[-1] == 2 * 150
        assert tokens.scales.shape == (2, 2) and bool((tokens.scales > 0).all())
    else:
        assert tokens.codes.shape[-1] == math.ceil(num_samples / 320) and tokens.scales is None
    assert (tokens.sample_rate_hz, tokens.num_samples) == (rate, num_samples)

    decoded = tokenizer.decode(tokens)
    assert decoded.shape == (2, tokenizer.channels, num_samples)
    with torch.no_grad():
        reference = tokenizer.model(wave, bandwidth=tokenizer._bandwidth_for(4)).audio_values
    assert torch.allclose(decoded, reference[..., :num_samples], atol=1e-5)
    assert decoded.abs().max() > 0


def test_fewer_codebooks_are_a_prefix_of_more(codec):
    _, tokenizer = codec
    torch.manual_seed(2)
    wave = 0.1 * torch.randn(1, tokenizer.channels, tokenizer.sample_rate_hz // 2)
    full = tokenizer.encode(wave)
    assert full.num_codebooks == tokenizer.max_codebooks
    assert torch.equal(tokenizer.encode(wave, num_codebooks=2).codes, full.codes[:, :2])


def test_generated_codes_decode_to_the_requested_length(codec):
    _, tokenizer = codec
    num_samples = tokenizer.samples_for_duration(2.0)
    frames = tokenizer.frames_for_samples(num_samples)
    codes = torch.randint(0, tokenizer.codebook_size, (1, 4, frames), generator=torch.Generator().manual_seed(3))
    audio = tokenizer.decode(tokenizer.tokens_for(codes, num_samples))
    assert audio.shape == (1, tokenizer.channels, num_samples) and num_samples == 2 * tokenizer.sample_rate_hz
    assert bool(torch.isfinite(audio).all())
    with pytest.raises(ValueError, match="frames"):
        tokenizer.tokens_for(codes[..., :-1], num_samples)
    with pytest.raises(ValueError, match=r"code ids must lie in \[0, "):
        tokenizer.tokens_for(codes + tokenizer.codebook_size, num_samples)


def test_bad_audio_is_refused_with_the_reason(codec):
    _, tokenizer = codec
    with pytest.raises(ValueError, match="channel"):
        tokenizer.encode(torch.zeros(1, 3, 1000))
    bad = torch.zeros(1, tokenizer.channels, 1000)
    bad[0, 0, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tokenizer.encode(bad)
    with pytest.raises(ValueError, match="codebooks must be 1.."):
        tokenizer.encode(torch.zeros(1, tokenizer.channels, 1000), num_codebooks=tokenizer.max_codebooks + 1)


def test_folders_that_are_not_encodec_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such codec folder"):
        load_codec(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_codec(str(tmp_path / "empty"))
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match="holds a 'clip' model, expected an EnCodec"):
        load_codec(str(tmp_path / "clip"))
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a single file"):
        load_codec(str(tmp_path / "weights.safetensors"))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_codes_of_another_codec_are_refused(codec):
    _, tokenizer = codec
    torch.manual_seed(4)
    tokens = tokenizer.encode(0.1 * torch.randn(1, tokenizer.channels, 4000), num_codebooks=2)
    from dataclasses import replace

    with pytest.raises(ValueError, match="codes per codebook"):
        tokenizer.decode(replace(tokens, codebook_size=tokenizer.codebook_size * 2))
    with pytest.raises(ValueError, match="Hz codec"):
        tokenizer.decode(replace(tokens, sample_rate_hz=tokenizer.sample_rate_hz + 1))
