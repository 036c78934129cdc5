"""The shipped image -> audio template through the host's real executor with the Visual Echoes Sampler's
duration_s set: the sound covers the duration (whole token columns), decoded by the same nodes as a 2 s clip."""

import math
import os

from PIL import Image

from conftest import PACK_DIR, tiny_overrides
from test_host_workflows import HOP, read_wav

SECONDS_PER_COLUMN = 16 * 256 / 22050  # the tiny spectrogram tokenizer's, as SpecVQGAN's
MEL_FRAMES_PER_COLUMN = 16


def test_the_image_to_audio_template_makes_six_seconds_when_asked(run_graph, tiny_models, tmp_path):
    path = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")
    written = run_graph(path, overrides={**tiny_overrides(tiny_models), "6.steps": 2, "6.duration_s": 6.0}, out_dir=tmp_path / "out")
    files = [p for paths in written.values() for p in paths]
    wav = [p for p in files if p.endswith(".wav")]
    assert len(wav) == 1
    rate, audio = read_wav(wav[0])
    columns = math.ceil(6.0 / SECONDS_PER_COLUMN)
    assert audio.shape == (1, columns * MEL_FRAMES_PER_COLUMN * HOP)  # the whole grid, vocoded
    assert abs(audio.shape[1] / rate - 6.0) <= SECONDS_PER_COLUMN  # 6 s to one column's hop
    spectrogram = [p for p in files if p.endswith(".png") and "spectrogram" in os.path.basename(p)]
    assert len(spectrogram) == 1 and Image.open(spectrogram[0]).size == (columns * MEL_FRAMES_PER_COLUMN * 2, 80 * 3)
