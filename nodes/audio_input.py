"""The one way a host AUDIO reaches a node: the dict checked once ({"waveform": [batch, channels,
samples], "sample_rate": Hz}), with an error that names the node and the input. What a node needs
beyond that (a rate, mono, no silence) is audio.prepare's."""

from __future__ import annotations

import numbers

import torch


def audio_input(audio, node: str, what: str = "audio") -> tuple[torch.Tensor, int]:
    """(waveform [batch, channels, samples] with at least one sample, sample rate in Hz) of a host AUDIO."""
    waveform = audio.get("waveform") if isinstance(audio, dict) else None
    rate = audio.get("sample_rate") if isinstance(audio, dict) else None
    whole_rate = isinstance(rate, numbers.Integral) or (isinstance(rate, float) and rate.is_integer())
    if not isinstance(waveform, torch.Tensor) or isinstance(rate, bool) or not whole_rate or rate <= 0:
        got = type(audio).__name__ if not isinstance(audio, dict) else f"waveform {type(waveform).__name__}, sample_rate {rate!r}"
        raise ValueError(f"{node}: {what}: expected an AUDIO (a waveform [batch, channels, samples] and a sample rate in "
                         f"whole Hz), got {got}")
    if waveform.ndim != 3:
        raise ValueError(f"{node}: {what}: expected a waveform [batch, channels, samples], got {tuple(waveform.shape)}")
    if waveform.shape[-1] == 0 or waveform.shape[0] == 0:
        raise ValueError(f"{node}: {what}: the clip is empty (waveform {tuple(waveform.shape)}); expected at least one sample")
    return waveform, int(rate)
