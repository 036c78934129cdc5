"""ComfyUI's single-file encoders (clip_vision/*.safetensors, text_encoders/clip_l / t5xxl_*), read by
encoders/single_file.py without the host: the kind and architecture come from the weights, fp16 / fp8 /
scaled fp8 as the host reads them, and the vectors equal the transformers model's on the same values."""

import pytest
import torch
from safetensors.torch import save_file

from comfyui_audiovisual.encoders.preprocessing import clip_pixel_values
from comfyui_audiovisual.encoders.single_file import load_single_file_encoder, single_file_kind
from tiny_encoders import (SINGLE_CLIP_TEXT, SINGLE_T5, SINGLE_VISION, host_tokenizer_dirs, write_open_clip_vision,
                           write_single_clip_text, write_single_clip_vision, write_single_t5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizers():
    clip, t5 = host_tokenizer_dirs()
    return {"clip_tokenizer": clip, "t5_tokenizer": t5}


def in_float32(encoder):
    encoder.module.float()
    return encoder


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_clip_vision_file_gives_the_image_embeds_of_its_weights(tmp_path, dtype):
    path, reference = write_single_clip_vision(str(tmp_path / "clip_vision_h.safetensors"), dtype=dtype)
    assert single_file_kind(path) == "clip_vision"
    encoder = load_single_file_encoder(path)
    assert (encoder.family, encoder.model_name, encoder.modalities) == ("clip", "clip_vision_h", ("image",))
    assert encoder.config["num_attention_heads"] == SINGLE_VISION["num_attention_heads"]  # width / 64
    assert encoder.image_size == SINGLE_VISION["image_size"]  # from the position table: (32 / 8) ** 2 + 1
    images = torch.rand(2, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    embedding = in_float32(encoder).encode_images(images)
    with torch.no_grad():
        expected = reference(pixel_values=clip_pixel_values(images, 32, encoder.image_mean, encoder.image_std)).image_embeds
    assert embedding.vectors.shape == (2, SINGLE_VISION["projection_dim"])
    assert torch.allclose(embedding.vectors, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"'clip_vision_h' is a CLIP encoder; it encodes image, not text \(a CLIP vision file"):
        encoder.check_modality("text")


def test_clip_l_text_file_gives_the_pooled_output_with_the_hosts_tokenizer(tmp_path, tokenizers):
    path, reference = write_single_clip_text(str(tmp_path / "clip_l.safetensors"))
    assert single_file_kind(path) == "clip_text"
    encoder = in_float32(load_single_file_encoder(path, **tokenizers))
    assert (encoder.family, encoder.model_name, encoder.modalities) == ("clip_text", "clip_l", ("text",))
    embedding = encoder.encode_text(["a dog barking in a park", "rain"])
    tokens = encoder.tokenizer(["a dog barking in a park", "rain"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        expected = reference(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    assert embedding.vectors.shape == (2, SINGLE_CLIP_TEXT["hidden_size"])  # pooled, the file's text_projection unused
    assert torch.allclose(embedding.vectors, expected, atol=1e-5)
    assert tokens["input_ids"][0, 0] == 49406 and not torch.allclose(embedding.vectors[0], embedding.vectors[1])


@pytest.mark.parametrize("dtype, scaled", [(torch.float16, False), (torch.bfloat16, False), (torch.float8_e4m3fn, False),
                                           (torch.float8_e4m3fn, True), (torch.float8_e5m2, False)])
def test_t5xxl_file_gives_the_token_sequence_in_each_published_dtype(tmp_path, tokenizers, dtype, scaled):
    path, reference = write_single_t5(str(tmp_path / "t5xxl.safetensors"), dtype=dtype, scaled=scaled)
    assert single_file_kind(path) == "t5"
    encoder = load_single_file_encoder(path, **tokenizers)
    at_rest = next(encoder.module.parameters()).dtype
    assert at_rest == (torch.bfloat16 if dtype == torch.bfloat16 else torch.float16)  # fp8 widened once, exactly
    assert encoder.config["num_heads"] == SINGLE_T5["num_heads"] and encoder.config["num_layers"] == SINGLE_T5["num_layers"]
    embedding = in_float32(encoder).encode_text(["a cat purring"], sequence_length=16)
    tokens = encoder.tokenizer(["a cat purring"], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        expected = reference(input_ids=tokens["input_ids"]).last_hidden_state
    assert embedding.vectors.shape == (1, 16, SINGLE_T5["d_model"])
    # scaled fp8: weight x scale is rounded to float16 once; otherwise the file's values exactly
    tolerance = 5e-3 if scaled else 1e-5
    assert torch.allclose(embedding.vectors, expected, atol=tolerance), float((embedding.vectors - expected).abs().max())


def test_files_that_are_no_encoder_are_not_listed_and_refused_naming_the_file(tmp_path, tokenizers):
    other = tmp_path / "some_lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(4, 4)}, str(other))
    umt5 = tmp_path / "umt5_xxl.safetensors"  # Wan's UMT5: a bias table per block, another vocabulary
    write_single_t5(str(umt5))
    from safetensors.torch import load_file

    tensors = load_file(str(umt5))
    tensors["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = torch.zeros(32, 2, dtype=torch.float16)
    save_file(tensors, str(umt5))
    (tmp_path / "notes.safetensors").write_bytes(b"not a safetensors file")
    for path in (other, umt5, tmp_path / "notes.safetensors"):
        assert single_file_kind(str(path)) is None
        with pytest.raises(ValueError, match=rf"^{path.name}: not an encoder file this pack reads; expected a CLIP vision"):
            load_single_file_encoder(str(path), **tokenizers)


def test_a_text_file_without_its_tokenizer_and_broken_weights_say_what_is_missing(tmp_path, tokenizers):
    path, _ = write_single_t5(str(tmp_path / "t5xxl_fp16.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"^t5xxl_fp16\.safetensors: a T5 encoder .* needs tokenizer files; no "
                                                r"tokenizer folder was given$"):
        load_single_file_encoder(path)
    from safetensors.torch import load_file

    tensors = load_file(path)
    del tensors["encoder.block.1.layer.1.layer_norm.weight"]
    save_file(tensors, str(tmp_path / "cut.safetensors"))
    with pytest.raises(ValueError, match=r"^cut\.safetensors: missing key 'encoder\.block\.1\.layer\.1\.layer_norm\.weight'"):
        load_single_file_encoder(str(tmp_path / "cut.safetensors"), **tokenizers)


def _published_shapes(config: dict, tower: str) -> dict:
    """The state-dict shapes of a published CLIP tower, from its config (no tensors)."""
    hidden, layers, inner = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    if tower == "vision":
        patch, side = config["patch_size"], config["image_size"] // config["patch_size"]
        shapes = {"vision_model.embeddings.patch_embedding.weight": (hidden, 3, patch, patch),
                  "vision_model.embeddings.position_embedding.weight": (side * side + 1, hidden),
                  "visual_projection.weight": (config["projection_dim"], hidden)}
        prefix = "vision_model.encoder.layers"
    else:
        shapes = {"text_model.embeddings.token_embedding.weight": (config["vocab_size"], hidden),
                  "text_model.embeddings.position_embedding.weight": (config["max_position_embeddings"], hidden)}
        prefix = "text_model.encoder.layers"
    for layer in range(layers):
        shapes[f"{prefix}.{layer}.mlp.fc1.weight"] = (inner, hidden)
    return shapes


@pytest.mark.parametrize("name, tower", [("clip_vision_config_vitl.json", "vision"), ("clip_vision_config_vitl_336.json", "vision"),
                                         ("clip_vision_config_h.json", "vision"), ("clip_vision_config_g.json", "vision"),
                                         ("sd1_clip_config.json", "text"), ("clip_config_bigg.json", "text")])
def test_the_architecture_read_from_published_shapes_is_the_hosts_own_config(name, tower):
    import json
    import os

    from comfyui_audiovisual.encoders.single_file import clip_text_config, clip_vision_config
    from comfyui_audiovisual.runner.host_location import find_host_dir

    host_config = json.load(open(os.path.join(find_host_dir(), "comfy", name), encoding="utf-8"))
    host_config.setdefault("image_size", 224)
    derived = (clip_vision_config if tower == "vision" else clip_text_config)(_published_shapes(host_config, tower))
    for field in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "hidden_act"):
        assert derived[field] == host_config[field], (field, derived[field], host_config[field])
    if tower == "vision":
        for field in ("image_size", "patch_size", "projection_dim"):
            assert derived[field] == host_config[field], field


@pytest.mark.parametrize("name", ["t5_config_xxl.json", "t5_old_config_xxl.json"])
def test_the_t5_read_from_published_shapes_is_the_hosts_own_config(name):
    import json
    import os

    from comfyui_audiovisual.encoders.single_file import t5_config
    from comfyui_audiovisual.runner.host_location import find_host_dir

    host = json.load(open(os.path.join(find_host_dir(), "comfy", "text_encoders", name), encoding="utf-8"))
    inner, gated = host["num_heads"] * host["d_kv"], host["is_gated_act"]
    shapes = {"shared.weight": (host["vocab_size"], host["d_model"]),
              "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (host["relative_attention_num_buckets"], host["num_heads"])}
    for block in range(host["num_layers"]):
        shapes[f"encoder.block.{block}.layer.0.SelfAttention.q.weight"] = (inner, host["d_model"])
        for wi in (("wi_0", "wi_1") if gated else ("wi",)):
            shapes[f"encoder.block.{block}.layer.1.DenseReluDense.{wi}.weight"] = (host["d_ff"], host["d_model"])
    derived = t5_config(shapes)
    for field in ("d_ff", "d_kv", "d_model", "num_heads", "num_layers", "relative_attention_num_buckets", "vocab_size"):
        assert derived[field] == host[field], field
    assert derived["feed_forward_proj"] == ("gated-gelu" if gated else "relu")  # gated-gelu: tanh GELU, as the host's


def test_an_open_clip_vision_checkpoint_is_read_as_the_host_converts_it(tmp_path):
    path, reference = write_open_clip_vision(str(tmp_path / "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"))
    assert single_file_kind(path) == "clip_vision"
    encoder = in_float32(load_single_file_encoder(path))
    images = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(pixel_values=clip_pixel_values(images, 32, encoder.image_mean, encoder.image_std)).image_embeds
    assert torch.allclose(encoder.encode_images(images).vectors, expected, atol=1e-5)
