"""Metrics that can't flatter: extra notes and objects cost precision, ablated conditions reach the
generator, and the tokenizer ceilings of the embedded tokenizers."""

import os

import numpy as np
import pytest

from comfyui_audiovisual.synthav import split as S
from comfyui_audiovisual.synthav.evaluate import score_audio, score_images
from comfyui_audiovisual.synthav.evaluate_cli import PACK_DIR, with_condition
from comfyui_audiovisual.synthav.world import render_audio, render_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_an_extra_note_lowers_precision_not_accuracy():
    scenes = [s for s in S.scenes("heldout", 64) if len(s.objects) == 1 and s.objects[0].column <= 1][:4]
    assert len(scenes) == 4
    waves = [render_audio(s) for s in scenes]
    clean = score_audio(scenes, waves)
    assert clean["pitch_acc"] == clean["pitch_precision"] == 1.0 and clean["extra_rate"] == 0.0
    # the same note again 0.9 s later (still inside the clip): a second note that matches no object
    shift = int(0.9 * 22050)
    doubled = [w + np.concatenate([np.zeros(shift, w.dtype), w[:-shift]]) for w in waves]
    scores = score_audio(scenes, doubled)
    assert scores["pitch_acc"] == 1.0
    assert scores["pitch_precision"] == pytest.approx(0.5) and scores["extra_rate"] == pytest.approx(0.5)
    assert scores["count_acc"] == 0.0


def test_an_extra_object_lowers_image_precision():
    scenes = [s for s in S.scenes("heldout", 12) if len(s.objects) == 2][:3]
    one = [s for s in S.scenes("heldout", 12) if len(s.objects) == 1][:3]
    images = [render_image(s) for s in scenes]
    # score two-object pictures against the scenes of their first object alone
    from comfyui_audiovisual.synthav.world import Scene

    firsts = [Scene(seed=s.seed, objects=s.objects[:1]) for s in scenes]
    scores = score_images(firsts, images)
    assert scores["hue_precision"] <= 0.5 + 1e-9 and scores["extra_rate"] == pytest.approx(0.5)
    assert score_images(one, [render_image(s) for s in one])["hue_precision"] == 1.0


def test_ablated_conditions_reach_the_generator():
    seen = []
    generate = lambda inputs, seed=0: seen.append(np.array(inputs)) or inputs  # noqa: E731
    batch = np.stack([np.full((4, 4, 3), v, dtype=np.float32) for v in (0.1, 0.2, 0.3)])
    assert with_condition(generate, "real") is generate
    with_condition(generate, "blank")(batch)
    assert not seen[-1].any()
    shuffled = with_condition(generate, "shuffled")
    shuffled(batch)
    assert [float(x[0, 0, 0]) for x in seen[-1]] == pytest.approx([0.3, 0.1, 0.2])
    shuffled(batch[:1] * 3)  # a batch of one gets the previous batch's first input
    assert float(seen[-1][0, 0, 0, 0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="condition must be one of"):
        with_condition(generate, "noise")


def test_embedded_tokenizers_keep_what_the_analysers_read():
    from comfyui_audiovisual.synthav.tokenizer_ceilings import lowest, tokenizer_ceilings

    embedded = os.path.join(PACK_DIR, "embedded_models", "vq")
    ceilings = tokenizer_ceilings(os.path.join(embedded, "synthav_image_vq.safetensors"),
                                  os.path.join(embedded, "synthav_spec_vq.safetensors"), n=4)
    assert ceilings["image_grid"] == [16, 16] and ceilings["audio_grid"] == [10, 22]
    for key in ("pitch_acc", "onset_acc"):
        assert ceilings["audio"][key] == 1.0, ceilings
    for key in ("hue_acc", "position_acc"):
        assert ceilings["image"][key] == 1.0, ceilings
    assert ceilings["audio_codes"]["codes_used"] <= ceilings["audio_codes"]["codebook_size"] <= 128
    assert 0.0 < lowest(ceilings) <= 1.0


def test_a_rendered_picture_reads_back_as_its_scene():
    from comfyui_audiovisual.synthav.evaluate_pairs import scene_from_picture

    for scene in S.scenes("heldout", 6):
        read = scene_from_picture(render_image(scene))
        assert read is not None
        assert [(o.shape, o.colour, o.size, o.column) for o in read.objects] == \
            [(o.shape, o.colour, o.size, o.column) for o in scene.objects]
    assert scene_from_picture(np.zeros((64, 64, 3), np.float32)) is None  # nothing to hear


def test_inpainting_keeps_every_token_outside_the_range_and_scores_inside():
    from comfyui_audiovisual.synthav.evaluate_cli import load_default_models
    from comfyui_audiovisual.synthav.evaluate_pairs import evaluate_inpainting

    models = load_default_models(os.path.join(PACK_DIR, "embedded_models"))
    result = evaluate_inpainting(models, n=3, steps=2, batch_size=3)
    assert result["kept_tokens_unchanged"] == 1.0
    assert result["columns"] == [5, 17] and result["scored_objects"] >= 1
    assert 0.0 <= result["pitch_acc"] <= 1.0 and "pitch_precision" in result
