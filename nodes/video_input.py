"""The one way video reaches a node: a host VIDEO, or an IMAGE batch of frames with its fps, sampled
at an explicit rate (encoders.video_frames). Used by Encode Video, VATT Video Features and Caption
Video, so all three accept the same inputs and fail with the same messages.

A VIDEO read from a file (Load Video) is decoded as a stream: only the frames shown at the sampling
instants are kept, so memory does not grow with the video's length (the host's own get_components
holds every frame, 1.4 GB for a minute of 256 x 256 at 30 fps). Other VIDEOs (built from frames by
Create Video) already hold their frames and are read through get_components. The stream gives exactly
the host's frames: each host version converts pictures its own way (8-bit RGB in 0.3.x, float RGB in
0.33), so the conversion is chosen by the host's decode of a one-frame probe; a host that no conversion
here reproduces, or a file VIDEO the host trimmed, is read through the host's get_components."""

from __future__ import annotations

import math

import torch

from ..encoders.video_frames import sample_frames, shown_frame


def video_file_source(video):
    """The file (path or BytesIO) behind a host VideoFromFile that shows the whole file, or None for
    other VIDEOs. A file VIDEO trimmed by the host (Trim Video, ComfyUI 0.33+) is None: the host's own
    decode knows its window."""
    try:
        from comfy_api.latest import InputImpl
    except ImportError:  # outside the host
        return None
    if not isinstance(video, InputImpl.VideoFromFile):
        return None
    window = getattr(video, "get_active_trim_window", None)
    if window is not None and tuple(window()) != (0.0, 0.0):
        return None
    return video.get_stream_source()


class _NoVideoStream(ValueError):
    pass


class _UnlikeHost(Exception):
    """The host decodes this file's pictures in a way the stream does not reproduce exactly."""


class _CallerError(Exception):
    """An error of a function the stream calls (the encoder, the host): raised again as it was, never
    reported as an unreadable video (the host's interruption included)."""


def _call(function, *args):
    try:
        return function(*args)
    except BaseException as e:
        raise _CallerError() from e


def _no_video_stream(node: str) -> ValueError:
    return _NoVideoStream(f"{node}: the video has no video frames (no video stream in the file: an audio-only file?); "
                      "expected a video with pictures")


def _rgb24(frame) -> torch.Tensor:
    return torch.from_numpy(frame.to_ndarray(format="rgb24")).float() / 255.0


class _FloatRGB:
    """Planar float RGB straight from the decoder's format, without 8-bit rounding; a width that is not
    a multiple of 32 is first padded (edge pixels repeated) and cut back, so the converter's alignment
    never reaches the picture."""

    def __init__(self):
        self.graph = None

    def __call__(self, frame) -> torch.Tensor:
        import av
        import numpy as np

        if frame.width % 32 == 0:
            return torch.from_numpy(frame.to_ndarray(format="gbrpf32le"))
        if self.graph is None:
            pad_w, pad_h = -(-frame.width // 32) * 32, -(-frame.height // 32) * 32
            graph = av.filter.Graph()
            source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                      time_base=frame.time_base)
            pad = graph.add("pad", f"{pad_w}:{pad_h}:0:0")
            fill = graph.add("fillborders", f"left=0:right={pad_w - frame.width}:top=0:bottom={pad_h - frame.height}:mode=smear")
            sink = graph.add("buffersink")
            source.link_to(pad)
            pad.link_to(fill)
            fill.link_to(sink)
            graph.configure()
            self.graph = (graph, source, sink)
        self.graph[1].push(frame)
        padded = self.graph[2].pull().to_ndarray(format="gbrpf32le")
        return torch.from_numpy(np.ascontiguousarray(padded[:frame.height, :frame.width]))


def _probe(frame):
    """A one-frame video of colour noise in `frame`'s pixel format and size (in memory), and that frame
    as this stream decodes it; None when no codec here keeps the format."""
    import io

    import av
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (frame.height, frame.width, 3), dtype=np.uint8)
    for container_format, codec in (("nut", "rawvideo"), ("avi", "mjpeg")):
        buffer = io.BytesIO()
        try:
            with av.open(buffer, "w", format=container_format) as container:
                stream = container.add_stream(codec, rate=1)
                stream.pix_fmt, stream.width, stream.height = frame.format.name, frame.width, frame.height
                for packet in stream.encode(av.VideoFrame.from_ndarray(noise, format="rgb24").reformat(format=frame.format.name)):
                    container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            buffer.seek(0)
            with av.open(buffer) as container:
                decoded = next(container.decode(video=0))
        except Exception:  # the codec refuses the format
            continue
        if decoded.format.name == frame.format.name:
            buffer.seek(0)
            return buffer, decoded
    return None


def decoder_of(video):
    """A function: a video file (BytesIO) -> its pictures [n, H, W, 3] decoded by the class of the host
    VIDEO `video` (VideoFromFile), the host's own decode."""
    return lambda buffer: type(video)(buffer).get_components().images


def _conversion_like_host(frame, decode):
    """The frame -> [H, W, 3] 0..1 conversion that gives what the host gives for pictures of this format
    and size (ComfyUI 0.3.x: 8-bit RGB / 255; 0.33: float RGB from the decoder's format): both are tried
    on a probe of colour noise that `decode` (the host's) decodes. _UnlikeHost when neither reproduces
    the host's decode exactly."""
    probe = _probe(frame)
    if probe is None:
        raise _UnlikeHost()
    buffer, probe_frame = probe
    try:
        images = decode(buffer)
    except Exception:  # the host cannot read the probe: its own decode of the file decides
        raise _UnlikeHost() from None
    for make in (lambda: _rgb24, _FloatRGB):
        mine = make()(probe_frame)
        if isinstance(images, torch.Tensor) and images.ndim == 4 and tuple(mine.shape) == tuple(images.shape[1:]) \
                and torch.equal(mine, images[0].to(mine.dtype)):
            return make()  # a fresh converter: the float one keeps a filter graph for one stream
    raise _UnlikeHost()


def stream_video(source, node: str, rate_hz: float | None = None, consume=None, batch: int = 32,
                 decode=None) -> tuple[torch.Tensor | None, int, float]:
    """Decodes a video file once: (the frames shown at 0, 1/rate_hz, ... [n, H, W, 3] in 0..1, or None
    without rate_hz; the frame count; the frame rate). The rate is the stream's average rate; the
    sampling rule is encoders.video_frames'. Frames are converted exactly as the host converts them
    (`decode`: the host's decode, decoder_of, tried on a probe: _conversion_like_host; 8-bit RGB / 255
    without it); where no conversion here does, _UnlikeHost is raised at the first frame, before
    anything is given to `consume`. With
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
            next_k, convert = 0, None
            for frame in container.decode(stream):
                if rate_hz is not None:
                    while shown_frame(next_k, fps, rate_hz) <= count:  # the instants whose shown frame is this one
                        if shown_frame(next_k, fps, rate_hz) == count:
                            if convert is None:
                                convert = _rgb24 if decode is None else _conversion_like_host(frame, decode)
                            kept.append(convert(frame))
                            if consume is not None and len(kept) == batch:
                                _call(consume, torch.stack(kept))
                                kept = []
                        next_k += 1
                count += 1
            if consume is not None and kept:
                _call(consume, torch.stack(kept))
                kept = []
    except _CallerError as e:
        raise e.__cause__ from None
    except _UnlikeHost:
        raise
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
        try:
            sampled, count, file_fps = stream_video(source, node, _check_rate(rate_hz, node), decode=decoder_of(video))
            return sampled, count / file_fps
        except _UnlikeHost:
            pass  # the host's own decode below, every frame in memory
    return _sample_decoded(video, frames, fps, rate_hz, node)


def _sample_decoded(video, frames, fps, rate_hz: float, node: str) -> tuple[torch.Tensor, float]:
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
    if source is not None:
        outputs = []
        try:
            _frames, count, file_fps = stream_video(source, node, _check_rate(rate_hz, node), batch=batch,
                                                    consume=lambda chunk: outputs.append(encode(chunk)),
                                                    decode=decoder_of(video))
            return outputs, count / file_fps
        except _UnlikeHost:
            pass  # found at the first frame, before anything was encoded: the host's own decode below
    sampled, duration_s = _sample_decoded(video, frames, fps, rate_hz, node)
    return [encode(sampled)], duration_s
