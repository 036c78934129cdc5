"""Write a SynthAV video (synthav.world.make_video) as a silent H.264 .mp4 that the host's Load Video reads.

    .venv/bin/python tools/synthav_video_file.py example_inputs/audiovisual_example_video.mp4
    .venv/bin/python tools/synthav_video_file.py out.mp4 --seed 1000001 --fps 30 --duration 2

The first line makes the example input of workflows/video_to_audio_v2a.json (held-out scene
1000000, the example picture's scene, 16 fps, 2 s). Frames are upscaled 4x (nearest) so the
encoder's 4:2:0 chroma subsampling keeps the small objects' colours; the video's own sound is left
out (the workflow makes it).
"""

import argparse
import os
import sys

import numpy as np


def write_video(path: str, frames: np.ndarray, fps: float, upscale: int = 4, crf: int = 12) -> str:
    """frames float [T, H, W, 3] in 0..1 -> `path` (.mp4, H.264, yuv420p), written under a temporary name."""
    from fractions import Fraction

    import av

    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise ValueError(f"write_video: expected frames [T, H, W, 3], got {frames.shape}")
    pixels = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
    if upscale > 1:
        pixels = pixels.repeat(upscale, axis=1).repeat(upscale, axis=2)
    stem, extension = os.path.splitext(path)
    tmp = f"{stem}.partial{extension}"
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = pixels.shape[2], pixels.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
    from comfyui_audiovisual.synthav.world import make_video

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the .mp4 to write")
    parser.add_argument("--seed", type=int, default=1_000_000, help="SynthAV scene seed (default: held-out scene 1000000)")
    parser.add_argument("--fps", type=float, default=16.0)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)
    clip = make_video(args.seed, fps=args.fps, duration_s=args.duration)
    print(write_video(args.out, clip.frames, clip.fps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
