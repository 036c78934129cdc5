"""Long audio in: the Visual Echoes audio -> image and audio inpainting templates on a generated 1-hour
WAV (44.1 kHz stereo 16-bit; a tone that changes pitch every 10 s under a little noise), each in a fresh
process that records every node's memory (benchmarks/node_memory.py). Prints markdown; never asserts.

    python benchmarks/long_audio_benchmark.py [--seconds 3600] [--out DIR]

The headless runner refuses audio over 600 s before the host decodes it (runner/run.py
MAX_MEDIA_SECONDS), so the runs skip that check, as the host's own server runs a workflow from the
editor. What the figures separate:

* **the host's part**: its LoadAudio decodes the whole file into one float32 tensor (an hour at 44.1 kHz
  stereo: 1.27 GB), through a list of decoded frames and a concatenation, and keeps it as the node's
  output for the rest of the run;
* **the pack's part**: what the pack's nodes add on top of that. Audio to Tokens analyses only the first
  model window (+0.5 s) of the sound (a documented excerpt: the model's 2.04 s); Visual Echoes works on
  that window; inpainting's Put Back into Audio returns the whole sound (one copy of the original, which
  the host's AUDIO must not be changed in place) and Save Audio (WAV) writes it in blocks.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import wave

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from node_memory import run_profile, stage_table  # noqa: E402

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = {"audio -> image": ("audio_to_image.json", "1.audio"), "audio inpainting": ("audio_inpainting.json", "15.audio")}
RATE = 44100


def write_long_wav(path: str, seconds: float) -> None:
    """A 16-bit stereo WAV, 10 s at a time (memory flat in the length)."""
    rng = np.random.default_rng(0)
    block = RATE * 10
    with wave.open(path + ".partial", "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(RATE)
        for b in range(int(np.ceil(seconds / 10))):
            n = min(block, int(seconds * RATE) - b * block)
            t = (np.arange(n) + b * block) / RATE
            f = 220 * 2 ** (((b * 7) % 24) / 12)
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t)
            left = 0.3 * envelope * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(n)
            right = 0.15 * envelope * np.sign(np.sin(2 * np.pi * 1.5 * f * t)) + 0.02 * rng.standard_normal(n)
            w.writeframes((np.stack([left, right], 1) * 32767).astype("<i2").tobytes())
    os.replace(path + ".partial", path)


def parts(profile: dict) -> dict:
    """The host's LoadAudio (its transient peak and what it holds afterwards) and the pack's nodes (their
    highest peak over the memory when they started, which includes the host's decoded sound)."""
    rows = profile["rows"]
    load = next(r for r in rows if r["class"] == "LoadAudio")
    pack = [r for r in rows if r["class"].startswith("AV_")]
    worst = max(pack, key=lambda r: r["peak_mb"] - r["start_mb"])
    return {"boot": profile["boot_mb"], "host_peak": load["peak_mb"] - load["start_mb"], "host_held": load["end_mb"] - load["start_mb"],
            "pack_peak": worst["peak_mb"] - worst["start_mb"], "pack_node": worst["class"], "max": profile["max_rss_mb"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--out", default=None, help="where the WAV and outputs go (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    work = args.out or tempfile.mkdtemp(prefix="av-long-audio-")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, f"tone_{int(args.seconds)}s_44k_stereo.wav")
    if not os.path.exists(path):
        write_long_wav(path, args.seconds)
    print(f"# Long audio in ({args.seconds:.0f} s WAV, 44.1 kHz stereo 16-bit, {os.path.getsize(path) / 2**20:.0f} MB; CPU, "
          f"{os.environ.get('OMP_NUM_THREADS', 'all')} threads, {os.cpu_count()} cores)\n")
    print(f"`{shlex.join([sys.executable, *sys.argv])}`\n")
    profiles = {}
    for name, (workflow, key) in TEMPLATES.items():
        profiles[name] = run_profile(os.path.join(PACK_DIR, "workflows", workflow), {key: path},
                                     os.path.join(work, f"out_{workflow[:-5]}"), input_limits=False)
    print("| template | booted MB | host LoadAudio: peak / held MB | pack: largest node peak MB (node) | process peak MB |\n"
          "|---|---|---|---|---|")
    for name, profile in profiles.items():
        p = parts(profile)
        print(f"| {name} | {p['boot']:.0f} | +{p['host_peak']:.0f} / +{p['host_held']:.0f} | +{p['pack_peak']:.0f} ({p['pack_node']}) "
              f"| {p['max']:.0f} |")
    for name, profile in profiles.items():
        print(f"\n{name}, by node (MB):\n")
        print(stage_table({name: profile}))
    if not args.out:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
