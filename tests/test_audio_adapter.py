"""SeeingSounds adapters: output shapes for the host's FLUX / SD3 / SDXL conditioning, the file format,
combining with text, training (held-out MSE falls; attention pooling beats mean pooling), the CLI
(one process and torchrun with gloo) and the nodes' refusals."""

import os
import subprocess
import sys

import pytest
import torch

from comfyui_audiovisual.loaders.audio_adapter import load_audio_adapter, read_adapter_metadata, save_audio_adapter
from comfyui_audiovisual.loaders.checkpoint_io import read_state_dict, write_safetensors_atomic
from comfyui_audiovisual.networks.audio_adapter import AdapterOutput, AudioAdapter, AudioAdapterConfig
from comfyui_audiovisual.nodes.payloads import Embedding
from comfyui_audiovisual.samplers.host_conditioning import build_conditioning, host_layout
from comfyui_audiovisual.training import audio_adapter as training

AST_TOKENS = 1214


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def tiny_adapter(target="flux", audio_dim=32, pooling="attention", seed=0, **overrides) -> AudioAdapter:
    torch.manual_seed(seed)
    values = dict(audio_dim=audio_dim, hidden_dim=16, num_heads=2, pooling=pooling)
    values.update(overrides)
    return AudioAdapter(AudioAdapterConfig.for_target(target, **values) if target != "custom" else AudioAdapterConfig(target="custom", **values)).eval()


def ast_tokens(batch=1, width=32, seed=1) -> torch.Tensor:
    return torch.randn(batch, AST_TOKENS, width, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("target, tokens, pooled", [
    ("FLUX", (1, 256, 4096), (1, 768)),
    ("SD3", (1, 154, 4096), (1, 2048)),
    ("SDXL", (1, 77, 2048), (1, 1280)),
])
def test_adapter_makes_the_hosts_conditioning_shapes(target, tokens, pooled):
    adapter = tiny_adapter(target.lower())
    with torch.no_grad():
        conditioning = build_conditioning(adapter(ast_tokens()), target, guidance=3.5)
    assert len(conditioning) == 1
    cond, extras = conditioning[0]
    assert tuple(cond.shape) == tokens and cond.dtype == torch.float32
    assert tuple(extras["pooled_output"].shape) == pooled
    assert (extras.get("guidance") == 3.5) if target == "FLUX" else ("guidance" not in extras)
    assert torch.isfinite(cond).all() and cond.abs().sum() > 0


def test_flux_tokens_can_be_longer_and_batches_keep_one_row_per_clip():
    adapter = tiny_adapter("flux", text_tokens=512)
    with torch.no_grad():
        cond, extras = build_conditioning(adapter(ast_tokens(batch=3)), "FLUX")[0]
    assert cond.shape == (3, 512, 4096) and extras["pooled_output"].shape == (3, 768)
    assert not torch.allclose(cond[0], cond[1])  # different clips, different conditioning


def test_a_flux_adapter_drives_sd3_the_way_the_host_fills_missing_encoders():
    adapter = tiny_adapter("flux")
    with torch.no_grad():
        out = adapter(ast_tokens())
    tokens, pooled = host_layout(out, "SD3")
    assert tokens.shape == (1, 154, 4096) and pooled.shape == (1, 2048)
    assert torch.equal(tokens[:, :77], torch.zeros(1, 77, 4096))  # no CLIP-L/G token states
    assert torch.equal(tokens[:, 77:], out.tokens[:, :77])  # SD3's 77 T5 positions
    assert torch.equal(pooled[:, :768], out.pooled) and torch.equal(pooled[:, 768:], torch.zeros(1, 1280))  # CLIP-G absent
    with pytest.raises(ValueError, match="target SDXL reads 2048-wide tokens .* the adapter makes 256 x 4096"):
        host_layout(out, "SDXL")


def test_custom_widths_are_refused_for_a_host_target():
    adapter = tiny_adapter("custom", text_tokens=8, text_dim=16, pooled_dim=24)
    with torch.no_grad():
        out = adapter(ast_tokens())
    with pytest.raises(ValueError, match="target FLUX reads 4096-wide tokens \\+ a 768-wide pooled vector; the adapter makes 8 x 16"):
        build_conditioning(out, "FLUX")


def test_flux_layout_at_the_adapters_own_widths_is_an_explicit_target():
    adapter = tiny_adapter("custom", text_tokens=8, text_dim=16, pooled_dim=24)
    with torch.no_grad():
        out = adapter(ast_tokens(batch=2))
    with pytest.raises(ValueError, match="needs target 'FLUX \\(adapter widths\\)' and a FLUX model built for its widths"):
        build_conditioning(out, "FLUX")
    (tokens, extras), = build_conditioning(out, "FLUX (adapter widths)", guidance=2.0)
    assert torch.equal(tokens, out.tokens) and torch.equal(extras["pooled_output"], out.pooled) and extras["guidance"] == 2.0
    with pytest.raises(ValueError, match="target: expected one of FLUX, SD3, SDXL, FLUX \\(adapter widths\\), got 'flux-ish'"):
        build_conditioning(out, "flux-ish")


def test_profiles_are_checked_by_the_config():
    with pytest.raises(ValueError, match="target 'sdxl' needs 77 tokens x 2048 \\+ pooled 1280"):
        AudioAdapterConfig(target="sdxl", text_tokens=77, text_dim=4096, pooled_dim=1280)
    with pytest.raises(ValueError, match="pooling must be one of"):
        AudioAdapterConfig(pooling="max")
    with pytest.raises(ValueError, match="hidden_dim 10 is not divisible by num_heads 4"):
        AudioAdapterConfig(hidden_dim=10, num_heads=4)


def test_wrong_audio_width_is_refused():
    with pytest.raises(ValueError, match="expected audio tokens \\[batch, tokens, 32\\], got shape \\(1, 1214, 768\\)"):
        tiny_adapter()(ast_tokens(width=768))


def test_mean_pooling_ignores_token_order_and_attention_pooling_does_not_need_to():
    mean, attention = tiny_adapter("custom", pooling="mean", text_tokens=4, text_dim=8, pooled_dim=8), \
        tiny_adapter("custom", pooling="attention", text_tokens=4, text_dim=8, pooled_dim=8)
    x = ast_tokens()
    shuffled = x[:, torch.randperm(AST_TOKENS, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        assert torch.allclose(mean(x).tokens, mean(shuffled).tokens, atol=1e-5)
        # attention over a set is order-free too (no positions are added by the adapter): AST's own position
        # embeddings carry the order; the difference is in how tokens are weighted, tested below by training
        assert torch.allclose(attention(x).tokens, attention(shuffled).tokens, atol=1e-5)
        assert mean(x).tokens.shape == attention(x).tokens.shape == (1, 4, 8)


# ---------------------------------------------------------------------------------------------- combining with text
def text_conditioning(length=256, width=4096, pooled_width=768, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, length, width, generator=g), {"pooled_output": torch.randn(1, pooled_width, generator=g), "attention_mask": torch.ones(1, length)}]]


def test_concat_puts_text_tokens_first_and_blends_the_pooled_vectors():
    adapter = tiny_adapter("flux")
    with torch.no_grad():
        out = adapter(ast_tokens())
    text = text_conditioning(length=300)
    cond, extras = build_conditioning(out, "FLUX", 2.0, text, "concat", 0.25)[0]
    assert cond.shape == (1, 300 + 256, 4096)
    assert torch.equal(cond[:, :300], text[0][0]) and torch.allclose(cond[:, 300:], out.tokens)
    assert torch.allclose(extras["pooled_output"], 0.75 * text[0][1]["pooled_output"] + 0.25 * out.pooled)
    assert extras["guidance"] == 2.0 and "attention_mask" not in extras


def test_blend_mixes_token_by_token_at_the_texts_length():
    adapter = tiny_adapter("flux")
    with torch.no_grad():
        out = adapter(ast_tokens())
    for length in (200, 300):  # audio cut, or zero-padded, to the text's length (as the host's ConditioningAverage)
        text = text_conditioning(length=length)
        cond, extras = build_conditioning(out, "FLUX", 3.5, text, "blend", 0.5)[0]
        audio = torch.cat([out.tokens, torch.zeros(1, max(0, length - 256), 4096)], dim=1)[:, :length]
        assert cond.shape == (1, length, 4096)
        assert torch.allclose(cond, 0.5 * text[0][0] + 0.5 * audio, atol=1e-6)
    only_text = build_conditioning(out, "FLUX", 3.5, text, "blend", 0.0)[0]
    assert torch.equal(only_text[0], text[0][0]) and torch.equal(only_text[1]["pooled_output"], text[0][1]["pooled_output"])


def test_one_text_serves_every_clip_and_one_clip_every_text():
    adapter = tiny_adapter("flux")
    with torch.no_grad():
        three = adapter(ast_tokens(batch=3))
        one = adapter(ast_tokens(batch=1))
    text = text_conditioning(length=10)
    cond, extras = build_conditioning(three, "FLUX", text_conditioning=text, combine="concat")[0]
    assert cond.shape == (3, 266, 4096) and torch.equal(cond[2, :10], text[0][0][0]) and extras["pooled_output"].shape == (3, 768)
    two_texts = [[torch.cat([text[0][0]] * 2), {"pooled_output": torch.cat([text[0][1]["pooled_output"]] * 2)}]]
    cond, _ = build_conditioning(one, "FLUX", text_conditioning=two_texts, combine="blend", weight=1.0)[0]
    assert cond.shape == (2, 10, 4096) and torch.allclose(cond[1], one.tokens[0, :10])
    with pytest.raises(ValueError, match="has 2 rows, the other side 3"):
        build_conditioning(three, "FLUX", text_conditioning=two_texts)


def test_text_of_another_model_family_is_refused():
    adapter = tiny_adapter("flux")
    with torch.no_grad():
        out = adapter(ast_tokens())
    with pytest.raises(ValueError, match="text_conditioning: entry 0 has tokens of shape \\(1, 77, 2048\\), the audio tokens are 4096 wide"):
        build_conditioning(out, "FLUX", text_conditioning=text_conditioning(77, 2048, 1280))
    with pytest.raises(ValueError, match="weight: expected a value in 0..1"):
        build_conditioning(out, "FLUX", text_conditioning=text_conditioning(), weight=1.5)
    with pytest.raises(ValueError, match="combine: expected one of concat, blend"):
        build_conditioning(out, "FLUX", combine="add")
    nan = AdapterOutput(torch.full((1, 4, 4096), float("nan")), torch.zeros(1, 768))
    with pytest.raises(ValueError, match="NaN"):
        build_conditioning(nan, "FLUX")


# ---------------------------------------------------------------------------------------------- file format
def test_save_and_load_round_trip_with_config_and_metadata(tmp_path):
    adapter = tiny_adapter("flux", audio_encoder="ast-tiny")
    path = tmp_path / "a.safetensors"
    save_audio_adapter(adapter, path, {"trainer": "adapter", "heldout_mse_after": {"total": 0.5}})
    loaded = load_audio_adapter(path)
    assert loaded.config == adapter.config and not loaded.training
    x = ast_tokens()
    with torch.no_grad():
        a, b = loaded(x), adapter(x)
        assert torch.allclose(a.tokens, b.tokens, atol=1e-5) and torch.allclose(a.pooled, b.pooled, atol=1e-5)
    meta = read_adapter_metadata(path)
    assert meta["trainer"] == "adapter" and "config" not in meta
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temporary left


def test_broken_files_are_refused_naming_file_and_key(tmp_path):
    adapter = tiny_adapter("flux")
    path = tmp_path / "a.safetensors"
    save_audio_adapter(adapter, path)
    state, meta = read_state_dict(path)
    key = "text_branch.proj.weight"

    def rewrite(name, tensors, metadata):
        write_safetensors_atomic(tensors, tmp_path / name, metadata)
        return tmp_path / name

    missing = rewrite("missing.safetensors", {k: v for k, v in state.items() if k != key}, meta)
    with pytest.raises(ValueError, match=f"missing.safetensors: missing key '{key}'"):
        load_audio_adapter(missing)
    shaped = rewrite("shaped.safetensors", {**state, key: torch.zeros(3, 3)}, meta)
    with pytest.raises(ValueError, match=f"shaped.safetensors: key '{key}' has shape \\(3, 3\\), expected \\(4096, 16\\)"):
        load_audio_adapter(shaped)
    nan = rewrite("nan.safetensors", {**state, key: torch.full_like(state[key], float("nan"))}, meta)
    with pytest.raises(ValueError, match=f"nan.safetensors: key '{key}' holds NaN"):
        load_audio_adapter(nan)
    no_config = rewrite("noconfig.safetensors", state, {})
    with pytest.raises(ValueError, match="noconfig.safetensors: no adapter config found"):
        load_audio_adapter(no_config)
    other = rewrite("other.safetensors", state, {"config": '{"_class_name": "MaskedAVTransformer"}'})
    with pytest.raises(ValueError, match="holds a 'MaskedAVTransformer', expected 'AudioAdapter'"):
        load_audio_adapter(other)
    with pytest.raises(FileNotFoundError, match="audio adapter file not found"):
        load_audio_adapter(tmp_path / "none.safetensors")


# ---------------------------------------------------------------------------------------------- training
def occupancy_task(count: int, seed: int, tokens=32, width=16, classes=8):
    """Synthetic clips where a class's sound fills 1..8 consecutive tokens at a random place among noise
    tokens; the targets are fixed random T5 states / pooled vectors per class caption."""
    g = torch.Generator().manual_seed(1234)
    sound, text, pooled = torch.randn(classes, width, generator=g), torch.randn(classes, 4, 8, generator=g), torch.randn(classes, 8, generator=g)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (count,), generator=g)
    audio = torch.randn(count, tokens, width, generator=g)
    length = torch.randint(1, 9, (count,), generator=g)
    onset = (torch.rand(count, generator=g) * (tokens - length)).long()
    position = torch.arange(tokens)[None]
    filled = (position >= onset[:, None]) & (position < (onset + length)[:, None])
    audio = torch.where(filled[..., None], sound[labels][:, None, :] + 0.3 * audio, audio)
    return training.AdapterFeatures(audio, labels, [f"class {i}" for i in range(classes)], text, pooled)


def test_attention_pooling_beats_mean_pooling_on_held_out_mse():
    """The paper's ablation on a synthetic task: with the same budget the attention-pooled adapter's held-out
    MSE is far below the mean-pooled one's (whose pooled vector shrinks with the sound's length)."""
    train, heldout = occupancy_task(256, 1), occupancy_task(64, 2)
    baseline = training.mean_target_mse(train, heldout)["total"]
    args = training.AdapterTrainingArgs(steps=150, batch_size=16, lr_text=3e-3, lr_pooled=3e-3, log_every=0)
    results = {}
    for pooling in ("attention", "mean"):
        torch.manual_seed(0)
        adapter = AudioAdapter(training.config_for(train, hidden_dim=32, num_heads=4, pooling=pooling))
        results[pooling] = training.train_adapter(adapter, train, heldout, args, log=lambda line: None)["heldout_after"]["total"]
    assert results["attention"] < 0.5 * results["mean"], results
    assert results["attention"] < 0.25 * baseline, (results, baseline)


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory):
    sys.path.insert(0, os.path.dirname(__file__))
    from tiny_encoders import write_tiny_ast, write_tiny_clip_text, write_tiny_t5

    from comfyui_audiovisual.encoders.pretrained import load_encoder

    folder = tmp_path_factory.mktemp("encoders")
    paths = {"ast": write_tiny_ast(str(folder / "ast")), "t5": write_tiny_t5(str(folder / "t5")),
             "clip_text": write_tiny_clip_text(str(folder / "clip_text"))}
    return paths, {k: load_encoder(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def synthav_features(tiny_encoders):
    _, encoders = tiny_encoders
    clips = training.synthav_clips("train", 24) + training.synthav_clips("heldout", 8)
    features = training.encode_features(clips, encoders["ast"], encoders["t5"], encoders["clip_text"], text_tokens=8)
    return features.subset(range(24)), features.subset(range(24, 32))


def test_features_hold_ast_sequences_and_the_frozen_encoders_caption_outputs(synthav_features, tiny_encoders):
    train, _ = synthav_features
    _, encoders = tiny_encoders
    assert train.audio.shape == (24, AST_TOKENS, 32)
    assert train.text.shape[1:] == (8, 16) and train.pooled.shape[1:] == (24,)
    caption = training.synthav_clips("train", 1)[0][2]
    assert train.captions[int(train.caption_ids[0])] == caption
    expected = encoders["t5"].encode_text([caption], sequence_length=8).vectors[0]
    assert torch.allclose(train.text[train.caption_ids[0]], expected)
    assert torch.allclose(train.pooled[train.caption_ids[0]], encoders["clip_text"].encode_text([caption]).vectors[0])


def test_training_on_synthav_lowers_held_out_mse_and_writes_the_adapter(synthav_features, tmp_path):
    train, heldout = synthav_features
    torch.manual_seed(0)
    adapter = AudioAdapter(training.config_for(train, hidden_dim=32, num_heads=4))
    assert adapter.config.target == "custom" and adapter.config.audio_encoder == "ast"
    lines = []
    args = training.AdapterTrainingArgs(steps=60, batch_size=8, lr_text=3e-3, lr_pooled=3e-3, log_every=20)
    result = training.train_adapter(adapter, train, heldout, args, tmp_path / "synthav.safetensors", log=lines.append)
    assert result["heldout_after"]["total"] < 0.5 * result["heldout_before"]["total"]
    assert result["heldout_after"]["text"] < result["heldout_before"]["text"]
    assert result["heldout_after"]["pooled"] < result["heldout_before"]["pooled"]
    assert len(result["history"]) == 3 and any("held-out MSE" in line for line in lines)
    loaded = load_audio_adapter(tmp_path / "synthav.safetensors")
    meta = read_adapter_metadata(tmp_path / "synthav.safetensors")
    assert '"lr_text": 0.003' in meta["training_args"] and float(eval(meta["heldout_mse_after"])["total"]) == pytest.approx(result["heldout_after"]["total"])
    assert torch.allclose(training.adapter_mse(loaded, heldout)["total"] * torch.ones(1), torch.tensor([result["heldout_after"]["total"]]), rtol=1e-4)


def test_paper_learning_rates_are_the_defaults():
    args = training.AdapterTrainingArgs()
    assert (args.lr_text, args.lr_pooled) == (1e-5, 1e-7)
    parser = training.build_argument_parser()
    options = parser.parse_args(["--audio-encoder", "a", "--t5", "t", "--clip-text", "c", "--synthav", "4", "--out", "o"])
    assert (options.lr_text, options.lr_pooled) == (1e-5, 1e-7)


def test_widths_that_do_not_fit_are_refused(synthav_features):
    train, _ = synthav_features
    adapter = tiny_adapter("custom", text_tokens=8, text_dim=16, pooled_dim=16)
    with pytest.raises(ValueError, match="training data: audio width, T5 tokens, T5 width, pooled width are \\(32, 8, 16, 24\\), the adapter's are \\(32, 8, 16, 16\\)"):
        training.train_adapter(adapter, train, None, training.AdapterTrainingArgs(steps=1))


def test_encoders_of_the_wrong_kind_are_refused(tiny_encoders):
    _, encoders = tiny_encoders
    clips = training.synthav_clips("train", 1)
    with pytest.raises(ValueError, match="text_encoder: expected a T5 encoder"):
        training.encode_features(clips, encoders["ast"], encoders["clip_text"], encoders["clip_text"], 8)
    silent = [(torch.zeros(1, 22050), 22050, "silence")]
    with pytest.raises(ValueError, match="clip 0 \\('silence'\\): audio: .*silent"):
        training.encode_features(silent, encoders["ast"], encoders["t5"], encoders["clip_text"], 8)


def write_labelled_folder(root, rate=16000):
    import wave

    import numpy as np

    for label, freq in (("dog_bark", 300.0), ("cat_meow", 600.0)):
        os.makedirs(root / label)
        for i in range(3):
            samples = (0.2 * np.sin(2 * np.pi * (freq + 10 * i) * np.arange(rate) / rate) * 32767).astype("<i2")
            with wave.open(str(root / label / f"{i}.wav"), "wb") as f:
                f.setnchannels(1), f.setsampwidth(2), f.setframerate(rate), f.writeframes(samples.tobytes())
    (root / "captions.json").write_text('{"dog_bark": "a dog barking"}')


def test_folder_of_labelled_clips(tmp_path):
    write_labelled_folder(tmp_path)
    clips = training.folder_clips(tmp_path)
    assert [c[2] for c in clips] == ["cat meow"] * 3 + ["a dog barking"] * 3
    assert clips[0][0].shape == (1, 16000) and clips[0][1] == 16000
    (tmp_path / "captions.csv").write_text("file,caption\ndog_bark/0.wav,a loud dog\ncat_meow/1.wav,a small cat\n")
    assert [c[2] for c in training.folder_clips(tmp_path)] == ["a loud dog", "a small cat"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no labelled clips found"):
        training.folder_clips(empty)


def test_cli_trains_from_a_folder_and_errors_exit_2(tiny_encoders, tmp_path, capsys):
    paths, _ = tiny_encoders
    data = tmp_path / "clips"
    write_labelled_folder(data)
    out = tmp_path / "folder_adapter.safetensors"
    common = ["--audio-encoder", paths["ast"], "--t5", paths["t5"], "--clip-text", paths["clip_text"], "--out", str(out)]
    assert training.main(common + ["--data", str(data), "--heldout", "2", "--steps", "5", "--text-tokens", "4", "--hidden-dim", "16",
                                   "--heads", "2", "--lr-text", "1e-3", "--lr-pooled", "1e-3", "--device", "cpu"]) == 0
    loaded = load_audio_adapter(out)
    assert loaded.config.text_tokens == 4 and loaded.config.target == "custom"
    meta = read_adapter_metadata(out)
    assert meta["data"] == "folder:clips" and meta["heldout_clips"] == "2" and meta["train_clips"] == "4"
    assert training.main(common[:-1] + [str(tmp_path / "x.safetensors"), "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith("nope: data folder not found")
    assert not (tmp_path / "x.safetensors").exists()


def test_two_process_ddp_run_with_gloo(tiny_encoders, tmp_path):
    """`python -m torch.distributed.run --nproc_per_node 2 -m comfyui_audiovisual train adapter` on the CPU:
    rank 0 encodes and shares the features, DDP over gloo, only rank 0 logs and writes."""
    paths, _ = tiny_encoders
    out = tmp_path / "ddp" / "adapter.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "comfyui_audiovisual", "train", "adapter", "--audio-encoder", paths["ast"], "--t5", paths["t5"],
                           "--clip-text", paths["clip_text"], "--synthav", "6", "--heldout", "2", "--out", str(out), "--steps", "6",
                           "--batch-size", "2", "--text-tokens", "4", "--hidden-dim", "16", "--heads", "2", "--lr-text", "1e-3",
                           "--lr-pooled", "1e-3", "--log-every", "3", "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("adapter: done") == 1 and done.stdout.count("step 6/6") == 1  # rank 0 only
    assert os.listdir(out.parent) == ["adapter.safetensors"]  # the shared features file is removed
    assert load_audio_adapter(out).config.hidden_dim == 16


# ---------------------------------------------------------------------------------------------- nodes
def test_conditioning_node_checks_the_embedding_space(host):
    node = host.nodes.NODE_CLASS_MAPPINGS["AV_AudioToConditioning"]
    adapter = tiny_adapter("flux", audio_encoder="ast")
    good = Embedding(ast_tokens(batch=2), "ast", "ast", "audio")
    conditioning = node.execute(adapter, good, "FLUX", 4.0).result[0]
    assert conditioning[0][0].shape == (2, 256, 4096) and conditioning[0][1]["guidance"] == 4.0
    with pytest.raises(ValueError, match="^Audio to Conditioning: expected a AST embedding .*got a CLAP audio embedding"):
        node.execute(adapter, Embedding(torch.randn(1, 16), "clap", "clap", "audio"), "FLUX", 3.5)
    with pytest.raises(ValueError, match="^Audio to Conditioning: .*embeddings of another model live in another space"):
        node.execute(adapter, Embedding(ast_tokens(), "ast", "another-ast", "audio"), "FLUX", 3.5)
    with pytest.raises(ValueError, match="^Audio to Conditioning: expected a AST embedding of width 32"):
        node.execute(adapter, Embedding(ast_tokens(width=768), "ast", "ast", "audio"), "FLUX", 3.5)
    bad = ast_tokens()
    bad[0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="^Audio to Conditioning: .*NaN"):
        node.execute(adapter, Embedding(bad, "ast", "ast", "audio"), "FLUX", 3.5)
    with pytest.raises(ValueError, match="^Audio to Conditioning: target SDXL reads 2048-wide tokens"):
        node.execute(adapter, good, "SDXL", 3.5)
    with pytest.raises(ValueError, match="^Audio to Conditioning: connect an adapter"):
        node.execute("not an adapter", good, "FLUX", 3.5)


def test_training_node_in_a_host_graph_writes_a_loadable_adapter(run_graph, host, tiny_encoders, tmp_path, monkeypatch):
    paths, _ = tiny_encoders
    models = tmp_path / "models"
    monkeypatch.setattr(host.folder_paths, "models_dir", str(models))
    host.folder_paths.add_model_folder_path("audio_encoders", os.path.dirname(paths["ast"]))
    prompt = {
        "1": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "audio_encoders/ast"}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "audio_encoders/t5"}},
        "3": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "audio_encoders/clip_text"}},
        "4": {"class_type": "AV_TrainAudioAdapter", "inputs": {
            "audio_encoder": ["1", 0], "t5_encoder": ["2", 0], "clip_text_encoder": ["3", 0], "data": "synthav", "folder": "",
            "clips": 6, "heldout_clips": 2, "text_tokens": 4, "hidden_dim": 8, "pooling": "attention", "steps": 4, "batch_size": 2,
            "lr_text": 1e-3, "lr_pooled": 1e-3, "seed": 0, "adapter_name": "trained_in_graph"}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
    }
    run_graph(prompt, out_dir=tmp_path / "out")
    written = models / "audiovisual" / "adapters" / "trained_in_graph.safetensors"
    adapter = load_audio_adapter(written)
    assert adapter.config.text_tokens == 4 and adapter.config.hidden_dim == 8 and adapter.config.audio_encoder == "ast"
    assert read_adapter_metadata(written)["data"] == "synthav:6"
    assert os.listdir(written.parent) == ["trained_in_graph.safetensors"]

    from comfyui_audiovisual.runner import WorkflowError

    prompt["4"]["inputs"].update(t5_encoder=["3", 0], adapter_name="wrong")  # a CLIP text encoder where T5 belongs
    with pytest.raises(WorkflowError, match="node 4 .*Train Audio Adapter: t5_encoder: expected a T5 encoder"):
        run_graph(prompt, out_dir=tmp_path / "out2")
    prompt["4"]["inputs"].update(t5_encoder=["2", 0], adapter_name="../escape")
    with pytest.raises(WorkflowError, match="adapter_name '../escape' must be a plain file name"):
        run_graph(prompt, out_dir=tmp_path / "out3")
    assert os.listdir(written.parent) == ["trained_in_graph.safetensors"]
