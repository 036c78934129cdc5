"""The VQ tokenizer training loop: a few steps lower the reconstruction loss; the CLI writes a loadable file."""

import json

import pytest
import torch
from safetensors.torch import save_file

from comfyui_audiovisual.loaders.vq_checkpoints import load_vq_model
from comfyui_audiovisual.training.vq_tokenizer import (
    build_vq_model,
    data_to_model_space,
    main,
    reconstruction_l1,
    train_vq_tokenizer,
)
from comfyui_audiovisual.vq import VQTokenizer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smooth_images(count, size=16, seed=0):
    """Soft colour gradients: easy to reconstruct, so a few steps show learning."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    a, b, c = (torch.rand(count, 3, 1, 1, generator=g) for _ in range(3))
    return (a * ys + b * xs + c * (1 - xs)).div(2).clamp(0, 1)


def test_a_few_steps_lower_the_reconstruction_loss():
    data = data_to_model_space(smooth_images(16), "image", 4)
    vq = build_vq_model("image", ch=8, ch_mult=(1, 2, 2), codebook_size=16, embed_dim=8)
    before = reconstruction_l1(vq, data)
    history = train_vq_tokenizer(vq, data, steps=20, batch_size=8, lr=2e-3, restart_every=10, seed=0)
    after = reconstruction_l1(vq, data)
    assert after < 0.7 * before, (before, after)
    assert len(history["loss"]) == 20


def test_adversarial_term_runs():
    data = data_to_model_space(smooth_images(4), "image", 2)
    vq = build_vq_model("image", ch=8, ch_mult=(1, 2), codebook_size=8, embed_dim=4)
    history = train_vq_tokenizer(vq, data, steps=2, batch_size=2, adv_weight=0.1)
    assert all(torch.isfinite(torch.tensor(history["loss"])))


def test_cli_trains_saves_and_resumes_an_audio_tokenizer(tmp_path):
    mels = torch.rand(4, 80, 37, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    save_file({"mels": mels}, str(tmp_path / "mels.safetensors"))
    out = tmp_path / "audio_vq.safetensors"
    args = ["--modality", "audio", "--data", str(tmp_path / "mels.safetensors"), "--out", str(out), "--steps", "3",
            "--batch-size", "2", "--ch", "8", "--ch-mult", "1,2,2", "--codebook-size", "8", "--embed-dim", "4",
            "--device", "cpu", "--log-every", "0"]
    assert main(args) == 0
    vq, info = load_vq_model(out)
    assert info["layout"] == "diffusers-file" and info["downsample_factor"] == 4
    tokens = VQTokenizer(vq, "audio").encode_mel(mels[:1])
    assert tokens.shape == (1, 20, 9)  # 37 frames cropped to 36
    assert main(args[:-4] + ["--resume", str(out), "--out", str(tmp_path / "more.safetensors")]) == 0
    from comfyui_audiovisual.loaders.checkpoint_io import read_state_dict

    assert read_state_dict(tmp_path / "more.safetensors")[1]["train_steps"] == "6"
    # resumed without the architecture options: the provenance names no architecture the file doesn't have
    assert main(args[:4] + ["--out", str(tmp_path / "again.safetensors"), "--steps", "2", "--resume", str(out), "--log-every", "0"]) == 0
    metadata = read_state_dict(tmp_path / "again.safetensors")[1]
    recorded = json.loads(metadata["train_args"])
    assert recorded["resume"] == str(out) and recorded["steps"] == 2
    assert not {"ch", "ch_mult", "codebook_size", "embed_dim"} & set(recorded)
    assert json.loads(metadata["earlier_train_args"])["ch"] == 8


def test_cli_resumes_from_a_specvqgan_release_checkpoint_outside_the_host(tmp_path, outside_the_host):
    # the release .ckpt pickles Lightning's ModelCheckpoint class; no Lightning, no host here
    from tiny_checkpoints import tiny_spec_vqgan, write_taming_ckpt

    release = write_taming_ckpt(tiny_spec_vqgan(seed=2), str(tmp_path / "epoch_39.ckpt"))
    mels = torch.rand(2, 80, 32, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    save_file({"mels": mels}, str(tmp_path / "mels.safetensors"))
    out = tmp_path / "refined.safetensors"
    assert main(["--modality", "audio", "--data", str(tmp_path / "mels.safetensors"), "--out", str(out), "--steps", "1",
                 "--batch-size", "2", "--device", "cpu", "--log-every", "0", "--resume", release, "--decoder-only"]) == 0
    vq, info = load_vq_model(out)
    assert info["codebook_size"] == 32 and info["downsample_factor"] == 16


def test_decoder_only_refinement_keeps_every_token_id():
    data = data_to_model_space(smooth_images(16, seed=3), "image", 4)
    vq = build_vq_model("image", ch=8, ch_mult=(1, 2, 2), codebook_size=16, embed_dim=8)
    train_vq_tokenizer(vq, data, steps=10, batch_size=8, lr=2e-3, seed=0)
    tokenizer = VQTokenizer(vq, "image")
    with torch.no_grad():
        tokens_before = tokenizer.encode(data)
    frozen = {k: v.clone() for k, v in vq.state_dict().items() if not k.startswith(("decoder.", "post_quant_conv."))}
    decoder_before = vq.decoder.conv_out.weight.detach().clone()
    before = reconstruction_l1(vq, data)
    train_vq_tokenizer(vq, data, steps=15, batch_size=8, lr=1e-3, seed=1, decoder_only=True, lr_schedule="cosine")
    with torch.no_grad():
        assert torch.equal(tokenizer.encode(data), tokens_before)
    for key, value in frozen.items():
        assert torch.equal(vq.state_dict()[key], value), key
    assert not torch.equal(vq.decoder.conv_out.weight, decoder_before)
    assert reconstruction_l1(vq, data) < before


def test_decoder_only_needs_a_trained_tokenizer(tmp_path):
    save_file({"images": smooth_images(2)}, str(tmp_path / "d.safetensors"))
    with pytest.raises(SystemExit, match="--resume"):
        main(["--modality", "image", "--data", str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "o.safetensors"),
              "--decoder-only"])
    assert not (tmp_path / "o.safetensors").exists()


def test_restarts_stop_after_their_fraction_and_pruning_keeps_the_used_codes():
    from comfyui_audiovisual.training.vq_tokenizer import code_usage, edge_l1, prune_codebook

    data = data_to_model_space(smooth_images(16), "image", 4)
    vq = build_vq_model("image", ch=8, ch_mult=(1, 2, 2), codebook_size=32, embed_dim=8)
    never = train_vq_tokenizer(vq, data, steps=20, batch_size=8, restart_every=2, restart_until=0.0, seed=0)
    assert never["restarted_codes"] == 0
    history = train_vq_tokenizer(vq, data, steps=20, batch_size=8, restart_every=2, restart_until=0.5, seed=0,
                                 edge_weight=1.0)
    assert all(torch.isfinite(torch.tensor(history["loss"])))
    counts = code_usage(vq, data)
    assert int(counts.sum()) == 16 * 4 * 4
    pruned, kept = prune_codebook(vq, counts)
    assert pruned.quantize.embedding.weight.shape[0] == len(kept) == int((counts > 0).sum())
    tokens_before = VQTokenizer(vq.eval(), "image").encode(data)
    tokens_after = VQTokenizer(pruned, "image").encode(data)
    assert torch.equal(kept[tokens_after], tokens_before)  # the same codes, renumbered
    assert torch.allclose(VQTokenizer(pruned, "image").decode(tokens_after), VQTokenizer(vq, "image").decode(tokens_before))
    x = data[:2]
    assert float(edge_l1(x, x)) == 0.0 and float(edge_l1(x.flip(-1), x)) > 0.0
    with pytest.raises(ValueError, match="no code is used"):
        prune_codebook(vq, torch.zeros_like(counts))


def test_cli_prunes_the_codebook_and_records_its_usage(tmp_path):
    from comfyui_audiovisual.loaders.checkpoint_io import read_state_dict

    data_path = tmp_path / "data.safetensors"
    save_file({"images": smooth_images(8)}, str(data_path))
    out = tmp_path / "vq.safetensors"
    assert main(["--modality", "image", "--data", str(data_path), "--out", str(out), "--steps", "3", "--batch-size", "4",
                 "--ch", "8", "--ch-mult", "1,2", "--codebook-size", "64", "--embed-dim", "4",
                 "--restart-until", "0", "--prune-below", "1e-9", "--device", "cpu"]) == 0
    vq, _ = load_vq_model(str(out))
    _, metadata = read_state_dict(str(out))
    size = vq.quantize.embedding.weight.shape[0]
    assert size < 64 and metadata["pruned_from"] == "64" and int(metadata["codes_used"]) == size
    with pytest.raises(SystemExit, match="cannot be combined with --decoder-only"):
        main(["--modality", "image", "--data", str(data_path), "--resume", str(out), "--out", str(tmp_path / "d.safetensors"),
              "--steps", "1", "--decoder-only", "--prune-below", "0.1", "--device", "cpu"])


def test_an_interrupted_cli_run_continues_from_its_state_to_the_same_model(tmp_path, monkeypatch):
    from comfyui_audiovisual.loaders.checkpoint_io import read_state_dict
    from comfyui_audiovisual.training import vq_tokenizer

    save_file({"images": smooth_images(12)}, str(tmp_path / "images.safetensors"))

    def args(out, *more):
        return ["--modality", "image", "--data", str(tmp_path / "images.safetensors"), "--out", str(tmp_path / out),
                "--steps", "6", "--batch-size", "4", "--ch", "8", "--ch-mult", "1,2", "--codebook-size", "8",
                "--embed-dim", "4", "--restart-every", "2", "--device", "cpu", "--log-every", "0", *more]

    assert main(args("straight.safetensors")) == 0
    saves, real_save = [], vq_tokenizer.torch_save_atomic

    def save_then_stop(obj, path):
        real_save(obj, path)
        saves.append(obj["step"])
        if len(saves) == 3:
            raise KeyboardInterrupt  # the machine's session ends here

    monkeypatch.setattr(vq_tokenizer, "torch_save_atomic", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        main(args("resumed.safetensors", "--checkpoint-seconds", "1e-9"))
    monkeypatch.setattr(vq_tokenizer, "torch_save_atomic", real_save)
    state = tmp_path / "resumed.safetensors.training_state.pt"
    assert saves == [1, 2, 3] and state.exists() and not (tmp_path / "resumed.safetensors").exists()

    # another run's arguments: refused, naming the state file, and nothing written
    with pytest.raises(ValueError, match="resumed.safetensors.training_state.pt: the training state of another run"):
        main(args("resumed.safetensors", "--lr", "1e-3"))
    assert not (tmp_path / "resumed.safetensors").exists()

    assert main(args("resumed.safetensors", "--checkpoint-seconds", "1e-9")) == 0  # the same command again
    assert not state.exists()
    straight, meta_straight = read_state_dict(tmp_path / "straight.safetensors")
    resumed, meta_resumed = read_state_dict(tmp_path / "resumed.safetensors")
    assert meta_resumed["train_steps"] == meta_straight["train_steps"] == "6"
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def squares_on_grey(count, size=16, seed=0):
    """A small saturated square on a grey, faintly textured background (SynthAV's layout in miniature)."""
    g = torch.Generator().manual_seed(seed)
    images = 0.4 + 0.1 * torch.rand(count, 1, size, size, generator=g).expand(count, 3, size, size).clone()
    for k in range(count):
        y, x = (int(v) for v in torch.randint(0, size - 4, (2,), generator=g))
        images[k, :, y:y + 4, x:x + 4] = torch.tensor([1.0, 0.1, 0.1])[:, None, None]
    return images


def test_chroma_weight_weights_coloured_pixels_and_defaults_to_plain_l1():
    from comfyui_audiovisual.training.vq_tokenizer import chroma_weights

    images = squares_on_grey(1)
    weights = chroma_weights(data_to_model_space(images, "image", 1), 5.0)[0, 0]
    coloured = (images[0].amax(0) - images[0].amin(0)) > 0.5
    grown = torch.nn.functional.max_pool2d(coloured[None].float(), 3, 1, 1)[0] > 0
    assert torch.allclose(weights[coloured], torch.tensor(1 + 5 * 0.9))  # chroma 0.9 inside the square
    assert torch.allclose(weights[grown & ~coloured], torch.tensor(1 + 5 * 0.9))  # and on the ring just outside
    assert torch.allclose(weights[~grown], torch.tensor(1.0))  # grey background: plain L1

    data = data_to_model_space(squares_on_grey(8), "image", 4)
    runs = {}
    for weight in (None, 0.0, 8.0):
        torch.manual_seed(0)  # the same initial model for each run
        vq = build_vq_model("image", ch=8, ch_mult=(1, 2, 2), codebook_size=16, embed_dim=8)
        options = {} if weight is None else {"chroma_weight": weight}
        runs[weight] = train_vq_tokenizer(vq, data, steps=3, batch_size=4, seed=0, **options)
    assert runs[None]["loss"] == runs[0.0]["loss"]  # 0 is the old behaviour, step for step
    assert runs[8.0]["loss"][0] > runs[0.0]["loss"][0] + 0.1  # the weighted term is what is optimised
    mels = data_to_model_space(torch.rand(2, 16, 8), "audio", 4)
    with pytest.raises(ValueError, match="chroma_weight needs RGB images"):
        train_vq_tokenizer(build_vq_model("audio", ch=8, ch_mult=(1, 2), codebook_size=8, embed_dim=4), mels,
                           steps=1, batch_size=2, chroma_weight=1.0)


def test_chroma_weight_reconstructs_small_coloured_objects_better():
    data = data_to_model_space(squares_on_grey(32, seed=1), "image", 4)
    coloured = ((data.amax(1) - data.amin(1)) / 2 > 0.5)[:, None].expand_as(data)
    object_error = {}
    for weight in (0.0, 8.0):
        vq = build_vq_model("image", ch=8, ch_mult=(1, 2, 2), codebook_size=32, embed_dim=8)
        train_vq_tokenizer(vq, data, steps=60, batch_size=8, lr=2e-3, seed=0, chroma_weight=weight)
        with torch.no_grad():
            back = VQTokenizer(vq.eval(), "image").decode(VQTokenizer(vq, "image").encode(data))
        object_error[weight] = float((back - data).abs()[coloured].mean())
    assert object_error[8.0] < 0.8 * object_error[0.0], object_error
