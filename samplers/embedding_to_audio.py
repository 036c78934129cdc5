"""Spectrogram tokens from one pooled embedding (the V2A path's generator), with the shared masked sampler.

The generator is a :class:`VATTDecoder` with one "codebook": the spectrogram VQ's grid read as one
sequence (rows x columns, column-major as every audio grid of the pack is read), its tokens
embedded through the VQ's own codebook vectors, and its condition one vector (a CLAP audio
embedding, or a CLIP embedding mapped into that space) as a condition sequence of length 1. So it
samples with :func:`samplers.vatt.vatt_sample`: classifier-free guidance zeroes the condition.

Length. The model generates windows of the grid it was trained on (``window_columns`` time
columns). A duration asks for ``ceil(duration_s / seconds_per_column)`` columns: one window when
that fits (the surplus columns are dropped), else windows generated from the same condition, each
after the first continuing the previous one: it starts ``overlap_columns`` columns (a quarter of a
window by default) before the previous window's end and is given those columns as known tokens
(outpainting; the grid is read column-major, so they are the start of its sequence); the last is
cut to the columns asked for. ``overlap_columns=0`` gives independent windows.
The exact sample count is the caller's to cut after vocoding (the grid is a whole number of
columns).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..networks.vatt_decoder import VATTDecoder
from .vatt import default_overlap, vatt_sample, window_starts
from .visual_echoes import audio_grid_to_sequence, audio_sequence_to_grid

__all__ = ["columns_for_duration", "embedding_to_audio_grid"]


def columns_for_duration(duration_s: float, seconds_per_column: float) -> int:
    """Token columns whose audio lasts at least ``duration_s`` (at least one)."""
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration_s!r}")
    if not seconds_per_column > 0:
        raise ValueError(f"seconds per column must be > 0, got {seconds_per_column!r}")
    return max(1, math.ceil(duration_s / seconds_per_column - 1e-9))


def embedding_to_audio_grid(
    model: VATTDecoder,
    condition: torch.Tensor,
    rows: int,
    window_columns: int,
    columns: Optional[int] = None,
    *,
    steps: int = 16,
    cfg: float = 3.0,
    temperature: float = 4.5,
    top_k: Optional[int] = None,
    sampling_temperature: float = 1.0,
    schedule: str = "cosine",
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable[[int, int], None]] = None,
    check_interrupt: Optional[Callable[[], None]] = None,
    overlap_columns: Optional[int] = None,
) -> torch.Tensor:
    """Audio token grids [B, rows, columns] (long, on the model's device) for ``condition`` [B, D].

    ``columns`` defaults to one window. ``callback(done, total)`` counts sampler steps over all
    windows. Other arguments are :func:`samplers.vatt.vatt_sample`'s.
    """
    if condition.dim() != 2:
        raise ValueError(f"embedding to audio: expected one vector per row [batch, width], got {tuple(condition.shape)}")
    if model.config.num_codebooks != 1:
        raise ValueError(f"embedding to audio: the decoder has {model.config.num_codebooks} codebooks; "
                         "a spectrogram-token generator has one")
    columns = window_columns if columns is None else int(columns)
    if columns < 1:
        raise ValueError(f"embedding to audio: columns must be >= 1, got {columns}")
    overlap = default_overlap(window_columns) if overlap_columns is None else int(overlap_columns)
    starts = window_starts(columns, window_columns, overlap)
    total = len(starts) * steps
    grid = None
    for w, start in enumerate(starts):
        step_callback = None
        if callback is not None:
            def step_callback(step, _total, tokens, still_masked, _w=w):
                callback(_w * steps + step + 1, total)
        prefix = audio_grid_to_sequence(grid[..., start:]).unsqueeze(1) if grid is not None and overlap else None
        tokens = vatt_sample(model, condition.unsqueeze(1), rows * window_columns, steps=steps, cfg=cfg, top_k=top_k,
                             temperature=temperature, sampling_temperature=sampling_temperature, schedule=schedule,
                             generator=generator, callback=step_callback, check_interrupt=check_interrupt, prefix=prefix)
        window = audio_sequence_to_grid(tokens[:, 0], rows)
        grid = window if grid is None else torch.cat([grid[..., :start], window], dim=-1)
    return grid[..., :columns].contiguous()
