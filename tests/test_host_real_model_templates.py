"""The templates for the models users download (V2A-Mapper on CLIP-L + CLAP + AudioLDM, issue 17), as
shipped, on tiny random models written under the real names and layouts
(models/clip_vision/clip-vit-large-patch14/, models/audio_encoders/clap-htsat-unfused/,
models/audiovisual/audioldm/audioldm-s-full-v2/): train the mapper on a folder of clips, then image ->
audio and video -> audio with it; headless through the runner and over the host's HTTP API."""

import asyncio
import json
import os
import wave

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from conftest import PACK_DIR
from tiny_audioldm import TINY_SAMPLE_RATE, write_tiny_audioldm
from tiny_encoders import write_tiny_clap, write_tiny_clip_vision

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKFLOWS = os.path.join(PACK_DIR, "workflows")
EXAMPLE_VIDEO_S = 4.0  # example_inputs/audiovisual_example_video.mp4 (tools/make_example_video.py)
CHEAP = {  # fewer steps and a shorter sound: the graphs as shipped otherwise
    "train_v2a_mapper": {"73.steps": 20, "73.batch_size": 4, "73.width": 64, "73.depth": 1},
    "image_to_audio_audioldm": {"63.steps": 2, "65.steps": 2, "65.duration_s": 0.5},
    "video_to_audio_audioldm": {"63.steps": 2, "65.steps": 2},
}


def write_real_layout_models(models_dir) -> None:
    """Tiny random CLIP, CLAP and AudioLDM where and as a user's downloads lie (the templates' names)."""
    from comfyui_audiovisual.workflows.graphs import REAL_AUDIOLDM, REAL_CLAP, REAL_CLIP

    write_tiny_clip_vision(str(models_dir / REAL_CLIP))
    write_tiny_clap(str(models_dir / REAL_CLAP))
    write_tiny_audioldm(str(models_dir / "audiovisual" / "audioldm" / REAL_AUDIOLDM), with_text_encoder=False)


def write_clips(folder) -> list[str]:
    """Three picture + sound pairs (x.png + x.wav) and two videos with sound, in one folder."""
    from comfyui_audiovisual.tools.make_example_video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rate = 16000
    for i in range(3):
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(folder / f"pair{i}.png")
        tone = 0.3 * np.sin(2 * np.pi * (220 * (i + 1)) * np.arange(rate) / rate)
        with wave.open(str(folder / f"pair{i}.wav"), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
            w.writeframes((tone * 32767).astype("<i2").tobytes())
    for i in range(2):
        frames = np.stack([np.full((64, 64, 3), (t + 1) / 9 * (i + 1) / 2, dtype=np.float32) for t in range(8)])
        write_video(str(folder / f"clip{i}.mp4"), frames, 8, 0.3 * np.sin(np.arange(rate) * 0.05 * (i + 1)), rate)
    (folder / "readme.txt").write_text("not a clip")
    return ["clip0", "clip1", "pair0", "pair1", "pair2"]


def read_wav(path):
    with wave.open(str(path)) as f:
        rate, frames = f.getframerate(), f.getnframes()
    return rate, frames


@pytest.fixture(scope="module")
def real_models(host, tmp_path_factory):
    """The models tree registered with the host (the mapper folder first, where the trainer writes)."""
    base = tmp_path_factory.mktemp("real-layout-models")
    write_real_layout_models(base)
    folder_paths = host.folder_paths
    for key, sub in (("clip_vision", "clip_vision"), ("audio_encoders", "audio_encoders"), ("av_audioldm", "audiovisual/audioldm")):
        folder_paths.add_model_folder_path(key, str(base / sub))
    mappers = base / "audiovisual" / "mappers"
    mappers.mkdir(parents=True)
    folder_paths.add_model_folder_path("av_mappers", str(mappers), is_default=True)
    yield base
    paths = folder_paths.folder_names_and_paths["av_mappers"][0]
    if str(mappers) in paths:
        paths.remove(str(mappers))


def test_the_real_model_templates_carry_a_note_naming_their_files():
    """Each one says which files it needs and where they go, in a note the host never runs."""
    from comfyui_audiovisual.runner.run import to_api_prompt
    from comfyui_audiovisual.workflows.graphs import REAL_AUDIOLDM, REAL_CLAP, REAL_CLIP, REAL_MAPPER

    needs = {"image_to_audio_audioldm": [REAL_CLIP, REAL_MAPPER, REAL_AUDIOLDM],
             "video_to_audio_audioldm": [REAL_CLIP, REAL_MAPPER, REAL_AUDIOLDM],
             "train_v2a_mapper": [REAL_CLIP, REAL_CLAP, REAL_MAPPER, "input/my_clips"],
             "audio_to_image_flux": ["flux1-dev.safetensors", "ae.safetensors", "ast-finetuned-audioset", "seeing_sounds_flux"]}
    for name, files in needs.items():
        path = os.path.join(WORKFLOWS, f"{name}.json")
        workflow = json.load(open(path))
        notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
        assert len(notes) == 1, name
        text = notes[0]["widgets_values"][0]
        assert all(f in text for f in files), (name, [f for f in files if f not in text])
        assert str(notes[0]["id"]) not in to_api_prompt(path)  # editor-only: not sent to the host


def test_train_then_image_and_video_to_audio_with_the_trained_mapper(run_graph, host, real_models, tmp_path):
    """The user's path: clips in a folder -> Train V2A Mapper writes the mapper -> the AudioLDM templates load it."""
    from comfyui_audiovisual.loaders.mapper import load_mapper
    from comfyui_audiovisual.workflows.graphs import REAL_MAPPER

    clips = write_clips(tmp_path / "my_clips")
    written = run_graph(os.path.join(WORKFLOWS, "train_v2a_mapper.json"),
                        overrides={**CHEAP["train_v2a_mapper"], "72.folder": str(tmp_path / "my_clips")}, out_dir=tmp_path / "t")
    assert written == {} or all(not paths for paths in written.values())  # the mapper goes to the models folder, not --out
    mapper_path = real_models / "audiovisual" / "mappers" / REAL_MAPPER
    mapper = load_mapper(str(mapper_path))
    assert (mapper.source.family, mapper.source.modality, mapper.target.family, mapper.target.modality) == ("clip", "image", "clap", "audio")
    with safe_open(str(mapper_path), "pt") as f:
        assert f.metadata()["pairs"] == str(len(clips))  # every pair and every clip of the folder, nothing else

    written = run_graph(os.path.join(WORKFLOWS, "image_to_audio_audioldm.json"), overrides=CHEAP["image_to_audio_audioldm"],
                        out_dir=tmp_path / "image")
    rate, frames = read_wav(written["66"][0])
    assert (rate, frames) == (TINY_SAMPLE_RATE, TINY_SAMPLE_RATE // 2)

    written = run_graph(os.path.join(WORKFLOWS, "video_to_audio_audioldm.json"), overrides=CHEAP["video_to_audio_audioldm"],
                        out_dir=tmp_path / "video")
    rate, frames = read_wav(written["66"][0])
    assert (rate, frames) == (TINY_SAMPLE_RATE, int(EXAMPLE_VIDEO_S * TINY_SAMPLE_RATE))  # exactly the video's length
    [video] = written["70"]
    import av

    with av.open(video) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        audio_stream = next(s for s in container.streams if s.type == "audio")
        assert abs(float(audio_stream.duration * audio_stream.time_base) - EXAMPLE_VIDEO_S) < 0.1

    # a second training run refuses to replace the mapper (overwrite off), naming the node and the file
    from comfyui_audiovisual.runner import WorkflowError

    before = mapper_path.read_bytes()
    with pytest.raises(WorkflowError, match=r"node 73 \(AV_TrainMapper\): Train V2A Mapper: .*clip_l_to_clap\.safetensors"):
        run_graph(os.path.join(WORKFLOWS, "train_v2a_mapper.json"),
                  overrides={**CHEAP["train_v2a_mapper"], "72.folder": str(tmp_path / "my_clips")}, out_dir=tmp_path / "t2")
    assert mapper_path.read_bytes() == before


def test_a_clip_folder_without_clips_is_refused_by_name(run_graph, host, real_models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no clips here")
    with pytest.raises(WorkflowError, match=r"node 72 \(AV_EncodeClipFolder\): Encode Clip Folder: .*empty: no image/audio pairs or video clips"):
        run_graph(os.path.join(WORKFLOWS, "train_v2a_mapper.json"),
                  overrides={**CHEAP["train_v2a_mapper"], "72.folder": str(tmp_path / "empty"), "73.file_name": "never_written"},
                  out_dir=tmp_path / "out")
    assert not (real_models / "audiovisual" / "mappers" / "never_written.safetensors").exists()
    with pytest.raises(WorkflowError, match=r"Encode Clip Folder: data folder 'no_such_folder' not found"):
        run_graph(os.path.join(WORKFLOWS, "train_v2a_mapper.json"),
                  overrides={**CHEAP["train_v2a_mapper"], "72.folder": "no_such_folder"}, out_dir=tmp_path / "out")


def test_the_real_model_templates_run_over_http_with_the_clips_in_the_input_folder(server):
    """As in the editor: the files in the server's own models tree and input/my_clips, each template
    queued with POST /prompt; the mapper is trained first, then both AudioLDM templates write their files."""
    from test_host_http import _queue_and_watch

    from comfyui_audiovisual.runner.run import to_api_prompt

    base = server["base"]
    write_real_layout_models(base / "models")
    write_clips(base / "input" / "my_clips")
    for name in ("train_v2a_mapper", "image_to_audio_audioldm", "video_to_audio_audioldm"):
        prompt = to_api_prompt(os.path.join(WORKFLOWS, f"{name}.json"), CHEAP[name])
        events, history = asyncio.run(_queue_and_watch(server["url"], prompt))
        errors = [e["data"].get("exception_message") for e in events if e["type"] == "execution_error"]
        assert not errors and history["status"]["status_str"] == "success", (name, errors)
        if name == "train_v2a_mapper":
            assert (base / "models" / "audiovisual" / "mappers" / "clip_l_to_clap.safetensors").is_file()
        else:
            wav = history["outputs"]["66"]["audio"][0]
            rate, frames = read_wav(base / "output" / wav["subfolder"] / wav["filename"])
            assert rate == TINY_SAMPLE_RATE
            assert frames == (TINY_SAMPLE_RATE // 2 if name == "image_to_audio_audioldm" else int(EXAMPLE_VIDEO_S * TINY_SAMPLE_RATE))
