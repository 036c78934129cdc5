"""Put Back into Audio: the regenerated range goes back into the whole sound; everything outside it is the
original's, bit for bit; a range the regenerated window does not cover is refused, naming what it covers."""

import pytest
import torch

from comfyui_audiovisual.audio.splice import replace_range


def _clips(rate=8000, seconds=10.0, channels=2):
    original = torch.randn(1, channels, int(seconds * rate), generator=torch.Generator().manual_seed(0)) * 0.1
    regenerated = torch.full((1, 1, int(2.04 * 22050)), 0.5)  # one model window at the vocoder's rate, mono
    return original, regenerated


def test_outside_the_range_the_original_comes_back_unchanged_and_whole():
    original, regenerated = _clips()
    out = replace_range(original, 8000, regenerated, 22050, 0.5, 1.5, crossfade_s=0.05)
    assert out.shape == original.shape and out.dtype == original.dtype
    assert torch.equal(out[..., :4000], original[..., :4000]) and torch.equal(out[..., 12000:], original[..., 12000:])
    assert torch.allclose(out[..., 4400:11600], torch.full((1, 2, 7200), 0.5), atol=1e-3)  # the mono window on both channels
    ramp = out[0, 0, 4000:4400] - original[0, 0, 4000:4400]  # crossfaded in over 50 ms inside the range
    assert abs(float(ramp[0])) < 0.02 and torch.allclose(out[0, 0, 4399], torch.tensor(0.5), atol=0.01)


def test_a_window_from_later_in_the_sound_goes_back_where_it_came_from():
    original, regenerated = _clips()
    out = replace_range(original, 8000, regenerated, 22050, 6.2, 6.8, replacement_start_s=5.0, crossfade_s=0.0)
    assert torch.equal(out[..., :49600], original[..., :49600]) and torch.equal(out[..., 54400:], original[..., 54400:])
    assert torch.allclose(out[..., 49600:54400], torch.full((1, 2, 4800), 0.5), atol=1e-3)


@pytest.mark.parametrize("start,end,offset,message", [
    (0.5, 3.0, 0.0, r"the range 0.5-3 s is not all in the regenerated sound, which covers 0.000-2.040 s"),
    (1.0, 1.0, 0.0, r"the range 1-1 s is empty"),
    (9.5, 10.5, 9.0, r"ends after the audio \(10.000 s\)"),
    (-1.0, 1.0, 0.0, r"start_s must be a finite number of seconds >= 0"),
])
def test_a_range_outside_the_window_or_the_sound_is_refused_naming_the_limit(start, end, offset, message):
    original, regenerated = _clips()
    with pytest.raises(ValueError, match=message):
        replace_range(original, 8000, regenerated, 22050, start, end, replacement_start_s=offset)


def test_the_node_names_itself_and_returns_the_originals_rate(host):
    node = host.nodes.NODE_CLASS_MAPPINGS["AV_PutBackIntoAudio"]
    original, regenerated = _clips()
    out = node.execute(audio={"waveform": original, "sample_rate": 8000}, regenerated={"waveform": regenerated, "sample_rate": 22050},
                       start_s=0.5, end_s=1.5).args[0]
    assert out["sample_rate"] == 8000 and out["waveform"].shape == original.shape
    with pytest.raises(ValueError, match=r"^Put Back into Audio: the range 0.5-2.5 s is not all in the regenerated sound"):
        node.execute(audio={"waveform": original, "sample_rate": 8000}, regenerated={"waveform": regenerated, "sample_rate": 22050},
                     start_s=0.5, end_s=2.5)
