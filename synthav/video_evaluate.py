"""SynthAV video -> audio evaluation: sounds must start when their objects appear, with the right
pitch, timbre and loudness; optionally steered by a caption.

    evaluate_video2audio(generate_fn, n=64, text="none"|"caption"|"other_pitch") -> metrics
    format_video_table(runs) -> markdown

The videos are ``world.make_video`` clips of held-out scenes (and unseen-combination scenes): the
background alone, then each object from frame ceil(t_i * fps) on, its note starting at exactly that
frame's time t_i. By default t_i is the object's column onset scaled to the clip length, so the
picture's layout and the appearance time agree; ``appear="shuffled"`` gives every object another
column's time (objects still left to right keep their order only by chance), which tells whether a
model times its sounds by the appearance (sync) or by where the object stands; ``appear="blank"``
shows the background alone for the whole clip (the ablation: nothing in the video says what sounds,
so pitch, timbre and loudness must fall to chance).

Scoring is ``evaluate.score_audio`` against the scene with each object's onset replaced by its
appearance time: ``onset_acc`` counts onsets within 50 ms of the appearance, ``onset_err_ms`` is the
mean absolute onset error (ms) of the matched notes and ``onset_err_ms_std`` the spread of the
signed error.

Text modes: ``none`` (no caption), ``caption`` (each scene's own ``Scene.audio_caption()``),
``other_pitch`` (the caption of the scene with every object's colour, i.e. its note, shifted by
``pitch_shift`` steps of the 8-note scale, modulo 8; the pitch is then scored against the
caption's notes, and ``video_pitch_acc`` says how often the picture's note came out instead),
``captioner`` (the caption ``caption_fn(frames, fps)`` writes for each video, e.g. a video captioner at
Caption Video's defaults: ``caption_evaluate.caption_video``; scored against the scene).
Unseen metrics count the held-out-combination objects of the unseen scenes (of the picture).

``generate_fn(frames, fps, captions, seed)`` gets one batch: a list of B float32 arrays
[T, 64, 64, 3] in [0, 1], the frame rate, B captions or None, and a seed; it returns B waveforms at
22050 Hz (any length: cut or zero-padded to the clip's).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from . import split as S
from .evaluate import AUDIO_METRICS, GroundTruthError, MIN_GROUND_TRUTH, score_audio
from .world import COLOURS, SAMPLE_RATE, Scene, make_video, render_audio, render_image

TEXT_MODES = ("none", "caption", "other_pitch", "captioner")
APPEAR_MODES = ("columns", "shuffled", "blank")

__all__ = ["TEXT_MODES", "APPEAR_MODES", "VideoCase", "video_cases", "evaluate_video2audio", "format_video_table"]


@dataclass(frozen=True)
class _TimedObject:
    """A scene object as the scorer sees it: the sound's attributes, the onset = appearance time."""
    pitch: int
    timbre: int
    loudness: int
    onset_s: float
    heldout: bool


@dataclass(frozen=True)
class _TimedScene:
    seed: int
    objects: tuple


@dataclass
class VideoCase:
    scene: Scene  # what the picture shows
    frames: np.ndarray  # [T, 64, 64, 3]
    fps: float
    appear_times: tuple
    caption: Optional[str]
    sound_scene: Scene  # what the sound must be (= scene, or the re-pitched scene of other_pitch)
    audio: np.ndarray  # the ground truth of sound_scene timed by the video


def _repitch(scene: Scene, shift: int) -> Scene:
    objects = tuple(dataclasses.replace(o, colour=(o.colour + shift) % len(COLOURS)) for o in scene.objects)
    return dataclasses.replace(scene, objects=objects)


def _timed(scene: Scene, picture: Scene, times: Sequence[float]) -> _TimedScene:
    return _TimedScene(scene.seed, tuple(_TimedObject(o.pitch, o.timbre, o.loudness, float(t), S.is_heldout_combo(p))
                                         for o, p, t in zip(scene.objects, picture.objects, times)))


def video_cases(split: str, n: int, start: int = 0, fps: float = 16.0, duration_s: float = 2.0, text: str = "none",
                pitch_shift: int = 3, appear: str = "columns", caption_fn: Optional[Callable] = None) -> list[VideoCase]:
    """The evaluation clips (see the module doc)."""
    if text not in TEXT_MODES:
        raise ValueError(f"video2audio: text must be one of {TEXT_MODES}, got {text!r}")
    if text == "captioner" and caption_fn is None:
        raise ValueError("video2audio: text 'captioner' needs caption_fn(frames, fps) -> caption")
    if appear not in APPEAR_MODES:
        raise ValueError(f"video2audio: appear must be one of {APPEAR_MODES}, got {appear!r}")
    from .world import CLIP_S, ONSET_S

    cases = []
    for scene in S.scenes(split, n, start):
        times = None
        if appear == "shuffled":  # another column's slot for each object, kept apart in time
            rng = np.random.default_rng([scene.seed, 11])
            slots = [c for c in range(len(ONSET_S))]
            while True:
                chosen = rng.choice(slots, size=len(scene.objects), replace=False)
                if all(c != o.column for c, o in zip(chosen, scene.objects)):
                    break
            times = [ONSET_S[c] * duration_s / CLIP_S for c in chosen]
        clip = make_video(scene.seed, fps=fps, duration_s=duration_s, scene=scene, appear_times=times)
        if appear == "blank":  # the ablation: the background alone, no object ever appears (scored as columns)
            clip = dataclasses.replace(clip, frames=np.broadcast_to(render_image(scene, visible=()), clip.frames.shape).copy())
        sound_scene = _repitch(scene, pitch_shift) if text == "other_pitch" else scene
        audio = clip.audio if sound_scene is scene else render_audio(sound_scene, onsets_s=clip.appear_times,
                                                                      n_samples=len(clip.audio))
        if text == "captioner":
            caption = caption_fn(clip.frames, clip.fps)
        else:
            caption = None if text == "none" else sound_scene.audio_caption()
        cases.append(VideoCase(scene, clip.frames, clip.fps, clip.appear_times, caption, sound_scene, audio))
    return cases


def _fit(wave, length: int) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    return wave[:length] if wave.shape[0] >= length else np.pad(wave, (0, length - wave.shape[0]))


def _score(cases: Sequence[VideoCase], waves, against: str = "sound") -> dict:
    scenes = [_timed(c.sound_scene if against == "sound" else c.scene, c.scene, c.appear_times) for c in cases]
    return score_audio(scenes, waves)


def _score_split(held: Sequence[VideoCase], unseen: Sequence[VideoCase], waves_h, waves_u, against: str = "sound") -> dict:
    out = _score(held, waves_h, against)
    if unseen:
        scenes = [_timed(c.sound_scene if against == "sound" else c.scene, c.scene, c.appear_times) for c in unseen]
        u = score_audio(scenes, waves_u, include=lambda scene, i: scene.objects[i].heldout)
        for k in AUDIO_METRICS + ("all_acc",):
            out[f"unseen_{k}"] = u[k]
        out["n_unseen_objects"] = u["n_objects"]
    return out


def _generate(generate_fn, cases, batch_size: int, seed: int) -> list[np.ndarray]:
    outs = []
    for i in range(0, len(cases), batch_size):
        batch = cases[i:i + batch_size]
        captions = None if batch[0].caption is None else [c.caption for c in batch]
        waves = generate_fn([c.frames for c in batch], batch[0].fps, captions, seed + i)
        if len(waves) != len(batch):
            raise ValueError(f"video2audio: generate_fn returned {len(waves)} waveforms for {len(batch)} videos")
        outs.extend(_fit(w, len(c.audio)) for w, c in zip(waves, batch))
    return outs


def evaluate_video2audio(generate_fn: Callable, n: int = 64, n_unseen: Optional[int] = None, fps: float = 16.0,
                         duration_s: float = 2.0, text: str = "none", pitch_shift: int = 3, appear: str = "columns",
                         batch_size: int = 8, seed: int = 0, start: int = 0,
                         min_ground_truth: float = MIN_GROUND_TRUTH, caption_fn: Optional[Callable] = None,
                         caption_rate_hz: Optional[float] = None) -> dict:
    """Scores ``generate_fn`` on ``n`` held-out and ``n_unseen`` (default n // 2) unseen-combination
    videos; raises GroundTruthError when the analysers score the videos' own sound below
    ``min_ground_truth``. Returns score_audio's metrics (onsets against the appearance times), the
    unseen_ ones, ``ground_truth``, and for ``other_pitch`` ``video_pitch_acc`` (the picture's
    note instead of the caption's); for ``captioner`` the captions written (``captions``, held-out
    then unseen) and their ``caption_scores`` against the scenes (``caption_evaluate.score_captions``,
    the visible objects those in the frames shown at ``caption_rate_hz``, default Caption Video's)."""
    if n < 1:
        raise ValueError(f"video2audio: n must be >= 1, got {n}")
    n_unseen = n // 2 if n_unseen is None else int(n_unseen)
    kwargs = dict(fps=fps, duration_s=duration_s, text=text, pitch_shift=pitch_shift, appear=appear, caption_fn=caption_fn)
    held = video_cases("heldout", n, start, **kwargs)
    unseen = video_cases("unseen", n_unseen, start, **kwargs) if n_unseen > 0 else []
    gt = _score_split(held, unseen, [c.audio for c in held], [c.audio for c in unseen])
    bad = {k: v for k, v in gt.items() if k.endswith("_acc") and not (v >= min_ground_truth)}
    if bad:
        raise GroundTruthError(f"video2audio: the analysers score the videos' own sound below {min_ground_truth}: {bad}")
    waves_h = _generate(generate_fn, held, batch_size, seed)
    waves_u = _generate(generate_fn, unseen, batch_size, seed + 500_000) if unseen else []
    results = _score_split(held, unseen, waves_h, waves_u)
    if text == "other_pitch":
        results["video_pitch_acc"] = _score(held, waves_h, against="picture")["pitch_acc"]
    results.update({"task": "video2audio", "text": text, "appear": appear, "n": n, "n_unseen": n_unseen, "fps": fps,
                    "duration_s": duration_s, "ground_truth": gt})
    if text == "other_pitch":
        results["pitch_shift"] = pitch_shift
    if text == "captioner":
        from .caption_evaluate import CAPTION_RATE_HZ, score_captions

        results["captions"] = [c.caption for c in held + unseen]
        results["caption_scores"] = score_captions(held, [c.caption for c in held], unseen, [c.caption for c in unseen],
                                                   rate_hz=caption_rate_hz or CAPTION_RATE_HZ)
    return results


_COLUMNS = ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc", "onset_err_ms", "onset_err_ms_std",
            "unseen_pitch_acc", "unseen_timbre_acc", "unseen_onset_acc", "video_pitch_acc", "all_acc", "count_acc", "n")


def format_video_table(runs) -> str:
    """Markdown, one row per (name, results) and the ground truth of the first run last."""
    rows = list(runs.items()) if isinstance(runs, dict) else list(runs)
    if rows and isinstance(rows[0][1].get("ground_truth"), dict):
        rows.append(("ground truth (the videos' own sound)", rows[0][1]["ground_truth"]))
    cols = [c for c in _COLUMNS if any(c in r for _, r in rows)]

    def fmt(key, value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, (int, np.integer)):
            return str(value)
        return f"{float(value):.1f}" if key.startswith("onset_err") else f"{float(value):.3f}"

    lines = ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(c, r.get(c)) for c in cols) + " |")
    return "\n".join(lines)
