"""Renders example_inputs/audiovisual_example_video.mp4: the SynthAV example scene (seed 1000000, the
one of audiovisual_example_scene.png) as a video: background first, each object appearing when its
tone starts, 16 fps, 4 s, frames upscaled 4x (nearest) to 256 x 256, with the scene's own sound (AAC).

    .venv/bin/python -m comfyui_audiovisual.tools.make_example_video [out.mp4]
"""

import os
import sys

import numpy as np

SEED = 1_000_000
FPS = 16
DURATION_S = 4.0
SCALE = 4


def write_video(path: str, frames: np.ndarray, fps: int, audio: np.ndarray, sample_rate: int) -> None:
    """frames float [T, H, W, 3] in 0..1, audio float [samples] mono -> H.264 + AAC mp4 (temporary name, then rename)."""
    import av

    temporary = path + ".partial.mp4"
    with av.open(temporary, mode="w") as container:
        video = container.add_stream("h264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        for frame in frames:
            picture = av.VideoFrame.from_ndarray((np.clip(frame, 0, 1) * 255).astype(np.uint8), format="rgb24")
            container.mux(video.encode(picture))
        container.mux(video.encode())
        samples = audio.astype(np.float32).reshape(1, -1)
        chunk = 1024
        for start in range(0, samples.shape[1], chunk):
            block = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + chunk]), format="fltp", layout="mono")
            block.sample_rate = sample_rate
            block.pts = start
            container.mux(sound.encode(block))
        container.mux(sound.encode())
    os.replace(temporary, path)


def main(argv=None) -> int:
    from ..synthav.world import make_video

    argv = sys.argv[1:] if argv is None else argv
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = argv[0] if argv else os.path.join(here, "example_inputs", "audiovisual_example_video.mp4")
    video = make_video(SEED, fps=FPS, duration_s=DURATION_S)
    frames = video.frames.repeat(SCALE, axis=1).repeat(SCALE, axis=2)
    write_video(path, frames, FPS, video.audio, video.sample_rate)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
