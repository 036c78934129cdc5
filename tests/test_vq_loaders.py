"""VQGAN checkpoints (taming / SpecVQGAN / diffusers / ours) -> diffusers VQModel, checked against taming's numerics."""

import os
import pickle
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_audiovisual.loaders.checkpoint_io import read_state_dict, write_safetensors_atomic
from comfyui_audiovisual.loaders.vq_checkpoints import load_vq_model, save_vq_model
from comfyui_audiovisual.vq import VQTokenizer
from tiny_checkpoints import (
    LIGHTNING_CALLBACK_MODULE,
    lightning_model_checkpoint_class,
    tiny_image_vqgan,
    tiny_spec_vqgan,
    write_taming_ckpt,
    write_taming_safetensors,
    write_taming_yaml,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread", "outside_the_host")


@pytest.fixture(scope="module")
def image_ref():
    return tiny_image_vqgan(seed=1)


@pytest.fixture(scope="module")
def spec_ref():
    return tiny_spec_vqgan(seed=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory, image_ref, spec_ref):
    folder = tmp_path_factory.mktemp("vq")
    return {
        "image_ckpt": write_taming_ckpt(image_ref, str(folder / "image_vqgan.ckpt")),
        "image_st": write_taming_safetensors(image_ref, str(folder / "image_vqgan.safetensors")),
        "spec_ckpt": write_taming_ckpt(spec_ref, str(folder / "spec_vqgan.ckpt")),
    }


def assert_same_as_reference(vq, ref, x):
    with torch.no_grad():
        latents, ref_latents = vq.encode(x).latents, ref.encode_latent(x)
        assert torch.allclose(latents, ref_latents, atol=1e-4), float((latents - ref_latents).abs().max())
        tokens = VQTokenizer(vq, "image" if x.shape[1] == 3 else "audio").encode(x)
        ref_tokens = ref.encode_indices(x)
        assert torch.equal(tokens, ref_tokens)
        decoded = VQTokenizer(vq, "image" if x.shape[1] == 3 else "audio").decode(ref_tokens)
        ref_decoded = ref.decode_indices(ref_tokens)
        assert decoded.shape == x.shape
        assert torch.allclose(decoded, ref_decoded, atol=1e-3), float((decoded - ref_decoded).abs().max())


def test_taming_lightning_ckpt_matches_taming_forward(files, image_ref):
    vq, info = load_vq_model(files["image_ckpt"])
    assert info["layout"] == "taming" and info["dropped_keys"] == 4  # the loss.* keys
    assert info["codebook_size"] == 16 and info["downsample_factor"] == 4
    assert info["architecture"]["encoder_attention_levels"] == (2,)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert_same_as_reference(vq, image_ref, x)


def test_taming_safetensors_gives_the_same_model(files, image_ref):
    vq, info = load_vq_model(files["image_st"])
    assert info["layout"] == "taming"
    x = torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(1)) * 2 - 1  # non-square
    assert_same_as_reference(vq, image_ref, x)


def test_specvqgan_layout_matches_and_gives_a_5x53_grid(files, spec_ref):
    vq, info = load_vq_model(files["spec_ckpt"])
    assert info["in_channels"] == 1 and info["downsample_factor"] == 16
    x = torch.rand(1, 1, 80, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert_same_as_reference(vq, spec_ref, x)
    tokenizer = VQTokenizer(vq, "audio")
    assert tokenizer.grid_shape(80, 848) == (5, 53)
    mel = torch.rand(1, 80, 860, generator=torch.Generator().manual_seed(3))  # 10 s of frames
    tokens = tokenizer.encode_mel(mel)  # cropped to 848 as SpecVQGAN does
    assert tokens.shape == (1, 5, 53) and tokens.dtype == torch.long
    assert int(tokens.max()) < tokenizer.codebook_size


def test_tokens_round_trip_for_codebook_vectors(files):
    vq, _ = load_vq_model(files["image_ckpt"])
    tokenizer = VQTokenizer(vq, "image")
    tokens = torch.randint(0, tokenizer.codebook_size, (2, 3, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        vectors = vq.quantize.get_codebook_entry(tokens.reshape(-1), (2, 3, 5, tokenizer.embed_dim))
        _, _, (_, _, again) = vq.quantize(vectors)
    assert torch.equal(again.reshape(tokens.shape), tokens)  # a codebook vector quantises to itself
    image = tokenizer.decode_image(tokens)
    assert image.shape == (2, 12, 20, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    first = tokenizer.encode_image(image)
    assert first.shape == tokens.shape
    assert torch.equal(tokenizer.encode_image(tokenizer.decode_image(first)), tokenizer.encode_image(tokenizer.decode_image(first)))
    assert torch.equal(tokenizer.decode(tokens), tokenizer.decode(tokens))


def test_diffusers_folder_and_our_single_file(tmp_path, files):
    vq, _ = load_vq_model(files["image_ckpt"])
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        expected = vq(x).sample
    vq.save_pretrained(str(tmp_path / "vq_folder"))
    folder_vq, info = load_vq_model(tmp_path / "vq_folder")
    assert info["layout"] == "diffusers-folder"
    save_vq_model(vq, tmp_path / "ours.safetensors", {"modality": "image"})
    file_vq, info = load_vq_model(tmp_path / "ours.safetensors")
    assert info["layout"] == "diffusers-file"
    assert read_state_dict(tmp_path / "ours.safetensors")[1]["modality"] == "image"
    with torch.no_grad():
        assert torch.allclose(folder_vq(x).sample, expected, atol=1e-5)
        assert torch.allclose(file_vq(x).sample, expected, atol=1e-5)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_first_stage_prefix_is_stripped(tmp_path, image_ref):
    state = {f"first_stage_model.{k}": v for k, v in image_ref.state_dict().items()}
    state["transformer.tok_emb.weight"] = torch.zeros(16, 4)
    save_file(state, str(tmp_path / "transformer.safetensors"))
    vq, info = load_vq_model(tmp_path / "transformer.safetensors")
    assert info["codebook_size"] == 16


def test_missing_key_names_file_and_key(tmp_path, image_ref):
    state = dict(image_ref.state_dict())
    del state["decoder.up.1.block.0.conv2.weight"]
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"broken\.safetensors.*'decoder\.up\.1\.block\.0\.conv2\.weight'"):
        load_vq_model(path)


def test_wrong_shape_names_file_key_and_shapes(tmp_path, image_ref):
    state = dict(image_ref.state_dict())
    state["quantize.embedding.weight"] = torch.zeros(16, 4)  # embed_dim 4, but quant_conv says 8
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as error:
        load_vq_model(path)
    message = str(error.value)
    assert "wrong.safetensors" in message and "'quantize.embedding.weight'" in message
    assert "(16, 4)" in message and "(16, 8)" in message


def test_config_beside_is_cross_checked(tmp_path, image_ref):
    path = write_taming_ckpt(image_ref, str(tmp_path / "model.ckpt"))
    write_taming_yaml(image_ref, str(tmp_path / "model.yaml"))
    _, info = load_vq_model(path)
    assert info["config_file"].endswith("model.yaml")
    write_taming_yaml(image_ref, str(tmp_path / "model.yaml"), ch_mult=[1, 2, 2])
    with pytest.raises(ValueError, match=r"model\.ckpt.*ch_mult.*model\.yaml"):
        load_vq_model(path)


class Exploit:
    """A pickle payload: unpickling it would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, image_ref):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": dict(image_ref.state_dict()), "callbacks": Exploit(str(marker))}, str(path))
    for reader in (read_state_dict, load_vq_model):
        with pytest.raises(ValueError, match=r"evil\.ckpt.*not a plain weights checkpoint"):
            reader(path)
    assert not marker.exists()


def test_a_release_checkpoint_carrying_lightnings_callback_class_loads_without_lightning(tmp_path, image_ref):
    # taming-transformers / SpecVQGAN releases (Lightning 1.0-1.2) pickle the ModelCheckpoint class itself
    path = write_taming_ckpt(image_ref, str(tmp_path / "last.ckpt"))
    callback = f"{LIGHTNING_CALLBACK_MODULE}.ModelCheckpoint"
    assert callback in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError, match="ModelCheckpoint"):  # what a bare weights-only load says
        torch.load(path, weights_only=True)
    tensors, metadata = read_state_dict(path)
    assert metadata["epoch"] == "3" and metadata["pytorch-lightning_version"] == "1.0.8"
    assert torch.equal(tensors["quantize.embedding.weight"], image_ref.state_dict()["quantize.embedding.weight"])
    vq, info = load_vq_model(path)
    assert info["codebook_size"] == 16
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert_same_as_reference(vq, image_ref, x)
    assert not any(name == "pytorch_lightning" or name.startswith("pytorch_lightning.") for name in sys.modules)


def test_a_payload_beside_the_callback_class_is_refused_and_never_runs(tmp_path, image_ref):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil_release.ckpt"
    with lightning_model_checkpoint_class() as model_checkpoint:
        torch.save({"state_dict": dict(image_ref.state_dict()),
                    "callbacks": {model_checkpoint: {"best_model_path": Exploit(str(marker))}}}, str(path))
    for reader in (read_state_dict, load_vq_model):
        with pytest.raises(ValueError, match=r"^evil_release\.ckpt: not a plain weights checkpoint.*\(it needs: .*open"):
            reader(path)
    assert not marker.exists()


def test_the_callback_class_is_an_inert_stand_in(tmp_path, image_ref):
    # a pickle may build an instance of the class and set its state; where the real class would run its
    # __setstate__ (here one that writes a file), the reader's stand-in only gets an attribute
    marker = tmp_path / "PWNED"
    path = tmp_path / "built.ckpt"
    with lightning_model_checkpoint_class() as model_checkpoint:
        model_checkpoint.__setstate__ = lambda self, state: open(state["marker"], "w").close()
        instance = model_checkpoint()
        instance.marker = str(marker)
        torch.save({"state_dict": dict(image_ref.state_dict()), "callback": instance}, str(path))
    tensors, _ = read_state_dict(path)
    assert "quantize.embedding.weight" in tensors
    assert not marker.exists()


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        load_vq_model(tmp_path / "nowhere.ckpt")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model\.onnx.*extension"):
        read_state_dict(tmp_path / "model.onnx")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="garbage.ckpt"):
        read_state_dict(tmp_path / "garbage.ckpt")
    os.makedirs(tmp_path / "empty_folder")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vq_model(tmp_path / "empty_folder")


def test_lightning_metadata_and_atomic_write(tmp_path, image_ref):
    path = write_taming_ckpt(image_ref, str(tmp_path / "last.ckpt"))
    tensors, metadata = read_state_dict(path)
    assert metadata["global_step"] == "1234" and "loss.logvar" in tensors
    write_safetensors_atomic({"a": torch.ones(2), "b": torch.ones(2)[:1]}, tmp_path / "out.safetensors", {"n": 3})
    assert load_file(str(tmp_path / "out.safetensors"))["b"].tolist() == [1.0]
    assert read_state_dict(tmp_path / "out.safetensors")[1] == {"n": "3"}
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt", "out.safetensors"]


def test_numpy_values_beside_the_weights_are_data_not_code(tmp_path, image_ref):
    import numpy as np

    checkpoint = {"state_dict": dict(image_ref.state_dict()), "epoch": 7,
                  "callbacks": {"ModelCheckpoint": {"best_model_score": np.float64(0.25), "history": np.zeros(3)}}}
    torch.save(checkpoint, str(tmp_path / "numpy_callbacks.ckpt"))
    vq, info = load_vq_model(tmp_path / "numpy_callbacks.ckpt")
    assert info["codebook_size"] == 16
