"""The one way video reaches a node: a host VIDEO, or an IMAGE batch of frames with its fps, sampled
at an explicit rate (encoders.video_frames). Used by Encode Video, VATT Video Features and Caption
Video, so all three accept the same inputs and fail with the same messages.

A VIDEO read from a file (Load Video) is decoded as a stream: only the frames shown at the sampling
instants are kept, so memory does not grow with the video's length (the host's own get_components
holds every frame, 1.4 GB for a minute of 256 x 256 at 30 fps). Other VIDEOs (built from frames by
Create Video) already hold their frames and are read through get_components."""

from __future__ import annotations

import math

import torch

from ..encoders.video_frames import sample_frames


def video_file_source(video):
    """The file (path or BytesIO) behind a host VideoFromFile, or None for other VIDEOs."""
    try:
        from comfy_api.latest import InputImpl
    except ImportError:  # outside the host
        return None
    if isinstance(video, InputImpl.VideoFromFile):
        return video.get_stream_source()
    return None


class _NoVideoStream(ValueError):
    pass


def _no_video_stream(node: str) -> ValueError:
    return _NoVideoStream(f"{node}: the video has no video frames (no video stream in the file: an audio-only file?); "
                      "expected a video with pictures")


def stream_video(source, node: str, rate_hz: float | None = None, consume=None, batch: int = 32
                 ) -> tuple[torch.Tensor | None, int, float]:
    """Decodes a video file once: (the frames shown at 0, 1/rate_hz, ... [n, H, W, 3] in 0..1, or None
    without rate_hz; the frame count; the frame rate). Frames are RGB as the host decodes them
    (rgb24 / 255), the rate its average rate; the sampling rule is encoders.video_frames'. With
    `consume`, the sampled frames go to it in order, `batch` at a time, and are not kept (None is
    returned for them): memory holds one batch whatever the length."""
    import av

    kept, count = [], 0
    try:
        with av.open(source, mode="r") as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise _no_video_stream(node)
            fps = float(stream.average_rate) if stream.average_rate else 1.0
            next_k = 0
            for frame in container.decode(stream):
                if rate_hz is not None:
                    # the instants k / rate_hz whose shown frame (floor(t * fps)) is this one
                    while math.floor(next_k / rate_hz * fps + 1e-6) <= count:
                        if math.floor(next_k / rate_hz * fps + 1e-6) == count:
                            kept.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).float() / 255.0)
                            if consume is not None and len(kept) == batch:
                                consume(torch.stack(kept))
                                kept = []
                        next_k += 1
                count += 1
            if consume is not None and kept:
                consume(torch.stack(kept))
                kept = []
    except _NoVideoStream as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # PyAV's own errors for unreadable files (some subclass ValueError)
        raise ValueError(f"{node}: cannot read the video ({type(e).__name__}: {e})") from None
    if count == 0:
        raise ValueError(f"{node}: the video has no frames")
    frames = torch.stack(kept) if rate_hz is not None and consume is None else None
    return frames, count, fps


def _check_rate(rate_hz, node: str) -> float:
    try:
        rate = float(rate_hz)
    except (TypeError, ValueError):
        rate = float("nan")
    if isinstance(rate_hz, bool) or not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{node}: sampling rate must be a positive number of Hz, got {rate_hz!r}")
    return rate


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
    source = video_file_source(video)
    if source is not None:
        _frames, count, fps = stream_video(source, node)
        return count / fps
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
    source = video_file_source(video) if video is not None and frames is None else None
    if source is not None:
        sampled, count, file_fps = stream_video(source, node, _check_rate(rate_hz, node))
        return sampled, count / file_fps
    images, fps = video_frames_and_fps(video, frames, fps, node)
    try:
        sampled, _times_s = sample_frames(images, fps, rate_hz)
    except ValueError as e:
        raise ValueError(f"{node}: {e}") from None
    return sampled, images.shape[0] / fps


def encode_sampled_frames(video, frames, fps, rate_hz: float, node: str, encode, batch: int = 32) -> tuple[list, float]:
    """`encode` applied to the frames shown at 0, 1/rate_hz, ... in order, `batch` frames at a time for a
    video file (never holding more), all at once otherwise: (the list of what it returned, the duration s)."""
    source = video_file_source(video) if video is not None and frames is None else None
    if source is None:
        sampled, duration_s = sampled_video_frames(video, frames, fps, rate_hz, node)
        return [encode(sampled)], duration_s
    _check_rate(rate_hz, node)
    outputs = []
    _frames, count, file_fps = stream_video(source, node, float(rate_hz), consume=lambda chunk: outputs.append(encode(chunk)), batch=batch)
    return outputs, count / file_fps
