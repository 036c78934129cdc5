"""The eva-CLIP encoder (open_clip folder) through the real host: listed by Load Encoder from the host's
clip_vision folder, and the per-frame features of Encode Video and VATT Video Features at 5 frames/s
are the encoder's own of the frames shown at 0, 0.2, ... s (the official VATT pipeline's frame features)."""

import json
import os

import pytest
import torch

from comfyui_audiovisual.encoders.pretrained import load_encoder
from comfyui_audiovisual.encoders.video_frames import sample_frame_indices
from host_prompt import execute_prompt
from tiny_encoders import EVA_CLIP_EMBED, write_tiny_eva_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def eva_folders(host, tmp_path_factory):
    root = tmp_path_factory.mktemp("host-eva-clip") / "clip_vision"
    root.mkdir()
    host.folder_paths.add_model_folder_path("clip_vision", str(root))
    eva = write_tiny_eva_clip(str(root / "tiny_eva02"))
    write_tiny_eva_clip(str(root / "group" / "tiny_eva02_bin"), weights="bin", with_config=False)
    vit = write_tiny_eva_clip(str(root / "an_open_clip_vit"))  # its config names a plain ViT: not offered
    config = json.load(open(os.path.join(vit, "open_clip_config.json")))
    config["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_large_patch14_clip_336"
    json.dump(config, open(os.path.join(vit, "open_clip_config.json"), "w"))
    return {"eva": eva}


def test_load_encoder_lists_eva_clip_folders_only(host, eva_folders):
    options = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadEncoder"].INPUT_TYPES()["required"]["encoder_name"]
    names = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert "clip_vision/tiny_eva02" in names and "clip_vision/group/tiny_eva02_bin" in names
    assert "clip_vision/an_open_clip_vit" not in names


def test_encode_video_and_vatt_video_features_give_the_encoders_frame_features(host, eva_folders, video_file):
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": video_file}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny_eva02"}},
        "4": {"class_type": "AV_EncodeVideo", "inputs": {"encoder": ["3", 0], "video": ["1", 0], "fps": 24.0,
                                                         "sample_rate_hz": 5.0, "aggregation": "per-frame"}},
        "5": {"class_type": "AV_VATTVideoFeatures", "inputs": {"encoder": ["3", 0], "video": ["1", 0], "fps": 24.0,
                                                               "rate_hz": 5.0, "tokens": 0}},
        "6": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/group/tiny_eva02_bin"}},
        "7": {"class_type": "AV_EncodeVideo", "inputs": {"encoder": ["6", 0], "video": ["1", 0], "fps": 24.0,
                                                         "sample_rate_hz": 5.0, "aggregation": "per-frame"}},
        **{f"p{n}": {"class_type": "PreviewAny", "inputs": {"source": [n, 0]}} for n in ("2", "4", "5", "7")},
    }
    out = execute_prompt(host, prompt, ["2", "4", "5", "7"])[0]
    per_frame, vatt_features, from_bin = out["4"], out["5"], out["7"]
    assert (per_frame.family, per_frame.model, per_frame.modality) == ("eva_clip", "tiny_eva02", "video")
    assert tuple(per_frame.vectors.shape) == (1, 10, EVA_CLIP_EMBED)  # 2 s at 5 frames/s
    indices, _ = sample_frame_indices(32, 16, 5)
    expected = load_encoder(eva_folders["eva"]).encode_images(out["2"][indices]).vectors
    assert torch.allclose(per_frame.vectors[0], expected, atol=1e-4)  # the host may run in float16 on a GPU
    assert vatt_features.family == "eva_clip" and tuple(vatt_features.frame_vectors.shape) == (10, EVA_CLIP_EMBED)
    assert torch.allclose(vatt_features.frame_vectors, expected, atol=1e-4)
    assert abs(vatt_features.duration_s - 2.0) < 1e-6
    assert torch.allclose(from_bin.vectors, per_frame.vectors, atol=1e-4)  # the same weights from the .bin, no config
    assert (per_frame.vectors[0, 0] - per_frame.vectors[0, -1]).abs().max() > 1e-3  # the frames differ


def test_an_official_768_wide_decoder_generates_from_eva_clip_frame_features(host, run_graph, tmp_path_factory, video_file):
    """The official pipeline's shape: eva-CLIP features at 5 frames/s (768 wide) pooled to 10 tokens condition
    an official-layout VATT decoder (img_linear 768 wide, codec tables from AudioGen-like 4 x 2048 codec);
    the audio lasts the video's 2 s (the refusal of a 768-wide CLIP embedding: tests/test_vatt_decoder.py)."""
    from comfyui_audiovisual.audio.codec_tokenizer import save_codec
    from tiny_vatt import CODEC_LATENT, official_vatt_state_dict, tiny_vatt_codec

    base = tmp_path_factory.mktemp("eva-vatt")
    write_tiny_eva_clip(str(base / "clip_vision" / "tiny_eva02_768"), embed=768)
    save_codec(tiny_vatt_codec(seed=0), str(base / "codecs" / "tiny_vatt_codec"))
    (base / "vatt").mkdir()
    state = official_vatt_state_dict(0, dim=32, heads=1, encoder_layers=1, decoder_layers=1, codebooks=4, vocab=2048,
                                     latent=CODEC_LATENT, video_dim=768)
    torch.save({"state_dict": state, "epoch": 1}, base / "vatt" / "vatt_eva_official.ckpt")
    for key, sub in (("clip_vision", "clip_vision"), ("av_codecs", "codecs"), ("av_vatt", "vatt")):
        host.folder_paths.add_model_folder_path(key, str(base / sub))
    graph = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": video_file}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny_eva02_768"}},
        "3": {"class_type": "AV_LoadCodec", "inputs": {"codec_name": "tiny_vatt_codec"}},
        "4": {"class_type": "AV_LoadVATT", "inputs": {"model_name": "vatt_eva_official.ckpt"}},
        "5": {"class_type": "AV_VATTVideoFeatures", "inputs": {"encoder": ["2", 0], "video": ["1", 0], "fps": 24.0,
                                                               "rate_hz": 5.0, "tokens": 10}},
        "6": {"class_type": "AV_VATTSampler", "inputs": {"vatt": ["4", 0], "codec": ["3", 0], "video_features": ["5", 0],
                                                        "seed": 0, "steps": 2, "cfg": 5.0, "top_k": 256, "temperature": 25.5,
                                                        "duration_s": 0.0}},
        "7": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["6", 0], "filename_prefix": "audiovisual/vatt_eva"}},
    }
    written = run_graph(graph, out_dir=tmp_path_factory.mktemp("eva-vatt-out"))
    import wave

    with wave.open(written["7"][0]) as f:
        assert (f.getframerate(), f.getnframes()) == (16000, 2 * 16000)
