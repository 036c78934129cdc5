"""AudioLDM through the host: a tiny random pipeline in the published diffusers layout, registered in
models/audiovisual/audioldm, runs text -> CLAP embedding -> AudioLDM -> WAV in the host's executor."""

import json
import os
import wave

import numpy as np
import pytest
import torch

from tiny_audioldm import TINY_CLAP_DIM, TINY_SAMPLE_RATE, write_tiny_audioldm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def audioldm_dir(host, tmp_path_factory):
    """av_audioldm folder with the tiny pipeline, the same without text encoder, and a Stable Diffusion index."""
    base = tmp_path_factory.mktemp("audioldm-models")
    write_tiny_audioldm(str(base / "tiny-audioldm"))
    write_tiny_audioldm(str(base / "tiny-audioldm-no-text"), seed=1, with_text_encoder=False)
    (base / "not-audioldm-sd").mkdir()
    (base / "not-audioldm-sd" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    host.folder_paths.add_model_folder_path("av_audioldm", str(base))
    return base


def read_wav(path):
    with wave.open(path) as f:
        rate, channels, frames = f.getframerate(), f.getnchannels(), f.readframes(f.getnframes())
    return rate, np.frombuffer(frames, dtype="<i2").reshape(-1, channels).T / 32768.0


def text_to_audio_graph(model_name="tiny-audioldm", duration_s=2.0, seed=3):
    return {
        "1": {"class_type": "AV_LoadAudioLDM", "inputs": {"model_name": model_name}},
        "2": {"class_type": "AV_AudioLDMEncodeText", "inputs": {"audioldm": ["1", 0], "text": "rain on a tin roof"}},
        "3": {"class_type": "AV_AudioLDMGenerate", "inputs": {"audioldm": ["1", 0], "embedding": ["2", 0], "seed": seed, "steps": 3,
                                                               "guidance": 2.5, "duration_s": duration_s}},
        "4": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["3", 0], "filename_prefix": "audiovisual/audioldm"}},
    }


def test_text_to_audio_runs_on_the_host_and_writes_the_vocoder_rate_and_exact_length(run_graph, audioldm_dir, tmp_path):
    from comfyui_audiovisual.loaders.audioldm import load_audioldm
    from comfyui_audiovisual.samplers.audioldm_bridge import audioldm_generate

    written = run_graph(text_to_audio_graph(duration_s=2.0, seed=3), out_dir=tmp_path / "out")
    assert list(written) == ["4"] and len(written["4"]) == 1 and written["4"][0].endswith(".wav")
    rate, audio = read_wav(written["4"][0])
    assert rate == TINY_SAMPLE_RATE
    assert audio.shape == (1, 2 * TINY_SAMPLE_RATE)
    assert np.abs(audio).max() > 0.01
    # the graph's sound is the plain generator's for the same text, seed and settings (to 16-bit rounding)
    model = load_audioldm(str(audioldm_dir / "tiny-audioldm"))
    expected, _ = audioldm_generate(model, model.encode_text(["rain on a tin roof"]), steps=3, guidance=2.5, duration_s=2.0, seed=3)
    assert np.abs(audio[0] - expected[0, 0].numpy()).max() <= 1.5 / 32768


def test_the_loader_lists_audioldm_folders_of_both_model_folders(host, audioldm_dir, tmp_path):
    diffusers_dir = tmp_path / "diffusers"
    write_tiny_audioldm(str(diffusers_dir / "tiny-audioldm-in-diffusers"), with_text_encoder=False)
    (diffusers_dir / "some-stable-diffusion").mkdir()
    (diffusers_dir / "some-stable-diffusion" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    host.folder_paths.add_model_folder_path("diffusers", str(diffusers_dir))
    loader = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadAudioLDM"]
    options = loader.INPUT_TYPES()["required"]["model_name"][1]["options"]
    assert {"tiny-audioldm", "tiny-audioldm-no-text", "not-audioldm-sd", "tiny-audioldm-in-diffusers"} <= set(options)
    assert "some-stable-diffusion" not in options  # models/diffusers offers only AudioLDM pipelines


def test_an_audioldm_from_the_host_diffusers_folder_generates(run_graph, host, audioldm_dir, tmp_path):
    from comfyui_audiovisual.nodes.payloads import Embedding

    diffusers_dir = tmp_path / "diffusers2"
    write_tiny_audioldm(str(diffusers_dir / "tiny-audioldm-diffusers-key"), with_text_encoder=False)
    host.folder_paths.add_model_folder_path("diffusers", str(diffusers_dir))
    nodes = host.nodes.NODE_CLASS_MAPPINGS
    model = nodes["AV_LoadAudioLDM"].execute("tiny-audioldm-diffusers-key").result[0]
    embedding = Embedding(torch.nn.functional.normalize(torch.randn(2, 5, TINY_CLAP_DIM), dim=-1), "clap", "frames", "video")
    audio = nodes["AV_AudioLDMGenerate"].execute(model, embedding, seed=1, steps=2, guidance=2.0, duration_s=0.5).result[0]
    assert audio["sample_rate"] == TINY_SAMPLE_RATE and audio["waveform"].shape == (2, 1, 8000)  # a frame sequence is pooled per row
    pooled = Embedding(embedding.vectors.mean(dim=1), "clap", "frames", "video")
    same = nodes["AV_AudioLDMGenerate"].execute(model, pooled, seed=1, steps=2, guidance=2.0, duration_s=0.5).result[0]
    assert torch.allclose(audio["waveform"], same["waveform"], atol=1e-6)


def test_a_clip_embedding_is_refused_by_the_generator_naming_the_node(host, audioldm_dir):
    from comfyui_audiovisual.nodes.payloads import Embedding

    nodes = host.nodes.NODE_CLASS_MAPPINGS
    model = nodes["AV_LoadAudioLDM"].execute("tiny-audioldm").result[0]
    clip = Embedding(torch.randn(1, TINY_CLAP_DIM), "clip", "clip-vit-large-patch14", "image")
    with pytest.raises(ValueError, match=r"AudioLDM Generate: expected a CLAP embedding of width 16, got a CLIP image embedding"):
        nodes["AV_AudioLDMGenerate"].execute(model, clip, seed=0, steps=2, guidance=2.5, duration_s=0.5)
    wide = Embedding(torch.randn(1, 512), "clap", "clap-htsat-unfused", "audio")
    with pytest.raises(ValueError, match=r"AudioLDM Generate: expected a CLAP embedding of width 16, .*\(width 512\)"):
        nodes["AV_AudioLDMGenerate"].execute(model, wide, seed=0, steps=2, guidance=2.5, duration_s=0.5)
    nan = Embedding(torch.full((1, TINY_CLAP_DIM), float("nan")), "clap", "", "audio (mapped from image)")
    with pytest.raises(ValueError, match="AudioLDM Generate: .* holds NaN"):
        nodes["AV_AudioLDMGenerate"].execute(model, nan, seed=0, steps=2, guidance=2.5, duration_s=0.5)
    with pytest.raises(ValueError, match=r"AudioLDM Generate \(negative\): expected a CLAP embedding"):
        nodes["AV_AudioLDMGenerate"].execute(model, Embedding(torch.randn(1, TINY_CLAP_DIM), "clap", "", "text"), seed=0, steps=2,
                                              guidance=2.5, duration_s=0.5, negative=clip)


def test_graph_errors_name_the_node_and_write_nothing(run_graph, audioldm_dir, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError, match=r"node 2 \(AV_AudioLDMEncodeText\): AudioLDM Encode Text: the AudioLDM folder "
                                            r"'tiny-audioldm-no-text' has no text_encoder/ and tokenizer/"):
        run_graph(text_to_audio_graph("tiny-audioldm-no-text"), out_dir=tmp_path / "out")
    with pytest.raises(WorkflowError, match=r"node 1 \(AV_LoadAudioLDM\): Load AudioLDM: not-audioldm-sd/model_index.json: "
                                            r"_class_name is 'StableDiffusionPipeline', expected 'AudioLDMPipeline'"):
        run_graph(text_to_audio_graph("not-audioldm-sd"), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_interrupting_the_generation_stops_it_and_writes_nothing(host, audioldm_dir, tmp_path):
    import comfy.model_management as mm

    from comfyui_audiovisual.runner import WorkflowError, run_workflow

    seen = []

    def interrupt_at_the_first_report(value, total, preview, prompt_id=None, node_id=None):
        # the first report only: current hosts' ProgressBar sends at most one per 100 ms
        seen.append((node_id, value, total))
        mm.interrupt_current_processing(True)

    with pytest.raises(WorkflowError, match=r"node 3 \(AV_AudioLDMGenerate\): interrupted"):
        run_workflow(text_to_audio_graph(), out_dir=str(tmp_path / "out"), cpu=True, progress=interrupt_at_the_first_report)
    assert seen[0][1:] == (1, 3) and len(seen) == 1  # stopped after step 1 of 3, before reporting another
    assert not (tmp_path / "out").exists()
    assert not mm.processing_interrupted()


def test_a_separate_clap_encoder_feeds_the_generator_and_a_clip_image_embedding_is_refused(run_graph, host, audioldm_dir, tmp_path_factory, tmp_path):
    """The encoder nodes' CLAP text embedding drives AudioLDM; a CLIP image embedding wired in by mistake fails naming the node."""
    from comfyui_audiovisual.runner import WorkflowError
    from tiny_encoders import CLAP_PROJECTION, write_tiny_clap, write_tiny_clip

    assert CLAP_PROJECTION == TINY_CLAP_DIM
    encoders = tmp_path_factory.mktemp("audioldm-encoders")
    write_tiny_clap(str(encoders / "aldm_tiny_clap"))
    write_tiny_clip(str(encoders / "aldm_tiny_clip"))
    host.folder_paths.add_model_folder_path("av_encoders", str(encoders))
    graph = text_to_audio_graph(duration_s=1.0)
    graph["2"] = {"class_type": "AV_EncodeText", "inputs": {"encoder": ["5", 0], "text": "a dog barking", "t5_tokens": 0}}
    graph["5"] = {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "av_encoders/aldm_tiny_clap"}}
    written = run_graph(graph, out_dir=tmp_path / "clap")
    rate, audio = read_wav(written["4"][0])
    assert rate == TINY_SAMPLE_RATE and audio.shape == (1, TINY_SAMPLE_RATE) and np.abs(audio).max() > 0.01

    graph["5"]["inputs"]["encoder_name"] = "av_encoders/aldm_tiny_clip"
    graph["2"] = {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["5", 0], "image": ["7", 0]}}
    graph["7"] = {"class_type": "LoadImage", "inputs": {"image": "audiovisual_example_scene.png"}}
    with pytest.raises(WorkflowError, match=r"node 3 \(AV_AudioLDMGenerate\): AudioLDM Generate: expected a CLAP embedding of width 16, "
                                            r"got a CLIP image embedding"):
        run_graph(graph, out_dir=tmp_path / "clip")
    assert not (tmp_path / "clip").exists()
