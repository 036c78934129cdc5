"""VATT through the real host: tiny random EnCodec (16 kHz, 4 x 2048), tiny CLIP and tiny VATT
decoders registered in the host's model folders; video frames as an IMAGE batch with its fps or as a
VIDEO; the audio written, and muxed back into a video with the host's CreateVideo / SaveVideo."""

import os
import sys
import wave

import numpy as np
import pytest
import torch

from conftest import model_folders_added
from tiny_encoders import T5_WIDTH, CLIP_PROJECTION, write_tiny_clip_vision, write_tiny_t5
from tiny_vatt import tiny_vatt_codec, write_tiny_vatt_codec, write_tiny_vatt_decoder


@pytest.fixture(scope="module")
def vatt_models(host, tmp_path_factory):
    base = tmp_path_factory.mktemp("vatt-models")
    codec = tiny_vatt_codec(seed=0)
    from comfyui_audiovisual.audio.codec_tokenizer import save_codec

    save_codec(codec, str(base / "codecs" / "tiny_vatt_codec"))
    write_tiny_vatt_codec(str(base / "codecs" / "other_codec"), seed=1)
    write_tiny_clip_vision(str(base / "clip" / "tiny_vatt_clip"))
    write_tiny_clip_vision(str(base / "clip" / "other_clip"), seed=1)
    write_tiny_t5(str(base / "t5" / "tiny_t5"))
    write_tiny_vatt_decoder(str(base / "vatt" / "tiny_vatt.safetensors"), codec, CLIP_PROJECTION, video_model="tiny_vatt_clip")
    write_tiny_vatt_decoder(str(base / "vatt" / "tiny_vatt_text.safetensors"), codec, CLIP_PROJECTION, video_model="tiny_vatt_clip",
                            text_dim=T5_WIDTH, text_family="t5", text_model="tiny_t5", seed=1)
    with model_folders_added(host, [(key, base / sub) for key, sub in (("av_codecs", "codecs"), ("clip_vision", "clip"),
                                                                       ("text_encoders", "t5"), ("av_vatt", "vatt"))]):
        yield base


def read_wav(path):
    with wave.open(path) as f:
        rate, channels, frames = f.getframerate(), f.getnchannels(), f.readframes(f.getnframes())
    return rate, np.frombuffer(frames, dtype="<i2").reshape(-1, channels).T / 32768.0


def frames_graph(frames, fps, model="tiny_vatt.safetensors", codec="tiny_vatt_codec", seed=0):
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": frames, "color": 0x336699}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny_vatt_clip"}},
        "3": {"class_type": "AV_LoadCodec", "inputs": {"codec_name": codec}},
        "4": {"class_type": "AV_LoadVATT", "inputs": {"model_name": model}},
        "5": {"class_type": "AV_VATTVideoFeatures", "inputs": {"encoder": ["2", 0], "frames": ["1", 0], "fps": fps,
                                                              "rate_hz": 5.0, "tokens": 10}},
        "6": {"class_type": "AV_VATTSampler", "inputs": {"vatt": ["4", 0], "codec": ["3", 0], "video_features": ["5", 0],
                                                        "seed": seed, "steps": 3, "cfg": 5.0, "top_k": 256, "temperature": 25.5,
                                                        "duration_s": 0.0}},
        "7": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["6", 0], "filename_prefix": "audiovisual/vatt"}},
    }


@pytest.mark.parametrize("fps", [16, 30])
def test_two_seconds_of_frames_give_two_seconds_of_audio_at_any_fps(run_graph, vatt_models, tmp_path, fps):
    written = run_graph(frames_graph(2 * fps, float(fps)), out_dir=tmp_path / "out")
    rate, audio = read_wav(written["7"][0])
    assert rate == 16000  # the codec's own rate
    assert audio.shape == (1, 2 * 16000)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_a_video_gets_its_audio_muxed_back_at_its_length(run_graph, vatt_models, tmp_path):
    import av

    graph = frames_graph(32, 16.0)
    graph["8"] = {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 16.0}}
    graph["5"]["inputs"] = {"encoder": ["2", 0], "video": ["8", 0], "fps": 99.0, "rate_hz": 5.0, "tokens": 10}  # fps ignored with a VIDEO
    graph["9"] = {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 16.0, "audio": ["6", 0]}}
    graph["10"] = {"class_type": "SaveVideo", "inputs": {"video": ["9", 0], "filename_prefix": "audiovisual/vatt_video",
                                                        "format": "auto", "codec": "auto"}}
    del graph["7"]
    written = run_graph(graph, out_dir=tmp_path / "out")
    with av.open(written["10"][0]) as container:
        video_frames = sum(1 for _ in container.decode(video=0))
    with av.open(written["10"][0]) as container:
        audio_stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio=0))
        rate = audio_stream.rate
    assert video_frames == 32
    assert abs(samples / rate - 2.0) < 0.05  # the encoder may pad its last frame by a few ms


def test_text_conditioned_decoder_takes_an_encoded_caption(run_graph, vatt_models, tmp_path):
    graph = frames_graph(20, 10.0, model="tiny_vatt_text.safetensors")
    graph["11"] = {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/tiny_t5"}}
    graph["12"] = {"class_type": "AV_EncodeText", "inputs": {"encoder": ["11", 0], "text": "a dog barks twice", "t5_tokens": 0}}
    graph["6"]["inputs"]["text"] = ["12", 0]
    rate, audio = read_wav(run_graph(graph, out_dir=tmp_path / "out")["7"][0])
    assert rate == 16000 and audio.shape == (1, 2 * 16000)


def test_same_seed_same_sound_other_seed_other_sound(run_graph, vatt_models, tmp_path):
    runs = [read_wav(run_graph(frames_graph(16, 16.0, seed=s), out_dir=tmp_path / f"o{i}")["7"][0])[1]
            for i, s in enumerate([4, 4, 5])]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_a_codec_the_decoder_was_not_trained_with_is_refused_by_name(run_graph, vatt_models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError) as e:
        run_graph(frames_graph(16, 16.0, codec="other_codec"), out_dir=tmp_path / "out")
    assert "VATT Sampler" in str(e.value) and "trained with another codec" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def other_rate_codecs(host, tmp_path_factory):
    """Codecs the sampler's tokens cannot be decoded with: 24 kHz with 1024 codes (EnCodec 24 kHz's layout), and
    16 kHz with 1024 codes (the VATT layout but another codebook size); taken back after the test."""
    from comfyui_audiovisual.audio.codec_tokenizer import encodec_config, save_codec
    from transformers import EncodecModel

    folder = tmp_path_factory.mktemp("other-rate-codecs")
    for name, layout, overrides in (("codec_24khz", "encodec_24khz", {}), ("codec_16khz_1024", "vatt_16khz", {"codebook_size": 1024})):
        torch.manual_seed(2)
        save_codec(EncodecModel(encodec_config(layout, num_filters=4, hidden_size=8, num_lstm_layers=1, **overrides)).eval(),
                   str(folder / name))
    with model_folders_added(host, [("av_codecs", folder)]):
        yield folder


@pytest.fixture
def vatt_sampling_runs(monkeypatch):
    """Counts the sampling runs of every loaded copy of the pack's VATT nodes."""
    calls = []
    for name, module in list(sys.modules.items()):
        if name.endswith("nodes.vatt") and hasattr(module, "vatt_sample"):
            for function in ("vatt_sample", "vatt_generate"):
                real = getattr(module, function)
                monkeypatch.setattr(module, function, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    return calls


def decode_tokens_with(graph, codec_name):
    """The sampler's codec_tokens decoded by Decode Codec Tokens with its own Load Codec `codec_name`, and saved."""
    graph["20"] = {"class_type": "AV_LoadCodec", "inputs": {"codec_name": codec_name}}
    graph["21"] = {"class_type": "AV_DecodeCodecTokens", "inputs": {"codec": ["20", 0], "codec_tokens": ["6", 1]}}
    graph["22"] = {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["21", 0], "filename_prefix": "audiovisual/decoded"}}
    return graph


@pytest.mark.parametrize("codec_name, expected", [
    ("codec_24khz", "a codec of 1024 codes at 24000 Hz"),
    ("codec_16khz_1024", "a codec of 1024 codes at 16000 Hz"),
])
def test_codec_tokens_sent_to_a_codec_of_another_rate_or_size_are_refused_before_sampling(
        run_graph, vatt_models, other_rate_codecs, vatt_sampling_runs, tmp_path, codec_name, expected):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError) as e:
        run_graph(decode_tokens_with(frames_graph(16, 16.0), codec_name), out_dir=tmp_path / "out")
    message = str(e.value)
    assert "VATT Sampler: its codec tokens are 2048 codes at 16000 Hz (the sampler's codec 'tiny_vatt_codec')" in message
    assert f"Decode Codec Tokens (node 21) decodes them with '{codec_name}' (Load Codec, node 20), {expected}" in message
    assert "\n" not in message.strip()
    assert vatt_sampling_runs == []  # refused before the first sampling step
    assert not (tmp_path / "out").exists()


def test_codec_tokens_decoded_by_another_codec_of_the_same_rate_and_size_run(run_graph, vatt_models, vatt_sampling_runs, tmp_path):
    written = run_graph(decode_tokens_with(frames_graph(16, 16.0), "other_codec"), out_dir=tmp_path / "out")
    rate, decoded = read_wav(written["22"][0])
    assert vatt_sampling_runs == [1]
    assert rate == 16000 and decoded.shape == (1, 16000)


def test_text_for_a_decoder_without_text_is_refused(run_graph, vatt_models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    graph = frames_graph(16, 16.0)
    graph["11"] = {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/tiny_t5"}}
    graph["12"] = {"class_type": "AV_EncodeText", "inputs": {"encoder": ["11", 0], "text": "rain", "t5_tokens": 0}}
    graph["6"]["inputs"]["text"] = ["12", 0]
    with pytest.raises(WorkflowError, match="trained without text"):
        run_graph(graph, out_dir=tmp_path / "out")


def test_codec_tokens_round_trip_through_the_host(run_graph, vatt_models, tmp_path):
    from comfyui_audiovisual.audio.codec_tokenizer import load_codec

    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 8, "color": 0x808080}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/tiny_vatt_clip"}},
        "3": {"class_type": "AV_LoadCodec", "inputs": {"codec_name": "tiny_vatt_codec"}},
        "4": {"class_type": "AV_LoadVATT", "inputs": {"model_name": "tiny_vatt.safetensors"}},
        "5": {"class_type": "AV_VATTVideoFeatures", "inputs": {"encoder": ["2", 0], "frames": ["1", 0], "fps": 8.0,
                                                              "rate_hz": 5.0, "tokens": 10}},
        "6": {"class_type": "AV_VATTSampler", "inputs": {"vatt": ["4", 0], "codec": ["3", 0], "video_features": ["5", 0],
                                                        "seed": 1, "steps": 2, "cfg": 1.0, "top_k": 0, "temperature": 1.0,
                                                        "duration_s": 1.5}},
        "7": {"class_type": "AV_EncodeCodecTokens", "inputs": {"codec": ["3", 0], "audio": ["6", 0], "codebooks": 4}},
        "8": {"class_type": "AV_DecodeCodecTokens", "inputs": {"codec": ["3", 0], "codec_tokens": ["7", 0]}},
        "9": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["8", 0], "filename_prefix": "audiovisual/roundtrip"}},
        "10": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["6", 0], "filename_prefix": "audiovisual/generated"}},
    }
    written = run_graph(graph, out_dir=tmp_path / "out")
    rate, generated = read_wav(written["10"][0])
    rate2, decoded = read_wav(written["9"][0])
    assert rate == rate2 == 16000 and generated.shape == decoded.shape == (1, 24000)  # duration_s overrides the video's
    # the decoded round trip equals the codec applied in plain torch to the same (16-bit) waveform
    codec = load_codec(str(vatt_models / "codecs" / "tiny_vatt_codec"))
    expected = codec.decode(codec.encode(torch.from_numpy(generated).float().reshape(1, 1, -1), 4))[0].numpy()
    assert np.abs(decoded - expected).max() < 2e-3


def test_the_video_to_audio_graph_runs_on_the_example_video(run_graph, host, vatt_models, tmp_path):
    """workflows/graphs.py VIDEO_TO_AUDIO (LoadVideo -> features -> sampler -> Add Audio to Video ->
    SaveVideo) on the pack's example video, tiny models: sound and video as long as the example, the
    pictures those of the example (copied, not re-encoded)."""
    import shutil

    import av

    from comfyui_audiovisual.workflows.graphs import EXAMPLE_VIDEO, VIDEO_TO_AUDIO
    from conftest import PACK_DIR

    example = os.path.join(PACK_DIR, "example_inputs", EXAMPLE_VIDEO)
    shutil.copyfile(example, os.path.join(host.folder_paths.get_input_directory(), EXAMPLE_VIDEO))
    with av.open(example) as container:
        fps = container.streams.video[0].average_rate
        frames_in = sum(1 for _ in container.decode(video=0))
    duration_s = frames_in / fps
    prompt = {node_id: {"class_type": class_type,
                        "inputs": {k: list(v) if isinstance(v, tuple) else v for k, v in inputs.items()}}
              for node_id, class_type, inputs, _ in VIDEO_TO_AUDIO if node_id not in ("11", "12")}
    del prompt["6"]["inputs"]["text"]  # the caption branch: the tiny decoder has no text (tests/test_host_vatt_default.py runs it)
    overrides = {"2.encoder_name": "clip_vision/tiny_vatt_clip", "3.codec_name": "tiny_vatt_codec",
                 "4.model_name": "tiny_vatt.safetensors", "6.steps": 3}
    written = run_graph(prompt, overrides=overrides, out_dir=tmp_path / "out")
    rate, audio = read_wav(written["10"][0])
    assert rate == 16000 and audio.shape == (1, round(duration_s * 16000))
    with av.open(written["9"][0]) as container:
        assert container.streams.video[0].average_rate == fps
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(written["9"][0]) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
        seconds = samples / container.streams.audio[0].rate
    assert frames == frames_in and abs(seconds - float(duration_s)) < 0.05
    with av.open(example) as source, av.open(written["9"][0]) as copy:  # the same compressed pictures, packet for packet
        assert [bytes(p) for p in source.demux(video=0) if p.size] == [bytes(p) for p in copy.demux(video=0) if p.size]


def test_features_from_another_encoder_are_refused_by_name(run_graph, vatt_models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    graph = frames_graph(16, 16.0)
    graph["2"]["inputs"]["encoder_name"] = "clip_vision/other_clip"
    with pytest.raises(WorkflowError, match=r"node 6 \(AV_VATTSampler\): VATT Sampler: expected a CLIP embedding of width 16 "
                                            r"from 'tiny_vatt_clip', got a CLIP video embedding \(other_clip"):
        run_graph(graph, out_dir=tmp_path / "out")


def test_interrupting_the_sampler_stops_it_and_writes_nothing(host, vatt_models, tmp_path):
    import comfy.model_management as mm

    from comfyui_audiovisual.runner import WorkflowError, run_workflow

    seen = []

    def interrupt_at_the_first_report(value, total, preview, prompt_id=None, node_id=None):
        # only the sampler reports progress in this graph; the first report only, as current hosts'
        # ProgressBar sends at most one per 100 ms
        seen.append((value, total))
        mm.interrupt_current_processing(True)

    with pytest.raises(WorkflowError, match=r"node 6 \(AV_VATTSampler\): interrupted"):
        run_workflow(frames_graph(16, 16.0, seed=9), out_dir=str(tmp_path / "out"), cpu=True, progress=interrupt_at_the_first_report)
    assert seen == [(1, 3)]  # stopped after step 1 of 3, before reporting another
    assert not (tmp_path / "out").exists()
    assert not mm.processing_interrupted()
