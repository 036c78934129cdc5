"""A sound written into a copy of a video file as its soundtrack, the pictures copied packet by packet
(never decoded or re-encoded), so the cost does not grow with the video's resolution and memory does
not grow with its length. PyAV, which the host already depends on.

The copy is an MP4 (what the host's Save Video writes by default); its video stream is the source's
first one, its only audio stream the new sound (AAC, at the sound's own rate and channels). Codecs an
MP4 cannot hold are refused (the caller re-encodes frames instead)."""

from __future__ import annotations

import os

import numpy as np
import torch

MP4_VIDEO_CODECS = ("h264", "hevc", "mpeg4", "av1", "vp9", "mjpeg")
AAC_FRAME_SAMPLES = 1024


class CannotCopyVideo(ValueError):
    """The source's video stream cannot go into an MP4 unchanged."""


def write_soundtrack(source, destination: str, waveform: torch.Tensor, sample_rate: int) -> float:
    """Writes `destination` (.mp4): the video stream of `source` (a path or a file object) copied, and
    `waveform` [channels, samples] (-1..1) as its AAC soundtrack. Returns the video stream's duration in
    seconds. Written under a temporary name and renamed, so a failure leaves nothing."""
    import av

    if waveform.ndim != 2 or waveform.shape[0] not in (1, 2) or waveform.shape[1] == 0:
        raise ValueError(f"soundtrack: expected a waveform [1 or 2 channels, samples], got {tuple(waveform.shape)}")
    if hasattr(source, "seek"):
        source.seek(0)
    partial = destination + ".partial.mp4"
    try:
        with av.open(source, mode="r") as container:
            video = next((s for s in container.streams if s.type == "video"), None)
            if video is None:
                raise ValueError("soundtrack: the video has no video stream")
            if video.codec_context.name not in MP4_VIDEO_CODECS:
                raise CannotCopyVideo(f"soundtrack: a {video.codec_context.name} video stream cannot be copied into an MP4")
            with av.open(partial, mode="w", format="mp4") as output:
                out_video = output.add_stream_from_template(template=video, opaque=True)
                layout = "mono" if waveform.shape[0] == 1 else "stereo"
                out_audio = output.add_stream("aac", rate=int(sample_rate), layout=layout)
                last_time = 0.0
                for packet in container.demux(video):
                    if packet.dts is None:
                        continue
                    if packet.pts is not None and packet.duration is not None:
                        last_time = max(last_time, float((packet.pts + packet.duration) * packet.time_base))
                    packet.stream = out_video
                    output.mux(packet)
                samples = np.ascontiguousarray(waveform.detach().float().clamp(-1, 1).cpu().numpy())
                for start in range(0, samples.shape[1], AAC_FRAME_SAMPLES):
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + AAC_FRAME_SAMPLES]),
                                                       format="fltp", layout=layout)
                    frame.sample_rate = int(sample_rate)
                    frame.pts = start
                    output.mux(out_audio.encode(frame))
                output.mux(out_audio.encode())
        os.replace(partial, destination)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return last_time
