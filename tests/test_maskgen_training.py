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
