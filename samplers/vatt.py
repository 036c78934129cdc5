"""VATT glue: a :class:`VATTDecoder` and its condition as a ``model_fn`` of the shared masked sampler.

The sampler sees the codec grid itself, ``[B, K, N]`` (K codebooks x N frames), every slot a
target. It ranks and reveals slots across all K codebooks jointly (one flat sequence of K * N,
as VATT does); the decoder returns logits aligned with the grid whatever its own head layout
(see networks/vatt_decoder.py), so flattening order never mixes codebooks up.

Classifier-free guidance as VATT: the unconditional rows keep the same audio tokens and have the
projected condition (video features and text states) zeroed; ``l = l_u + cfg * (l_c - l_u)``.

Long videos. A decoder trained on clips of one length (``config.clip_s`` > 0, e.g. the embedded
SynthAV default: 2 s) generates a longer video in consecutive windows of that length, each
conditioned on its own frames (``vatt_generate``); the last window's frames are padded by repeating
the last frame and its surplus codec frames are dropped. A decoder with ``clip_s == 0`` generates
the whole length at once from the video's pooled tokens.

Defaults are the official release's inference (vt2a_mlm_ff_generation.py): 16 steps, cosine
schedule, top-k 256 at sampling temperature 1, cfg 5, confidence noise 25.5 annealed by (1 - r)
(the sampling function's own default is 10.5).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..networks.vatt_decoder import VATTDecoder
from .masked_sampler import ModelFn, masked_sample

__all__ = ["DEFAULTS", "pool_frame_features", "vatt_model_fn", "vatt_sample", "window_conditions", "vatt_generate"]

DEFAULTS = dict(steps=16, cfg=5.0, top_k=256, temperature=25.5, sampling_temperature=1.0, schedule="cosine")


def pool_frame_features(per_frame: torch.Tensor, tokens: int) -> torch.Tensor:
    """Frame features [T, D] (frames at a fixed rate, in order) -> [1, tokens, D]: the average of
    ``tokens`` consecutive, equal-length stretches of frames (adaptive average pooling over time;
    with fewer frames than tokens, frames repeat). ``tokens == 0`` keeps one token per frame."""
    if per_frame.dim() != 2 or per_frame.shape[0] == 0:
        raise ValueError(f"VATT: expected frame features [frames, width], got {tuple(per_frame.shape)}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"VATT: the number of video tokens must be an integer >= 0, got {tokens!r}")
    if tokens == 0 or tokens == per_frame.shape[0]:
        return per_frame.unsqueeze(0)
    return torch.nn.functional.adaptive_avg_pool1d(per_frame.t().unsqueeze(0), tokens).transpose(1, 2)


def _rows(x: Optional[torch.Tensor], rows: int, what: str) -> Optional[torch.Tensor]:
    """``x`` [r, L, D] repeated to ``rows`` (r divides rows: guidance stacks [cond; uncond] copies)."""
    if x is None or x.shape[0] == rows:
        return x
    if rows % x.shape[0]:
        raise ValueError(f"VATT: {what} has {x.shape[0]} rows, which does not divide the {rows} rows being sampled")
    return x.repeat(rows // x.shape[0], 1, 1)


def vatt_model_fn(model: VATTDecoder, video: torch.Tensor, text: Optional[torch.Tensor] = None) -> ModelFn:
    """``model_fn(tokens [b,K,N], masked [b,K,N], drop_condition [b]) -> logits [b,K,N,V]`` for
    :func:`masked_sample`; ``video`` [B or 1, Lv, video_dim] and ``text`` [B or 1, Lt, text_dim]
    condition every row, zeroed on rows with ``drop_condition``."""

    def model_fn(tokens: torch.Tensor, masked: torch.Tensor, drop_condition: torch.Tensor) -> torch.Tensor:
        rows = tokens.shape[0]
        return model(tokens, masked, _rows(video, rows, "video features"), _rows(text, rows, "text states"),
                     drop_condition=drop_condition)

    return model_fn


def vatt_sample(
    model: VATTDecoder,
    video: torch.Tensor,
    num_frames: int,
    *,
    text: Optional[torch.Tensor] = None,
    batch_size: Optional[int] = None,
    steps: int = DEFAULTS["steps"],
    cfg: float = DEFAULTS["cfg"],
    top_k: Optional[int] = DEFAULTS["top_k"],
    temperature: float = DEFAULTS["temperature"],
    sampling_temperature: float = DEFAULTS["sampling_temperature"],
    schedule: str = DEFAULTS["schedule"],
    cfg_mode: str = "batched",
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
    check_interrupt: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """Generate codec tokens [B, K, num_frames] (long, on the model's device) for a condition.

    Args:
        model: the decoder (its codec tables must be set: ``model.has_codebooks``).
        video: [B or 1, Lv, video_dim] video-feature tokens.
        num_frames: N, codec frames to generate (the codec's ``frames_for_samples``).
        text: optional [B or 1, Lt, text_dim] text states (only for models trained with text).
        batch_size: rows to generate (default: the condition's rows).
        steps, cfg, top_k, temperature, sampling_temperature, schedule, cfg_mode, generator,
        callback, check_interrupt: as :func:`masked_sample` (cfg 1 = no guidance).
    """
    if not model.has_codebooks:
        raise ValueError("VATT: the decoder has no codec codebook tables; set them from its codec first")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"VATT: num_frames must be a positive integer, got {num_frames!r}")
    if video.dim() != 3:
        raise ValueError(f"VATT: video features must be [batch, tokens, width], got {tuple(video.shape)}")
    conditions = [x.shape[0] for x in (video, text) if x is not None]
    batch = batch_size or max(conditions)
    for rows in conditions:
        if rows not in (1, batch):
            raise ValueError(f"VATT: a condition of {rows} rows cannot drive {batch} outputs (expected 1 or {batch})")
    device = model.device
    video = video.to(device)
    text = text.to(device) if text is not None else None
    K = model.config.num_codebooks
    tokens = torch.zeros(batch, K, num_frames, dtype=torch.long, device=device)
    target = torch.ones(batch, K, num_frames, dtype=torch.bool, device=device)
    was_training = model.training
    model.eval()
    try:
        return masked_sample(vatt_model_fn(model, video, text), tokens, target, steps=steps, schedule=schedule,
                             temperature=temperature, cfg=cfg, cfg_mode=cfg_mode, top_k=top_k,
                             sampling_temperature=sampling_temperature, generator=generator, callback=callback,
                             check_interrupt=check_interrupt)
    finally:
        model.train(was_training)


def window_conditions(frame_vectors: torch.Tensor, rate_hz: float, clip_s: float, windows: int, tokens: int) -> torch.Tensor:
    """Per-frame features [n, D] (frames at ``rate_hz``) -> [windows, tokens, D]: window w holds the
    frames of [w * clip_s, (w + 1) * clip_s), pooled to ``tokens`` (``pool_frame_features``); frames
    missing at the end repeat the last one (a video that stops moving)."""
    if frame_vectors.dim() != 2 or frame_vectors.shape[0] == 0:
        raise ValueError(f"VATT: expected frame features [frames, width], got {tuple(frame_vectors.shape)}")
    if not (rate_hz > 0 and clip_s > 0 and windows >= 1):
        raise ValueError(f"VATT: windows need a frame rate, a clip length and a count > 0, got {rate_hz}, {clip_s}, {windows}")
    per_window = max(1, round(clip_s * rate_hz))
    need = windows * per_window
    if frame_vectors.shape[0] < need:
        pad = frame_vectors[-1:].expand(need - frame_vectors.shape[0], -1)
        frame_vectors = torch.cat([frame_vectors, pad])
    chunks = frame_vectors[:need].reshape(windows, per_window, -1)
    return torch.cat([pool_frame_features(chunk, tokens) for chunk in chunks])


def vatt_generate(
    model: VATTDecoder,
    frame_vectors: torch.Tensor,
    rate_hz: float,
    num_frames: int,
    *,
    tokens: int,
    text: Optional[torch.Tensor] = None,
    steps: int = DEFAULTS["steps"],
    callback: Optional[Callable] = None,
    **sample_kwargs,
) -> torch.Tensor:
    """Codec tokens [1, K, num_frames] for one video from its per-frame features [n, D] at ``rate_hz``.

    With ``model.config.clip_s`` > 0 the video is cut into windows of that length (see the module
    doc); otherwise its frames are pooled to ``tokens`` and the whole length is generated at once.
    ``callback(step, total, ...)`` counts steps over all windows; other arguments are
    :func:`vatt_sample`'s."""
    config = model.config
    clip_frames = round(config.clip_s * config.frame_rate_hz) if config.clip_s > 0 else 0
    if not clip_frames:
        return vatt_sample(model, pool_frame_features(frame_vectors, tokens), num_frames, text=text, steps=steps,
                           callback=callback, **sample_kwargs)
    windows = -(-int(num_frames) // clip_frames)
    conditions = window_conditions(frame_vectors, rate_hz, config.clip_s, windows, tokens)
    codes = []
    for w in range(windows):
        step_callback = None
        if callback is not None:
            def step_callback(step, _total, *rest, _w=w):
                callback(_w * steps + step, windows * steps, *rest)
        codes.append(vatt_sample(model, conditions[w:w + 1], clip_frames, text=text, steps=steps, callback=step_callback,
                                 **sample_kwargs))
    return torch.cat(codes, dim=-1)[..., :num_frames].contiguous()
