"""ComfyUI's single-file encoders in the host's own folders (clip_vision/*.safetensors,
text_encoders/clip_l / t5xxl_*), listed by Load Encoder and run through the host; the host's own
CLIP Vision Encode output taken as an embedding (issue 17)."""

import asyncio
import json
import os
import uuid

import pytest
import torch
from safetensors.torch import save_file

from comfyui_audiovisual.encoders.single_file import load_single_file_encoder, read_weights
from host_prompt import execute_prompt
from tiny_encoders import (SINGLE_CLIP_TEXT, SINGLE_T5, SINGLE_VISION, host_tokenizer_dirs, write_single_clip_text,
                           write_single_clip_vision, write_single_t5, write_tiny_t5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLE_IMAGE = "audiovisual_example_scene.png"


@pytest.fixture(scope="module")
def files(host, tmp_path_factory):
    root = tmp_path_factory.mktemp("single-file-encoders")
    for key in ("clip_vision", "text_encoders"):
        (root / key).mkdir()
        host.folder_paths.add_model_folder_path(key, str(root / key))
    made = {
        "vision": write_single_clip_vision(str(root / "clip_vision" / "clip_vision_h.safetensors"))[0],
        "vision_fp8": write_single_clip_vision(str(root / "clip_vision" / "sdxl" / "clip_vision_g.safetensors"),
                                               seed=1, dtype=torch.float8_e4m3fn)[0],
        "clip_l": write_single_clip_text(str(root / "text_encoders" / "clip_l.safetensors"))[0],
        "t5": write_single_t5(str(root / "text_encoders" / "t5xxl_fp16.safetensors"))[0],
        "t5_scaled": write_single_t5(str(root / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors"),
                                     dtype=torch.float8_e4m3fn, scaled=True)[0],
    }
    save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(root / "text_encoders" / "a_lora.safetensors"))
    write_single_clip_text(str(root / "clip_vision" / "misplaced_clip_l.safetensors"))  # a text tower in clip_vision
    write_tiny_t5(str(root / "text_encoders" / "t5_folder"))  # a transformers folder: listed as the folder only
    return made


def encoder_names(host) -> list[str]:
    options = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadEncoder"].INPUT_TYPES()["required"]["encoder_name"]
    return options[0] if isinstance(options[0], list) else options[1]["options"]


def test_load_encoder_lists_the_single_files_it_can_load_and_nothing_else(host, files):
    names = encoder_names(host)
    for name in ("clip_vision/clip_vision_h.safetensors", "clip_vision/sdxl/clip_vision_g.safetensors",
                 "text_encoders/clip_l.safetensors", "text_encoders/t5xxl_fp16.safetensors",
                 "text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders/t5_folder"):
        assert name in names, name
    for name in ("text_encoders/a_lora.safetensors", "clip_vision/misplaced_clip_l.safetensors",
                 "text_encoders/t5_folder/model.safetensors"):
        assert name not in names, name


def test_single_files_encode_through_the_host_as_the_plain_loader_does(host, files):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/clip_vision_h.safetensors"}},
        "3": {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors"}},
        "5": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["4", 0], "text": "a cat purring", "t5_tokens": 16}},
        "6": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/clip_l.safetensors"}},
        "7": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["6", 0], "text": "a cat purring", "t5_tokens": 0}},
        "8": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/sdxl/clip_vision_g.safetensors"}},
        "9": {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["8", 0], "image": ["1", 0]}},
        **{f"p{n}": {"class_type": "PreviewAny", "inputs": {"source": [n, 0]}} for n in ("3", "5", "7", "9")},
    }
    out = execute_prompt(host, prompt, ["1", "3", "5", "7", "9"])[0]
    clip_tokenizer, t5_tokenizer = host_tokenizer_dirs()
    image, t5, clip_text = out["3"], out["5"], out["7"]
    assert (image.family, image.model, image.modality, tuple(image.vectors.shape)) == \
        ("clip", "clip_vision_h", "image", (1, SINGLE_VISION["projection_dim"]))
    plain_encoder = load_single_file_encoder(files["vision"])
    plain_encoder.module.float()
    assert torch.allclose(image.vectors, plain_encoder.encode_images(out["1"]).vectors, atol=1e-4)
    assert (t5.family, t5.model, tuple(t5.vectors.shape)) == ("t5", "t5xxl_fp8_e4m3fn_scaled", (1, 16, SINGLE_T5["d_model"]))
    plain_t5 = load_single_file_encoder(files["t5_scaled"], clip_tokenizer, t5_tokenizer)
    plain_t5.module.float()
    assert torch.allclose(t5.vectors, plain_t5.encode_text(["a cat purring"], sequence_length=16).vectors, atol=1e-5)
    assert (clip_text.family, clip_text.model, tuple(clip_text.vectors.shape)) == ("clip_text", "clip_l", (1, SINGLE_CLIP_TEXT["hidden_size"]))
    assert out["9"].model == "clip_vision_g" and not torch.allclose(out["9"].vectors, image.vectors, atol=1e-3)


def test_the_hosts_clip_vision_output_is_the_same_embedding_as_encode_image(host, files, tmp_path):
    # The host's CLIP Vision Encode output wires into the pack (validated as the editor would send it) ...
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}},
        "3": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["2", 0], "image": ["1", 0], "crop": "center"}},
        "4": {"class_type": "AV_CLIPVisionOutputToEmbedding", "inputs": {"clip_vision_output": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    ok, error, _, node_errors = asyncio.run(host.execution.validate_prompt(uuid.uuid4().hex, prompt, None))
    assert ok, (error, node_errors)
    # ... and gives what Encode Image gives for the same weights. (The host's loader picks its config by
    # layer count, so it cannot read a tiny file; its ClipVisionModel is built here from the tiny
    # architecture, as that loader builds one from clip_vision_config_h.json.)
    import comfy.clip_vision

    config = tmp_path / "tiny_clip_vision.json"
    config.write_text(json.dumps({**SINGLE_VISION, "model_type": "clip_vision_model", "layer_norm_eps": 1e-5,
                                  "num_channels": 3}))
    host_model = comfy.clip_vision.ClipVisionModel(str(config))
    missing, _unexpected = host_model.load_sd(read_weights(files["vision"]))
    assert not missing
    image = host.nodes.LoadImage().load_image(EXAMPLE_IMAGE)[0]
    host_output = host.nodes.CLIPVisionEncode().encode(host_model, image, "center")[0]
    from comfyui_audiovisual.nodes.encoders import CLIPVisionOutputToEmbedding

    embedding = CLIPVisionOutputToEmbedding.execute(host_output).result[0]
    assert embedding.weights == ""  # without the model: unknown weights
    named = CLIPVisionOutputToEmbedding.execute(host_output, clip_vision=host_model).result[0]
    assert named.weights == load_single_file_encoder(files["vision"]).fingerprint  # the host's copy: the same weights
    assert named.weights != load_single_file_encoder(files["vision_fp8"]).fingerprint
    ours = load_single_file_encoder(files["vision"])
    ours.module.float()
    expected = ours.encode_images(image).vectors
    assert (embedding.family, embedding.modality, tuple(embedding.vectors.shape)) == ("clip", "image", tuple(expected.shape))
    # the host rounds the resized picture to 8 bits before normalising; the rest is the same computation
    assert torch.allclose(embedding.vectors, expected, atol=2e-2, rtol=0), float((embedding.vectors - expected).abs().max())
    other = load_single_file_encoder(files["vision_fp8"])
    other.module.float()
    assert not torch.allclose(embedding.vectors, other.encode_images(image).vectors, atol=2e-2)
    with pytest.raises(ValueError, match=r"^CLIP Vision Output to Embedding: expected the host's CLIP_VISION_OUTPUT"):
        CLIPVisionOutputToEmbedding.execute(object())


def test_the_open_clip_layout_is_converted_as_the_hosts_clip_vision_loader_converts_it(host, tmp_path):
    import comfy.clip_vision
    from safetensors.torch import load_file

    from comfyui_audiovisual.encoders.single_file import from_open_clip_vision
    from tiny_encoders import write_open_clip_vision

    path, _ = write_open_clip_vision(str(tmp_path / "open_clip_vision.safetensors"))
    ours = from_open_clip_vision(load_file(path))
    theirs = comfy.clip_vision.convert_to_transformers(load_file(path), "visual.")
    theirs = {k: v for k, v in theirs.items() if k.startswith(("vision_model.", "visual_projection."))}
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
