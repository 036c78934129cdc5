"""The V2A-Mapper workflows (image -> audio, video -> audio) run through the host's executor on the
embedded SynthAV models: the sound is non-silent, as long as the tokenizer's clip for a picture and
exactly as long as the video for a video (any fps, one or several generator windows); wrong wires
are refused by name."""

import json
import os
import wave

import numpy as np
import pytest

from conftest import PACK_DIR

EMBEDDED = os.path.join(PACK_DIR, "embedded_models")
IMAGE_WORKFLOW = os.path.join(PACK_DIR, "workflows", "image_to_audio_v2a.json")
VIDEO_WORKFLOW = os.path.join(PACK_DIR, "workflows", "video_to_audio_v2a.json")
REQUIRED = [os.path.join(EMBEDDED, "encoders", "synthav_clip", "model.safetensors"),
            os.path.join(EMBEDDED, "mappers", "synthav_clip_to_clap.safetensors"),
            os.path.join(EMBEDDED, "vatt", "synthav_clap_to_spec_tokens.safetensors")]
FAST = {"25.steps": 4}  # the generator's unmasking steps (the mapper is a regression: one pass)
RATE = 22050
CLIP_SAMPLES = 176 * 256  # the spectrogram tokenizer's clip: 22 token columns of 8 frames of 256 samples

pytestmark = pytest.mark.skipif(not all(os.path.exists(p) for p in REQUIRED), reason="the embedded V2A models are not installed")


def read_wav(path):
    with wave.open(path) as f:
        rate, channels, frames = f.getframerate(), f.getnchannels(), f.readframes(f.getnframes())
    return rate, np.frombuffer(frames, dtype="<i2").reshape(-1, channels).T / 32768.0


def wav_of(written):
    wavs = [p for paths in written.values() for p in paths if p.endswith(".wav")]
    assert len(wavs) == 1
    return read_wav(wavs[0])


def test_image_to_audio_v2a_makes_a_sound_of_the_clip_length(run_graph, tmp_path):
    workflow = json.load(open(IMAGE_WORKFLOW))
    assert "nodes" in workflow and "links" in workflow  # shipped in the editor's format
    written = run_graph(IMAGE_WORKFLOW, overrides=FAST, out_dir=tmp_path / "out")
    rate, audio = wav_of(written)
    assert rate == RATE and audio.shape == (1, CLIP_SAMPLES)
    assert np.isfinite(audio).all()
    assert np.sqrt(np.mean(audio ** 2)) > 3e-3 and np.abs(audio).max() > 0.02  # not silence
    pictures = [p for paths in written.values() for p in paths if "spectrogram" in os.path.basename(p)]
    assert len(pictures) == 1


def _video_file(host, name, fps, duration_s):
    """A SynthAV video written into the host's input folder (tools/make_example_video.py's writer)."""
    from comfyui_audiovisual.synthav.world import make_video
    from comfyui_audiovisual.tools.make_example_video import write_video

    clip = make_video(1_000_001, fps=fps, duration_s=duration_s)
    frames = clip.frames.repeat(4, axis=1).repeat(4, axis=2)
    path = os.path.join(host.folder_paths.get_input_directory(), name)
    write_video(path, frames, fps, clip.audio, clip.sample_rate)
    return name


@pytest.mark.parametrize("fps", [16, 30])
def test_video_to_audio_v2a_lasts_exactly_as_long_as_the_video(run_graph, host, tmp_path, fps):
    name = _video_file(host, f"v2a_test_{fps}fps.mp4", fps, 2.0)
    written = run_graph(VIDEO_WORKFLOW, overrides={**FAST, "30.file": name}, out_dir=tmp_path / "out")
    rate, audio = wav_of(written)
    assert rate == RATE and audio.shape == (1, 2 * RATE)  # 2 s at 16 or 30 fps -> 2 s of sound
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_the_shipped_video_workflow_covers_a_video_longer_than_one_window(run_graph, tmp_path):
    """The example video lasts longer than the generator's 2.04 s window: several windows, cut to its length."""
    import av

    with av.open(os.path.join(PACK_DIR, "example_inputs", "audiovisual_example_video.mp4")) as container:
        stream = container.streams.video[0]
        frames, fps = sum(1 for _ in container.decode(video=0)), float(stream.average_rate)
    assert frames / fps > CLIP_SAMPLES / RATE
    written = run_graph(VIDEO_WORKFLOW, overrides=FAST, out_dir=tmp_path / "out")
    rate, audio = wav_of(written)
    assert audio.shape == (1, round(frames / fps * RATE))
    assert np.abs(audio[0, CLIP_SAMPLES:]).max() > 0.01  # the second window is sound too


def _graph(embedding_source, tokenizer="synthav_spec_vq512.safetensors"):
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "audiovisual_example_scene.png"}},
        "20": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "av_encoders/synthav_clip"}},
        "21": {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["20", 0], "image": ["1", 0]}},
        "22": {"class_type": "AV_LoadMapper", "inputs": {"mapper_name": "synthav_clip_to_clap.safetensors"}},
        "23": {"class_type": "AV_ApplyMapper", "inputs": {"mapper": ["22", 0], "embedding": ["21", 0], "seed": 0, "steps": 5,
                                                                 "guidance_scale": 1.0, "eta": 0.0, "frames": "each"}},
        "24": {"class_type": "AV_LoadVATT", "inputs": {"model_name": "synthav_clap_to_spec_tokens.safetensors"}},
        "3": {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": tokenizer}},
        "25": {"class_type": "AV_EmbeddingToAudioTokens",
               "inputs": {"generator": ["24", 0], "tokenizer": ["3", 0], "embedding": embedding_source, "seed": 0, "steps": 2,
                          "cfg": 3.0, "temperature": 4.5, "duration_s": 0.0}},
        "26": {"class_type": "PreviewAny", "inputs": {"source": ["25", 0]}},
    }
    return graph


def test_a_clip_embedding_without_the_mapper_is_refused_by_name(run_graph, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError, match=r"node 25 .*expected a CLAP embedding.*got a CLIP image embedding"):
        run_graph(_graph(["21", 0]), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_another_tokenizer_than_the_generators_is_refused_by_name(run_graph, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError, match=r"node 25 .*spectrogram tokenizer"):
        run_graph(_graph(["23", 0], tokenizer="synthav_image_vq.safetensors"), out_dir=tmp_path / "out")
