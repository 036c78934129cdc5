"""Mask-denoising training: masks, loss going down, checkpoints, resume and the CLI."""

import json

import pytest
import torch
from safetensors.torch import save_file

from comfyui_audiovisual.loaders.masked_transformer import load_masked_transformer
from comfyui_audiovisual.networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig
from comfyui_audiovisual.training.maskgen import (
    MaskGenTrainingArgs,
    drop_masked_positions,
    main,
    sample_training_masks,
    token_batches,
    train_maskgen,
    truncated_normal,
)

AUDIO_LEN, IMAGE_LEN, VOCAB = 10, 12, 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config():
    return MaskedAVTransformerConfig(audio_vocab_size=VOCAB, image_vocab_size=VOCAB, audio_seq_len=AUDIO_LEN,
                                     image_seq_len=IMAGE_LEN, dim=32, encoder_depth=1, decoder_depth=1,
                                     num_heads=4, dropout=0.0)


def paired_data(count=8, seed=0):
    """Image tokens are a fixed function of the audio tokens, so there is something to learn."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randint(0, VOCAB, (count, AUDIO_LEN), generator=g)
    image = torch.cat([audio, audio[:, :2]], dim=1).flip(1) % VOCAB
    return audio, image


def test_truncated_normal_range_and_mean():
    values = truncated_normal(20000, 0.7, 0.25, 0.2, 1.0, torch.Generator().manual_seed(0))
    assert float(values.min()) >= 0.2 and float(values.max()) <= 1.0
    assert 0.62 < float(values.mean()) < 0.70  # the upper cut pulls the mean below 0.7


def test_training_masks_and_drop():
    args = MaskGenTrainingArgs()
    g = torch.Generator().manual_seed(1)
    audio_masked, image_masked, drop = sample_training_masks(64, 265, 256, args, g)
    masked = torch.cat([audio_masked, image_masked], 1)
    audio_fraction = audio_masked.float().mean(1)
    assert float(audio_fraction.min()) >= 0.2 - 1e-6 and audio_masked.sum(1).min() >= 1
    assert not torch.equal(audio_fraction, image_masked.float().mean(1))  # independent ratios
    assert bool((drop <= masked).all())
    counts = drop.sum(1)
    assert bool((counts == counts[0]).all())
    assert int(counts[0]) == min(int(0.5 * 521), int(masked.sum(1).min()))
    # never more than are masked, even when few are
    few = torch.zeros(2, 10, dtype=torch.bool)
    few[0, :2] = True
    few[1, 5:9] = True
    assert drop_masked_positions(few, 0.5, g).sum(1).tolist() == [2, 2]


def test_training_lowers_the_loss_and_resume_continues(tmp_path):
    torch.manual_seed(0)
    audio, image = paired_data()
    args = MaskGenTrainingArgs(steps=60, lr=3e-3, warmup_steps=0, lr_schedule="constant", log_every=1,
                               checkpoint_every=30, seed=0)
    model = MaskedAVTransformer(tiny_config())
    logs = []
    result = train_maskgen(model, lambda start: token_batches(audio, image, 8, 0, 0, start), tmp_path, args,
                           device="cpu", log=logs.append)
    losses = [loss for _, loss in result["losses"]]
    assert result["step"] == 60 and len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.9 * sum(losses[:10]) / 10
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "training_state.pt").is_file()
    state = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert state["step"] == 60 and state["optimizer"]["state"]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 60

    # resume: a fresh model picks up the saved weights, optimizer and step
    resumed = MaskedAVTransformer(tiny_config())
    more = MaskGenTrainingArgs(**{**args.__dict__, "steps": 65})
    result = train_maskgen(resumed, lambda start: token_batches(audio, image, 8, 0, 0, start), tmp_path, more,
                           resume=True, device="cpu", log=logs.append)
    assert [step for step, _ in result["losses"]] == [61, 62, 63, 64, 65]
    assert any("resumed" in line and "step 60" in line for line in logs)
    assert result["losses"][0][1] < losses[0]
    assert torch.load(tmp_path / "training_state.pt", weights_only=True)["step"] == 65


def test_resume_is_replayable(tmp_path):
    """Training 6 steps straight equals 3 steps + resume to 6 (same batches, masks, optimizer)."""
    audio, image = paired_data()
    batches = lambda start: token_batches(audio, image, 4, 5, 0, start)  # noqa: E731
    args = dict(lr=1e-3, warmup_steps=2, lr_schedule="constant", log_every=1, checkpoint_every=0, seed=5)
    torch.manual_seed(0)
    straight = MaskedAVTransformer(tiny_config())
    torch.manual_seed(0)
    split = MaskedAVTransformer(tiny_config())
    train_maskgen(straight, batches, tmp_path / "a", MaskGenTrainingArgs(steps=6, **args), device="cpu", log=lambda s: None)
    train_maskgen(split, batches, tmp_path / "b", MaskGenTrainingArgs(steps=3, **args), device="cpu", log=lambda s: None)
    split = MaskedAVTransformer(tiny_config())
    train_maskgen(split, batches, tmp_path / "b", MaskGenTrainingArgs(steps=6, **args), resume=True, device="cpu",
                  log=lambda s: None)
    a = load_masked_transformer(tmp_path / "a" / "model.safetensors").state_dict()
    b = load_masked_transformer(tmp_path / "b" / "model.safetensors").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_cli_trains_from_a_token_file(tmp_path, capsys):
    audio, image = paired_data(6)
    data = tmp_path / "tokens.safetensors"
    grid = audio.reshape(6, AUDIO_LEN // 5, 5).transpose(1, 2).contiguous()  # [M, 5 rows, 2 columns]
    save_file({"audio_tokens": grid, "image_tokens": image}, str(data),
              metadata={"audio_vocab_size": str(VOCAB), "image_vocab_size": str(VOCAB)})
    config = json.dumps(dict(dim=32, encoder_depth=1, decoder_depth=1, num_heads=4))
    out = tmp_path / "run"
    assert main(["--data", str(data), "--out", str(out), "--steps", "4", "--batch-size", "4",
                 "--config", config, "--log-every", "2"]) == 0
    model = load_masked_transformer(out / "model.safetensors")
    assert (model.config.audio_seq_len, model.config.image_seq_len, model.config.audio_vocab_size) == (10, 12, VOCAB)
    assert main(["--data", str(data), "--out", str(out), "--steps", "6", "--resume", "--log-every", "1"]) == 0
    text = capsys.readouterr().out
    assert "step 4/4" in text and "resumed" in text and "step 5/6" in text


def test_cli_rejects_bad_data(tmp_path):
    data = tmp_path / "tokens.safetensors"
    save_file({"audio_tokens": torch.zeros(3, 10, dtype=torch.long)}, str(data))
    with pytest.raises(ValueError, match="tokens.safetensors: missing key 'image_tokens'"):
        main(["--data", str(data), "--out", str(tmp_path / "o"), "--steps", "1"])
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        main(["--data", str(tmp_path / "absent.safetensors"), "--out", str(tmp_path / "o")])
    save_file({"audio_tokens": torch.full((3, 10), 2000), "image_tokens": torch.zeros(3, 4, dtype=torch.long)},
              str(data))
    with pytest.raises(ValueError, match="'audio_tokens' has ids up to 2000"):
        main(["--data", str(data), "--out", str(tmp_path / "o"), "--steps", "1"])


def test_conditional_modes_show_one_modality_and_hide_it_for_guidance():
    from comfyui_audiovisual.training.maskgen import parse_mask_modes

    args = MaskGenTrainingArgs(mask_modes="audio|image=0.5,image|audio=0.5", uncond_prob=0.25)
    audio_masked, image_masked, drop = sample_training_masks(4000, 20, 30, args, torch.Generator().manual_seed(0))
    image_shown = ~image_masked.any(1)
    image_hidden = image_masked.all(1)
    audio_shown = ~audio_masked.any(1)
    audio_hidden = audio_masked.all(1)
    # every row is one of: audio generated with the image shown or hidden, or the mirror
    assert bool((image_shown | image_hidden | audio_shown | audio_hidden).all())
    # half the rows generate audio: the image is shown, or hidden while some (not all) audio is shown
    generates_audio = image_shown | (image_hidden & ~audio_hidden)
    assert 0.45 < float(generates_audio.float().mean()) < 0.55
    # the condition is hidden about a quarter of the time (each mode has its own)
    conditional = image_shown.sum() + audio_shown.sum()
    unconditional = (image_hidden & ~audio_shown & ~audio_masked.all(1)).sum() + (audio_hidden & ~image_shown & ~image_masked.all(1)).sum()
    assert 0.18 < float(unconditional) / float(conditional + unconditional) < 0.32
    # MaskGIT's cosine ratios: at least one token, mostly high ratios
    generated = audio_masked[image_shown].float().mean(1)
    assert float(generated.min()) >= 1 / 20 and 0.55 < float(generated.mean()) < 0.72
    assert not drop.any() or args.drop_fraction > 0
    assert parse_mask_modes("mage=1,audio|image=3") == {"mage": 0.25, "audio|image": 0.75}
    for bad in ("video|image=1", "mage=-1", "mage=x", "mage=0"):
        with pytest.raises(ValueError, match="maskgen: mask mode"):
            parse_mask_modes(bad)


def test_mage_only_masks_are_what_they_were():
    """The default ("mage=1") draws exactly the masks of the MAGE recipe the shipped models before used."""
    from comfyui_audiovisual.training.maskgen import drop_masked_positions as drop_fn, random_masks_with_ratios

    args = MaskGenTrainingArgs()
    g = torch.Generator().manual_seed(3)
    audio_masked, image_masked, drop = sample_training_masks(16, 30, 20, args, g)
    g = torch.Generator().manual_seed(3)
    draw = lambda: truncated_normal(16, 0.7, 0.25, 0.2, 1.0, g)  # noqa: E731
    audio = random_masks_with_ratios(draw(), 30, g)
    image = random_masks_with_ratios(draw(), 20, g)
    assert torch.equal(audio, audio_masked) and torch.equal(image, image_masked)
    assert torch.equal(drop, drop_fn(torch.cat([audio, image], 1), 0.5, g))


def test_a_small_model_trained_here_reads_its_condition(tmp_path):
    """Trained in the conditional modes on pairs where the audio is a function of the image, a tiny
    model predicts held-out audio tokens from the image far above what it predicts from nothing."""
    from comfyui_audiovisual.training.maskgen import condition_token_accuracy

    torch.manual_seed(0)
    model = MaskedAVTransformer(tiny_config())
    audio, image = paired_data(512, seed=1)
    held_audio, held_image = paired_data(64, seed=2)
    args = MaskGenTrainingArgs(steps=300, lr=3e-3, warmup_steps=10, log_every=0, checkpoint_every=0, drop_fraction=0.0,
                               mask_modes="audio|image=0.5,image|audio=0.5", uncond_prob=0.1)
    train_maskgen(model, lambda start: token_batches(audio, image, 64, 0, 0, start), tmp_path / "run", args, device="cpu")
    accuracy = condition_token_accuracy(model, held_audio, held_image)
    assert accuracy["audio|image"] > 0.5, accuracy
    assert accuracy["audio|nothing"] < 0.25, accuracy  # chance is 1/16 per token
    assert accuracy["image|audio"] > accuracy["image|nothing"] + 0.3, accuracy


def test_training_checkpoints_by_wall_time(tmp_path, monkeypatch):
    import comfyui_audiovisual.training.maskgen as maskgen_module

    clock = iter(range(0, 10_000, 100))  # every reading of the clock is 100 s after the previous one
    monkeypatch.setattr(maskgen_module.time, "perf_counter", lambda: float(next(clock)))
    saved = []
    real_save = maskgen_module.save_training_checkpoint
    monkeypatch.setattr(maskgen_module, "save_training_checkpoint",
                        lambda out, model, opt, step, a: (saved.append(step), real_save(out, model, opt, step, a)))
    audio, image = paired_data(16)
    args = MaskGenTrainingArgs(steps=6, checkpoint_every=0, checkpoint_seconds=250, log_every=0)
    train_maskgen(MaskedAVTransformer(tiny_config()), lambda start: token_batches(audio, image, 4, 0, 0, start),
                  tmp_path / "run", args, device="cpu")
    assert saved[:-1] and saved[-1] == 6  # at least one save by time before the final one
    assert all(b > a for a, b in zip(saved, saved[1:]))


def test_cli_config_with_token_groups_takes_the_lengths_from_the_data(tmp_path):
    from comfyui_audiovisual.loaders.masked_transformer import load_masked_transformer
    from comfyui_audiovisual.training.maskgen import main

    data = tmp_path / "tokens.safetensors"
    save_file({"audio_tokens": torch.randint(0, VOCAB, (6, 2, 5)), "image_tokens": torch.randint(0, VOCAB, (6, 4, 4))}, str(data),
              metadata={"audio_grid": "[2, 5]", "image_grid": "[4, 4]"})
    config = '{"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 4, "audio_group": 2, "image_group": 4}'
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2", "--config", config,
                 "--drop-fraction", "0", "--position-init", "sincos", "--device", "cpu", "--audio-vocab-size", str(VOCAB),
                 "--image-vocab-size", str(VOCAB)]) == 0
    model = load_masked_transformer(str(tmp_path / "run" / "model.safetensors"))
    assert (model.config.audio_seq_len, model.config.audio_group, model.config.image_group) == (10, 2, 4)
    assert model.audio_position_embedding.shape[1] == 5
