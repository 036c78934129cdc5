"""SeeingSounds procedural control: the transforms do what their rules say (measured with the SynthAV
analysers), the modifiers follow the documented rules, and bad audio is refused by name."""

import math

import numpy as np
import pytest
import torch

from comfyui_audiovisual.audio import transforms as T
from comfyui_audiovisual.synthav import analysers as A
from comfyui_audiovisual.synthav import world as W

SR = W.SAMPLE_RATE


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def note(timbre=0, pitch=0, loudness=1, column=1) -> torch.Tensor:
    """A SynthAV scene of one note as AUDIO waveform [1, 1, T]."""
    scene = W.Scene(0, (W.SceneObject(timbre, pitch, loudness, column, 24.0, 32.0),))
    return torch.from_numpy(W.render_audio(scene)).float()[None, None]


def rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def only_note(waveform: torch.Tensor) -> A.Note:
    notes = A.detect_notes(waveform[0], SR)
    assert len(notes) == 1, notes
    return notes[0]


def test_plus_6_db_doubles_rms_and_the_modifier_says_larger():
    x = note()
    y = T.apply_gain(x, SR, 6.0)
    assert rms(y) / rms(x) == pytest.approx(2.0, rel=0.003)  # 10^(6/20) = 1.995
    assert only_note(y).loudness == only_note(x).loudness + 1  # SynthAV's levels are 6 dB apart
    assert T.prompt_modifiers(gain_db=6.0) == ["larger"]
    assert T.prompt_modifiers(gain_db=-6.0) == ["smaller"]
    assert T.prompt_modifiers(gain_db=12.0) == ["much larger"]
    assert T.prompt_modifiers(gain_db=2.0) == []  # under half a step: no word


@pytest.mark.parametrize("timbre", [0, 3])  # sine, sawtooth
def test_plus_12_semitones_doubles_the_pitch_keeps_timing_level_and_timbre(timbre):
    x = note(timbre=timbre, pitch=0)  # C4, 261.6 Hz
    y = T.pitch_shift(x, SR, 12.0)
    assert y.shape == x.shape
    before, after = only_note(x), only_note(y)
    assert after.f0_hz / before.f0_hz == pytest.approx(2.0, rel=0.003)
    assert after.pitch == 7  # C5
    assert after.onset_s == pytest.approx(before.onset_s, abs=0.02)
    assert after.rms == pytest.approx(before.rms, rel=0.1)
    assert after.timbre == before.timbre


@pytest.mark.parametrize("semitones", [-5.0, 2.0, 7.0])
def test_any_shift_multiplies_the_frequency_by_two_to_the_n_over_12(semitones):
    x = note(pitch=4)  # G4, 392 Hz
    after = only_note(T.pitch_shift(x, SR, semitones))
    assert after.f0_hz / W.NOTE_HZ[4] == pytest.approx(2 ** (semitones / 12), rel=0.003)


def test_pitch_shift_keeps_stereo_channels_and_batches_apart():
    left, right = note(pitch=0)[0, 0], note(pitch=1)[0, 0]
    stereo = torch.stack([torch.stack([left, right]), torch.stack([right, left])])  # [2, 2, T]
    y = T.pitch_shift(stereo, SR, 12.0)
    assert y.shape == stereo.shape
    assert only_note(y[0:1, 0:1]).pitch == 7 and only_note(y[0:1, 1:2]).f0_hz == pytest.approx(2 * W.NOTE_HZ[1], rel=0.003)
    assert torch.allclose(y[1, 0], y[0, 1], atol=1e-5)


def test_pitch_modifiers_higher_is_smaller_and_brighter():
    assert T.prompt_modifiers(semitones=12.0) == ["smaller", "much brighter"]
    assert T.prompt_modifiers(semitones=-3.0) == ["darker"]
    # +6 dB and +12 semitones cancel in size; brightness remains
    assert T.prompt_modifiers(gain_db=6.0, semitones=12.0) == ["much brighter"]


def test_mix_sums_both_notes_and_the_modifier_says_x_and_y():
    a, b = note(pitch=0, column=0), note(pitch=4, column=3)
    mixed = T.mix(a, SR, b, SR)
    assert torch.allclose(mixed, a + b)
    notes = A.detect_notes(mixed[0], SR)
    assert [n.pitch for n in notes] == [0, 4]
    phrases = T.prompt_modifiers(gain_db=6.0, mixed_with="a cat meowing")
    assert phrases == ["larger", "and a cat meowing"]
    assert T.compose_prompt("a dog barking", T.modifiers_text(phrases)) == "a dog barking, larger, and a cat meowing"
    assert T.compose_prompt("a dog barking", "and a cat meowing") == "a dog barking and a cat meowing"


def test_mix_resamples_the_second_clip_and_pads_the_shorter():
    a = note(pitch=0)
    b44 = torch.from_numpy(np.sin(2 * np.pi * 440.0 * np.arange(44100) / 44100) * 0.1).float()[None, None]  # 1 s at 44.1 kHz
    mixed = T.mix(a, SR, b44, 44100)
    assert mixed.shape == (1, 1, a.shape[-1])
    tail = mixed[..., SR:]  # after 1 s only clip a remains
    assert torch.allclose(tail, a[..., SR:], atol=1e-6)
    stereo_b = b44.expand(1, 2, -1)
    assert T.mix(a, SR, stereo_b, 44100).shape == (1, 2, a.shape[-1])  # mono a spread over b's channels


def test_compose_prompt_rules_and_errors():
    assert T.compose_prompt("  a dog   barking ", "") == "a dog barking"
    assert T.compose_prompt("a dog barking", "larger; much brighter") == "a dog barking, larger, much brighter"
    assert T.compose_prompt("a dog barking", "larger\nand rain falling") == "a dog barking, larger, and rain falling"
    with pytest.raises(ValueError, match="caption: empty"):
        T.compose_prompt("  ", "larger")
    with pytest.raises(ValueError, match="caption_b"):
        T.prompt_modifiers(mixed_with="   ")


@pytest.mark.parametrize("transform", ["gain", "pitch", "mix"])
@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 1, 0), "empty"),
    (torch.zeros(1, 1, 22050), "silent"),
    (torch.full((1, 1, 100), float("nan")), "NaN"),
])
def test_empty_silent_or_nan_audio_is_refused_by_name(transform, bad, message):
    good = note()
    with pytest.raises(ValueError, match=message):
        if transform == "gain":
            T.apply_gain(bad, SR, 6.0)
        elif transform == "pitch":
            T.pitch_shift(bad, SR, 3.0)
        else:
            T.mix(good, SR, bad, SR)


def test_out_of_range_amounts_are_refused():
    with pytest.raises(ValueError, match="gain_db"):
        T.apply_gain(note(), SR, 100.0)
    with pytest.raises(ValueError, match="semitones"):
        T.pitch_shift(note(), SR, float("nan"))


def test_pitch_ratio_is_within_a_cent():
    for n in np.arange(-24, 24.5, 0.5):
        cents = 1200 * math.log2(float(T.pitch_ratio(n)) / 2 ** (n / 12))
        assert abs(cents) < 0.1


def test_nodes_through_the_host_transform_and_compose(run_graph, host, tmp_path):
    """AV_AudioTransform -> AV_ComposePrompt in the host's executor on the pack's example sound (SynthAV:
    B4 sine, then G4 square); the saved audio is analysed and the composed prompt checked."""
    import json
    import os
    import wave

    from conftest import PACK_DIR

    prompt = {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "audiovisual_example_scene.wav"}},
        "2": {"class_type": "AV_AudioTransform", "inputs": {"audio": ["1", 0], "gain_db": 6.0, "semitones": -5.0, "caption_b": ""}},
        "3": {"class_type": "AV_ComposePrompt", "inputs": {"caption": "a sine tone", "modifiers": ["2", 1], "suffix": ", a photo"}},
        "4": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["2", 0], "filename_prefix": "audiovisual/transformed"}},
        "5": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["1", 0], "filename_prefix": "audiovisual/original"}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }
    written = run_graph(prompt, out_dir=tmp_path / "out")

    def read(node):
        with wave.open(written[node][0]) as f:
            rate, frames, channels = f.getframerate(), f.readframes(f.getnframes()), f.getnchannels()
        return rate, torch.from_numpy(np.frombuffer(frames, dtype="<i2").reshape(-1, channels).T / 32768.0).float()

    (rate, original), (rate_out, transformed) = read("5"), read("4")
    assert rate_out == rate and transformed.shape == original.shape
    before, after = A.detect_notes(original, rate), A.detect_notes(transformed, rate)
    assert len(before) == len(after) == 2
    for b, a in zip(before, after):
        assert a.f0_hz / b.f0_hz == pytest.approx(2 ** (-5 / 12), rel=0.003)
        assert a.rms / b.rms == pytest.approx(2.0, rel=0.1)
        assert a.onset_s == pytest.approx(b.onset_s, abs=0.02)
    # gain +6 dB (1 step larger) and -5 semitones (5/12 step larger) -> "much larger"? no: 1.42 steps -> "larger"; darker
    assert T.prompt_modifiers(6.0, -5.0) == ["larger", "darker"]
    scene = json.load(open(os.path.join(PACK_DIR, "example_inputs", "audiovisual_example_scene.json")))
    assert [W.NOTE_NAMES[n.pitch] for n in before] == [o["note"] for o in scene["objects"]]


def test_compose_node_output_through_the_host(run_graph, host, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    prompt = {"3": {"class_type": "AV_ComposePrompt", "inputs": {"caption": "   ", "modifiers": "larger", "suffix": ""}},
              "6": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
    with pytest.raises(WorkflowError, match="node 3 .*Compose Prompt: caption: empty"):
        run_graph(prompt, out_dir=tmp_path / "out")


def test_transform_node_refuses_bad_audio_and_a_mix_without_caption(host):
    node = host.nodes.NODE_CLASS_MAPPINGS["AV_AudioTransform"]
    good = {"waveform": note(), "sample_rate": SR}
    with pytest.raises(ValueError, match="^Audio Transform: audio: the clip is silent"):
        node.execute({"waveform": torch.zeros(1, 1, 4000), "sample_rate": SR}, 6.0, 0.0)
    with pytest.raises(ValueError, match="^Audio Transform: audio: .*NaN"):
        node.execute({"waveform": torch.full((1, 1, 4000), float("nan")), "sample_rate": SR}, 0.0, 3.0)
    with pytest.raises(ValueError, match="^Audio Transform: audio: the clip is empty"):
        node.execute({"waveform": torch.zeros(1, 1, 0), "sample_rate": SR}, 0.0, 0.0)
    with pytest.raises(ValueError, match="^Audio Transform: caption_b"):
        node.execute(good, 0.0, 0.0, audio_b=good, caption_b=" ")
    with pytest.raises(ValueError, match="^Audio Transform: audio_b: .*silent"):
        node.execute(good, 0.0, 0.0, audio_b={"waveform": torch.zeros(1, 1, 10), "sample_rate": SR}, caption_b="rain")
    out = node.execute(good, -6.0, 0.0, audio_b=good, caption_b="rain falling")
    audio, modifiers = out.result
    assert modifiers == "smaller; and rain falling"
    assert torch.allclose(audio["waveform"], good["waveform"] * (1 + 10 ** (-6 / 20)), atol=1e-6)
    assert audio["sample_rate"] == SR
