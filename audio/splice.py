"""Putting a regenerated stretch back into the whole sound.

Visual Echoes inpaints a time range inside one window of its model (2.04 s on the embedded SynthAV
model; Audio to Tokens takes the first window of the clip), and its output is that window only, made
anew by the tokenizer and the vocoder. ``replace_range`` puts the regenerated range back into the
original clip: the result has the original's length, rate and channels, every sample outside
``[start_s, end_s)`` is the original's, bit for bit, and inside it the regenerated sound (resampled to the
original's rate; a mono sound copied to every channel) is crossfaded in and out over ``crossfade_s`` at
the range's own edges. Memory: one copy of the original plus the range.

Plain torch (resampling through ``audio.prepare.prepare_waveform``); the host is never imported here.
"""

from __future__ import annotations

import math

import torch

from .prepare import prepare_waveform


def replace_range(original: torch.Tensor, rate: int, replacement: torch.Tensor, replacement_rate: int,
                  start_s: float, end_s: float, replacement_start_s: float = 0.0, crossfade_s: float = 0.05) -> torch.Tensor:
    """original [B, C, T] at ``rate`` with ``[start_s, end_s)`` taken from ``replacement`` [B or 1, C' , T'] at
    ``replacement_rate``, whose first sample lies at ``replacement_start_s`` of the original.

    Raises ValueError naming the limit when the range is empty, outside the original, or outside what the
    replacement covers."""
    for name, value in (("start_s", start_s), ("end_s", end_s), ("replacement_start_s", replacement_start_s), ("crossfade_s", crossfade_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    if original.dim() != 3 or replacement.dim() != 3:
        raise ValueError(f"expected waveforms [batch, channels, samples], got {tuple(original.shape)} and {tuple(replacement.shape)}")
    batch, channels, length = original.shape
    if replacement.shape[0] not in (1, batch):
        raise ValueError(f"the replacement has {replacement.shape[0]} clips, the audio {batch}")
    duration = length / rate
    covered = (replacement_start_s, replacement_start_s + replacement.shape[-1] / replacement_rate)
    if not end_s > start_s:
        raise ValueError(f"the range {start_s:g}-{end_s:g} s is empty")
    if end_s > duration + 1e-9:
        raise ValueError(f"the range {start_s:g}-{end_s:g} s ends after the audio ({duration:.3f} s)")
    if start_s < covered[0] - 1e-9 or end_s > covered[1] + 1e-9:
        raise ValueError(f"the range {start_s:g}-{end_s:g} s is not all in the regenerated sound, which covers "
                         f"{covered[0]:.3f}-{covered[1]:.3f} s (the model's window); inpaint within it")
    first, last = round(start_s * rate), min(length, round(end_s * rate))
    # the replacement's samples for [first, last) at the original's rate (resampled in one piece, so
    # only the range's stretch of it is kept)
    offset = round(replacement_start_s * rate)
    if replacement_rate != rate:
        per_channel = replacement.reshape(-1, 1, replacement.shape[-1]).float()
        replacement = prepare_waveform(per_channel, replacement_rate, rate, what="replacement").reshape(
            replacement.shape[0], replacement.shape[1], -1)
    piece = replacement[..., first - offset:last - offset].float()
    if piece.shape[-1] < last - first:  # rounding at the replacement's last sample
        piece = torch.nn.functional.pad(piece, (0, last - first - piece.shape[-1]))
    if piece.shape[1] != channels:
        piece = piece.mean(dim=1, keepdim=True).expand(-1, channels, -1)
    fade = min(round(crossfade_s * rate), (last - first) // 2)
    gain = torch.ones(last - first)
    if fade:
        ramp = torch.arange(fade, dtype=torch.float32).add(0.5).div(fade)
        gain[:fade], gain[-fade:] = ramp, ramp.flip(0)
    out = original.clone()
    kept = original[..., first:last].float()
    out[..., first:last] = (kept * (1 - gain) + piece * gain).to(out.dtype)
    return out
