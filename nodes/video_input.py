"""The one way video reaches a node: a host VIDEO, or an IMAGE batch of frames with its fps, sampled
at an explicit rate (encoders.video_frames). Used by Encode Video, VATT Video Features and Caption
Video, so all three accept the same inputs and fail with the same messages."""

from __future__ import annotations

import math

import torch

from ..encoders.video_frames import sample_frames


def video_components(video, node: str):
    """The host VIDEO's decoded components (images, audio, frame_rate), or an error naming the node:
    the host's own classes fail on a file without a video stream with "tuple index out of range"."""
    try:
        return video.get_components()
    except Exception as e:  # the host's video classes raise their own errors for unreadable files
        try:
            video.get_dimensions()
        except Exception:
            raise ValueError(f"{node}: the video has no video frames (no video stream in the file: an audio-only "
                             "file?); expected a video with pictures") from None
        raise ValueError(f"{node}: cannot read the video ({type(e).__name__}: {e})") from None


def video_duration_s(video, node: str) -> float:
    """A VIDEO's exact length: its frame count over its frame rate."""
    components = video_components(video, node)
    frames, fps = components.images, float(components.frame_rate)
    count = int(frames.shape[0]) if isinstance(frames, torch.Tensor) and frames.ndim == 4 else 0
    if count == 0:
        raise ValueError(f"{node}: the video has no frames")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{node}: the video's frame rate {fps!r} is not a positive number")
    return count / fps


def video_frames_and_fps(video, frames, fps, node: str) -> tuple[torch.Tensor, float]:
    """(images [T, H, W, C], fps) from a VIDEO, or from an IMAGE batch and its fps."""
    if video is not None and frames is not None:
        raise ValueError(f"{node}: connect either a VIDEO or an IMAGE batch of frames, not both")
    if video is not None:
        components = video_components(video, node)
        images, fps = components.images, float(components.frame_rate)
    elif frames is not None:
        images = frames
    else:
        raise ValueError(f"{node}: connect a VIDEO or an IMAGE batch of frames with its fps")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{node}: the video has no frames (got {shape}); expected frames [count, height, width, channels]")
    if isinstance(fps, bool) or not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"{node}: the frame rate must be a positive number of frames per second, got {fps!r}")
    return images, float(fps)


def sampled_video_frames(video, frames, fps, rate_hz: float, node: str) -> tuple[torch.Tensor, float]:
    """The frames shown at 0, 1/rate_hz, 2/rate_hz, ... s [n, H, W, C], and the video's duration in s."""
    images, fps = video_frames_and_fps(video, frames, fps, node)
    try:
        sampled, _times_s = sample_frames(images, fps, rate_hz)
    except ValueError as e:
        raise ValueError(f"{node}: {e}") from None
    return sampled, images.shape[0] / fps
