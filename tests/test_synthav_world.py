"""SynthAV world: determinism, the split, videos, captions, the audio length and the dataset export."""

import math
import re

import numpy as np
import pytest
import torch

from comfyui_audiovisual.synthav import split as S
from comfyui_audiovisual.synthav import world as W
from comfyui_audiovisual.synthav.dataset import load_dataset, make_dataset


def test_same_seed_same_bytes_different_seeds_differ():
    a, b = W.make_scene(1234), W.make_scene(1234)
    assert a == b
    assert W.render_image(a).tobytes() == W.render_image(b).tobytes()
    assert W.render_audio(a).tobytes() == W.render_audio(b).tobytes()
    assert S.heldout_scene(7) == S.heldout_scene(7)
    images = {W.render_image(W.make_scene(s)).tobytes() for s in range(8)}
    audios = {W.render_audio(W.make_scene(s)).tobytes() for s in range(8)}
    assert len(images) == 8 and len(audios) == 8


def test_formats_and_levels():
    scene = S.training_scene(3)
    img, wav = W.render_image(scene), W.render_audio(scene)
    assert img.shape == (64, 64, 3) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert wav.shape == (W.N_SAMPLES,) and wav.dtype == np.float32
    assert np.abs(wav).max() < 0.6
    # the SpecVQGAN mel of a clip has a frame count that is a multiple of 16
    assert W.MEL_FRAMES == 1 + W.N_SAMPLES // 256 == 176 and W.MEL_FRAMES % 16 == 0


def test_mel_frontend_frame_count():
    mel_frontend = pytest.importorskip("comfyui_audiovisual.audio.mel_frontend")
    torch = pytest.importorskip("torch")
    wav = torch.from_numpy(W.render_audio(S.training_scene(0)))[None]
    assert tuple(mel_frontend.waveform_to_mel(wav).shape) == (1, 80, 176)


def test_background_is_unsaturated_and_objects_saturated():
    from comfyui_audiovisual.synthav.analysers import rgb_to_hsv
    for i in range(8):
        scene = S.heldout_scene(i)
        _, sat_bg, _ = rgb_to_hsv(W.render_background(scene.seed).astype(np.float64))
        assert sat_bg.max() <= W.BG_MAX_SAT + 1e-6
    _, sat, _ = rgb_to_hsv(np.stack([W.colour_rgb(c) for c in range(8)])[None].astype(np.float64))
    assert np.allclose(sat, W.OBJ_SAT)


def test_heldout_combos_never_in_training():
    assert len(S.HELDOUT_COMBOS) == 4 and len(S.SEEN_COMBOS) == 28
    assert len({s for s, _ in S.HELDOUT_COMBOS}) == 4 and len({c for _, c in S.HELDOUT_COMBOS}) == 4
    for i in range(3000):
        assert not any(S.is_heldout_combo(o) for o in S.training_scene(i).objects)
    for i in range(500):
        assert not any(S.is_heldout_combo(o) for o in S.heldout_scene(i).objects)
        assert sum(S.is_heldout_combo(o) for o in S.unseen_combo_scene(i).objects) >= 1
    with pytest.raises(ValueError):
        S.training_scene(S.SPLIT_SIZE)
    # seeds of the splits are disjoint
    assert S.heldout_scene(0).seed == S.HELDOUT_SEED_BASE and S.training_scene(S.SPLIT_SIZE - 1).seed < S.HELDOUT_SEED_BASE


def test_scene_structure():
    n_obj = []
    for i in range(400):
        sc = S.training_scene(i)
        cols = [o.column for o in sc.objects]
        assert cols == sorted(set(cols))
        for o in sc.objects:
            assert int(o.x // W.COLUMN_WIDTH) == o.column
            r = W.SIZE_EXTENT_PX[o.size] / 2
            assert r <= o.x <= 64 - r and r <= o.y <= 64 - r
        n_obj.append(len(sc.objects))
    assert set(n_obj) == {1, 2}


def test_caption_matches_params():
    for i in range(50):
        sc = S.training_scene(i)
        d = sc.to_dict()
        assert W.Scene.from_dict(d) == sc
        img_parts = sc.image_caption().split(" and ")
        aud_parts = sc.audio_caption().split(", and ")
        assert len(img_parts) == len(aud_parts) == len(sc.objects)
        for o, ip, ap in zip(sc.objects, img_parts, aud_parts):
            m = re.fullmatch(r"a (\w+) (\w+) (\w+) on the (.+)", ip)
            assert m, ip
            assert (W.SIZES.index(m[1]), W.COLOURS.index(m[2]), W.SHAPES.index(m[3]),
                    W.COLUMN_NAMES.index(m[4])) == (o.size, o.colour, o.shape, o.column)
            m = re.fullmatch(r"a (\w+) (\w+) tone at ([A-G]\d), (.+)", ap)
            assert m, ap
            assert (W.LOUDNESS.index(m[1]), W.TIMBRES.index(m[2]), W.NOTE_NAMES.index(m[3]),
                    W.ONSET_WORDS.index(m[4])) == (o.loudness, o.timbre, o.pitch, o.column)
    one = W.Scene(0, (W.SceneObject(2, 0, 2, 0, 10.0, 30.0),))
    assert one.image_caption() == "a large red square on the far left"
    assert one.audio_caption() == "a loud square tone at C4, very early"


def test_notes_start_at_the_column_onsets():
    sc = W.Scene(5, (W.SceneObject(0, 5, 1, 1, 24.0, 20.0), W.SceneObject(3, 0, 0, 3, 56.0, 40.0)))
    wav = W.render_audio(sc)
    nz = np.nonzero(np.abs(wav) > 0)[0]
    assert nz[0] == round(W.ONSET_S[1] * W.SAMPLE_RATE) + 1 or nz[0] == round(W.ONSET_S[1] * W.SAMPLE_RATE)
    assert np.abs(wav[: round(W.ONSET_S[1] * W.SAMPLE_RATE)]).max() == 0


def test_video_onsets_at_appearance_times():
    from comfyui_audiovisual.synthav.analysers import detect_notes, detect_objects
    for seed in (11, 12, 13):
        v = W.make_video(seed, fps=16, duration_s=W.CLIP_S)
        assert v.frames.shape == (round(W.CLIP_S * 16), 64, 64, 3) and v.audio.shape == (W.N_SAMPLES,)
        bg = W.render_background(v.scene.seed)
        for i, (o, t) in enumerate(zip(v.scene.objects, v.appear_times)):
            k = round(t * 16)
            assert abs(k / 16 - t) < 1e-9 and t >= o.onset_s - 1e-9 and t - o.onset_s < 1 / 16
            # object i's pixels change at frame k, not before
            r = int(o.y), int(o.x)
            assert np.allclose(v.frames[k - 1][r], bg[r]) and not np.allclose(v.frames[k][r], bg[r])
        notes = detect_notes(v.audio)
        assert len(notes) == len(v.scene.objects)
        for note, t in zip(notes, v.appear_times):
            assert abs(note.onset_s - t) < 0.015
        assert len(detect_objects(v.frames[-1])) == len(v.scene.objects)
        assert len(detect_objects(v.frames[0])) == 0
    # explicit appearance times, another duration and frame rate
    v = W.make_video(21, fps=10, duration_s=3.0, appear_times=[0.43, 2.0][: len(W.make_scene(21).objects)])
    assert v.audio.shape == (3 * W.SAMPLE_RATE,) and v.frames.shape[0] == 30
    assert v.appear_times[0] == pytest.approx(0.5)
    start = np.nonzero(v.audio)[0][0]
    assert abs(start / W.SAMPLE_RATE - 0.5) < 2 / W.SAMPLE_RATE


def test_dataset_roundtrip(tmp_path):
    out = tmp_path / "d.safetensors"
    make_dataset("unseen", 3, str(out), start=5)
    d = load_dataset(str(out))
    assert tuple(d["images"].shape) == (3, 3, 64, 64) and tuple(d["waves"].shape) == (3, W.N_SAMPLES)
    assert d["scenes"] == [S.unseen_combo_scene(i) for i in (5, 6, 7)]
    assert d["config"]["split"] == "unseen" and d["config"]["mel_frames"] == 176
    sc = d["scenes"][0]
    img = W.render_image(sc)
    assert np.abs(d["images"][0].permute(1, 2, 0).float().numpy() - img).max() < 2e-3
    for j, o in enumerate(sc.objects):
        assert d["objects"][0, j].tolist() == [o.shape, o.colour, o.size, o.column]
    with pytest.raises(ValueError):
        make_dataset("validation", 3, str(tmp_path / "x.safetensors"))
    with pytest.raises(FileNotFoundError):
        make_dataset("train", 3, str(tmp_path / "missing" / "x.safetensors"))
    assert not (tmp_path / "x.safetensors").exists()
    assert math.isclose(W.CLIP_S, 44800 / 22050)


def test_dataset_rendered_in_worker_processes_is_identical(tmp_path):
    # 300 scenes = two chunks, so two spawned workers each render one
    serial = load_dataset(make_dataset("train", 300, str(tmp_path / "serial.safetensors"), start=7))
    parallel = load_dataset(make_dataset("train", 300, str(tmp_path / "parallel.safetensors"), start=7, workers=2))
    for key in ("images", "waves", "objects"):
        assert torch.equal(serial[key], parallel[key]), key
    assert serial["scenes"] == parallel["scenes"] == [S.split_scene("train", k) for k in range(7, 307)]
