"""Frame sampling at an explicit rate, and aggregation of per-frame embeddings.

A video of `num_frames` frames at `fps` lasts `num_frames / fps` seconds; frame i is shown from
i / fps until (i + 1) / fps. Sampling at `rate_hz` takes the instants t_k = k / rate_hz that fall
inside the video (k = 0, 1, ...; n = ceil(duration * rate_hz) instants) and, for each, the frame
shown at that instant: index floor(t_k * fps). So 2 s at 16 fps and 2 s at 30 fps sampled at 5 Hz
both give 10 frames, at 0.0, 0.2, ..., 1.8 s. When `rate_hz` exceeds the video's fps, frames repeat
(the rate is honoured exactly: models trained at a fixed rate, e.g. VATT's 5 fps, get the number of
frames they expect for the duration).
"""

from __future__ import annotations

import math

import torch

AGGREGATIONS = ("mean", "middle", "per-frame")

_EPS = 1e-6


def _check_rate(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"{name} must be a positive number of Hz, got {value!r}")
    return float(value)


def shown_frame(k: int, fps: float, rate_hz: float) -> int:
    """The index of the frame shown at the k-th sampling instant k / rate_hz (the rule above, one frame)."""
    return math.floor(k / rate_hz * fps + _EPS)


def sample_frame_indices(num_frames: int, fps: float, rate_hz: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the frames shown at t_k = k / rate_hz, and those instants in seconds.

    Returns (indices LongTensor [n], times_s float64 Tensor [n]), n = ceil(num_frames / fps * rate_hz).
    Raises ValueError for zero frames or a non-positive fps / rate.
    """
    if int(num_frames) != num_frames or num_frames < 0:
        raise ValueError(f"number of frames must be a whole number >= 0, got {num_frames!r}")
    if num_frames == 0:
        raise ValueError("the video has no frames; expected at least one")
    fps = _check_rate(fps, "frame rate (fps)")
    rate_hz = _check_rate(rate_hz, "sampling rate")
    duration_s = num_frames / fps
    n = max(1, math.ceil(duration_s * rate_hz - _EPS))
    times_s = torch.arange(n, dtype=torch.float64) / rate_hz
    indices = torch.tensor([shown_frame(k, fps, rate_hz) for k in range(n)], dtype=torch.long).clamp(0, int(num_frames) - 1)
    return indices, times_s


def sample_frames(images: torch.Tensor, fps: float, rate_hz: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of `images` [T, H, W, C] sampled at `rate_hz` (see `sample_frame_indices`).

    Returns (frames [n, H, W, C], times_s [n]).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"frames: expected an image batch [frames, height, width, channels], got {shape}")
    indices, times_s = sample_frame_indices(images.shape[0], fps, rate_hz)
    return images[indices], times_s


def aggregate(embedding_vectors: torch.Tensor, how: str) -> torch.Tensor:
    """Per-frame embeddings [T, D] -> one video's embedding, batch of one.

    "mean": the average over frames, [1, D]; "middle": the frame at index T // 2, [1, D];
    "per-frame": all of them as a sequence, [1, T, D].
    """
    if not isinstance(embedding_vectors, torch.Tensor) or embedding_vectors.ndim != 2:
        shape = tuple(embedding_vectors.shape) if isinstance(embedding_vectors, torch.Tensor) else type(embedding_vectors).__name__
        raise ValueError(f"aggregate: expected per-frame embeddings [frames, width], got {shape}")
    if embedding_vectors.shape[0] == 0:
        raise ValueError("aggregate: no frame embeddings to aggregate")
    if how == "mean":
        return embedding_vectors.mean(dim=0, keepdim=True)
    if how == "middle":
        middle = embedding_vectors.shape[0] // 2
        return embedding_vectors[middle:middle + 1]
    if how == "per-frame":
        return embedding_vectors.unsqueeze(0)
    raise ValueError(f"aggregate: unknown aggregation {how!r}; expected one of {', '.join(AGGREGATIONS)}")


def evenly_spaced_indices(num_frames: int, count: int) -> torch.Tensor:
    """Indices of at most `count` of `num_frames` frames, evenly spaced in time, first and last
    included (all of them when there are no more than `count`). Caption Video's `max_frames`."""
    if int(count) != count or count < 1:
        raise ValueError(f"the number of frames to keep must be a whole number >= 1, got {count!r}")
    if num_frames <= count:
        return torch.arange(int(num_frames))
    return torch.linspace(0, num_frames - 1, int(count)).round().long()


def evenly_spaced(frames: torch.Tensor, count: int) -> torch.Tensor:
    """At most `count` frames of `frames` [T, ...], evenly spaced in time (`evenly_spaced_indices`)."""
    if frames.shape[0] <= count:
        return frames
    return frames[evenly_spaced_indices(frames.shape[0], count)]
