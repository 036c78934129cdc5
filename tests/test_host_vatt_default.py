"""The shipped VATT workflow (workflows/video_to_audio.json) through the real host on the embedded
SynthAV default: a video in, its sound generated (with the caption) and muxed back by the host's
Create Video / Save Video; the sound lasts as long as the video at 16 and at 30 fps, and on the
pack's own example video (longer than the decoder's 2 s clips: two windows)."""

import os
import wave

import numpy as np
import pytest

from conftest import PACK_DIR

WORKFLOW = os.path.join(PACK_DIR, "workflows", "video_to_audio.json")
FAST = {"6.steps": 2}
RATE = 22050  # the embedded spectrogram codec's rate


def read_wav(path):
    with wave.open(path) as f:
        rate, channels, frames = f.getframerate(), f.getnchannels(), f.readframes(f.getnframes())
    return rate, np.frombuffer(frames, dtype="<i2").reshape(-1, channels).T / 32768.0


def video_stats(path):
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps, frames = stream.average_rate, sum(1 for _ in container.decode(video=0))
    with av.open(path) as container:
        audio = container.streams.audio[0]
        samples, rate = sum(f.samples for f in container.decode(audio=0)), audio.rate
    return float(fps), frames, samples / rate


def synthav_video(host, name, fps, duration_s, seed=1_000_003):
    from comfyui_audiovisual.synthav.world import make_video
    from comfyui_audiovisual.tools.make_example_video import write_video

    clip = make_video(seed, fps=fps, duration_s=duration_s)
    write_video(os.path.join(host.folder_paths.get_input_directory(), name), clip.frames.repeat(4, 1).repeat(4, 2), fps,
                clip.audio, clip.sample_rate)
    return name, len(clip.frames)


def outputs(written):
    files = [p for paths in written.values() for p in paths]
    return [p for p in files if p.endswith(".wav")], [p for p in files if not p.endswith(".wav") and not p.endswith(".png")]


def test_the_workflow_is_shipped_with_a_thumbnail_and_runs_on_the_embedded_models():
    import json

    workflow = json.load(open(WORKFLOW))
    assert os.path.isfile(WORKFLOW[:-5] + ".jpg")
    types = {n["type"] for n in workflow["nodes"]}
    assert {"LoadVideo", "AV_VATTVideoFeatures", "AV_VATTSampler", "AV_AddAudioToVideo", "SaveVideo"} <= types
    assert not {"GetVideoComponents", "CreateVideo"} & types  # they decode every frame: memory would grow with the length
    for name in ("vatt/synthav_vatt.safetensors", "codecs/synthav_spec_codec/config.json"):
        assert os.path.isfile(os.path.join(PACK_DIR, "embedded_models", name))


@pytest.mark.parametrize("fps", [16, 30])
def test_the_sound_lasts_as_long_as_the_video_at_any_frame_rate(run_graph, host, tmp_path, fps):
    name, frames_in = synthav_video(host, f"vatt_default_{fps}fps.mp4", fps, 2.0)
    written = run_graph(WORKFLOW, overrides={**FAST, "1.file": name}, out_dir=tmp_path / "out")
    wavs, videos = outputs(written)
    rate, audio = read_wav(wavs[0])
    assert rate == RATE and audio.shape == (1, round(frames_in / fps * RATE))
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 3e-3  # sound, not silence
    video_fps, frames, seconds = video_stats(videos[0])
    assert video_fps == fps and frames == frames_in
    assert abs(seconds - frames_in / fps) < 0.05  # AAC may pad its last frame by a few ms


def test_the_example_video_longer_than_a_clip_gets_sound_all_along(run_graph, host, tmp_path):
    import shutil

    from comfyui_audiovisual.workflows.graphs import EXAMPLE_VIDEO

    example = os.path.join(PACK_DIR, "example_inputs", EXAMPLE_VIDEO)
    shutil.copyfile(example, os.path.join(host.folder_paths.get_input_directory(), EXAMPLE_VIDEO))
    fps, frames_in, _ = video_stats(example)
    written = run_graph(WORKFLOW, overrides=FAST, out_dir=tmp_path / "out")
    wavs, videos = outputs(written)
    rate, audio = read_wav(wavs[0])
    assert audio.shape == (1, round(frames_in / fps * RATE))
    half = audio.shape[1] // 2
    assert np.abs(audio[0, :half]).max() > 0.01 and np.abs(audio[0, half:]).max() > 0.01
    assert video_stats(videos[0])[1] == frames_in


def test_another_caption_gives_another_sound_and_no_caption_works(run_graph, host, tmp_path):
    name, _ = synthav_video(host, "vatt_default_caption.mp4", 16, 2.0)
    base = {**FAST, "1.file": name}
    runs = {}
    for label, caption in (("own", None), ("other", "a loud sawtooth tone at C5, early")):
        overrides = dict(base) if caption is None else {**base, "12.text": caption}
        runs[label] = read_wav(outputs(run_graph(WORKFLOW, overrides=overrides, out_dir=tmp_path / label))[0][0])[1]
    assert not np.array_equal(runs["own"], runs["other"])
    # without the caption branch the decoder runs on the video alone
    from comfyui_audiovisual.runner.workflow_format import read_workflow_file

    workflow = read_workflow_file(WORKFLOW)
    for node in workflow["nodes"]:
        if node["id"] in (11, 12):
            node["mode"] = 4  # bypassed, as the editor's Ctrl+B does
    rate, audio = read_wav(outputs(run_graph(workflow, overrides=base, out_dir=tmp_path / "none"))[0][0])
    assert rate == RATE and audio.shape == runs["own"].shape and np.abs(audio).max() > 0.01


def test_a_caption_of_another_length_than_the_decoder_learned_is_refused_by_name(run_graph, host, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    name, _ = synthav_video(host, "vatt_default_tokens.mp4", 16, 1.0)
    with pytest.raises(WorkflowError, match=r"VATT Sampler: the decoder was trained on captions of 32 text tokens, this one has "
                                            r"\d+; set Encode Text's t5_tokens to 32"):
        run_graph(WORKFLOW, overrides={**FAST, "1.file": name, "12.t5_tokens": 0}, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


CAPTIONED = os.path.join(PACK_DIR, "workflows", "video_to_audio_captioned.json")


def test_the_captioned_template_writes_its_caption_from_the_video_and_the_caption_steers_the_sound(run_graph, host, tmp_path):
    """video_to_audio_captioned: the embedded captioner's caption (a SynthAV template the caption T5
    reads) conditions the decoder; editing it with Caption Video's suffix changes the sound; the
    sound lasts as long as the video."""
    import json

    workflow = json.load(open(CAPTIONED))
    assert os.path.isfile(CAPTIONED[:-5] + ".jpg")
    encode = next(n for n in workflow["nodes"] if n["type"] == "AV_EncodeText")
    text = next(i for i in encode["inputs"] if i["name"] == "text")
    caption_node = next(n for n in workflow["nodes"] if n["type"] == "AV_CaptionVideo")
    assert text["link"] is not None and any(text["link"] in (o["links"] or []) for o in caption_node["outputs"])

    name, frames_in = synthav_video(host, "vatt_captioned_16fps.mp4", 16, 2.0)
    base = {**FAST, "1.file": name}
    first = run_graph(CAPTIONED, overrides=base, out_dir=tmp_path / "own")
    rate, own = read_wav(outputs(first)[0][0])
    assert rate == RATE and own.shape == (1, round(frames_in / 16 * RATE)) and np.abs(own).max() > 0.01
    edited = run_graph(CAPTIONED, overrides={**base, "14.suffix": ", and a loud sawtooth tone at C5, very early"},
                       out_dir=tmp_path / "edited")
    assert not np.array_equal(own, read_wav(outputs(edited)[0][0])[1])


def test_the_embedded_captioner_writes_the_example_videos_notes():
    """On the shipped example video the captioner names both notes the picture implies, in order."""
    import av
    import torch

    from comfyui_audiovisual.encoders.captioner import load_captioner
    from comfyui_audiovisual.synthav.caption_evaluate import caption_frames, parse_audio_caption
    from comfyui_audiovisual.synthav.world import NOTE_NAMES
    from comfyui_audiovisual.workflows.graphs import EXAMPLE_VIDEO

    with av.open(os.path.join(PACK_DIR, "example_inputs", EXAMPLE_VIDEO)) as container:
        fps = float(container.streams.video[0].average_rate)
        frames = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]).float() / 255
    captioner = load_captioner(os.path.join(PACK_DIR, "embedded_models", "captioners", "synthav_captioner"))
    caption = captioner.caption(caption_frames(frames, fps))
    phrases = parse_audio_caption(caption)
    assert phrases is not None, caption
    assert [NOTE_NAMES[p.pitch] for p in phrases] == ["A4", "G4"], caption
