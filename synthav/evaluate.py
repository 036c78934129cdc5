"""SynthAV evaluation: score generated audio / images against the known scene parameters.

    score_audio(scenes, waveforms)  -> pitch_acc, timbre_acc, loudness_acc, onset_acc, ...
    score_images(scenes, images)    -> hue_acc, shape_acc, size_acc, position_acc, ...
    ground_truth_scores(n)          -> the analysers on the generator's own outputs
    evaluate(task, generate_fn, n)  -> the harness (checks the analysers on ground truth first)
    format_table(results)           -> markdown

Accuracies are per object. Objects are matched to detections as sets: the k strongest detections
(k = number of objects; notes ranked by energy, image components by area) are assigned to the k
objects by brute force, maximising the number of correct attributes (ties: nearest onset /
position). Fewer detections than objects leave objects unmatched (all their attributes wrong);
extra detections are not matched: they show in count_acc (detections == objects) and lower the
per-attribute precisions (`*_precision`: correct matched detections over all detections; the
accuracies are the recalls, correct over true objects).
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import math
import sys
from typing import Callable, Sequence

import numpy as np

from . import analysers as A
from . import split as S
from .world import (HUES_DEG, IMAGE_SIZE, LEVEL_RMS, NOTE_HZ, SAMPLE_RATE, Scene, render_audio, render_image)

ONSET_TOL_S = 0.05
MIN_GROUND_TRUTH = 0.98
AUDIO_METRICS = ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc")
IMAGE_METRICS = ("hue_acc", "shape_acc", "size_acc", "position_acc")

# task -> (input kind, output kind); inputs: "image" float32 [B, 64, 64, 3] in [0, 1],
# "audio" float32 [B, 44800] at 22050 Hz, "audio_caption" / "image_caption" list[str]
TASKS = {
    "image2audio": ("image", "audio"),
    "audio2image": ("audio", "image"),
    "text2audio": ("audio_caption", "audio"),
    "text2image": ("image_caption", "image"),
}


class GroundTruthError(RuntimeError):
    """The analysers do not score the generator's own output near 100%: the metric is broken."""


# ---------------------------------------------------------------------------------------------
# matching


def match_sets(n_true: int, n_det: int, score: Callable[[int, int], tuple[float, float]]) -> list:
    """Assign detections to objects (<= one each). score(i, j) -> (n_correct, distance); returns
    [j or None for each object] maximising total n_correct, then minimising total distance."""
    pool = list(range(n_det)) + [None] * max(0, n_true - n_det)
    best, best_key = [None] * n_true, None
    for perm in itertools.permutations(pool, n_true):
        tot, dist = 0.0, 0.0
        for i, j in enumerate(perm):
            if j is not None:
                c, d = score(i, j)
                tot += c
                dist += d
        key = (tot, -dist)
        if best_key is None or key > best_key:
            best, best_key = list(perm), key
    return best


def _acc(flags: list) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def _se(p: float, n: int) -> float:
    return float(math.sqrt(max(p * (1 - p), 0.0) / n)) if n else float("nan")


def _spread(vals: list, name: str, unit: str) -> dict:
    if not vals:
        return {f"{name}_{unit}": float("nan"), f"{name}_{unit}_std": float("nan")}
    v = np.asarray(vals, dtype=np.float64)
    return {f"{name}_{unit}": float(np.mean(np.abs(v))), f"{name}_{unit}_std": float(np.std(v))}


def _precision(flags: dict, metrics: Sequence[str], n_detected: int, n_matched: int, include) -> dict:
    """Per attribute, correct matched detections over all detections (`*_precision`), beside the
    accuracies, which are recalls (correct over true objects): a second note or object that matches
    nothing lowers precision only. Not defined for a subset of objects (`include`)."""
    if include is not None:
        return {}
    out = {k.replace("_acc", "_precision"): (sum(flags[k]) / n_detected if n_detected else float("nan")) for k in metrics}
    out["extra_rate"] = (n_detected - n_matched) / n_detected if n_detected else float("nan")
    return out


def _include(scene: Scene, i: int, include) -> bool:
    return include is None or bool(include(scene, i))


# ---------------------------------------------------------------------------------------------
# scoring


def score_audio(scenes: Sequence[Scene], waveforms, sr: int = SAMPLE_RATE,
                include: Callable[[Scene, int], bool] | None = None, details: bool = False) -> dict:
    """Per-object accuracies of pitch, timbre, loudness and onset (within 50 ms) of `waveforms`
    ([B, T] array / tensor or a list of 1-D waveforms at `sr`) against `scenes`. `include(scene,
    i)` restricts which objects count (all objects take part in the matching)."""
    if len(scenes) != len(waveforms):
        raise ValueError(f"synthav: {len(scenes)} scenes but {len(waveforms)} waveforms")
    flags = {k: [] for k in AUDIO_METRICS + ("all_acc",)}
    count_ok, onset_err, cents_err, db_err, per_object = [], [], [], [], []
    n_missing = n_detected = 0
    for scene, wave in zip(scenes, waveforms):
        objs = scene.objects
        notes = sorted(A.detect_notes(wave, sr), key=lambda nt: -nt.energy)
        count_ok.append(len(notes) == len(objs))
        n_detected += sum(1 for _ in notes)
        cand = notes[:len(objs)]

        def correct(i, j):
            o, nt = objs[i], cand[j]
            c = (nt.pitch == o.pitch, nt.timbre == o.timbre, nt.loudness == o.loudness,
                 abs(nt.onset_s - o.onset_s) <= ONSET_TOL_S)
            return c, abs(nt.onset_s - o.onset_s)

        assign = match_sets(len(objs), len(cand), lambda i, j: (sum(correct(i, j)[0]), correct(i, j)[1]))
        for i, j in enumerate(assign):
            if not _include(scene, i, include):
                continue
            o = objs[i]
            if j is None:
                c = (False,) * 4
                n_missing += 1
            else:
                c, _ = correct(i, j)
                nt = cand[j]
                onset_err.append(1000 * (nt.onset_s - o.onset_s))
                cents_err.append(1200 * math.log2(max(nt.f0_hz, 1e-6) / NOTE_HZ[o.pitch]))
                db_err.append(20 * math.log10(max(nt.rms, 1e-9) / LEVEL_RMS[o.loudness]))
            for k, v in zip(AUDIO_METRICS, c):
                flags[k].append(bool(v))
            flags["all_acc"].append(all(c))
            if details:
                per_object.append({"seed": scene.seed, "object": i, "correct": dict(zip(AUDIO_METRICS, map(bool, c))),
                                   "note": None if j is None else vars(cand[j])})
    n_obj = len(flags["all_acc"])
    out = {k: _acc(v) for k, v in flags.items()}
    out["count_acc"] = _acc(count_ok)
    out["missing_rate"] = n_missing / n_obj if n_obj else float("nan")
    out.update(_precision(flags, AUDIO_METRICS, n_detected, n_obj - n_missing, include))
    out.update(_spread(onset_err, "onset_err", "ms"))
    out.update(_spread(cents_err, "pitch_err", "cents"))
    out.update(_spread(db_err, "loudness_err", "db"))
    out["se"] = {k: _se(out[k], n_obj) for k in AUDIO_METRICS}
    out["n_scenes"], out["n_objects"] = len(scenes), n_obj
    if details:
        out["per_object"] = per_object
    return out


def score_images(scenes: Sequence[Scene], images, include: Callable[[Scene, int], bool] | None = None,
                 details: bool = False) -> dict:
    """Per-object accuracies of hue (colour class), shape, size and position (column) of `images`
    ([B, H, W, 3] or [B, 3, H, W] in [0, 1], array / tensor, or a list) against `scenes`."""
    if len(scenes) != len(images):
        raise ValueError(f"synthav: {len(scenes)} scenes but {len(images)} images")
    flags = {k: [] for k in IMAGE_METRICS + ("all_acc",)}
    count_ok, hue_err, per_object = [], [], []
    n_missing = n_detected = 0
    for scene, image in zip(scenes, images):
        objs = scene.objects
        dets = sorted(A.detect_objects(image), key=lambda d: -d.area)
        count_ok.append(len(dets) == len(objs))
        n_detected += len(dets)
        cand = dets[:len(objs)]

        def correct(i, j):
            o, d = objs[i], cand[j]
            c = (d.colour == o.colour, d.shape == o.shape, d.size == o.size, d.column == o.column)
            return c, abs(d.cx - o.x) + abs(d.cy - o.y)

        assign = match_sets(len(objs), len(cand), lambda i, j: (sum(correct(i, j)[0]), correct(i, j)[1]))
        for i, j in enumerate(assign):
            if not _include(scene, i, include):
                continue
            if j is None:
                c = (False,) * 4
                n_missing += 1
            else:
                c, _ = correct(i, j)
                hue_err.append((cand[j].hue_deg - HUES_DEG[objs[i].colour] + 180.0) % 360.0 - 180.0)
            for k, v in zip(IMAGE_METRICS, c):
                flags[k].append(bool(v))
            flags["all_acc"].append(all(c))
            if details:
                per_object.append({"seed": scene.seed, "object": i, "correct": dict(zip(IMAGE_METRICS, map(bool, c))),
                                   "detection": None if j is None else vars(cand[j])})
    n_obj = len(flags["all_acc"])
    out = {k: _acc(v) for k, v in flags.items()}
    out["count_acc"] = _acc(count_ok)
    out["missing_rate"] = n_missing / n_obj if n_obj else float("nan")
    out.update(_precision(flags, IMAGE_METRICS, n_detected, n_obj - n_missing, include))
    out.update(_spread(hue_err, "hue_err", "deg"))
    out["se"] = {k: _se(out[k], n_obj) for k in IMAGE_METRICS}
    out["n_scenes"], out["n_objects"] = len(scenes), n_obj
    if details:
        out["per_object"] = per_object
    return out


def _heldout_object(scene: Scene, i: int) -> bool:
    return S.is_heldout_combo(scene.objects[i])


def _merge(main: dict, unseen: dict | None, keys: Sequence[str]) -> dict:
    out = {k: v for k, v in main.items()}
    if unseen is not None:
        for k in keys + ("all_acc",):
            out[f"unseen_{k}"] = unseen[k]
        out["n_unseen_objects"] = unseen["n_objects"]
    return out


def ground_truth_scores(n: int = 256, n_unseen: int | None = None, start: int = 0) -> dict:
    """The analysers on the generator's own audio and images: n held-out scenes (and n_unseen
    unseen-combo scenes, default n // 2, scored on their held-out-combo objects). Flat dict: the
    audio and image accuracies (unseen ones prefixed unseen_), everything else prefixed audio_ /
    image_ (audio_all_acc, audio_count_acc, audio_onset_err_ms, image_hue_err_deg, ...)."""
    n_unseen = n // 2 if n_unseen is None else n_unseen
    held = S.scenes("heldout", n, start)
    uns = S.scenes("unseen", n_unseen, start) if n_unseen else []
    au = score_audio(held, [render_audio(s) for s in held])
    im = score_images(held, [render_image(s) for s in held])
    au_u = score_audio(uns, [render_audio(s) for s in uns], include=_heldout_object) if uns else None
    im_u = score_images(uns, [render_image(s) for s in uns], include=_heldout_object) if uns else None
    out = {}
    for prefix, main, unseen, keys in (("audio", au, au_u, AUDIO_METRICS), ("image", im, im_u, IMAGE_METRICS)):
        for k in keys:
            out[k] = main[k]
            if unseen is not None:
                out[f"unseen_{k}"] = unseen[k]
        for k, v in main.items():
            if k not in keys:
                out[f"{prefix}_{k}"] = v
        if unseen is not None:
            out[f"{prefix}_unseen_all_acc"] = unseen["all_acc"]
            out[f"{prefix}_n_unseen_objects"] = unseen["n_objects"]
    out["n"], out["n_unseen"] = n, n_unseen
    return out


# ---------------------------------------------------------------------------------------------
# the harness


def task_inputs(task: str, scenes: Sequence[Scene]):
    """The conditioning inputs of `task` for `scenes` (see TASKS)."""
    kind = TASKS[task][0]
    if kind == "image":
        return np.stack([render_image(s) for s in scenes])
    if kind == "audio":
        return np.stack([render_audio(s) for s in scenes])
    if kind == "audio_caption":
        return [s.audio_caption() for s in scenes]
    return [s.image_caption() for s in scenes]


def _as_list(outputs, kind: str, expected: int, task: str) -> list:
    if hasattr(outputs, "detach"):
        outputs = outputs.detach().float().cpu().numpy()
    if isinstance(outputs, np.ndarray):
        if kind == "audio" and outputs.ndim == 3 and outputs.shape[1] == 1:
            outputs = outputs[:, 0]
        items = list(outputs)
    else:
        items = [o.detach().float().cpu().numpy() if hasattr(o, "detach") else np.asarray(o) for o in outputs]
    if len(items) != expected:
        raise ValueError(f"synthav.evaluate({task!r}): generate_fn returned {len(items)} outputs for "
                         f"{expected} inputs")
    if kind == "image":
        items = [_resize_image(A.to_hwc_numpy(x)) for x in items]
    else:
        items = [np.asarray(x, dtype=np.float32) for x in items]
        items = [x[0] if x.ndim == 2 and x.shape[0] == 1 else x for x in items]  # [1, T] -> [T]; [C, T] is downmixed
    return items


def _resize_image(img: np.ndarray) -> np.ndarray:
    if img.shape[0] == IMAGE_SIZE and img.shape[1] == IMAGE_SIZE:
        return img
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
    return F.interpolate(t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")[0].permute(1, 2, 0).numpy()


def _accepts_seed(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "seed" or p.kind == p.VAR_KEYWORD for p in params)


def _generate(task, generate_fn, scenes, batch_size, seed, out_kind):
    outs = []
    with_seed = _accepts_seed(generate_fn)
    for b in range(0, len(scenes), batch_size):
        chunk = scenes[b:b + batch_size]
        inputs = task_inputs(task, chunk)
        res = generate_fn(inputs, seed=seed + b) if with_seed else generate_fn(inputs)
        outs.extend(_as_list(res, out_kind, len(chunk), task))
    return outs


def _features(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "image":
        return np.asarray(x, dtype=np.float64)
    w = A.to_mono_numpy(x)[:SAMPLE_RATE * 4]
    n_fft, hop = 1024, 256
    if len(w) < n_fft:
        w = np.pad(w, (0, n_fft - len(w)))
    frames = np.lib.stride_tricks.sliding_window_view(w, n_fft)[::hop] * np.hanning(n_fft)
    return np.maximum(20 * np.log10(np.abs(np.fft.rfft(frames, axis=-1)) + 1e-8), -80.0)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    t = min(a.shape[0], b.shape[0])
    return float(np.mean(np.abs(a[:t] - b[:t])))


def evaluate(task: str, generate_fn: Callable, n: int = 64, n_unseen: int | None = None,
             batch_size: int = 16, seed: int = 0, start: int = 0, diversity_n: int = 8,
             min_ground_truth: float = MIN_GROUND_TRUTH) -> dict:
    """Score `generate_fn` on n held-out scenes (and n_unseen unseen-combo scenes, default n // 2).

    task: "image2audio" | "audio2image" | "text2audio" | "text2image" (see TASKS).
    generate_fn(inputs[, seed=int]) -> outputs for one batch: inputs are float32 numpy
    [B, 64, 64, 3] images in [0, 1], float32 [B, 44800] waveforms at 22050 Hz, or a list of B
    captions; outputs are B waveforms at 22050 Hz ([B, T] / [B, 1, T] / list, numpy or torch) or
    B images ([B, H, W, 3] or [B, 3, H, W] in [0, 1]; resized to 64 px if needed). If it takes a
    `seed` keyword, batch b gets seed + (index of its first scene).

    First scores the ground truth of the same scenes; raises GroundTruthError if any ground-truth
    accuracy is below min_ground_truth. Returns the metrics (audio: pitch_acc, timbre_acc,
    loudness_acc, onset_acc; image: hue_acc, shape_acc, size_acc, position_acc; the same for the
    held-out-combo objects of the unseen scenes prefixed unseen_; all_acc, count_acc, errors with
    their spread, standard errors under "se"), n, n_unseen, task, ground_truth (same keys, the
    analysers on the generator's own outputs) and, with diversity_n > 0, `diversity`: the mean
    distance between two generations for the same input (the second with seed + 7919) divided by
    the mean distance between generations for different inputs (0: deterministic; ~1: as varied
    as the conditioning itself; log-spectrogram L1 for audio, pixel L1 for images).
    """
    if task not in TASKS:
        raise ValueError(f"synthav.evaluate: task {task!r} is not one of {list(TASKS)}")
    if n < 1:
        raise ValueError(f"synthav.evaluate: n must be >= 1, got {n}")
    n_unseen = n // 2 if n_unseen is None else int(n_unseen)
    out_kind = TASKS[task][1]
    held = S.scenes("heldout", n, start)
    uns = S.scenes("unseen", n_unseen, start) if n_unseen > 0 else []
    if out_kind == "audio":
        score, keys, render = score_audio, AUDIO_METRICS, render_audio
    else:
        score, keys, render = score_images, IMAGE_METRICS, render_image

    def run(outputs_h, outputs_u):
        main = score(held, outputs_h)
        unseen = score(uns, outputs_u, include=_heldout_object) if uns else None
        return _merge(main, unseen, keys)

    gt = run([render(s) for s in held], [render(s) for s in uns])
    bad = {k: v for k, v in gt.items() if k.endswith("_acc") and not (v >= min_ground_truth)}
    if bad:
        raise GroundTruthError(f"synthav.evaluate({task!r}): the analysers score the ground truth below "
                               f"{min_ground_truth}: {bad}; the metric is broken, not the model")
    outs_h = _generate(task, generate_fn, held, batch_size, seed, out_kind)
    outs_u = _generate(task, generate_fn, uns, batch_size, seed + 500_000, out_kind) if uns else []
    res = run(outs_h, outs_u)
    res.update({"task": task, "n": n, "n_unseen": n_unseen, "ground_truth": gt})
    d = min(int(diversity_n), n)
    if d >= 2:
        again = _generate(task, generate_fn, held[:d], batch_size, seed + 7919, out_kind)
        fa = [_features(x, out_kind) for x in outs_h[:d]]
        fb = [_features(x, out_kind) for x in again]
        same = np.mean([_dist(a, b) for a, b in zip(fa, fb)])
        diff = np.mean([_dist(fa[i], fa[(i + 1) % d]) for i in range(d)])
        res["diversity"] = float(same / diff) if diff > 0 else 0.0
    return res


# ---------------------------------------------------------------------------------------------
# reporting

_COLUMNS = ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc", "unseen_pitch_acc", "unseen_timbre_acc",
            "hue_acc", "shape_acc", "size_acc", "position_acc", "unseen_hue_acc", "unseen_shape_acc",
            "pitch_precision", "timbre_precision", "hue_precision", "shape_precision", "extra_rate",
            "all_acc", "count_acc", "diversity", "n")


def format_table(results) -> str:
    """Markdown table, one row per run. `results`: one evaluate() dict (then its ground truth is
    a second row), a {name: dict} mapping, or a list of (name, dict)."""
    if isinstance(results, dict) and any(k in results for k in _COLUMNS):
        rows = [(results.get("task", "model"), results)]
    elif isinstance(results, dict):
        rows = list(results.items())
    else:
        rows = list(results)
    gts = [r.get("ground_truth") for _, r in rows if isinstance(r.get("ground_truth"), dict)]
    if gts:
        rows.append(("ground truth", gts[0]))
    cols = [c for c in _COLUMNS if any(c in r for _, r in rows)]

    def fmt(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return str(v) if isinstance(v, (int, np.integer)) else f"{float(v):.3f}"
    lines = ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.synthav.evaluate",
                                description="Score the SynthAV analysers on ground truth.")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--n-unseen", type=int, default=None)
    a = p.parse_args(argv)
    gt = ground_truth_scores(a.n, a.n_unseen)
    for k, v in gt.items():
        if k != "se" and not isinstance(v, dict):
            print(f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
