"""AudioGen's EnCodec from audiocraft's compression checkpoint (issue 18): a tiny random package in the
exact exported layout decodes like audiocraft's equations, encodes, and bad files are refused by name."""

import os

import pytest
import torch

from comfyui_audiovisual.audio.codec_tokenizer import load_codec
from comfyui_audiovisual.loaders.audiocraft_encodec import COMPRESSION_FILE, load_audiocraft_codec

from tiny_audiocraft import reference_decode, write_compression_package


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codecs") / "audiogen-medium"
    folder.mkdir()
    state = write_compression_package(folder / COMPRESSION_FILE)
    return folder, state


def test_decode_matches_audiocraft_equations(package):
    folder, state = package
    codec = load_codec(str(folder))
    assert (codec.sample_rate_hz, codec.channels, codec.max_codebooks, codec.codebook_size) == (16_000, 1, 4, 2048)
    assert codec.frame_rate_hz == 50 and codec.hop_samples == 320
    codes = torch.randint(0, 2048, (2, 4, 13), generator=torch.Generator().manual_seed(1))
    audio = codec.decode(codec.tokens_for(codes, 13 * 320))
    expected = reference_decode(state, codes)
    assert audio.shape == expected.shape == (2, 1, 13 * 320)
    assert float(expected.abs().max()) > 0.01
    assert torch.allclose(audio.double(), expected, atol=1e-5, rtol=0), float((audio.double() - expected).abs().max())
    tables = codec.codebook_latents()
    assert torch.equal(tables, torch.stack([state[f"quantizer.vq.layers.{q}._codebook.embed"] for q in range(4)]))


def test_file_itself_and_encode(package):
    folder, _ = package
    codec = load_audiocraft_codec(str(folder / COMPRESSION_FILE))
    wave = torch.randn(1, 1, 16_000, generator=torch.Generator().manual_seed(2)) * 0.1
    tokens = codec.encode(wave)
    assert tokens.codes.shape == (1, 4, 50) and int(tokens.codes.max()) < 2048
    assert codec.decode(tokens).shape == (1, 1, 16_000)


def test_bad_packages_are_refused_by_name(tmp_path):
    good = tmp_path / "good.bin"
    write_compression_package(good)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(ValueError, match="truncated.bin: not a readable torch checkpoint"):
        load_codec(str(truncated))
    code = tmp_path / "code.bin"
    torch.save({"best_state": {}, "xp.cfg": "", "hook": os.system}, code)
    with pytest.raises(ValueError, match="code.bin: refused to unpickle"):
        load_codec(str(code))
    named = tmp_path / "named.bin"
    torch.save({"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1"}, named)
    with pytest.raises(ValueError, match="named.bin: this package only names the pretrained model"):
        load_codec(str(named))
    wrong_q = tmp_path / "wrong_q.bin"
    state = write_compression_package(wrong_q)
    del state["quantizer.vq.layers.3._codebook.embed"]
    torch.save({"best_state": state, "xp.cfg": torch.load(good, weights_only=True)["xp.cfg"]}, wrong_q)
    with pytest.raises(ValueError, match="wrong_q.bin: rvq.n_q is 4 but 'best_state' holds 3 codebooks"):
        load_codec(str(wrong_q))
    shapes = tmp_path / "shapes.bin"
    cfg = torch.load(good, weights_only=True)["xp.cfg"].replace("dimension: 8", "dimension: 16")
    torch.save({"best_state": torch.load(good, weights_only=True)["best_state"], "xp.cfg": cfg}, shapes)
    with pytest.raises(ValueError, match="shapes.bin: '.*' has shape"):
        load_codec(str(shapes))


def test_load_codec_node_lists_and_loads_the_downloaded_layout(host, tmp_path):
    """models/audiovisual/codecs/<folder>/compression_state_dict.bin (AudioGen as downloaded) and the file
    put there directly are both offered by Load Codec and load as the 16 kHz 4 x 2048 EnCodec."""
    from comfyui_audiovisual.nodes.vatt import LoadCodec, _codec_folders

    base = tmp_path / "codecs"
    (base / "audiogen-medium").mkdir(parents=True)
    write_compression_package(base / "audiogen-medium" / COMPRESSION_FILE)
    torch.save({"best_state": {"transformer.layers.0.weight": torch.zeros(1)},
                "xp.cfg": "compression_model: encodec\n"}, base / "audiogen-medium" / "state_dict.bin")
    write_compression_package(base / "audiogen_codec.bin", seed=3)
    host.folder_paths.add_model_folder_path("av_codecs", str(base))
    names = _codec_folders()
    assert {"audiogen-medium", "audiogen_codec.bin"} <= set(names)
    for name in ("audiogen-medium", "audiogen_codec.bin"):
        codec = LoadCodec.execute(name).result[0]
        assert (codec.sample_rate_hz, codec.max_codebooks, codec.codebook_size) == (16_000, 4, 2048)
    with pytest.raises(ValueError, match="state_dict.bin: holds no EnCodec weights"):
        load_codec(str(base / "audiogen-medium" / "state_dict.bin"))
