"""Every node that takes an AUDIO refuses a malformed one the same way, naming itself and the input."""

import pytest
import torch

BAD = [
    (None, r"expected an AUDIO .*got NoneType"),
    ({"waveform": torch.zeros(1, 1, 100)}, r"expected an AUDIO .*sample_rate None"),
    ({"waveform": [0.0] * 100, "sample_rate": 16000}, r"expected an AUDIO .*waveform list"),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": 0}, r"expected an AUDIO .*sample_rate 0"),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": 22050.5}, r"expected an AUDIO .*sample_rate 22050.5"),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": True}, r"expected an AUDIO"),
    ({"waveform": torch.zeros(1, 100), "sample_rate": 16000}, r"expected a waveform \[batch, channels, samples\], got \(1, 100\)"),
    ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, r"the clip is empty \(waveform \(1, 1, 0\)\)"),
]


@pytest.mark.parametrize("audio,message", BAD)
def test_a_malformed_audio_is_refused_naming_the_node_and_input(audio, message):
    from comfyui_audiovisual.nodes.audio_input import audio_input

    with pytest.raises(ValueError, match=r"^Encode Audio: audio: " + message):
        audio_input(audio, "Encode Audio")


def test_a_good_audio_passes_with_a_whole_rate():
    from comfyui_audiovisual.nodes.audio_input import audio_input

    waveform = torch.zeros(2, 1, 10)
    got, rate = audio_input({"waveform": waveform, "sample_rate": 16000.0}, "X")
    assert got is waveform and rate == 16000 and isinstance(rate, int)


@pytest.mark.parametrize("node_id,inputs,name", [
    ("AV_FitAudioToDuration", {"duration_s": 1.0}, "Fit Audio to Duration"),
    ("AV_AudioTransform", {"gain_db": 1.0}, "Audio Transform"),
    ("AV_AddAudioToVideo", {"video": None}, "Add Audio to Video"),
])
def test_the_nodes_refuse_it_with_their_own_name(host, node_id, inputs, name):
    node = host.nodes.NODE_CLASS_MAPPINGS[node_id]
    with pytest.raises(ValueError, match=rf"^{name}: audio: the clip is empty"):
        node.execute(audio={"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, **inputs)
