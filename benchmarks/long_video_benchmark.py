"""Long videos: video -> audio for 10 s and 60 s at 30 fps on the embedded VATT default, and the seams
between its windows. Prints a markdown report; never asserts.

    python benchmarks/long_video_benchmark.py [--lengths 10,60] [--fps 30] [--out DIR]

1. **The shipped template, headless** (`workflows/video_to_audio.json` through `python -m
   comfyui_audiovisual run ... --cpu`, one fresh process per length): wall time, the process's peak
   resident memory (its own rusage), the WAV's length against the video's. Memory should not grow
   with the length: frames are decoded as a stream keeping only the 5 per second the features need,
   and the pictures are copied into the output, never decoded (nodes/video_input.py, Add Audio to Video).
2. **Seams**, on the 60 s video's features through the sampler the node runs (samplers/vatt.py), three
   ways of joining the decoder's 2 s windows: *continue* (the default: each window starts a quarter
   window before the previous one ends and is given those codec frames as known tokens),
   *independent* (windows side by side, a hard cut), and *crossfade* (independent windows at the
   continue starts, decoded apart and crossfaded over the overlap: the usual baseline). The measure:
   spectral flux (L2 change of the log-magnitude spectrum from one 11.6 ms hop to the next) at each
   seam (the largest within +-2 hops) over the same statistic at every other hop of the clip, and the
   level jump (dB between the 50 ms before and after) at seams over elsewhere. 1.0 = a seam is no
   more abrupt than any other instant. Seams within 0.15 s of a scene change of the test video
   (every 3 s) are left out.

The test video: consecutive SynthAV scenes of 3 s each (seeds 2000000 + i, `synthav.world.make_video`,
64 x 64 frames upscaled 4x to 256 x 256), H.264 + AAC, written frame by frame.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW = os.path.join(PACK_DIR, "workflows", "video_to_audio.json")
SCENE_S = 3.0
SEED0 = 2_000_000
SCALE = 4


def write_long_video(path: str, duration_s: float, fps: int) -> int:
    """Consecutive 3 s SynthAV scenes, H.264 + AAC, frame by frame (memory flat in the length). Returns the frame count."""
    import av

    from comfyui_audiovisual.synthav.world import SAMPLE_RATE, make_video

    frames_written, audio_samples = 0, 0
    partial = path + ".partial.mp4"
    with av.open(partial, mode="w") as container:
        video = container.add_stream("h264", rate=fps)
        video.width = video.height = 64 * SCALE
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        for i in range(math.ceil(duration_s / SCENE_S - 1e-9)):
            clip = make_video(SEED0 + i, fps=fps, duration_s=min(SCENE_S, duration_s - i * SCENE_S))
            for frame in clip.frames:
                big = np.clip(frame, 0, 1).repeat(SCALE, axis=0).repeat(SCALE, axis=1)
                container.mux(video.encode(av.VideoFrame.from_ndarray((big * 255).astype(np.uint8), format="rgb24")))
                frames_written += 1
            samples = clip.audio.astype(np.float32).reshape(1, -1)
            for start in range(0, samples.shape[1], 1024):
                block = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp", layout="mono")
                block.sample_rate = SAMPLE_RATE
                block.pts = audio_samples + start
                container.mux(sound.encode(block))
            audio_samples += samples.shape[1]
        container.mux(video.encode())
        container.mux(sound.encode())
    os.replace(partial, path)
    return frames_written


def run_template(video_path: str, out_dir: str) -> dict:
    """The shipped template through the CLI in a fresh process: wall s, peak RSS MB (its rusage), WAV seconds."""
    command = [sys.executable, "-m", "comfyui_audiovisual", "run", WORKFLOW, "--set", f"1.file={video_path}", "--out", out_dir, "--cpu"]
    start = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, cwd=PACK_DIR, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.time() - start
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{shlex.join(command)} exited {code}:\n{stderr[-2000:]}")
    wavs = [line.strip() for line in stdout.splitlines() if line.strip().endswith(".wav")]
    with wave.open(wavs[0]) as w:
        seconds = w.getnframes() / w.getframerate()
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "wav_s": seconds, "command": shlex.join(command)}


def _log_spectrum(audio: np.ndarray, hop: int, n_fft: int = 1024) -> np.ndarray:
    x = torch.from_numpy(audio.astype(np.float32))
    spec = torch.stft(x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, return_complex=True).abs()
    return torch.log1p(spec * 100).numpy().T  # [hops, bins]


def seam_measure(audio: np.ndarray, rate: int, seams_s: list[float], avoid_s: list[float]) -> dict:
    """Flux and level-jump ratios: at the seams over at every other instant (see the module doc)."""
    hop = 256
    spectrum = _log_spectrum(audio, hop)
    flux = np.r_[0.0, np.linalg.norm(np.diff(spectrum, axis=0), axis=1)]
    window = int(0.05 * rate)
    level = lambda a: 20 * np.log10(np.sqrt(np.mean(a ** 2)) + 1e-5)

    def jump(t):
        i = int(t * rate)
        return abs(level(audio[max(0, i - window):i]) - level(audio[i:i + window]))

    def flux_at(t):
        i = int(round(t * rate / hop))
        return flux[max(1, i - 2):i + 3].max()

    duration = len(audio) / rate
    keep = [t for t in seams_s if 0.2 < t < duration - 0.2 and all(abs(t - a) > 0.15 for a in avoid_s)]
    others = [t for t in np.arange(0.2, duration - 0.2, 0.1)
              if all(abs(t - s) > 0.15 for s in seams_s) and all(abs(t - a) > 0.15 for a in avoid_s)]
    return {"seams": len(keep), "flux_ratio": float(np.mean([flux_at(t) for t in keep]) / np.mean([flux_at(t) for t in others])),
            "jump_ratio": float(np.mean([jump(t) for t in keep]) / np.mean([jump(t) for t in others]))}


def seams(video_path: str, seed: int = 0) -> list[dict]:
    from comfyui_audiovisual.nodes.video_input import stream_video
    from comfyui_audiovisual.samplers.vatt import (DEFAULTS, default_overlap, vatt_generate, vatt_sample, window_conditions,
                                                   window_starts)
    from comfyui_audiovisual.synthav.evaluate_vatt import load_vatt_models

    encoder, _text, decoder, codec = load_vatt_models(os.path.join(PACK_DIR, "embedded_models"))
    config = decoder.config
    options = dict(steps=DEFAULTS["steps"], cfg=DEFAULTS["cfg"], top_k=DEFAULTS["top_k"], temperature=DEFAULTS["temperature"])
    with torch.inference_mode():
        frames, count, fps = stream_video(video_path, "benchmark", config.video_rate_hz)
        per_frame = encoder.encode_images(frames).vectors.float()
        del frames
        duration = count / fps
        num_samples = codec.samples_for_duration(duration)
        total = codec.frames_for_samples(num_samples)
        clip = round(config.clip_s * config.frame_rate_hz)
        overlap = default_overlap(clip)
        rows = []
        for name, join_overlap in (("continue", overlap), ("independent", 0)):
            start = time.time()
            codes = vatt_generate(decoder, per_frame, config.video_rate_hz, total, tokens=config.video_tokens,
                                  generator=torch.Generator().manual_seed(seed), overlap=join_overlap, **options)
            audio = codec.decode(codec.tokens_for(codes, num_samples))[0, 0].numpy()
            starts = window_starts(total, clip, join_overlap)
            seams_s = [(s + join_overlap) / config.frame_rate_hz for s in starts[1:]]
            rows.append({"join": name, "windows": len(starts), "seconds": time.time() - start,
                         **seam_measure(audio, codec.sample_rate_hz, seams_s, [k * SCENE_S for k in range(1, int(duration // SCENE_S) + 1)])})
        # crossfade: independent windows at the continue starts, decoded apart, overlap-added with linear fades
        start = time.time()
        starts = window_starts(total, clip, overlap)
        conditions = window_conditions(per_frame, config.video_rate_hz, config.clip_s, len(starts), config.video_tokens,
                                       starts_s=[s / config.frame_rate_hz for s in starts])
        generator = torch.Generator().manual_seed(seed)
        hop = codec.hop_samples
        out = np.zeros(int(round((starts[-1] + clip) * hop)) + 1, dtype=np.float64)
        fade = int(round(overlap * hop))
        for w, s in enumerate(starts):
            codes = vatt_sample(decoder, conditions[w:w + 1], clip, generator=generator, **options)
            window_samples = max(n for n in range((clip - 1) * hop, clip * hop + 1) if codec.frames_for_samples(n) == clip)
            piece = codec.decode(codec.tokens_for(codes, window_samples))[0, 0].numpy().astype(np.float64)
            gain = np.ones_like(piece)
            if w > 0:
                gain[:fade] = np.linspace(0, 1, fade, endpoint=False)
            if w < len(starts) - 1:
                gain[-fade:] = np.minimum(gain[-fade:], np.linspace(1, 0, fade, endpoint=False))
            at = int(round(s * hop))
            out[at:at + len(piece)] += piece * gain
        audio = out[:num_samples].astype(np.float32)
        seams_s = [(s + overlap / 2) / config.frame_rate_hz for s in starts[1:]]
        rows.append({"join": "crossfade", "windows": len(starts), "seconds": time.time() - start,
                     **seam_measure(audio, codec.sample_rate_hz, seams_s, [k * SCENE_S for k in range(1, int(duration // SCENE_S) + 1)])})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="10,60", help="video lengths in seconds, comma-separated")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--out", default=None, help="where the videos and outputs go (default: a temporary folder, removed)")
    parser.add_argument("--skip-template", action="store_true")
    parser.add_argument("--stages", action="store_true",
                        help="also run the template once more per length in a fresh process that records each node's memory "
                             "(benchmarks/node_memory.py) and print where the peak comes from")
    args = parser.parse_args(argv)
    lengths = [float(x) for x in args.lengths.split(",") if x.strip()]
    work = args.out or tempfile.mkdtemp(prefix="av-long-video-")
    os.makedirs(work, exist_ok=True)
    print(f"# Long videos (VATT default, CPU, {torch.get_num_threads()} threads, {os.cpu_count()} cores)\n")
    print(f"`{shlex.join([sys.executable, *sys.argv])}`\n")
    videos = {}
    for length in lengths:
        path = os.path.join(work, f"synthav_{int(length)}s_{args.fps}fps.mp4")
        if not os.path.exists(path):
            write_long_video(path, length, args.fps)
        videos[length] = path
    if not args.skip_template:
        print("| video | wall s | peak RSS MB | WAV s |\n|---|---|---|---|")
        for length, path in videos.items():
            r = run_template(path, os.path.join(work, f"out_{int(length)}"))
            print(f"| {length:.0f} s at {args.fps} fps, 256 x 256 | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['wav_s']:.3f} |")
        print()
    if args.stages:
        from node_memory import run_profile, stage_table

        print("Resident memory by node (MB; peak = highest RSS while the node ran, raised max = how much it raised the "
              "process's high-water mark; in execution order):\n")
        profiles = {f"{length:.0f} s": run_profile(WORKFLOW, {"1.file": path}, os.path.join(work, f"stages_{int(length)}"))
                    for length, path in videos.items()}
        print(stage_table(profiles) + "\n")
    longest = videos[max(videos)]
    print(f"Seams on the {max(videos):.0f} s video (spectral flux and level jump at seams / elsewhere; 1.0 = no more abrupt than any instant):\n")
    print("| join | windows | s | seams | flux ratio | level-jump ratio |\n|---|---|---|---|---|---|")
    for row in seams(longest):
        print(f"| {row['join']} | {row['windows']} | {row['seconds']:.1f} | {row['seams']} | {row['flux_ratio']:.2f} | {row['jump_ratio']:.2f} |")
    if not args.out:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
