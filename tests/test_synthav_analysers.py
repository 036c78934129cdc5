"""SynthAV analysers and evaluation: ground truth scores ~100%, wrong answers score clearly lower."""

import dataclasses

import numpy as np
import pytest

from comfyui_audiovisual.synthav import analysers as A
from comfyui_audiovisual.synthav import evaluate as E
from comfyui_audiovisual.synthav import split as S
from comfyui_audiovisual.synthav import world as W

HELD = S.scenes("heldout", 32)


def _audio(scenes):
    return [W.render_audio(s) for s in scenes]


def _images(scenes):
    return [W.render_image(s) for s in scenes]


def _alter(scenes, **change):
    """The same scenes with each object's attribute changed: change = {attr: fn(old) -> new}."""
    out = []
    for s in scenes:
        objs = tuple(dataclasses.replace(o, **{k: f(getattr(o, k)) for k, f in change.items()}) for o in s.objects)
        out.append(W.Scene(s.seed, objs))
    return out


def test_ground_truth_scores_near_perfect():
    gt = E.ground_truth_scores(64, 32)
    for k in ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc", "hue_acc", "shape_acc", "size_acc",
              "position_acc", "unseen_pitch_acc", "unseen_timbre_acc", "unseen_loudness_acc", "unseen_onset_acc",
              "unseen_hue_acc", "unseen_shape_acc", "unseen_size_acc", "unseen_position_acc",
              "audio_count_acc", "image_count_acc"):
        assert gt[k] >= 0.98, (k, gt[k])
    assert gt["audio_onset_err_ms"] < 10 and gt["audio_pitch_err_cents"] < 5 and gt["audio_loudness_err_db"] < 0.5


def test_detect_notes_recovers_parameters():
    sc = W.Scene(3, (W.SceneObject(3, 4, 0, 0, 8.0, 30.0), W.SceneObject(1, 2, 2, 2, 40.0, 20.0)))
    notes = A.detect_notes(W.render_audio(sc))
    assert [(n.pitch, n.timbre, n.loudness) for n in notes] == [(4, 3, 0), (2, 1, 2)]
    assert [round(n.onset_s, 2) for n in notes] == [0.10, 1.00]
    assert A.detect_notes(np.zeros(W.N_SAMPLES)) == []


def test_shuffled_waveforms_score_lower():
    waves = _audio(HELD)
    shuffled = waves[1:] + waves[:1]
    res = E.score_audio(HELD, shuffled)
    assert res["pitch_acc"] < 0.5 and res["onset_acc"] < 0.7 and res["all_acc"] < 0.2


def test_wrong_audio_attributes_score_lower():
    base = E.score_audio(HELD, _audio(HELD))
    assert base["all_acc"] == 1.0
    shifted = E.score_audio(HELD, _audio(_alter(HELD, colour=lambda c: (c + 1) % 8)))   # a step up the scale
    assert shifted["pitch_acc"] == 0.0 and shifted["timbre_acc"] == 1.0
    timbre = E.score_audio(HELD, _audio(_alter(HELD, shape=lambda s: (s + 1) % 4)))
    assert timbre["timbre_acc"] == 0.0 and timbre["pitch_acc"] == 1.0
    louder = E.score_audio(HELD, [2.0 * w for w in _audio(HELD)])                     # +6 dB
    assert louder["loudness_acc"] < 0.5
    late = E.score_audio(HELD, [np.roll(w, int(0.1 * W.SAMPLE_RATE)) for w in _audio(HELD)])
    assert late["onset_acc"] == 0.0 and late["pitch_acc"] == 1.0
    silent = E.score_audio(HELD, [np.zeros(W.N_SAMPLES, np.float32)] * len(HELD))
    assert silent["pitch_acc"] == 0.0 and silent["missing_rate"] == 1.0


def _rotate_hue(img, deg):
    h, s, v = A.rgb_to_hsv(img.astype(np.float64))
    return W.hsv_to_rgb(h + deg, s, v).astype(np.float32)


def test_wrong_images_score_lower():
    imgs = _images(HELD)
    assert E.score_images(HELD, imgs)["all_acc"] == 1.0
    rotated = E.score_images(HELD, [_rotate_hue(x, 45) for x in imgs])
    assert rotated["hue_acc"] == 0.0 and rotated["shape_acc"] >= 0.98
    flipped = E.score_images(HELD, [x[:, ::-1] for x in imgs])     # column c -> 3 - c
    assert flipped["position_acc"] == 0.0
    shapes = E.score_images(HELD, _images(_alter(HELD, shape=lambda s: (s + 1) % 4)))
    assert shapes["shape_acc"] < 0.1 and shapes["hue_acc"] == 1.0
    sizes = E.score_images(HELD, _images(_alter(HELD, size=lambda z: (z + 1) % 3)))
    assert sizes["size_acc"] < 0.1
    shuffled = E.score_images(HELD, imgs[1:] + imgs[:1])
    assert shuffled["hue_acc"] < 0.5 and shuffled["all_acc"] < 0.2
    blank = E.score_images(HELD, [np.full((64, 64, 3), 0.5, np.float32)] * len(HELD))
    assert blank["hue_acc"] == 0.0 and blank["missing_rate"] == 1.0


def test_analysers_tolerate_blur_and_other_layouts():
    import torch
    import torch.nn.functional as F
    scenes = HELD[:16]
    t = torch.from_numpy(np.stack(_images(scenes))).permute(0, 3, 1, 2)
    blurry = F.interpolate(F.interpolate(t, scale_factor=0.5, mode="area"), scale_factor=2, mode="bilinear")
    res = E.score_images(scenes, blurry)                # [B, 3, H, W] torch input
    assert min(res[k] for k in E.IMAGE_METRICS) >= 0.9
    big = F.interpolate(t, scale_factor=2, mode="bilinear")
    assert E.score_images(scenes, big)["all_acc"] == 1.0  # 128 px images
    noisy = [w + 0.01 * np.random.default_rng(0).standard_normal(w.shape) for w in _audio(scenes)]
    assert E.score_audio(scenes, noisy)["all_acc"] == 1.0


def test_match_sets():
    # object 0 fits detection 1 (3 correct), object 1 fits detection 0
    table = {(0, 0): 1, (0, 1): 3, (1, 0): 4, (1, 1): 0}
    assert E.match_sets(2, 2, lambda i, j: (table[i, j], 0.0)) == [1, 0]
    assert E.match_sets(2, 1, lambda i, j: ((2, 1)[i], 0.0)) == [0, None]


def _oracle(task):
    """A perfect generator: looks the scene up from its input."""
    scenes = S.scenes("heldout", 6) + S.scenes("unseen", 3)
    kind = E.TASKS[task][0]
    key = {"image": lambda x: np.asarray(x).tobytes(), "audio": lambda x: np.asarray(x).tobytes()}.get(kind, str)
    table = {key(inp): s for s in scenes for inp in E.task_inputs(task, [s])}
    render = W.render_audio if E.TASKS[task][1] == "audio" else W.render_image

    def generate(inputs):
        return np.stack([render(table[key(x)]) for x in inputs])
    return generate


def test_evaluate_harness():
    res = E.evaluate("image2audio", _oracle("image2audio"), n=6, n_unseen=3, batch_size=4, diversity_n=3)
    for k in ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc", "unseen_pitch_acc", "unseen_timbre_acc"):
        assert res[k] == 1.0, k
    assert res["n"] == 6 and res["ground_truth"]["pitch_acc"] == 1.0 and res["diversity"] == 0.0
    res2 = E.evaluate("text2image", _oracle("text2image"), n=6, n_unseen=3, diversity_n=0)
    assert all(res2[k] == 1.0 for k in ("hue_acc", "shape_acc", "size_acc", "position_acc", "unseen_hue_acc"))
    calls = []

    def noise(inputs, seed):
        calls.append(seed)
        rng = np.random.default_rng(seed)
        return rng.uniform(0, 1, (len(inputs), 3, 32, 32)).astype(np.float32)
    res3 = E.evaluate("audio2image", noise, n=4, n_unseen=2, diversity_n=2)
    assert res3["hue_acc"] < 0.5 and 0.5 < res3["diversity"] < 1.5 and len(calls) == 3
    with pytest.raises(E.GroundTruthError):
        E.evaluate("image2audio", _oracle("image2audio"), n=2, n_unseen=0, min_ground_truth=1.01)
    with pytest.raises(ValueError):
        E.evaluate("image2video", noise)
    with pytest.raises(ValueError):
        E.evaluate("image2audio", lambda x: np.zeros((1, 100)), n=2, n_unseen=0)
    table = E.format_table({"oracle": res, "other": res})
    lines = table.splitlines()
    assert lines[0].startswith("| run | pitch_acc") and len(lines) == 5 and "ground truth" in lines[-1]
    assert "1.000" in E.format_table(res)
