"""Visual Echoes image -> long audio on the embedded models (CPU): the seams at the window joins against
every other instant, and what the SynthAV analysers hear in each window. Prints markdown; never asserts.

    python benchmarks/visual_echoes_long_audio.py [--seconds 10] [--scenes 8] [--seed 0] [--overlap 6] [--joins continue,independent]

For each of the first ``--scenes`` held-out SynthAV scenes (``synthav.heldout_scene``), the picture's tokens
go through ``samplers.visual_echoes.image_to_audio_windows`` (what the Visual Echoes Sampler runs with
duration_s set; its defaults: 30 steps, cfg 3, temperature 2) for ``--seconds`` of audio, decoded by the
spectrogram tokenizer and Griffin-Lim (the shipped template's vocoder), two ways of joining the model's
2.04 s windows (10 x 22 token grids, 0.093 s a column):

* *continue* (the node's way): each window after the first starts 6 columns (a quarter window) before the
  previous one ends, is given those columns as known tokens and regenerates the rest (inpaint_audio with
  the same picture); the seam is where its new columns begin.
* *independent*: windows side by side from the same picture, each sampled from scratch (overlap 0).

Seams: ``seam_measure`` of benchmarks/long_video_benchmark.py (spectral flux at a seam, the largest within
+-2 hops of 11.6 ms, over the same statistic every 0.1 s elsewhere; level jump in dB across the 50 ms either
side likewise; 1.0 = a seam is no more abrupt than any other instant), one ratio per clip, mean +- standard
error over the scenes. Notes: ``synthav.analysers.detect_notes`` on each clip, notes counted per window by
onset (the window's new part: after its known columns) and their pitches checked against the scene's.
A control row measures the continued clips at the seams' offset from a window's start (0.56 s) inside the
first window, where nothing is joined: SynthAV's "early" note slot (0.55 s) falls there, so a note onset
is expected at that offset in every window whether or not it is a seam.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from long_video_benchmark import seam_measure  # noqa: E402

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mean_se(values) -> str:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{values.mean():.2f} +- {se:.2f}"


def main(argv=None) -> int:
    from comfyui_audiovisual.loaders.vocoders import load_vocoder
    from comfyui_audiovisual.samplers.embedding_to_audio import columns_for_duration
    from comfyui_audiovisual.samplers.vatt import default_overlap, window_starts
    from comfyui_audiovisual.audio.mel_frontend import SPECVQGAN_MEL
    from comfyui_audiovisual.samplers.visual_echoes import (TEMPERATURE, audio_sequence_to_grid, image_grid_to_sequence,
                                                            image_to_audio_windows)
    from comfyui_audiovisual.synthav import analysers as A
    from comfyui_audiovisual.synthav import heldout_scene, render_image
    from comfyui_audiovisual.synthav import world as W
    from comfyui_audiovisual.synthav.evaluate_cli import load_default_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlap", type=int, default=None, help="known columns of a continued window (default: a quarter window, 6)")
    parser.add_argument("--joins", default="continue,independent", help="which joins to run, comma-separated")
    args = parser.parse_args(argv)

    image_tok, spec_tok, model = load_default_models(os.path.join(PACK_DIR, "embedded_models"))
    vocoder = load_vocoder("griffin-lim")
    rows, window = spec_tok.grid_shape(80, W.MEL_FRAMES)
    spc = spec_tok.downsample_factor * SPECVQGAN_MEL.hop_samples / SPECVQGAN_MEL.sample_rate_hz  # 0.093 s
    columns = columns_for_duration(args.seconds, spc)
    overlap = default_overlap(window) if args.overlap is None else args.overlap
    joins = {name: {"continue": overlap, "independent": 0}[name] for name in args.joins.split(",")}
    print(f"# Visual Echoes image -> {args.seconds:g} s audio (embedded models, CPU, {torch.get_num_threads()} threads)\n")
    print(f"`{shlex.join([sys.executable, *sys.argv])}`\n")
    seams, notes, wall, detail, control = {j: [] for j in joins}, {j: [] for j in joins}, {j: 0.0 for j in joins}, {}, []
    for i in range(args.scenes):
        scene = heldout_scene(i)
        true_pitches = {o.pitch for o in scene.objects}
        with torch.inference_mode():
            image = image_grid_to_sequence(image_tok.encode_image(torch.as_tensor(render_image(scene))[None]))
            for join, overlap in joins.items():
                start_time = time.time()
                audio, _ = image_to_audio_windows(model, image, columns, rows=rows, overlap_columns=overlap, steps=30, cfg=3.0,
                                                  temperature=TEMPERATURE, generator=torch.Generator().manual_seed(args.seed + i))
                mel = spec_tok.decode_mel(audio_sequence_to_grid(audio, rows)).clamp(0, 1)
                wave = vocoder(mel)[0].float().numpy()
                wall[join] += time.time() - start_time
                starts = window_starts(columns, window, overlap)
                new_from_s = [0.0] + [(s + overlap) * spc for s in starts[1:]]
                seams[join].append(seam_measure(wave, vocoder.sample_rate_hz, new_from_s[1:], []))
                if overlap:  # control: the same offset from the window's start in the first window, where nothing is joined
                    control.append(seam_measure(wave, vocoder.sample_rate_hz, [overlap * spc], new_from_s[1:]))
                found = A.detect_notes(wave, vocoder.sample_rate_hz)
                per_window = [[n for n in found if a <= n.onset_s < b] for a, b in zip(new_from_s, new_from_s[1:] + [wave.shape[-1] / vocoder.sample_rate_hz])]
                notes[join].append({"windows": len(starts), "notes": len(found),
                                    "windows_with_a_true_pitch": sum(any(n.pitch in true_pitches for n in w) for w in per_window),
                                    "true_pitch_notes": sum(n.pitch in true_pitches for n in found)})
                if i == 0:
                    detail[join] = per_window
        if i == 0:
            truth = ", ".join(f"{W.NOTE_NAMES[o.pitch]} at {o.onset_s:.2f} s" for o in scene.objects)
    print(f"{args.scenes} held-out scenes, {columns} token columns ({columns * spc:.2f} s) each, windows of {window} columns.\n")
    print("| join | windows | seams per clip | flux ratio | level-jump ratio | notes per clip | notes of the scene's pitches | windows with a scene pitch | s per clip |")
    print("|---|---|---|---|---|---|---|---|---|")
    for join in joins:
        n = notes[join]
        print(f"| {join} | {n[0]['windows']} | {seams[join][0]['seams']} | {mean_se([s['flux_ratio'] for s in seams[join]])} "
              f"| {mean_se([s['jump_ratio'] for s in seams[join]])} | {np.mean([x['notes'] for x in n]):.1f} "
              f"| {sum(x['true_pitch_notes'] for x in n) / max(1, sum(x['notes'] for x in n)):.0%} "
              f"| {sum(x['windows_with_a_true_pitch'] for x in n)}/{sum(x['windows'] for x in n)} | {wall[join] / args.scenes:.1f} |")
    if control:
        print(f"| control: continue, {joins['continue'] * spc:.2f} s into the first window (no join) | | 1 "
              f"| {mean_se([s['flux_ratio'] for s in control])} | {mean_se([s['jump_ratio'] for s in control])} | | | | |")
    print(f"\nHeld-out scene 0 ({truth}), notes heard in each window's new part (pitch@onset s):\n")
    for join, per_window in detail.items():
        cells = ["; ".join(f"{W.NOTE_NAMES[n.pitch]}@{n.onset_s:.2f}" for n in w) or "-" for w in per_window]
        print(f"- {join}: " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
