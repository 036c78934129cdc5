"""The embedded SynthAV video captioner (embedded_models/captioners/synthav_captioner, a tiny BLIP):
it loads like any captioner folder, writes the VATT default's caption template for held-out SynthAV
videos at Caption Video's defaults and names their notes and timbres far above chance (a
re-initialised model does not); its training script, the caption scoring, and the chain
Load Video Captioner -> Caption Video -> Encode Text -> VATT Sampler through the real host."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import PACK_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FOLDER = os.path.join(PACK_DIR, "embedded_models", "captioners", "synthav_captioner")
N_VIDEOS = 8
# 8 held-out 4 s videos (13 objects; at the defaults, 4 of the 8 frames at 2 per second: 0, 1, 2.5 and 3.5 s,
# every object is shown, as in the template's 4 s example): chance is 1/8 for the note and 1/4 for the timbre. The embedded captioner names 13 notes and
# 8 timbres right; a re-initialised one writes no caption in the template.
MIN_PITCH, MIN_TIMBRE = 0.75, 0.45


@pytest.fixture(scope="module")
def captioner():
    from comfyui_audiovisual.encoders.captioner import load_captioner

    return load_captioner(FOLDER)


@pytest.fixture(scope="module")
def heldout():
    from comfyui_audiovisual.synthav.video_evaluate import video_cases

    return video_cases("heldout", N_VIDEOS, fps=16.0, duration_s=2.0)


@pytest.fixture(scope="module")
def heldout_4s():
    from comfyui_audiovisual.synthav.video_evaluate import video_cases

    return video_cases("heldout", N_VIDEOS, fps=16.0, duration_s=4.0)


def test_the_template_parses_and_the_vocabulary_writes_it_back_exactly():
    from comfyui_audiovisual.synthav.caption_evaluate import parse_audio_caption
    from comfyui_audiovisual.synthav.split import training_scene
    from comfyui_audiovisual.training.synthav_captioner import make_tokenizer

    tokenizer = make_tokenizer()
    for i in range(40):
        scene = training_scene(i)
        caption = scene.audio_caption()
        phrases = parse_audio_caption(caption)
        assert [(p.pitch, p.timbre, p.loudness, p.onset) for p in phrases] == \
               [(o.pitch, o.timbre, o.loudness, o.column) for o in scene.objects]
        ids = tokenizer(caption)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == caption  # "A4, early": case and commas kept
    for text in ("a loud sine tone at A4", "a loud sine tone at H4, early", "a loud sine tone at a4, early", "",
                 "a loud sine tone at A4, early, and", "a loud sine tone at A4, early and a soft sine tone at C4, late"):
        assert parse_audio_caption(text) is None, text


def test_scores_of_the_true_captions_are_perfect_and_wrong_or_missing_phrases_count(heldout):
    from comfyui_audiovisual.synthav.caption_evaluate import score_captions
    from comfyui_audiovisual.synthav.world import NOTE_NAMES

    true = [c.scene.audio_caption() for c in heldout]
    perfect = score_captions(heldout, true)
    assert all(perfect[k] == 1.0 for k in ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc", "all_acc", "parse_rate",
                                           "count_acc", "exact_rate"))
    # at the defaults (2 frames per second) a 2 s clip is shown at 0, 0.5, 1 and 1.5 s: every object is seen
    assert perfect["n_visible"] == perfect["n_objects"]
    # at the former default, 1 frame per second, it is shown at 0 s and 1 s: the rightmost column (appearing at 1.43 s) is never seen
    former = score_captions(heldout, true, rate_hz=1.0, max_frames=8)
    assert former["pitch_acc"] == 1.0 and former["n_objects"] == perfect["n_objects"]
    assert former["n_visible"] == sum(o.column < 3 for c in heldout for o in c.scene.objects) < former["n_objects"]
    first = heldout[0].scene.objects[0]
    wrong_note = true[0].replace(f"at {NOTE_NAMES[first.pitch]},", f"at {NOTE_NAMES[(first.pitch + 1) % 8]},", 1)
    scores = score_captions(heldout, [wrong_note] + true[1:])
    assert scores["pitch_acc"] == 1 - 1 / scores["n_objects"] and scores["timbre_acc"] == 1.0 and scores["exact_rate"] < 1
    two = next(i for i, c in enumerate(heldout) if len(c.scene.objects) == 2)
    dropped = list(true)
    dropped[two] = true[two].split(", and ")[0]
    scores = score_captions(heldout, dropped)
    assert scores["count_acc"] == 1 - 1 / len(heldout) and scores["pitch_acc"] == 1 - 1 / scores["n_objects"]
    assert score_captions(heldout, ["noise"] * len(heldout))["pitch_acc"] == 0.0


def test_training_pixels_are_those_the_captioner_gives_blip(captioner, heldout):
    from comfyui_audiovisual.encoders.captioner import DEFAULT_INSTRUCTION
    from comfyui_audiovisual.synthav.caption_evaluate import caption_frames
    from comfyui_audiovisual.training.synthav_captioner import sheet_pixels

    case = heldout[1]
    for upscale in (1, 4):
        frames = np.asarray(case.frames).repeat(upscale, 1).repeat(upscale, 2)
        shown = caption_frames(frames, case.fps)
        inputs = captioner._inputs(captioner._images(shown, "grid"), shown.shape[0], "grid", DEFAULT_INSTRUCTION)
        assert torch.equal(inputs["pixel_values"][0], sheet_pixels(case.frames, case.fps, captioner.image_processor, upscale))


def test_the_embedded_captioner_names_note_and_timbre_far_above_chance_and_a_reinitialised_one_does_not(captioner, heldout_4s):
    from transformers import BlipForConditionalGeneration

    from comfyui_audiovisual.encoders.captioner import Captioner
    from comfyui_audiovisual.synthav.caption_evaluate import caption_video, parse_audio_caption, score_captions

    assert (captioner.model_type, captioner.chat, captioner.takes_text) == ("blip", False, True)
    heldout = heldout_4s
    captions = [caption_video(captioner, c.frames, c.fps) for c in heldout]  # Caption Video's defaults
    assert all(parse_audio_caption(t) is not None for t in captions), captions
    scores = score_captions(heldout, captions)
    assert scores["n_visible"] == scores["n_objects"]
    assert scores["pitch_acc"] >= MIN_PITCH and scores["timbre_acc"] >= MIN_TIMBRE, (scores, captions)
    assert [caption_video(captioner, c.frames, c.fps) for c in heldout[:2]] == captions[:2]  # greedy: repeatable

    torch.manual_seed(0)
    fresh = BlipForConditionalGeneration(captioner.model.config).eval()
    untrained = Captioner(fresh, captioner.processor, captioner.image_processor, captioner.tokenizer, captioner.folder, "blip")
    control = score_captions(heldout, [caption_video(untrained, c.frames, c.fps) for c in heldout])
    assert control["pitch_acc"] < MIN_PITCH and control["timbre_acc"] < MIN_TIMBRE, control


def test_the_training_script_writes_a_folder_load_captioner_reads_and_resumes(tmp_path):
    import json

    from comfyui_audiovisual.encoders.captioner import load_captioner
    from comfyui_audiovisual.training.synthav_captioner import main

    out, work = tmp_path / "captioner", tmp_path / "work"
    common = ["--out", str(out), "--work", str(work), "--scenes", "6", "--batch-size", "4", "--monitor", "0", "--threads", "1",
              "--log-every", "1"]
    assert main(common + ["--steps", "2"]) == 0
    assert main(common + ["--steps", "3"]) == 0
    log = [json.loads(line) for line in open(work / "log.jsonl")]
    assert [r["step"] for r in log if r["stage"] == "resume"] == [2]  # the second run went on from the checkpoint
    assert [r["step"] for r in log if r["stage"] == "train"] == [1, 2, 3]
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors", "processor_config.json",
                                       "tokenizer.json", "tokenizer_config.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # the usual permissions, not mkdtemp's private ones
    loaded = load_captioner(str(out))
    assert loaded.model_type == "blip" and isinstance(loaded.caption(torch.rand(2, 64, 64, 3), "", max_new_tokens=3), str)


def test_video_cases_take_their_captions_from_a_captioner_function():
    from comfyui_audiovisual.synthav.video_evaluate import video_cases

    seen = []

    def caption_fn(frames, fps):
        seen.append((frames.shape, fps))
        return f"caption {len(seen)}"

    cases = video_cases("heldout", 2, text="captioner", caption_fn=caption_fn)
    assert [c.caption for c in cases] == ["caption 1", "caption 2"] and seen == [((32, 64, 64, 3), 16.0)] * 2
    assert all(c.sound_scene is c.scene for c in cases)
    with pytest.raises(ValueError, match="text 'captioner' needs caption_fn"):
        video_cases("heldout", 1, text="captioner")


# ----------------------------------------------------------------------------------------------
# through the host
# ----------------------------------------------------------------------------------------------
def test_caption_video_defaults_are_those_the_scores_use_and_the_captioner_is_listed(host):
    from comfyui_audiovisual.encoders.captioner import DEFAULT_INSTRUCTION
    from comfyui_audiovisual.synthav import caption_evaluate as ce

    required = host.nodes.NODE_CLASS_MAPPINGS["AV_CaptionVideo"].INPUT_TYPES()["required"]
    defaults = {name: spec[1].get("default") for name, spec in required.items() if len(spec) > 1}
    assert (defaults["rate_hz"], defaults["max_frames"], defaults["layout"], defaults["max_new_tokens"], defaults["temperature"]) == \
           (ce.CAPTION_RATE_HZ, ce.CAPTION_MAX_FRAMES, ce.CAPTION_LAYOUT, ce.CAPTION_MAX_NEW_TOKENS, 0.0)
    assert defaults["instruction"] == DEFAULT_INSTRUCTION
    options = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadCaptioner"].INPUT_TYPES()["required"]["captioner_name"]
    names = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert "av_captioners/synthav_captioner" in names


def test_the_embedded_captioner_steers_the_vatt_default_through_the_host(host, captioner):
    """Load Video -> Load Video Captioner (embedded) -> Caption Video (defaults) -> Encode Text (the caption
    T5, 32 tokens) -> VATT Sampler, as workflows/video_to_audio.json with its caption box fed by the captioner."""
    from host_prompt import execute_prompt

    from comfyui_audiovisual.synthav.caption_evaluate import caption_video, parse_audio_caption
    from comfyui_audiovisual.synthav.split import heldout_scene
    from comfyui_audiovisual.synthav.world import make_video
    from comfyui_audiovisual.tools.make_example_video import write_video
    from comfyui_audiovisual.workflows.graphs import VIDEO_TO_AUDIO

    scene = heldout_scene(5)
    clip = make_video(scene.seed, fps=16.0, duration_s=3.0, scene=scene)
    name = "synthav_captioner_host.mp4"
    write_video(os.path.join(host.folder_paths.get_input_directory(), name), clip.frames.repeat(4, 1).repeat(4, 2), 16,
                clip.audio, clip.sample_rate)
    prompt = {}
    for node_id, class_type, inputs, *_ in VIDEO_TO_AUDIO:
        prompt[node_id] = {"class_type": class_type,
                           "inputs": {k: list(v) if isinstance(v, tuple) else v for k, v in inputs.items()}}
    for node_id in ("8", "9", "10"):  # the muxing and saving nodes: the sampler's AUDIO is read directly
        assert prompt.pop(node_id)["class_type"] in ("AV_AddAudioToVideo", "SaveVideo", "AV_SaveAudioWAV")
    prompt["10"] = {"class_type": "PreviewAudio", "inputs": {"audio": ["6", 0]}}
    prompt["1"]["inputs"]["file"] = name
    prompt["6"]["inputs"]["steps"] = 2
    prompt["13"] = {"class_type": "AV_LoadCaptioner", "inputs": {"captioner_name": "av_captioners/synthav_captioner"}}
    prompt["14"] = {"class_type": "AV_CaptionVideo", "inputs": {"captioner": ["13", 0], "video": ["1", 0]}}
    required = host.nodes.NODE_CLASS_MAPPINGS["AV_CaptionVideo"].INPUT_TYPES()["required"]
    for input_name, spec in required.items():  # every widget at the node's default
        if len(spec) > 1 and "default" in spec[1]:
            prompt["14"]["inputs"].setdefault(input_name, spec[1]["default"])
    prompt["14"]["inputs"].update(prefix="", suffix="")
    prompt["12"]["inputs"]["text"] = ["14", 0]
    values, history = execute_prompt(host, prompt, ["1", "14", "6"])

    caption = values["14"]
    components = values["1"].get_components()
    assert caption == caption_video(captioner, components.images, float(components.frame_rate))  # the plain code's caption
    assert parse_audio_caption(caption) is not None, caption
    assert history["14"]["text"] == [caption]
    audio = values["6"]
    assert audio["sample_rate"] == 22050 and audio["waveform"].shape == (1, 1, round(3.0 * 22050))
    assert torch.isfinite(audio["waveform"]).all() and audio["waveform"].abs().max() > 0.01
