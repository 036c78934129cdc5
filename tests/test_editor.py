"""What the editor extension relies on, without a browser: a help page per node, the preview files the
audio and mel nodes hand to the editor, and the names the extension uses (tests/test_browser.py checks
the editor itself)."""

import json
import os
import re
import wave

import numpy as np
import pytest
import torch

from conftest import PACK_DIR

DOCS_DIR = os.path.join(PACK_DIR, "web", "docs")
EXTENSION_JS = os.path.join(PACK_DIR, "web", "js", "audiovisual.js")


def pack_nodes(host) -> dict:
    return {name: cls for name, cls in host.nodes.NODE_CLASS_MAPPINGS.items() if name.startswith("AV_")}


def test_every_node_has_a_help_page_that_names_its_inputs(host):
    nodes = pack_nodes(host)
    missing = [name for name in nodes if not os.path.isfile(os.path.join(DOCS_DIR, name, "en.md"))]
    assert not missing, f"write web/docs/<node id>/en.md for: {', '.join(sorted(missing))} (see docs/editor.md)"
    for name, cls in nodes.items():
        info = cls.GET_NODE_INFO_V1()
        text = open(os.path.join(DOCS_DIR, name, "en.md"), encoding="utf-8").read()
        assert text.startswith(f"# {info['display_name']}\n"), f"{name}: the page should start with '# {info['display_name']}'"
        for section in ("required", "optional"):
            for input_name in info["input"].get(section, {}):
                assert f"**{input_name}**" in text, f"web/docs/{name}/en.md does not describe input {input_name}"


def test_no_help_page_for_a_node_that_does_not_exist(host):
    nodes = pack_nodes(host)
    stale = [d for d in os.listdir(DOCS_DIR) if d not in nodes]
    assert not stale, f"help pages for unknown nodes: {stale}"


def test_the_extension_names_only_existing_nodes_and_categories(host):
    from comfyui_audiovisual.runner.workflow_builder import DISPLAY_EXTRA_PX

    source = open(EXTENSION_JS, encoding="utf-8").read()
    nodes = pack_nodes(host)
    preview_kind = re.search(r"const PREVIEW_KIND = \{(.*?)\};", source, re.S).group(1)
    for name in re.findall(r"(AV_\w+):", preview_kind):
        assert name in nodes, f"PREVIEW_KIND names {name}, which is no node"
        assert name in DISPLAY_EXTRA_PX, f"{name} shows a preview: give it room in runner/workflow_builder.py DISPLAY_EXTRA_PX"
    # a node that hands the editor a preview must have its area reserved (and named "audioUI", which
    # the host's own audio extension expects on any node with "audio" outputs)
    import inspect

    for name, cls in nodes.items():
        code = inspect.getsource(cls.execute)
        if re.search(r"\b(audio_preview_ui|mel_preview_ui|audio_spectrograms|spectrogram_previews)\(", code) or "av_spectrogram" in code:
            assert re.search(rf"\b{name}:", preview_kind), f"{name} sends a preview: add it to PREVIEW_KIND in web/js/audiovisual.js"
    families = set(re.findall(r"^  (\w+): \{ label:", source, re.M))
    for name, cls in nodes.items():
        family = cls.GET_NODE_INFO_V1()["category"].split("/")[1]
        assert family in families, f"{name}: category family {family!r} has no colour in audiovisual.js FAMILIES"


def _png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@pytest.fixture
def host_folders(host, tmp_path):
    folder_paths = host.folder_paths
    previous = folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    yield tmp_path
    folder_paths.set_output_directory(previous[0])
    folder_paths.set_temp_directory(previous[1])


def _tone(seconds, rate, channels=1, batch=1):
    t = torch.arange(int(seconds * rate)) / rate
    wave_ = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    return {"waveform": wave_.expand(batch, channels, -1).clone(), "sample_rate": rate}


def test_save_audio_wav_hands_the_editor_the_saved_file_and_its_spectrogram(host_folders):
    from comfyui_audiovisual.nodes.audio_output import SaveAudioWAV

    out = SaveAudioWAV.execute(audio=_tone(1.5, 16000, channels=2, batch=2), filename_prefix="av/test")
    ui = out.ui
    assert [e["type"] for e in ui["audio"]] == ["output", "output"]
    for entry in ui["audio"]:
        with wave.open(str(host_folders / "output" / entry["subfolder"] / entry["filename"])) as f:
            assert (f.getframerate(), f.getnchannels(), f.getnframes()) == (16000, 2, 24000)
    assert len(ui["av_spectrogram"]) == 2
    for entry in ui["av_spectrogram"]:
        assert entry["type"] == "temp" and entry["filename"].endswith(".png")
        assert (entry["seconds"], entry["sample_rate_hz"], entry["channels"]) == (1.5, 16000, 2)
        width, height = _png_size(host_folders / "temp" / entry["filename"])
        assert height == 80 and width == 1 + (33075 // 256)  # the clip at 22050 Hz, one column per mel frame
    json.dumps(ui)  # the host sends it to the editor as JSON


def test_spectrogram_shows_the_tone_at_its_mel_bin(host_folders):
    from comfyui_audiovisual.audio.mel_frontend import mel_bin_centres_hz
    from comfyui_audiovisual.nodes.audio_output import audio_spectrograms
    from PIL import Image

    entry = audio_spectrograms(_tone(1.0, 22050))[0]
    picture = np.asarray(Image.open(host_folders / "temp" / entry["filename"]).convert("L"), dtype=np.float32)
    row = int(picture[:, 20:-20].mean(axis=1).argmax())  # brightest row; row 0 = highest frequency
    centres = mel_bin_centres_hz().numpy()
    assert abs(centres[79 - row] - 440) < 60, f"the 440 Hz tone shows at {centres[79 - row]:.0f} Hz"


def test_a_silent_clip_is_saved_and_previewed_a_nan_clip_writes_nothing(host_folders):
    from comfyui_audiovisual.nodes.audio_output import SaveAudioWAV

    silent = {"waveform": torch.zeros(1, 1, 8000), "sample_rate": 8000}
    ui = SaveAudioWAV.execute(audio=silent, filename_prefix="silent").ui
    assert len(ui["audio"]) == 1 and len(ui["av_spectrogram"]) == 1
    bad = {"waveform": torch.full((1, 1, 100), float("nan")), "sample_rate": 8000}
    before = sorted(os.listdir(host_folders / "temp"))
    with pytest.raises(ValueError, match="Save Audio \\(WAV\\): .*NaN"):
        SaveAudioWAV.execute(audio=bad, filename_prefix="bad")
    assert sorted(os.listdir(host_folders / "temp")) == before
    assert not [f for f in os.listdir(host_folders / "output") if f.startswith("bad")]


def test_vocoder_and_mel_nodes_hand_the_editor_previews(host_folders):
    from comfyui_audiovisual.loaders.vocoders import load_vocoder
    from comfyui_audiovisual.nodes.payloads import MelSpectrogram
    from comfyui_audiovisual.nodes.tokenizers import AudioToMel
    from comfyui_audiovisual.nodes.vocoders import MelToAudio

    out = AudioToMel.execute(audio=_tone(0.5, 44100))
    mel = out.args[0]
    assert isinstance(mel, MelSpectrogram)
    (entry,) = out.ui["av_spectrogram"]
    assert _png_size(host_folders / "temp" / entry["filename"]) == (mel.mel01.shape[-1], 80)
    assert entry["seconds"] == pytest.approx(mel.duration_s, abs=1e-3)

    out = MelToAudio.execute(vocoder=load_vocoder("griffin-lim"), mel=mel)
    audio = out.args[0]
    (played,) = out.ui["audio"]
    assert played["type"] == "temp"
    with wave.open(str(host_folders / "temp" / played["filename"])) as f:
        assert f.getframerate() == audio["sample_rate"] and f.getnframes() == audio["waveform"].shape[-1]
    assert out.ui["av_spectrogram"][0]["seconds"] == pytest.approx(audio["waveform"].shape[-1] / audio["sample_rate"], abs=1e-3)


def test_a_long_clip_is_written_in_blocks_and_pictured_whole_at_a_bounded_width(host_folders, monkeypatch):
    from comfyui_audiovisual.nodes import audio_output
    from comfyui_audiovisual.nodes.audio_output import SaveAudioWAV

    monkeypatch.setattr(audio_output, "WAV_BLOCK_SAMPLES", 1000)  # blocks and limits of an hour, scaled to a test
    monkeypatch.setattr(audio_output, "PREVIEW_BLOCK_S", 2.0)
    monkeypatch.setattr(audio_output, "MAX_PREVIEW_FRAMES", 100)
    audio = _tone(7.3, 16000, channels=2)
    audio["waveform"][:, 1] *= -0.25
    ui = SaveAudioWAV.execute(audio=audio, filename_prefix="av/long").ui
    entry = ui["audio"][0]
    with wave.open(str(host_folders / "output" / entry["subfolder"] / entry["filename"])) as f:
        assert (f.getframerate(), f.getnchannels(), f.getnframes()) == (16000, 2, 116800)
        written = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").reshape(-1, 2).T
    at_once = (np.clip(audio["waveform"][0].numpy(), -1, 1) * 32767.0).round().astype("<i2")
    assert np.array_equal(written, at_once)
    spectrogram = ui["av_spectrogram"][0]
    assert (spectrogram["seconds"], spectrogram["sample_rate_hz"]) == (7.3, 16000)  # the whole clip
    width, height = _png_size(host_folders / "temp" / spectrogram["filename"])
    frames = 7.3 * 22050 / 256  # 629 mel frames, averaged 7 to a column (ceil(629 / 100)), block by block
    assert height == 80 and frames / 7 - 4 <= width <= 100
