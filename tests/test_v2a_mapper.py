"""V2A-Mapper without the host: networks, the diffusion sampler, the file format, training and the CLI.

Data: a synthetic pairing where the target is a fixed linear map of the (normalised) source plus
noise, L2-normalised like CLAP. Sizes are tiny so every test runs in seconds on one thread."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from comfyui_audiovisual.loaders.mapper import EmbeddingSpace, V2AMapper, load_mapper, read_mapper_config, save_mapper
from comfyui_audiovisual.networks.v2a_mapper import DiffusionMapper, DiffusionMapperConfig, RegressionMapper, RegressionMapperConfig
from comfyui_audiovisual.samplers.mapper_diffusion import add_noise, alphas_cumprod, sample_diffusion_mapper, sampling_timesteps
from comfyui_audiovisual.training.mapper import (MapperTrainingArgs, encode_folder, evaluate_mapper, folder_pairs, heldout_split,
                                                 infer_space, load_pairs, main, new_mapper, save_pairs, train_mapper)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SOURCE_DIM, TARGET_DIM = 16, 12
REGRESSION_NET = {"hidden_dim": 64, "num_blocks": 2, "dropout": 0.0}
DIFFUSION_NET = {"width": 64, "depth": 2, "num_heads": 4, "dropout": 0.0}


def linear_pairs(count=240, noise=0.05, seed=0):
    generator = torch.Generator().manual_seed(seed)
    source = torch.randn(count, SOURCE_DIM, generator=generator) * 3.0  # not normalised, like CLIP image_embeds
    weights = torch.randn(SOURCE_DIM, TARGET_DIM, generator=torch.Generator().manual_seed(1234))
    target = F.normalize(F.normalize(source, dim=-1) @ weights + noise * torch.randn(count, TARGET_DIM, generator=generator), dim=-1)
    return source, target


def spaces(source, target):
    return infer_space(source, "clip", "tiny-clip", "image"), infer_space(target, "clap", "tiny-clap", "audio")


@pytest.fixture(scope="module")
def pairs():
    return linear_pairs()


@pytest.fixture(scope="module")
def trained(pairs):
    """{kind: (mapper, result)} trained on the synthetic pairs (10 % held out)."""
    source, target = pairs
    out = {}
    for kind, network, steps in (("regression", REGRESSION_NET, 200), ("diffusion", DIFFUSION_NET, 300)):
        mapper = new_mapper(kind, *spaces(source, target), source, target, network, seed=0)
        args = MapperTrainingArgs(kind=kind, steps=steps, batch_size=64, lr=2e-3, log_every=1, eval_steps=10, network=network)
        out[kind] = (mapper, train_mapper(mapper, source, target, args, log=lambda _line: None))
    return out


# ---------------------------------------------------------------------------------------------- networks
def test_regression_shapes_and_unit_outputs():
    config = RegressionMapperConfig(source_dim=SOURCE_DIM, target_dim=TARGET_DIM, hidden_dim=32, num_blocks=2, target_scale=2.0)
    model = RegressionMapper(config).eval()
    source = torch.randn(5, SOURCE_DIM)
    assert model(source).shape == (5, TARGET_DIM)
    assert torch.allclose(model(source).norm(dim=-1), torch.full((5,), 2.0), atol=1e-5)  # on the scaled sphere
    assert torch.allclose(model.map(source).norm(dim=-1), torch.ones(5), atol=1e-5)
    unnormalised = RegressionMapper(RegressionMapperConfig(source_dim=SOURCE_DIM, target_dim=TARGET_DIM, hidden_dim=32, num_blocks=1,
                                                           normalize_output=False)).eval()
    assert not torch.allclose(unnormalised.map(source).norm(dim=-1), torch.ones(5), atol=1e-2)
    with pytest.raises(ValueError, match=r"shape \[batch, 16\]"):
        model(torch.randn(5, SOURCE_DIM + 1))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="width 30 is not divisible by num_heads 4"):
        DiffusionMapperConfig(width=30, num_heads=4)
    with pytest.raises(ValueError, match="beta_schedule"):
        DiffusionMapperConfig(beta_schedule="sigmoid")
    with pytest.raises(ValueError, match="unknown field"):
        RegressionMapperConfig.from_dict({"source_dim": 4, "colour": 1})


def test_diffusion_mapper_predicts_x0_shape_and_uses_condition():
    torch.manual_seed(0)
    model = DiffusionMapper(DiffusionMapperConfig(source_dim=SOURCE_DIM, target_dim=TARGET_DIM, width=32, depth=1, num_heads=2)).eval()
    noisy, source = torch.randn(3, TARGET_DIM), torch.randn(3, SOURCE_DIM)
    t = torch.tensor([0, 500, 999])
    out = model(noisy, t, source)
    assert out.shape == (3, TARGET_DIM)
    assert not torch.allclose(out, model(noisy, t, torch.randn(3, SOURCE_DIM)))  # the condition matters
    dropped = model(noisy, t, source, torch.tensor([True, True, True]))
    assert torch.allclose(dropped, model(noisy, t, torch.randn(3, SOURCE_DIM), torch.tensor([True, True, True])), atol=1e-6)


# ---------------------------------------------------------------------------------------------- sampler
def test_schedules_and_timesteps():
    for schedule in ("cosine", "linear"):
        alphas = alphas_cumprod(1000, schedule)
        assert alphas.shape == (1000,) and bool((alphas[1:] < alphas[:-1]).all())
        assert 0.99 < float(alphas[0]) < 1.0 and float(alphas[-1]) < 1e-3
    assert sampling_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert sampling_timesteps(1000, 1) == [999]
    assert sampling_timesteps(10, 50) == list(range(9, -1, -1))
    x0, noise = torch.ones(2, 3), torch.zeros(2, 3)
    alphas = alphas_cumprod(100)
    assert torch.allclose(add_noise(x0, noise, torch.tensor([0, 99]), alphas)[:, 0], alphas[[0, 99]].sqrt().float())
    with pytest.raises(ValueError, match="steps"):
        sampling_timesteps(1000, 0)


def test_diffusion_seed_determinism_and_progress(trained, pairs):
    mapper = trained["diffusion"][0]
    source = pairs[0][:6]
    calls = []
    first = mapper.map(source, steps=8, generator=torch.Generator().manual_seed(7), callback=lambda i, n, x: calls.append((i, n, x.shape)))
    again = mapper.map(source, steps=8, generator=torch.Generator().manual_seed(7))
    other = mapper.map(source, steps=8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert calls == [(i, 8, (6, TARGET_DIM)) for i in range(8)]
    assert torch.allclose(first.norm(dim=-1), torch.ones(6), atol=1e-5)  # CLAP-like space: unit vectors
    stochastic = [mapper.map(source, steps=8, eta=1.0, guidance_scale=2.0, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*stochastic)


def test_an_untrained_diffusion_mapper_also_depends_on_the_seed():
    torch.manual_seed(0)
    model = DiffusionMapper(DiffusionMapperConfig(source_dim=4, target_dim=6, width=32, depth=1, num_heads=2, normalize_output=False))
    source = torch.randn(2, 4)
    a = sample_diffusion_mapper(model, source, steps=4, generator=torch.Generator().manual_seed(1))
    b = sample_diffusion_mapper(model, source, steps=4, generator=torch.Generator().manual_seed(1))
    c = sample_diffusion_mapper(model, source, steps=4, generator=torch.Generator().manual_seed(2))
    assert a.shape == (2, 6) and torch.equal(a, b) and not torch.equal(a, c)


def test_interrupt_stops_the_sampler(trained, pairs):
    class Stop(Exception):
        pass

    seen = []

    def check():
        if len(seen) == 3:
            raise Stop
        seen.append(1)

    with pytest.raises(Stop):
        trained["diffusion"][0].map(pairs[0][:2], steps=10, generator=torch.Generator().manual_seed(0), check_interrupt=check)
    assert len(seen) == 3


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind", ["regression", "diffusion"])
def test_training_lowers_heldout_error_against_untrained(trained, kind):
    _mapper, result = trained[kind]
    before, after = result["heldout_before"], result["heldout_after"]
    assert result["heldout_count"] == 24 and result["train_count"] == 216
    assert before["count"] == after["count"] == 24
    assert after["mse"] < 0.25 * before["mse"], (before, after)
    assert after["cosine"] > 0.9 and before["cosine"] < 0.5, (before, after)
    losses = torch.tensor([loss for _step, loss in result["losses"]])
    assert len(losses) == result["steps"]
    assert losses[-20:].mean() < 0.5 * losses[:20].mean()


def test_trained_mappers_beat_an_untrained_one_on_fresh_pairs(trained):
    source, target = linear_pairs(count=40, seed=99)  # pairs never seen, same mapping
    untrained = new_mapper("regression", *spaces(source, target), source, target, REGRESSION_NET, seed=5)
    baseline = evaluate_mapper(untrained, source, target)
    for kind in ("regression", "diffusion"):
        scores = evaluate_mapper(trained[kind][0], source, target, steps=10)
        assert scores["mse"] < 0.25 * baseline["mse"] and scores["cosine"] > 0.9, (kind, scores, baseline)


def test_heldout_split_is_disjoint_and_seeded():
    train, held = heldout_split(50, 0.1, seed=3)
    assert len(held) == 5 and len(train) == 45 and not set(train.tolist()) & set(held.tolist())
    assert torch.equal(heldout_split(50, 0.1, seed=3)[1], held) and not torch.equal(heldout_split(50, 0.1, seed=4)[1], held)
    assert len(heldout_split(5, 0.0)[1]) == 0 and len(heldout_split(2, 0.5)[0]) == 1


def test_training_refuses_mismatched_pairs(pairs):
    source, target = pairs
    mapper = new_mapper("regression", *spaces(source, target), source, target, REGRESSION_NET)
    with pytest.raises(ValueError, match="240 source vectors but 239 target vectors"):
        train_mapper(mapper, source, target[:-1], MapperTrainingArgs(steps=1))
    with pytest.raises(ValueError, match="width 17"):
        train_mapper(mapper, torch.randn(240, 17), target, MapperTrainingArgs(steps=1))
    with pytest.raises(ValueError, match="diffusion mapper, the mapper is regression"):
        train_mapper(mapper, source, target, MapperTrainingArgs(kind="diffusion", steps=1))


def test_infer_space_detects_normalised_vectors(pairs):
    source, target = pairs
    assert spaces(source, target) == (EmbeddingSpace("clip", "tiny-clip", SOURCE_DIM, False, "image"),
                                      EmbeddingSpace("clap", "tiny-clap", TARGET_DIM, True, "audio"))


# ---------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("kind", ["regression", "diffusion"])
def test_save_load_round_trip_is_exact(trained, pairs, tmp_path, kind):
    mapper = trained[kind][0]
    path = tmp_path / f"{kind}.safetensors"
    save_mapper(mapper, path, extra_metadata={"steps": 5})
    loaded = load_mapper(path)
    assert loaded.kind == kind and loaded.source == mapper.source and loaded.target == mapper.target and loaded.name == kind
    assert loaded.network.config == mapper.network.config
    original = mapper.network.state_dict()
    assert set(loaded.network.state_dict()) == set(original)
    assert all(torch.equal(v, original[k]) for k, v in loaded.network.state_dict().items())
    source = pairs[0][:4]
    assert torch.equal(loaded.map(source, steps=5, generator=torch.Generator().manual_seed(1)),
                       mapper.map(source, steps=5, generator=torch.Generator().manual_seed(1)))
    config = read_mapper_config(path, {"config": open_metadata(path)["config"]})
    assert config["kind"] == kind and config["source"]["family"] == "clip" and config["target"] == {
        "family": "clap", "model": "tiny-clap", "dim": TARGET_DIM, "normalised": True, "modality": "audio"}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def open_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_bad_mapper_files_fail_clearly(trained, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="no such mapper file"):
        load_mapper(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="garbage.safetensors: not a readable safetensors file"):
        load_mapper(garbage)
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="plain.safetensors: not a V2A mapper file: no config"):
        load_mapper(plain)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other), metadata={"config": json.dumps({"_class_name": "MaskedAVTransformer"})})
    with pytest.raises(ValueError, match="holds a 'MaskedAVTransformer', expected a 'V2AMapper'"):
        load_mapper(other)
    mapper = trained["regression"][0]
    state = {k: v.clone() for k, v in mapper.network.state_dict().items()}
    metadata = {"config": json.dumps(mapper.config_dict())}
    state["proj_out.weight"] = torch.zeros(3, 3)
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong), metadata=metadata)
    with pytest.raises(ValueError, match=r"wrong.safetensors: key 'proj_out.weight' has shape \(3, 3\), expected \(12, 64\)"):
        load_mapper(wrong)
    del state["proj_out.weight"]
    save_file(state, str(wrong), metadata=metadata)
    with pytest.raises(ValueError, match="missing key 'proj_out.weight'"):
        load_mapper(wrong)
    bad_kind = dict(mapper.config_dict(), kind="lookup")
    save_file({"w": torch.zeros(1)}, str(wrong), metadata={"config": json.dumps(bad_kind)})
    with pytest.raises(ValueError, match="kind is 'lookup'"):
        load_mapper(wrong)
    bad_space = dict(mapper.config_dict(), target={"family": "clap"})
    save_file({"w": torch.zeros(1)}, str(wrong), metadata={"config": json.dumps(bad_space)})
    with pytest.raises(ValueError, match="'target' space: missing field"):
        load_mapper(wrong)


def test_map_refuses_vectors_of_another_width(trained):
    mapper = trained["regression"][0]
    with pytest.raises(ValueError, match=r"regression mapper CLIP \(tiny-clip, width 16\) -> CLAP .*expected source vectors \[batch, 16\]"):
        mapper.map(torch.randn(2, 512))
    with pytest.raises(ValueError, match="NaN"):
        mapper.map(torch.full((1, SOURCE_DIM), float("nan")))


def test_spaces_must_agree_with_the_network():
    network = RegressionMapper(RegressionMapperConfig(source_dim=4, target_dim=6, hidden_dim=8, num_blocks=1))
    with pytest.raises(ValueError, match="maps 4 -> 6"):
        V2AMapper(network, EmbeddingSpace("clip", "", 5), EmbeddingSpace("clap", "", 6, True))


# ---------------------------------------------------------------------------------------------- data and CLI
def write_pairs(path, count=120, seed=0):
    source, target = linear_pairs(count=count, seed=seed)
    save_pairs(path, source, target, *spaces(source, target))
    return source, target


def test_pairs_file_round_trip_and_errors(tmp_path):
    from safetensors.torch import save_file

    source, target = write_pairs(tmp_path / "pairs.safetensors", count=30)
    s, t, source_space, target_space = load_pairs(tmp_path / "pairs.safetensors")
    assert torch.equal(s, source) and torch.equal(t, target) and target_space.normalised and source_space.family == "clip"
    minimal = tmp_path / "minimal.safetensors"
    save_file({"source": source, "target": target}, str(minimal), metadata={"source": '{"family": "clip"}', "target": '{"family": "clap"}'})
    assert load_pairs(minimal)[3] == EmbeddingSpace("clap", "", TARGET_DIM, True)
    save_file({"source": source, "target": target}, str(minimal), metadata={"source": '{"family": "clip"}'})
    with pytest.raises(ValueError, match="minimal.safetensors: missing metadata 'target'"):
        load_pairs(minimal)
    save_file({"source": source, "target": target[:5]}, str(minimal), metadata={"source": '{"family": "clip"}', "target": '{"family": "clap"}'})
    with pytest.raises(ValueError, match="'source' has 30 rows and 'target' 5"):
        load_pairs(minimal)
    save_file({"source": source}, str(minimal))
    with pytest.raises(ValueError, match="missing tensor 'target'"):
        load_pairs(minimal)


def test_cli_trains_from_a_pairs_file_and_writes_one_loadable_file(tmp_path, capsys):
    write_pairs(tmp_path / "pairs.safetensors")
    out = tmp_path / "models" / "cli_mapper.safetensors"
    code = main(["--pairs", str(tmp_path / "pairs.safetensors"), "--out", str(out), "--steps", "120", "--batch-size", "32",
                 "--lr", "2e-3", "--hidden-dim", "64", "--blocks", "2", "--log-every", "40"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out before training (12 pairs)" in printed and f"wrote {out}" in printed
    mapper = load_mapper(out)
    assert mapper.kind == "regression" and mapper.network.config.hidden_dim == 64
    metadata = open_metadata(out)
    heldout, untrained = json.loads(metadata["heldout"]), json.loads(metadata["heldout_untrained"])
    assert heldout["mse"] < 0.5 * untrained["mse"] and metadata["trainer"] == "mapper"
    assert os.listdir(out.parent) == ["cli_mapper.safetensors"]


def test_cli_errors_exit_2_in_one_line(tmp_path, capsys):
    assert main(["--pairs", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "none.safetensors: no such pairs file" in capsys.readouterr().err
    write_pairs(tmp_path / "p.safetensors", count=20)
    assert main(["--pairs", str(tmp_path / "p.safetensors"), "--out", str(tmp_path / "m.safetensors"), "--width", "64"]) == 2
    assert "--width do(es) not apply to a regression mapper" in capsys.readouterr().err
    assert main(["--synthav", "4", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "need --source-encoder" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_trains_a_diffusion_mapper(tmp_path):
    write_pairs(tmp_path / "pairs.safetensors", count=20)
    out = tmp_path / "m.safetensors"
    assert main(["--pairs", str(tmp_path / "pairs.safetensors"), "--out", str(out), "--kind", "diffusion", "--steps", "3",
                 "--width", "32", "--depth", "1", "--heads", "2", "--eval-steps", "2", "--beta-schedule", "linear", "--device", "cpu"]) == 0
    mapper = load_mapper(out)
    assert mapper.kind == "diffusion" and mapper.network.config.beta_schedule == "linear" and mapper.network.config.width == 32


def test_two_process_ddp_run_with_gloo(tmp_path):
    """`python -m torch.distributed.run ... -m comfyui_audiovisual train mapper` with 2 CPU processes: the
    package entry point, DDP over gloo, data sharded by rank, only rank 0 logs and writes."""
    write_pairs(tmp_path / "pairs.safetensors", count=40)
    out = tmp_path / "ddp" / "m.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "comfyui_audiovisual", "train", "mapper", "--pairs", str(tmp_path / "pairs.safetensors"),
                           "--out", str(out), "--steps", "20", "--batch-size", "8", "--hidden-dim", "32", "--blocks", "1",
                           "--device", "cpu", "--log-every", "10"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("held-out before training") == 1  # rank 0 only
    assert os.listdir(out.parent) == ["m.safetensors"]
    assert load_mapper(out).network.config.hidden_dim == 32


# ---------------------------------------------------------------------------------------------- folders
def test_folder_pairs_match_by_name(tmp_path):
    for name in ("a.png", "a.wav", "b.jpg", "b.flac", "c.png", "d.wav", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [(i.name, a.name) for i, a in folder_pairs(tmp_path)] == [("a.png", "a.wav"), ("b.jpg", "b.flac")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image/audio pairs"):
        folder_pairs(empty)
    with pytest.raises(FileNotFoundError):
        folder_pairs(tmp_path / "nope")


def write_wav(path, samples, rate, width=2):
    import wave

    import numpy as np

    data = np.asarray(samples, dtype=np.float64)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        if width == 1:
            handle.writeframes((np.round(data * 127) + 128).astype(np.uint8).tobytes())
        else:
            handle.writeframes(np.round(data * 32767).astype("<i2").tobytes())


def test_read_audio_file_pcm_wav(tmp_path):
    from comfyui_audiovisual.audio.files import read_audio_file

    tone = [0.5, -0.5, 0.25, 0.0] * 100
    write_wav(tmp_path / "a.wav", tone, 8000)
    waveform, rate = read_audio_file(tmp_path / "a.wav")
    assert rate == 8000 and waveform.shape == (1, 400) and abs(float(waveform[0, 0]) - 0.5) < 1e-3
    write_wav(tmp_path / "b.wav", tone, 8000, width=1)
    assert abs(float(read_audio_file(tmp_path / "b.wav")[0][0, 1]) + 0.5) < 0.01
    (tmp_path / "c.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(ValueError, match="c.wav: not a readable audio file"):
        read_audio_file(tmp_path / "c.wav")
    with pytest.raises(FileNotFoundError):
        read_audio_file(tmp_path / "none.wav")


@pytest.fixture(scope="module")
def tiny_encoder_dirs(tmp_path_factory):
    from tiny_encoders import write_tiny_clap, write_tiny_clip_vision

    base = tmp_path_factory.mktemp("encoders")
    return str(write_tiny_clip_vision(str(base / "tiny-clip"))), str(write_tiny_clap(str(base / "tiny-clap")))


def test_folder_of_pairs_through_the_encoders(tmp_path, tiny_encoder_dirs):
    import numpy as np
    from PIL import Image

    clip, clap = tiny_encoder_dirs
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"clip{index}.png")
        write_wav(tmp_path / f"clip{index}.wav", 0.3 * np.sin(np.arange(16000) * 0.05 * (index + 1)), 16000)
    source, target, source_space, target_space = encode_folder(tmp_path, clip, clap, log=lambda _l: None)
    assert source.shape == (3, 16) and target.shape == (3, 16)
    from comfyui_audiovisual.encoders.pretrained import load_encoder

    assert source_space == EmbeddingSpace("clip", "tiny-clip", 16, False, "image", weights=load_encoder(clip).fingerprint)
    assert target_space == EmbeddingSpace("clap", "tiny-clap", 16, True, "audio", weights=load_encoder(clap).fingerprint)
    assert not torch.allclose(target[0], target[1])
    back = encode_folder(tmp_path, clip, clap, direction="audio-to-image", log=lambda _l: None)
    assert torch.equal(back[0], target) and torch.equal(back[1], source) and back[2] == target_space


def test_cli_trains_on_synthav_scenes_through_the_encoders(tmp_path, tiny_encoder_dirs, capsys):
    clip, clap = tiny_encoder_dirs
    out, pairs = tmp_path / "synthav_mapper.safetensors", tmp_path / "pairs.safetensors"
    assert main(["--synthav", "6", "--source-encoder", clip, "--target-encoder", clap, "--out", str(out), "--save-pairs", str(pairs),
                 "--steps", "5", "--hidden-dim", "32", "--blocks", "1", "--heldout", "0.2"]) == 0
    assert "rendered 6 SynthAV train scenes" in capsys.readouterr().out
    mapper = load_mapper(out)
    assert (mapper.source.family, mapper.source.model, mapper.target.family, mapper.target.model) == ("clip", "tiny-clip", "clap", "tiny-clap")
    # the CLI records the encoders' weights fingerprints, as the training node does
    from comfyui_audiovisual.encoders.pretrained import load_encoder

    assert mapper.source.weights == load_encoder(clip).fingerprint and mapper.target.weights == load_encoder(clap).fingerprint
    source, target, _s, target_space = load_pairs(pairs)
    assert source.shape == (6, 16) and target.shape == (6, 16) and target_space.normalised
