"""The eva-CLIP image encoder (encoders/eva_clip.py) on tiny random towers in open_clip's Hub layout:
features equal timm's own forward of the same weights after open_clip's preprocessing written out
step by step with PIL; .bin and weights-only folders; the architecture read from the weights agrees
with timm's registry for the published EVA02-CLIP models; wrong files fail with one line naming them."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from comfyui_audiovisual.encoders import eva_clip
from comfyui_audiovisual.encoders.pretrained import load_encoder
from tiny_encoders import (EVA_CLIP_EMBED, EVA_CLIP_IMAGE_SIZE, OPENAI_MEAN, OPENAI_STD, eva_clip_open_clip_config,
                           tiny_eva_clip_trunk, write_tiny_clip, write_tiny_eva_clip)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def open_clip_reference_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """open_clip's eval transform of each frame, written out with PIL and numpy: the 8-bit picture;
    Resize(size) = shortest side to `size`, the other int(size * long / short), PIL bicubic; CenterCrop
    at round((side - size) / 2); ToTensor (/255, CHW); Normalize (OPENAI_DATASET_MEAN / STD)."""
    from PIL import Image

    out = []
    for frame in images:
        picture = Image.fromarray((frame.numpy() * 255).round().astype(np.uint8), "RGB")
        width, height = picture.size
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        picture = picture.resize((new_w, new_h), Image.BICUBIC)
        left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
        picture = picture.crop((left, top, left + size, top + size))
        array = np.asarray(picture, dtype=np.float32) / 255.0
        array = (array - np.array(OPENAI_MEAN, dtype=np.float32)) / np.array(OPENAI_STD, dtype=np.float32)
        out.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(out)


@pytest.fixture(scope="module")
def frames():
    generator = torch.Generator().manual_seed(3)
    # not square, odd crop offsets (71 -> 56 x 99: left (99 - 56) / 2 = 21.5), values on the 8-bit grid like decoded video
    return (torch.randint(0, 256, (3, 40, 71, 3), generator=generator).float() / 255.0)


@pytest.fixture(scope="module")
def reference(frames):
    """timm's forward of the tiny trunk (the weights written to the folders, seed 0) on the reference pixels."""
    with torch.no_grad():
        return tiny_eva_clip_trunk(0)(open_clip_reference_pixels(frames, EVA_CLIP_IMAGE_SIZE))


def test_features_equal_timms_forward_after_open_clips_preprocessing(tmp_path, frames, reference):
    encoder = load_encoder(write_tiny_eva_clip(str(tmp_path / "eva02_tiny")))
    embedding = encoder.encode_images(frames)
    assert (embedding.family, embedding.model, embedding.modality) == ("eva_clip", "eva02_tiny", "image")
    assert tuple(embedding.vectors.shape) == (3, EVA_CLIP_EMBED)
    assert torch.allclose(embedding.vectors, reference, atol=1e-5), (embedding.vectors - reference).abs().max()
    assert encoder.modalities == ("image",) and encoder.image_size == EVA_CLIP_IMAGE_SIZE
    assert float(embedding.vectors.norm(dim=-1).std()) > 0  # open_clip's encode_image default: not normalised
    with pytest.raises(ValueError, match="is an eva-CLIP encoder; it encodes image, not text"):
        encoder.check_modality("text")


def test_the_bin_file_and_a_folder_without_config_give_the_same_features(tmp_path, frames, reference):
    from_bin = load_encoder(write_tiny_eva_clip(str(tmp_path / "bin"), weights="bin"))
    assert torch.allclose(from_bin.encode_images(frames).vectors, reference, atol=1e-5)
    inferred = load_encoder(write_tiny_eva_clip(str(tmp_path / "weights_only"), with_config=False))
    trunk = inferred.module.trunk
    assert (trunk.embed_dim, len(trunk.blocks), trunk.blocks[0].attn.num_heads, trunk.rope.ref_feat_shape) == (128, 2, 2, (16, 16))
    assert torch.allclose(inferred.encode_images(frames).vectors, reference, atol=1e-5)
    assert inferred.fingerprint == from_bin.fingerprint  # the same weights, the same space


def test_both_files_present_reads_the_safetensors(tmp_path, frames, reference):
    folder = write_tiny_eva_clip(str(tmp_path / "both"))
    with open(os.path.join(folder, "open_clip_pytorch_model.bin"), "wb") as f:
        f.write(b"not a checkpoint")
    assert torch.allclose(load_encoder(folder).encode_images(frames).vectors, reference, atol=1e-5)


@pytest.mark.parametrize("name", ["eva02_base_patch16_clip_224", "eva02_large_patch14_clip_224", "eva02_large_patch14_clip_336"])
def test_the_architecture_read_from_published_weights_is_timms(name):
    """Without open_clip_config.json the arguments come from the weights' shapes: for every EVA02-CLIP
    (SwiGLU) model of timm they give the registry's architecture (built on the meta device: no memory)."""
    import timm
    from timm.models.eva import Eva

    with torch.device("meta"):
        published = timm.create_model(name, pretrained=False, num_classes=768 if "large" in name else 512, global_pool="token")
        shapes = {key: tuple(value.shape) for key, value in published.state_dict().items()}
        arguments = eva_clip.infer_eva_arguments(shapes, name)
        rebuilt = Eva(global_pool="token", num_classes=shapes["head.weight"][0], **arguments)
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == shapes
    for a, b in ((published, rebuilt),):
        assert a.blocks[0].attn.num_heads == b.blocks[0].attn.num_heads
        assert (a.rope.feat_shape, a.rope.ref_feat_shape) == (b.rope.feat_shape, b.rope.ref_feat_shape)
        assert type(a.blocks[0].mlp) is type(b.blocks[0].mlp) and type(a.norm) is type(b.norm) and type(a.fc_norm) is type(b.fc_norm)


def one_line(error, match, folder):
    """load_encoder(folder) raises `error` with one line matching `match`."""
    with pytest.raises(error, match=match) as raised:
        load_encoder(str(folder))
    assert "\n" not in str(raised.value), str(raised.value)


def test_missing_or_wrong_files_fail_with_one_line_naming_them(tmp_path):
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "open_clip_config.json").write_text(json.dumps(eva_clip_open_clip_config()))
    one_line(FileNotFoundError, r"config_only' has no open_clip_model.safetensors or open_clip_pytorch_model.bin; expected", str(config_only))

    truncated = write_tiny_eva_clip(str(tmp_path / "truncated"))
    path = os.path.join(truncated, "open_clip_model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    one_line(ValueError, "open_clip_model.safetensors: not a readable safetensors file, truncated", truncated)

    bad_json = write_tiny_eva_clip(str(tmp_path / "bad_json"))
    (tmp_path / "bad_json" / "open_clip_config.json").write_text("{not json")
    one_line(ValueError, r"bad_json/open_clip_config.json: not readable as JSON", bad_json)
    (tmp_path / "bad_json" / "open_clip_config.json").write_text("{}")
    one_line(ValueError, r"bad_json/open_clip_config.json: no model_cfg.vision_cfg; expected open_clip's config", bad_json)

    other_model = write_tiny_eva_clip(str(tmp_path / "other_model"))
    config = json.loads((tmp_path / "other_model" / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_large_patch14_clip_336"
    (tmp_path / "other_model" / "open_clip_config.json").write_text(json.dumps(config))
    one_line(ValueError, "timm_model_name 'vit_large_patch14_clip_336' is not an EVA model", other_model)

    wrong_size = write_tiny_eva_clip(str(tmp_path / "wrong_size"))
    config = json.loads((tmp_path / "wrong_size" / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["timm_model_kwargs"]["depth"] = 3
    (tmp_path / "wrong_size" / "open_clip_config.json").write_text(json.dumps(config))
    one_line(ValueError, r"open_clip_model.safetensors: the weights do not fit the eva-CLIP tower "
                                         r"eva02_large_patch14_clip_336 \(missing visual.trunk.blocks.2", wrong_size)

    # an open_clip ViT (not an eva trunk) without a config: named, with what is expected
    from safetensors.torch import save_file

    vit = tmp_path / "vit"
    vit.mkdir()
    save_file({"visual.conv1.weight": torch.zeros(8, 3, 4, 4), "logit_scale": torch.zeros(())}, str(vit / "open_clip_model.safetensors"))
    one_line(ValueError, r"open_clip_model.safetensors: no visual.trunk.\* tensors; expected an open_clip folder", str(vit))

    # a .bin that pickles code is never unpickled (weights_only)
    pickled_code = tmp_path / "pickled_code"
    pickled_code.mkdir()
    torch.save({"visual.trunk.pos_embed": torch.zeros(1, 17, 8), "hook": os.getcwd}, str(pickled_code / "open_clip_pytorch_model.bin"))
    one_line(ValueError, "open_clip_pytorch_model.bin: not a plain weights checkpoint", pickled_code)

    # a transformers folder still loads as before; an empty folder names both kinds
    assert load_encoder(write_tiny_clip(str(tmp_path / "clip"))).family == "clip"
    (tmp_path / "empty").mkdir()
    one_line(FileNotFoundError, "empty' has no config.json; expected a transformers model folder .* open_clip", str(tmp_path / "empty"))


def test_without_timm_the_error_names_the_package(tmp_path, monkeypatch):
    folder = write_tiny_eva_clip(str(tmp_path / "eva"))
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match=r"eva-CLIP encoders need the Python package timm \(pip install timm"):
        load_encoder(folder)


@pytest.mark.parametrize("proj", ["linear", "none"])
def test_a_separate_linear_projection_or_none_as_open_clip_builds_them(tmp_path, frames, proj):
    """timm_proj "linear": the trunk has no head and visual.head.proj (no bias) follows; "none": the trunk's
    pooled features as they are (TimmModel in open_clip's timm_model.py)."""
    import timm
    from safetensors.torch import save_file
    from tiny_encoders import EVA_CLIP_TIMM_NAME, EVA_CLIP_TINY_KWARGS

    torch.manual_seed(5)
    trunk = timm.create_model(EVA_CLIP_TIMM_NAME, pretrained=False, num_classes=0, global_pool="token", **EVA_CLIP_TINY_KWARGS).eval()
    with torch.no_grad():
        for parameter in trunk.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    head = torch.nn.Linear(trunk.embed_dim, EVA_CLIP_EMBED, bias=False)
    state = {f"visual.trunk.{k}": v.contiguous() for k, v in trunk.state_dict().items()}
    if proj == "linear":
        state["visual.head.proj.weight"] = head.weight.detach().clone()
    folder = tmp_path / proj
    folder.mkdir()
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = eva_clip_open_clip_config()
    config["model_cfg"]["vision_cfg"]["timm_proj"] = proj
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with torch.no_grad():
        pooled = trunk(open_clip_reference_pixels(frames, EVA_CLIP_IMAGE_SIZE))
        expected = head(pooled) if proj == "linear" else pooled
    features = load_encoder(str(folder)).encode_images(frames).vectors
    assert features.shape == expected.shape == (3, EVA_CLIP_EMBED if proj == "linear" else trunk.embed_dim)
    assert torch.allclose(features, expected, atol=1e-5)
