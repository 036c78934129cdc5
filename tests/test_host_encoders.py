"""The encoder nodes through the real host: tiny random CLIP / CLAP / AST / T5 folders in the host's
own model folders (clip_vision, audio_encoders, text_encoders) and the pack's (av_encoders), loaded by
AV_LoadEncoder and run by the host's executor on the host's own IMAGE / AUDIO / VIDEO nodes."""

import os
import uuid
from fractions import Fraction

import pytest
import torch

from comfyui_audiovisual.encoders.pretrained import load_encoder
from comfyui_audiovisual.encoders.video_frames import sample_frame_indices
from tiny_encoders import (AST_HIDDEN, CLAP_PROJECTION, CLIP_PROJECTION, CLIP_TEXT_WIDTH, T5_WIDTH, write_not_an_encoder,
                           write_tiny_ast, write_tiny_clap, write_tiny_clip, write_tiny_clip_text, write_tiny_t5)
from host_prompt import execute_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLE_IMAGE = "audiovisual_example_scene.png"  # installed in the host's input folder by the pack
EXAMPLE_AUDIO = "audiovisual_example_scene.wav"


@pytest.fixture(scope="module")
def encoder_folders(host, tmp_path_factory):
    """Tiny encoders in four model folder keys; {role: (combo name, folder path)}."""
    root = tmp_path_factory.mktemp("host-encoders")
    roots = {key: root / key for key in ("clip_vision", "audio_encoders", "text_encoders", "av_encoders")}
    for key, path in roots.items():
        path.mkdir()
        host.folder_paths.add_model_folder_path(key, str(path))
    made = {
        "clip": ("clip_vision/tiny_clip", write_tiny_clip(str(roots["clip_vision"] / "tiny_clip"))),
        "clip_same_name": ("av_encoders/tiny_clip", write_tiny_clip(str(roots["av_encoders"] / "tiny_clip"), seed=7)),
        "clap": ("audio_encoders/tiny_clap", write_tiny_clap(str(roots["audio_encoders"] / "tiny_clap"))),
        "ast": ("av_encoders/tiny_ast", write_tiny_ast(str(roots["av_encoders"] / "tiny_ast"))),
        "t5": ("text_encoders/tiny_t5", write_tiny_t5(str(roots["text_encoders"] / "tiny_t5"))),
        "clip_text": ("text_encoders/flux/tiny_clip_text", write_tiny_clip_text(str(roots["text_encoders"] / "flux" / "tiny_clip_text"))),
        "bert": ("text_encoders/a_bert", write_not_an_encoder(str(roots["text_encoders"] / "a_bert"))),
    }
    (roots["clip_vision"] / "not_a_model").mkdir()  # a folder without config.json is not listed
    return made


def preview(*node_ids):
    return {f"p{n}": {"class_type": "PreviewAny", "inputs": {"source": [n, 0]}} for n in node_ids}


def test_load_encoder_lists_folders_of_every_key_with_their_key_prefix(host, encoder_folders):
    options = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadEncoder"].INPUT_TYPES()["required"]["encoder_name"]
    names = options[0] if isinstance(options[0], list) else options[1]["options"]
    for role, (name, _path) in encoder_folders.items():
        assert (name in names) == (role != "bert"), name  # a folder of another kind is not offered
    assert "clip_vision/not_a_model" not in names
    assert "clip_vision/tiny_clip" in names and "av_encoders/tiny_clip" in names  # equal folder names do not collide


def test_image_and_text_encode_through_the_host_as_the_plain_encoder_does(host, encoder_folders):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny_clip"}},
        "3": {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["2", 0], "text": "a dog barking", "t5_tokens": 0}},
        "5": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "av_encoders/tiny_clip"}},
        "6": {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["5", 0], "image": ["1", 0]}},
        **preview("3", "4", "6"),
    }
    out = execute_prompt(host, prompt, ["1", "3", "4", "6"])[0]
    plain = load_encoder(encoder_folders["clip"][1])
    image, text = out["3"], out["4"]
    assert (image.family, image.model, image.modality, tuple(image.vectors.shape)) == ("clip", "tiny_clip", "image", (1, CLIP_PROJECTION))
    assert torch.allclose(image.vectors, plain.encode_images(out["1"]).vectors, atol=1e-5)
    assert (text.family, text.modality, tuple(text.vectors.shape)) == ("clip", "text", (1, CLIP_PROJECTION))
    assert torch.allclose(text.vectors, plain.encode_text(["a dog barking"]).vectors, atol=1e-5)
    assert not torch.allclose(out["6"].vectors, image.vectors, atol=1e-3)  # the other tiny_clip: other weights


def test_audio_encodes_through_the_host_with_clap_and_ast(host, encoder_folders):
    prompt = {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": EXAMPLE_AUDIO}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "audio_encoders/tiny_clap"}},
        "3": {"class_type": "AV_EncodeAudio", "inputs": {"encoder": ["2", 0], "audio": ["1", 0], "long_audio": "mean"}},
        "4": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "av_encoders/tiny_ast"}},
        "5": {"class_type": "AV_EncodeAudio", "inputs": {"encoder": ["4", 0], "audio": ["1", 0], "long_audio": "mean"}},
        "6": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["2", 0], "text": "birds at dawn", "t5_tokens": 0}},
        **preview("3", "5", "6"),
    }
    out = execute_prompt(host, prompt, ["1", "3", "5", "6"])[0]
    audio = out["1"]
    assert audio["sample_rate"] == 22050  # the example clip; the encoders resample it themselves
    clap, ast, clap_text = out["3"], out["5"], out["6"]
    assert (clap.family, clap.model, tuple(clap.vectors.shape)) == ("clap", "tiny_clap", (1, CLAP_PROJECTION))
    assert torch.allclose(clap.vectors.norm(dim=-1), torch.ones(1), atol=1e-5)
    plain = load_encoder(encoder_folders["clap"][1])
    assert torch.allclose(clap.vectors, plain.encode_audio(audio["waveform"], 22050).vectors, atol=1e-5)
    assert (ast.family, tuple(ast.vectors.shape)) == ("ast", (1, 1214, AST_HIDDEN)) and ast.is_sequence
    assert (clap_text.family, clap_text.modality, tuple(clap_text.vectors.shape)) == ("clap", "text", (1, CLAP_PROJECTION))


def test_text_only_encoders_through_the_host(host, encoder_folders):
    prompt = {
        "1": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/tiny_t5"}},
        "2": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["1", 0], "text": "a cat purring", "t5_tokens": 12}},
        "3": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/flux/tiny_clip_text"}},
        "4": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["3", 0], "text": "a cat purring", "t5_tokens": 12}},
        **preview("2", "4"),
    }
    out = execute_prompt(host, prompt, ["2", "4"])[0]
    assert (out["2"].family, tuple(out["2"].vectors.shape)) == ("t5", (1, 12, T5_WIDTH))
    assert (out["4"].family, tuple(out["4"].vectors.shape)) == ("clip_text", (1, CLIP_TEXT_WIDTH))  # t5_tokens ignored


def test_video_and_frames_with_fps_sample_the_same_instants_through_the_host(host, encoder_folders, video_file):
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": video_file}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny_clip"}},
        "4": {"class_type": "AV_EncodeVideo", "inputs": {"encoder": ["3", 0], "video": ["1", 0], "fps": 24.0,
                                                         "sample_rate_hz": 5.0, "aggregation": "per-frame"}},
        "5": {"class_type": "AV_EncodeVideo", "inputs": {"encoder": ["3", 0], "frames": ["2", 0], "fps": ["2", 2],
                                                         "sample_rate_hz": 5.0, "aggregation": "mean"}},
        "6": {"class_type": "AV_EncodeVideo", "inputs": {"encoder": ["3", 0], "video": ["1", 0], "fps": 24.0,
                                                         "sample_rate_hz": 5.0, "aggregation": "middle"}},
        **preview("4", "5", "6"),
    }
    out = execute_prompt(host, prompt, ["2", "4", "5", "6"])[0]
    frames = out["2"]
    assert frames.shape == (32, 48, 64, 3)
    per_frame, mean, middle = out["4"], out["5"], out["6"]
    assert (per_frame.family, per_frame.modality, tuple(per_frame.vectors.shape)) == ("clip", "video", (1, 10, CLIP_PROJECTION))
    indices, _ = sample_frame_indices(32, 16, 5)  # 0, 3, 6, 9, 12, 16, ... (the frames shown at 0, 0.2, ... 1.8 s)
    expected = load_encoder(encoder_folders["clip"][1]).encode_images(frames[indices]).vectors
    assert torch.allclose(per_frame.vectors[0], expected, atol=1e-5)
    assert tuple(mean.vectors.shape) == (1, CLIP_PROJECTION)
    assert torch.allclose(mean.vectors[0], expected.mean(dim=0), atol=1e-5)
    assert torch.allclose(middle.vectors[0], expected[5], atol=1e-5)


def test_a_video_object_at_16_and_30_fps_gives_the_frames_at_the_right_times(host, encoder_folders):
    """The host's VIDEO type built from components: 2 s at 16 fps and at 30 fps, each frame painted
    with its own time; sampled at 5 Hz, both give the frames shown at 0, 0.2, ..., 1.8 s."""
    from comfy_api.latest import InputImpl, Types

    node = host.nodes.NODE_CLASS_MAPPINGS["AV_EncodeVideo"]
    encoder = load_encoder(encoder_folders["clip"][1])
    for fps in (16, 30):
        times = torch.arange(2 * fps) / fps
        frames = times.view(-1, 1, 1, 1).expand(-1, 32, 32, 3) / 2  # brightness = time / 2 s
        video = InputImpl.VideoFromComponents(Types.VideoComponents(images=frames, frame_rate=Fraction(fps)))
        result = node.execute(encoder=encoder, video=video, sample_rate_hz=5.0, aggregation="per-frame")
        embedding = result.args[0] if hasattr(result, "args") else result[0]
        shown = torch.floor(torch.arange(10) / 5 * fps + 1e-6) / fps  # the start of the frame shown at each instant
        assert torch.allclose(embedding.vectors[0], encoder.encode_images(shown.view(-1, 1, 1, 1).expand(-1, 32, 32, 3) / 2).vectors, atol=1e-5)
    empty = InputImpl.VideoFromComponents(Types.VideoComponents(images=torch.zeros(0, 32, 32, 3), frame_rate=Fraction(16)))
    with pytest.raises(ValueError, match="Encode Video: the video has no frames"):
        node.execute(encoder=encoder, video=empty, sample_rate_hz=5.0, aggregation="mean")


def test_a_diffusers_pipelines_text_encoders_are_listed_and_encode_with_their_sibling_tokenizers(host, tmp_path):
    from tiny_encoders import write_diffusers_text_encoders

    root = tmp_path / "diffusers"
    write_diffusers_text_encoders(str(root / "FLUX.1-dev"))
    host.folder_paths.add_model_folder_path("diffusers", str(root))
    try:
        options = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadEncoder"].INPUT_TYPES()["required"]["encoder_name"]
        names = options[0] if isinstance(options[0], list) else options[1]["options"]
        listed = sorted(name for name in names if name.startswith("diffusers/"))
        assert listed == ["diffusers/FLUX.1-dev/text_encoder", "diffusers/FLUX.1-dev/text_encoder_2"]  # not tokenizer*
        prompt = {
            "1": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "diffusers/FLUX.1-dev/text_encoder_2"}},
            "2": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["1", 0], "text": "a cat purring", "t5_tokens": 12}},
            "3": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "diffusers/FLUX.1-dev/text_encoder"}},
            "4": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["3", 0], "text": "a cat purring", "t5_tokens": 0}},
            **preview("2", "4"),
        }
        out = execute_prompt(host, prompt, ["2", "4"])[0]
    finally:
        host.folder_paths.folder_names_and_paths["diffusers"][0].remove(str(root))
    assert (out["2"].family, tuple(out["2"].vectors.shape)) == ("t5", (1, 12, T5_WIDTH))
    assert (out["4"].family, tuple(out["4"].vectors.shape)) == ("clip_text", (1, CLIP_TEXT_WIDTH))


def test_wrong_modality_wrong_folder_and_missing_video_fail_with_the_node_name(host, run_graph, encoder_folders, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    wrong_modality = {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": EXAMPLE_AUDIO}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny_clip"}},
        "3": {"class_type": "AV_EncodeAudio", "inputs": {"encoder": ["2", 0], "audio": ["1", 0], "long_audio": "mean"}},
        **preview("3"),
    }
    with pytest.raises(WorkflowError) as e:
        run_graph(wrong_modality, out_dir=tmp_path / "a")
    assert "Encode Audio: 'tiny_clip' is a CLIP encoder; it encodes image, text, not audio" in str(e.value)
    wrong_folder = {
        "1": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/a_bert"}},
        "2": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["1", 0], "text": "x", "t5_tokens": 0}},
        **preview("2"),
    }
    with pytest.raises(WorkflowError) as e:
        run_graph(wrong_folder, out_dir=tmp_path / "b")
    assert "node 1 (AV_LoadEncoder)" in str(e.value) and "Load Encoder:" in str(e.value)
    assert "model_type 'bert'" in str(e.value) and "supported encoder kinds" in str(e.value)
    import asyncio  # refused by the host's validation, before anything runs

    ok, _error, _outputs, node_errors = asyncio.run(host.execution.validate_prompt(uuid.uuid4().hex, wrong_folder, None))
    assert not ok and "Load Encoder: " in node_errors["1"]["errors"][0]["details"]
    assert "model_type 'bert'" in node_errors["1"]["errors"][0]["details"]
    no_video = {
        "1": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny_clip"}},
        "2": {"class_type": "AV_EncodeVideo", "inputs": {"encoder": ["1", 0], "fps": 24.0, "sample_rate_hz": 5.0, "aggregation": "mean"}},
        **preview("2"),
    }
    with pytest.raises(WorkflowError, match="Encode Video: connect a VIDEO or an IMAGE batch of frames"):
        run_graph(no_video, out_dir=tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")
