"""Training the VATT decoder: masks, a loss that falls and a model that learns to use its
condition, the pairs file, the CLI writing a loadable decoder, and SynthAV pairs through the same
encoder and codec code the nodes use."""

import pytest
import torch

from comfyui_audiovisual.loaders.checkpoint_io import write_safetensors_atomic
from comfyui_audiovisual.loaders.vatt_checkpoints import load_vatt_decoder
from comfyui_audiovisual.networks.vatt_decoder import VATTDecoder
from comfyui_audiovisual.training.vatt import (
    VATTTrainingArgs,
    config_for_pairs,
    load_pairs,
    main,
    make_synthav_pairs,
    sample_training_mask,
    train_vatt,
)

K, V, LATENT, FRAMES, CLASSES = 4, 32, 8, 6, 4


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def class_pairs(clips=16, seed=0):
    """Clip i of class c = i % 4: every code of codebook k is (c * 4 + k) % V; its video tokens are
    a fixed random vector per class. Only the condition tells the classes apart."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(CLASSES, 3, 12, generator=g)
    classes = torch.arange(clips) % CLASSES
    codes = ((classes[:, None, None] * K + torch.arange(K)[None, :, None]) % V).expand(clips, K, FRAMES).clone()
    video = prototypes[classes] + 0.05 * torch.randn(clips, 3, 12, generator=g)
    return {"codes": codes, "video": video, "text": None, "codebook_latents": torch.randn(K, V, LATENT, generator=g),
            "metadata": {"codec": "tiny_codec", "video_family": "clip", "video_model": "tiny_clip", "sample_rate_hz": "16000",
                         "frame_rate_hz": "50.0"}}


def test_training_masks_follow_the_ratio_range_and_never_leave_a_row_empty():
    args = VATTTrainingArgs()
    masked = sample_training_mask(64, K, 50, args, torch.Generator().manual_seed(0))
    fractions = masked.reshape(64, -1).float().mean(dim=1)
    assert masked.shape == (64, K, 50) and bool((fractions > 0).all())
    assert 0.4 < float(fractions.min()) and float(fractions.mean()) < 0.85  # ratios drawn in [0.5, 1]
    tiny = sample_training_mask(32, 1, 1, VATTTrainingArgs(mask_ratio_min=0.01, mask_ratio_mean=0.01, mask_ratio_max=0.02))
    assert bool(tiny.all())  # at least one slot per row


def test_a_tiny_decoder_learns_to_read_its_condition():
    pairs = class_pairs()
    torch.manual_seed(0)
    model = VATTDecoder(config_for_pairs(pairs, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, head_dim=16, dropout=0.0))
    model.set_codebooks(pairs["codebook_latents"])
    history = train_vatt(model, pairs, VATTTrainingArgs(steps=120, batch_size=16, lr=3e-3, warmup_steps=10, log_every=20),
                         log=lambda *_: None)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    with torch.no_grad():
        logits = model(pairs["codes"], torch.ones_like(pairs["codes"], dtype=torch.bool), pairs["video"])
    accuracy = float((logits.argmax(-1) == pairs["codes"]).float().mean())
    assert accuracy > 0.9  # from nothing but the video tokens; the best guess without them is 0.25


def test_the_cli_trains_from_a_pairs_file_and_writes_a_loadable_decoder(tmp_path):
    pairs = class_pairs(8)
    write_safetensors_atomic({k: pairs[k] for k in ("codes", "video", "codebook_latents")}, tmp_path / "pairs.safetensors",
                             pairs["metadata"])
    out = tmp_path / "vatt_decoder.safetensors"
    assert main(["--pairs", str(tmp_path / "pairs.safetensors"), "--out", str(out), "--steps", "3", "--batch-size", "4",
                 "--size", '{"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "head_dim": 16}']) == 0
    model = load_vatt_decoder(out)
    assert torch.equal(model.codebook_latents, pairs["codebook_latents"]) and not model.codebooks_from_codec
    config = model.config
    assert (config.num_codebooks, config.codebook_size, config.latent_dim, config.video_dim) == (K, V, LATENT, 12)
    assert (config.video_model, config.codec, config.logit_layout) == ("tiny_clip", "tiny_codec", "aligned")


def test_pairs_files_with_missing_or_bad_keys_are_refused(tmp_path):
    pairs = class_pairs(4)
    write_safetensors_atomic({"codes": pairs["codes"], "video": pairs["video"]}, tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="a.safetensors: missing key 'codebook_latents'"):
        load_pairs(tmp_path / "a.safetensors")
    write_safetensors_atomic({"codes": pairs["codes"] + V, "video": pairs["video"], "codebook_latents": pairs["codebook_latents"]},
                             tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match=r"code ids must lie in \[0, 31\]"):
        load_pairs(tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match="--synthav needs --encoder"):
        main(["--synthav", "2", "--out", str(tmp_path / "x.safetensors")])


def test_synthav_pairs_come_from_the_encoder_and_codec(tmp_path):
    from tiny_encoders import CLIP_PROJECTION, write_tiny_clip_vision
    from tiny_vatt import write_tiny_vatt_codec

    clip = write_tiny_clip_vision(str(tmp_path / "tiny_clip"))
    codec = write_tiny_vatt_codec(str(tmp_path / "tiny_codec"))
    path = make_synthav_pairs(2, clip, codec, tmp_path / "pairs.safetensors", duration_s=1.0)
    pairs = load_pairs(path)
    assert pairs["codes"].shape == (2, 4, 50)  # 1 s at 50 frames/s
    assert pairs["video"].shape == (2, 10, CLIP_PROJECTION)
    assert pairs["metadata"]["video_model"] == "tiny_clip" and pairs["metadata"]["codec"] == "tiny_codec"
    assert not torch.allclose(pairs["video"][0], pairs["video"][1])  # two different scenes
    # the codes of clip 1 are the codec's tokens of SynthAV video 1's sound at 16 kHz
    from comfyui_audiovisual.audio.codec_tokenizer import load_codec
    from comfyui_audiovisual.audio.prepare import prepare_waveform
    from comfyui_audiovisual.synthav.split import training_scene
    from comfyui_audiovisual.synthav.world import make_video

    scene = training_scene(1)  # the training split: no held-out seed or (shape, colour) combination
    clip_1 = make_video(scene.seed, fps=16.0, duration_s=1.0, scene=scene)
    wave = prepare_waveform(torch.from_numpy(clip_1.audio).reshape(1, 1, -1), clip_1.sample_rate, 16000).unsqueeze(1)
    assert torch.equal(pairs["codes"][1], load_codec(codec).encode(wave, 4).codes[0])


@pytest.mark.parametrize("what, flag", [("codec", "--synthav"), ("captioner", "--scenes")])
def test_train_codec_and_captioner_are_subcommands_of_the_pack_cli(capsys, what, flag):
    """`python -m comfyui_audiovisual train codec|captioner` reaches the trainer's own arguments."""
    from comfyui_audiovisual.runner import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["train", what, "--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert flag in printed and "--out" in printed


def test_an_interrupted_run_resumes_to_the_same_decoder_as_an_uninterrupted_one(tmp_path):
    """Long CPU runs checkpoint and resume (the project's compute rule): training 6 steps, or 3 steps
    into a checkpoint folder and then 3 more from it, gives identical weights (same batches, masks,
    optimizer moments)."""
    pairs = class_pairs(8)
    sizes = dict(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, head_dim=16, dropout=0.0)

    def fresh():
        torch.manual_seed(0)
        model = VATTDecoder(config_for_pairs(pairs, **sizes))
        model.set_codebooks(pairs["codebook_latents"])
        return model

    args = VATTTrainingArgs(steps=6, batch_size=4, lr=3e-3, warmup_steps=2, log_every=1, checkpoint_seconds=0.0)
    whole = fresh()
    train_vatt(whole, pairs, args, log=lambda *_: None)

    def stop_at_step_4(message):
        if "step 4/" in message:
            raise KeyboardInterrupt  # the session ending mid-run

    first = fresh()
    with pytest.raises(KeyboardInterrupt):
        train_vatt(first, pairs, args, checkpoint_dir=tmp_path / "ck", log=stop_at_step_4)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["decoder.safetensors", "training_state.pt"]
    assert torch.load(tmp_path / "ck" / "training_state.pt", weights_only=True)["step"] == 3
    resumed = fresh()
    train_vatt(resumed, pairs, args, checkpoint_dir=tmp_path / "ck", resume=True, log=lambda *_: None)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert any(not torch.allclose(a, b) for a, b in zip(whole.state_dict().values(), fresh().state_dict().values()))


def test_resuming_without_a_checkpoint_or_with_another_model_is_refused(tmp_path):
    pairs = class_pairs(8)
    model = VATTDecoder(config_for_pairs(pairs, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, head_dim=16))
    model.set_codebooks(pairs["codebook_latents"])
    args = VATTTrainingArgs(steps=2, batch_size=4)
    with pytest.raises(FileNotFoundError, match="cannot resume.*decoder.safetensors not found"):
        train_vatt(model, pairs, args, checkpoint_dir=tmp_path / "none", resume=True, log=lambda *_: None)
    train_vatt(model, pairs, args, checkpoint_dir=tmp_path / "ck", log=lambda *_: None)
    wider = VATTDecoder(config_for_pairs(pairs, dim=64, encoder_depth=1, decoder_depth=1, num_heads=2, head_dim=32))
    wider.set_codebooks(pairs["codebook_latents"])
    with pytest.raises(ValueError, match="decoder.safetensors has config"):
        train_vatt(wider, pairs, args, checkpoint_dir=tmp_path / "ck", resume=True, log=lambda *_: None)


def test_pairs_made_by_two_processes_equal_those_made_by_one_in_scene_order(tmp_path):
    """The CPU recipe renders its videos in worker processes: the joined file holds the same clips,
    in scene order, as two serial calls on the same scene ranges, and the parts are cleaned up."""
    from tiny_encoders import write_tiny_clip_vision
    from tiny_vatt import write_tiny_vatt_codec

    from comfyui_audiovisual.training.synthav_vatt import make_pairs_parallel

    clip = write_tiny_clip_vision(str(tmp_path / "tiny_clip"))
    codec = write_tiny_vatt_codec(str(tmp_path / "tiny_codec"))
    options = dict(encoder_dir=clip, codec_dir=codec, duration_s=1.0)
    joined = load_pairs(make_pairs_parallel(3, 2, str(tmp_path / "pairs.safetensors"), **options))
    first = load_pairs(make_synthav_pairs(2, out_path=tmp_path / "a.safetensors", start=0, seed=0, **options))  # worker 0: 0..1
    second = load_pairs(make_synthav_pairs(1, out_path=tmp_path / "b.safetensors", start=2, seed=1, **options))  # worker 1: 2
    assert torch.equal(joined["codes"], torch.cat([first["codes"], second["codes"]]))
    assert torch.allclose(joined["video"], torch.cat([first["video"], second["video"]]))
    assert joined["metadata"]["source"] == "synthav train scenes 0..2, 1 s at 16 fps"
    assert sorted(p.name for p in tmp_path.iterdir() if "part" in p.name) == []
