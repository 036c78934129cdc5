"""SynthAV audio captions from video: the template the VATT default understands, parsed back into
attributes, and a captioner scored on held-out videos exactly as Caption Video (audio) runs it.

    parse_audio_caption(text)                  -> [Phrase, ...] or None (not the template)
    caption_frames(frames, fps)                -> the frames Caption Video shows the model at its defaults
    enlarge_frames(frames, factor)             -> frames enlarged (nearest), as the 256-px example video
    caption_video(captioner, frames, fps)      -> the caption Caption Video writes at its defaults
    score_captions(cases, captions)            -> per-object accuracies, parse / count / exact rates
    evaluate_captioner(captioner, n=48)        -> those scores on n held-out + n/2 unseen-combination videos

The template is ``Scene.audio_caption()``: one phrase per object,
``a <soft|moderate|loud> <sine|triangle|square|sawtooth> tone at <C4..C5>, <very early|early|late|very late>``,
phrases joined by ``, and ``. Objects are matched to phrases in order of onset: the scene's objects
sorted by the time they appear, the phrases by their onset word (stable), then paired in that order;
a missing phrase is wrong on every attribute. An object "is visible" when it appears in one of the
frames the captioner is shown (at the former default, 1 frame per second, a 2 s clip shows its frames at
0 s and 1 s, so an object appearing at 1.43 s, the rightmost column, is never seen: its phrase can only be
guessed; at the default 2 per second it is shown at 0, 0.5, 1 and 1.5 s and every object is seen).

The videos are ``video_evaluate.video_cases`` clips (held-out scenes; unseen-combination scenes whose
held-out-combination objects give the ``unseen_`` figures), the same the VATT table is scored on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from . import split as S
from .world import LOUDNESS, NOTE_NAMES, ONSET_WORDS, TIMBRES

# Caption Video (audio)'s defaults (nodes/captioning.py; tests/test_synthav_captioner.py checks they agree)
CAPTION_RATE_HZ = 2.0  # a 2 s clip: 0, 0.5, 1, 1.5 s (at 1 per second the object at 1.43 s was in no frame)
CAPTION_MAX_FRAMES = 4  # at most a 2 x 2 sheet: the embedded captioner never saw more than 4 frames
CAPTION_LAYOUT = "grid"
CAPTION_MAX_NEW_TOKENS = 60

ATTRIBUTES = ("pitch", "timbre", "loudness", "onset")

_PHRASE = (rf"a ({'|'.join(LOUDNESS)}) ({'|'.join(TIMBRES)}) tone at ({'|'.join(NOTE_NAMES)}), "
           rf"({'|'.join(sorted(ONSET_WORDS, key=len, reverse=True))})")
_CAPTION = re.compile(rf"{_PHRASE}(?:, and {_PHRASE})*")
_ONE = re.compile(_PHRASE)


@dataclass(frozen=True)
class Phrase:
    """One object of a templated caption, as indices into world.LOUDNESS, TIMBRES, NOTE_NAMES, ONSET_WORDS."""
    loudness: int
    timbre: int
    pitch: int
    onset: int


def parse_audio_caption(text: str) -> Optional[list[Phrase]]:
    """The phrases of a caption in the SynthAV template, in the caption's order; None when the text
    is not exactly the template (surrounding spaces aside)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not _CAPTION.fullmatch(text):
        return None
    phrases = []
    for part in text.split(", and "):
        m = _ONE.fullmatch(part)
        if m is None:  # pragma: no cover - the full match above guarantees every part
            return None
        phrases.append(Phrase(LOUDNESS.index(m.group(1)), TIMBRES.index(m.group(2)), NOTE_NAMES.index(m.group(3)),
                              ONSET_WORDS.index(m.group(4))))
    return phrases


def caption_frames(frames, fps: float, rate_hz: float = CAPTION_RATE_HZ, max_frames: int = CAPTION_MAX_FRAMES) -> torch.Tensor:
    """The frames Caption Video (audio) gives the model: sampled at `rate_hz`, at most `max_frames`
    evenly spaced (`shown_frame_indices`). `frames` [T, H, W, C] (array or tensor, 0..1) -> [n, H, W, C] float32."""
    images = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    return images[shown_frame_indices(images.shape[0], fps, rate_hz, max_frames)]


def shown_frame_indices(num_frames: int, fps: float, rate_hz: float = CAPTION_RATE_HZ,
                        max_frames: int = CAPTION_MAX_FRAMES) -> torch.Tensor:
    """Indices (into the video) of the frames `caption_frames` keeps."""
    from ..encoders.video_frames import evenly_spaced_indices, sample_frame_indices

    indices, _times = sample_frame_indices(int(num_frames), float(fps), float(rate_hz))
    return indices[evenly_spaced_indices(indices.shape[0], int(max_frames))]


def enlarge_frames(frames, factor: int) -> torch.Tensor:
    """Frames [T, H, W, C] (array or tensor) enlarged `factor` times (nearest), as float32 (as the
    pack's 256-px example video shows the 64-px SynthAV frames)."""
    images = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    factor = int(factor)
    return images if factor <= 1 else images.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def caption_video(captioner, frames, fps: float, rate_hz: float = CAPTION_RATE_HZ, max_frames: int = CAPTION_MAX_FRAMES,
                  instruction: Optional[str] = None) -> str:
    """The caption Caption Video (audio) writes for these frames at its defaults (grid layout, the
    default instruction, 60 new tokens, greedy), through ``Captioner.caption``."""
    from ..encoders.captioner import DEFAULT_INSTRUCTION

    shown = caption_frames(frames, fps, rate_hz, max_frames)
    return captioner.caption(shown, DEFAULT_INSTRUCTION if instruction is None else instruction,
                             max_new_tokens=CAPTION_MAX_NEW_TOKENS, seed=0, temperature=0.0, layout=CAPTION_LAYOUT)


def _object_flags(case, phrases: Optional[list[Phrase]], shown_last: int) -> list[dict]:
    """One dict per object of the case's picture: which attributes its matched phrase gets right."""
    order = sorted(range(len(case.scene.objects)), key=lambda i: (case.appear_times[i], case.scene.objects[i].column))
    ranked = sorted(phrases or [], key=lambda p: p.onset)
    flags = []
    for rank, i in enumerate(order):
        o = case.scene.objects[i]
        p = ranked[rank] if rank < len(ranked) else None
        right = {"pitch": p is not None and p.pitch == o.pitch, "timbre": p is not None and p.timbre == o.timbre,
                 "loudness": p is not None and p.loudness == o.loudness, "onset": p is not None and p.onset == o.column}
        right["all"] = all(right[a] for a in ATTRIBUTES)
        appear_frame = int(round(case.appear_times[i] * case.fps))
        flags.append({**right, "visible": appear_frame <= shown_last, "heldout_combo": S.is_heldout_combo(o)})
    return flags


def _rate(flags: list, key: str, where=lambda f: True) -> float:
    chosen = [f[key] for f in flags if where(f)]
    return float(np.mean(chosen)) if chosen else float("nan")


def score_captions(cases: Sequence, captions: Sequence[str], unseen_cases: Sequence = (), unseen_captions: Sequence[str] = (),
                   rate_hz: float = CAPTION_RATE_HZ, max_frames: int = CAPTION_MAX_FRAMES) -> dict:
    """Scores captions of `cases` (``video_evaluate.VideoCase``; pictures = their scenes).

    Per object (held-out cases): ``<attribute>_acc`` for pitch, timbre, loudness, onset and ``all_acc``;
    ``visible_<attribute>_acc`` over the objects shown in the captioner's frames; per caption:
    ``parse_rate`` (the template exactly), ``count_acc`` (one phrase per object), ``exact_rate`` (the
    scene's own caption). With unseen cases: ``unseen_<attribute>_acc`` over their held-out-combination
    objects. Also ``n``, ``n_objects``, ``n_visible``, ``n_unseen_objects``.
    """
    if len(captions) != len(cases) or len(unseen_captions) != len(unseen_cases):
        raise ValueError(f"score_captions: {len(captions)} captions for {len(cases)} videos, "
                         f"{len(unseen_captions)} for {len(unseen_cases)} unseen-combination videos")

    def flags_of(case_list, caption_list):
        flags, parsed = [], []
        for case, caption in zip(case_list, caption_list):
            phrases = parse_audio_caption(caption)
            parsed.append(phrases)
            shown = shown_frame_indices(len(case.frames), case.fps, rate_hz, max_frames)
            flags.extend(_object_flags(case, phrases, int(shown[-1])))
        return flags, parsed

    flags, parsed = flags_of(cases, captions)
    out = {f"{a}_acc": _rate(flags, a) for a in ATTRIBUTES + ("all",)}
    out.update({f"visible_{a}_acc": _rate(flags, a, lambda f: f["visible"]) for a in ATTRIBUTES + ("all",)})
    out["parse_rate"] = float(np.mean([p is not None for p in parsed])) if parsed else float("nan")
    out["count_acc"] = float(np.mean([p is not None and len(p) == len(c.scene.objects) for p, c in zip(parsed, cases)])) \
        if parsed else float("nan")
    out["exact_rate"] = float(np.mean([cap.strip() == c.scene.audio_caption() for cap, c in zip(captions, cases)])) \
        if cases else float("nan")
    out.update({"n": len(cases), "n_objects": len(flags), "n_visible": sum(f["visible"] for f in flags)})
    if unseen_cases:
        u_flags, u_parsed = flags_of(unseen_cases, unseen_captions)
        out.update({f"unseen_{a}_acc": _rate(u_flags, a, lambda f: f["heldout_combo"]) for a in ATTRIBUTES + ("all",)})
        out["unseen_parse_rate"] = float(np.mean([p is not None for p in u_parsed]))
        out["n_unseen_objects"] = sum(f["heldout_combo"] for f in u_flags)
    return out


def evaluate_captioner(captioner, n: int = 48, n_unseen: Optional[int] = None, fps: float = 16.0, duration_s: float = 2.0,
                       rate_hz: float = CAPTION_RATE_HZ, max_frames: int = CAPTION_MAX_FRAMES, start: int = 0,
                       instruction: Optional[str] = None, upscale: int = 1) -> dict:
    """Captions n held-out and n_unseen (default n // 2) unseen-combination videos (``video_cases``,
    as the VATT table) with ``caption_video`` and scores them (``score_captions``); the captions
    are returned under ``captions`` / ``unseen_captions``. `upscale`: the 64-px frames enlarged that
    many times (nearest) first, as the pack's 256-px example video."""
    from .video_evaluate import video_cases

    n_unseen = n // 2 if n_unseen is None else int(n_unseen)
    held = video_cases("heldout", n, start, fps=fps, duration_s=duration_s)
    unseen = video_cases("unseen", n_unseen, start, fps=fps, duration_s=duration_s) if n_unseen > 0 else []
    def caption(case):
        return caption_video(captioner, enlarge_frames(case.frames, upscale), case.fps, rate_hz, max_frames, instruction)

    captions = [caption(c) for c in held]
    unseen_captions = [caption(c) for c in unseen]
    out = score_captions(held, captions, unseen, unseen_captions, rate_hz, max_frames)
    out.update({"captions": captions, "unseen_captions": unseen_captions, "fps": fps, "duration_s": duration_s,
                "rate_hz": rate_hz, "max_frames": max_frames, "n_unseen": n_unseen, "upscale": int(upscale)})
    return out


_TABLE = ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc", "all_acc", "visible_pitch_acc", "visible_timbre_acc",
          "visible_loudness_acc", "visible_onset_acc", "unseen_pitch_acc", "unseen_timbre_acc", "parse_rate", "count_acc",
          "exact_rate")


def format_caption_table(runs) -> str:
    """Markdown, one row per (name, scores)."""
    rows = list(runs.items()) if isinstance(runs, dict) else list(runs)
    cols = [c for c in _TABLE if any(c in r for _, r in rows)]

    def fmt(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.3f}"

    lines = ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for name, r in rows]
    return "\n".join(lines)
