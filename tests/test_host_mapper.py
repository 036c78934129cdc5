"""V2A-Mapper nodes through the host: image -> CLIP -> mapper -> CLAP space -> AudioLDM -> WAV with
tiny random encoders, mappers and AudioLDM in tmp model folders; the space check; the training node."""

import os
import wave

import numpy as np
import pytest
import torch

from conftest import model_folders_added
from tiny_audioldm import TINY_CLAP_DIM, TINY_SAMPLE_RATE, write_tiny_audioldm
from tiny_encoders import CLIP_PROJECTION, write_tiny_clap, write_tiny_clip_vision

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLE_IMAGE = "audiovisual_example_scene.png"
EXAMPLE_AUDIO = "audiovisual_example_scene.wav"


@pytest.fixture(scope="module")
def models(host, tmp_path_factory):
    """Tiny CLIP (two seeds), CLAP, AudioLDM and two mappers CLIP 'tiny-clip' -> CLAP 'tiny-clap' (regression,
    diffusion) in registered model folders; the mapper folder is the first av_mappers path while the module runs."""
    from comfyui_audiovisual.loaders.mapper import save_mapper
    from comfyui_audiovisual.training.mapper import infer_space, new_mapper

    base = tmp_path_factory.mktemp("mapper-host-models")
    write_tiny_clip_vision(str(base / "clip_vision" / "tiny-clip"), seed=0)
    write_tiny_clip_vision(str(base / "clip_vision" / "tiny-clip-b"), seed=1)
    write_tiny_clap(str(base / "audio_encoders" / "tiny-clap"))
    write_tiny_audioldm(str(base / "audioldm" / "tiny-audioldm"), with_text_encoder=False)
    mappers = base / "mappers"
    assert CLIP_PROJECTION == 16 and TINY_CLAP_DIM == 16
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(32, CLIP_PROJECTION, generator=generator)
    target = torch.nn.functional.normalize(torch.randn(32, TINY_CLAP_DIM, generator=generator), dim=-1)
    source_space, target_space = infer_space(source, "clip", "tiny-clip", "image"), infer_space(target, "clap", "tiny-clap", "audio")
    for kind, network in (("regression", {"hidden_dim": 32, "num_blocks": 1}), ("diffusion", {"width": 32, "depth": 1, "num_heads": 2})):
        save_mapper(new_mapper(kind, source_space, target_space, source, target, network, seed=1), mappers / f"tiny-{kind}.safetensors")
    (mappers / "not-a-mapper.safetensors").write_bytes(b"garbage")
    folders = [(key, base / sub) for key, sub in (("clip_vision", "clip_vision"), ("audio_encoders", "audio_encoders"),
                                                  ("av_audioldm", "audioldm"))]
    with model_folders_added(host, folders, first=[("av_mappers", mappers)]):
        yield mappers


def read_wav(path):
    with wave.open(path) as f:
        rate, channels, frames = f.getframerate(), f.getnchannels(), f.readframes(f.getnframes())
    return rate, np.frombuffer(frames, dtype="<i2").reshape(-1, channels).T / 32768.0


def image_to_audio_graph(mapper="tiny-regression.safetensors", seed=0, audio_input=False):
    """LoadImage -> Encode Image (CLIP) -> Apply V2A Mapper -> AudioLDM Generate -> Save WAV. With
    `audio_input`, the mapper gets a CLAP audio embedding instead (the wrong space)."""
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny-clip"}},
        "3": {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "AV_LoadMapper", "inputs": {"mapper_name": mapper}},
        "5": {"class_type": "AV_ApplyMapper", "inputs": {"mapper": ["4", 0], "embedding": ["3", 0], "seed": seed, "steps": 4,
                                                         "guidance_scale": 1.0, "eta": 0.0, "frames": "each"}},
        "6": {"class_type": "AV_LoadAudioLDM", "inputs": {"model_name": "tiny-audioldm"}},
        "7": {"class_type": "AV_AudioLDMGenerate", "inputs": {"audioldm": ["6", 0], "embedding": ["5", 0], "seed": 1, "steps": 2,
                                                               "guidance": 1.0, "duration_s": 0.5}},
        "8": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["7", 0], "filename_prefix": "audiovisual/v2a"}},
    }
    if audio_input:
        graph["1"] = {"class_type": "LoadAudio", "inputs": {"audio": EXAMPLE_AUDIO}}
        graph["2"]["inputs"]["encoder_name"] = "audio_encoders/tiny-clap"
        graph["3"] = {"class_type": "AV_EncodeAudio", "inputs": {"encoder": ["2", 0], "audio": ["1", 0], "long_audio": "mean"}}
    return graph


def test_image_to_audio_through_a_saved_mapper(run_graph, models, tmp_path):
    written = run_graph(image_to_audio_graph(), out_dir=tmp_path / "out")
    assert list(written) == ["8"] and len(written["8"]) == 1
    rate, audio = read_wav(written["8"][0])
    assert rate == TINY_SAMPLE_RATE and audio.shape == (1, TINY_SAMPLE_RATE // 2)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_the_diffusion_mapper_is_seed_deterministic_through_the_host(run_graph, models, tmp_path):
    sounds = []
    for index, seed in enumerate([5, 5, 6]):
        written = run_graph(image_to_audio_graph("tiny-diffusion.safetensors", seed=seed), out_dir=tmp_path / f"o{index}")
        sounds.append(read_wav(written["8"][0])[1])
    assert np.array_equal(sounds[0], sounds[1])
    assert not np.array_equal(sounds[0], sounds[2])


def test_a_clap_embedding_fed_to_a_clip_mapper_fails_by_name_and_writes_nothing(run_graph, models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError) as error:
        run_graph(image_to_audio_graph(audio_input=True), out_dir=tmp_path / "out")
    message = str(error.value)
    assert "node 5 (AV_ApplyMapper)" in message
    assert "Apply V2A Mapper: expected a CLIP embedding of width 16 from 'tiny-clip', got a CLAP audio embedding (tiny-clap" in message
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_mapper_is_refused_by_the_loader(run_graph, models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError) as error:
        run_graph(image_to_audio_graph("not-a-mapper.safetensors"), out_dir=tmp_path / "out")
    assert "node 4 (AV_LoadMapper)" in str(error.value) and "not-a-mapper.safetensors: not a readable safetensors file" in str(error.value)


def test_the_loader_lists_the_mapper_folder(host, models):
    entry = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadMapper"].INPUT_TYPES()["required"]["mapper_name"]
    options = entry[0] if isinstance(entry[0], list) else entry[1]["options"]  # ("COMBO", {"options": [...]}) on 0.3.75
    assert {"tiny-regression.safetensors", "tiny-diffusion.safetensors"} <= set(options)


def test_apply_maps_each_frame_or_their_average(host, models):
    import sys

    from comfyui_audiovisual.loaders.mapper import load_mapper

    apply = host.nodes.NODE_CLASS_MAPPINGS["AV_ApplyMapper"]
    Embedding = sys.modules[apply.__module__].Embedding  # the host loaded the pack under its own module name
    mapper = load_mapper(models / "tiny-regression.safetensors")
    frames = torch.randn(2, 3, 16)
    video = Embedding(frames, family="clip", model="tiny-clip", modality="video")
    each = apply.execute(mapper, video, seed=0, steps=4, frames="each").result[0]
    assert each.vectors.shape == (2, 3, 16) and each.family == "clap" and each.model == "tiny-clap"
    assert each.modality == "audio (mapped from video)"
    assert torch.allclose(each.vectors[1, 2], mapper.map(frames[1, 2:3])[0], atol=1e-6)
    average = apply.execute(mapper, video, seed=0, steps=4, frames="average").result[0]
    assert average.vectors.shape == (2, 16) and torch.allclose(average.vectors, mapper.map(frames.mean(dim=1)), atol=1e-6)
    with pytest.raises(ValueError, match="Apply V2A Mapper: expected a CLIP embedding of width 16 .* \\(width 8\\)"):
        apply.execute(mapper, Embedding(torch.randn(1, 8), family="clip", model="", modality="image"), seed=0, steps=4)
    with pytest.raises(ValueError, match="embeddings of another model live in another space"):
        apply.execute(mapper, Embedding(torch.randn(1, 16), family="clip", model="other-clip", modality="image"), seed=0, steps=4)


def training_graph(file_name="host_trained", steps=30, target_batch=4, overwrite=False):
    """Four different images through two different CLIPs: source = tiny-clip, target = tiny-clip-b."""
    colours = [0xFF0000, 0x00FF00, 0x0000FF, 0xFFFF00]
    graph = {f"c{i}": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": c}}
             for i, c in enumerate(colours)}
    graph["b1"] = {"class_type": "ImageBatch", "inputs": {"image1": ["c0", 0], "image2": ["c1", 0]}}
    graph["b2"] = {"class_type": "ImageBatch", "inputs": {"image1": ["b1", 0], "image2": ["c2", 0]}}
    graph["b3"] = {"class_type": "ImageBatch", "inputs": {"image1": ["b2", 0], "image2": ["c3", 0]}}
    graph["e1"] = {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny-clip"}}
    graph["e2"] = {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny-clip-b"}}
    graph["s"] = {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["e1", 0], "image": ["b3", 0]}}
    graph["t"] = {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["e2", 0], "image": ["b3" if target_batch == 4 else "b2", 0]}}
    graph["train"] = {"class_type": "AV_TrainMapper", "inputs": {
        "source": ["s", 0], "target": ["t", 0], "kind": "regression", "steps": steps, "learning_rate": 1e-3, "batch_size": 4,
        "width": 64, "depth": 1, "seed": 0, "file_name": file_name, "overwrite": overwrite}}
    return graph


def test_the_training_node_writes_a_loadable_mapper_once(run_graph, models, tmp_path):
    from comfyui_audiovisual.loaders.mapper import load_mapper
    from comfyui_audiovisual.runner import WorkflowError

    run_graph(training_graph(), out_dir=tmp_path / "out")
    path = models / "host_trained.safetensors"
    mapper = load_mapper(path)
    assert mapper.kind == "regression" and mapper.network.config.hidden_dim == 64
    assert (mapper.source.family, mapper.source.model, mapper.source.modality) == ("clip", "tiny-clip", "image")
    assert (mapper.target.family, mapper.target.model, mapper.target.dim) == ("clip", "tiny-clip-b", 16)
    assert not [p for p in os.listdir(models) if p.startswith(".tmp")]
    before = path.read_bytes()
    with pytest.raises(WorkflowError) as error:
        run_graph(training_graph(steps=31), out_dir=tmp_path / "again")
    assert "node train (AV_TrainMapper)" in str(error.value) and "already exists" in str(error.value)
    assert path.read_bytes() == before
    run_graph(training_graph(steps=31, overwrite=True), out_dir=tmp_path / "overwrite")
    assert path.read_bytes() != before


def test_the_training_node_refuses_batches_of_unequal_length(run_graph, models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError) as error:
        run_graph(training_graph(file_name="unequal", target_batch=3), out_dir=tmp_path / "out")
    assert "Train V2A Mapper: source has 4 vectors and target 3" in str(error.value)
    assert not (models / "unequal.safetensors").exists()
