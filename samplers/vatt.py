"""VATT glue: a :class:`VATTDecoder` and its condition as a ``model_fn`` of the shared masked sampler.

The sampler sees the codec grid itself, ``[B, K, N]`` (K codebooks x N frames), every slot a
target. It ranks and reveals slots across all K codebooks jointly (one flat sequence of K * N,
as VATT does); the decoder returns logits aligned with the grid whatever its own head layout
(see networks/vatt_decoder.py), so flattening order never mixes codebooks up.

Classifier-free guidance as VATT: the unconditional rows keep the same audio tokens and have the
projected condition (video features and text states) zeroed; ``l = l_u + cfg * (l_c - l_u)``.

Long videos. A decoder trained on clips of one length (``config.clip_s`` > 0, e.g. the embedded
SynthAV default: 2 s) generates a longer video in windows of that length, each conditioned on its
own frames (``vatt_generate``). Each window after the first continues the previous one: it starts
``overlap`` codec frames (a quarter of a window by default) before the previous window's end, those
frames are given to the sampler as known tokens (outpainting), and only the rest is generated, so
the sound runs on across the boundary instead of restarting. ``overlap=0`` gives independent
windows. The last window's frames are padded by repeating the last frame and its surplus codec
frames are dropped. A decoder with ``clip_s == 0`` generates the whole length at once from the
video's pooled tokens.

Defaults are the official release's inference (vt2a_mlm_ff_generation.py): 16 steps, cosine
schedule, top-k 256 at sampling temperature 1, cfg 5, confidence noise 25.5 annealed by (1 - r)
(the sampling function's own default is 10.5).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..networks.vatt_decoder import VATTDecoder
from .masked_sampler import ModelFn, masked_sample

__all__ = ["DEFAULTS", "OVERLAP_FRACTION", "default_overlap", "pool_frame_features", "vatt_model_fn", "vatt_sample", "window_starts",
           "window_conditions", "vatt_generate"]

DEFAULTS = dict(steps=16, cfg=5.0, top_k=256, temperature=25.5, sampling_temperature=1.0, schedule="cosine")
OVERLAP_FRACTION = 0.25  # of a window: what each window after the first takes over from the previous one


def window_starts(total: int, window: int, overlap: int) -> list[int]:
    """Where the windows of ``window`` frames start to cover ``total`` frames when each one after the
    first begins ``overlap`` frames before the previous one's end: 0, window - overlap, ..."""
    if window < 1 or total < 1:
        raise ValueError(f"windows need a positive length and total, got {window} and {total}")
    if not 0 <= overlap < window:
        raise ValueError(f"the overlap must be >= 0 and shorter than a window ({window} frames), got {overlap}")
    starts = [0]
    while starts[-1] + window < total:
        starts.append(starts[-1] + window - overlap)
    return starts


def default_overlap(window: int) -> int:
    """OVERLAP_FRACTION of a window, in whole frames (0 for a window of one frame)."""
    return min(window - 1, max(0, round(OVERLAP_FRACTION * window)))


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
    prefix: Optional[torch.Tensor] = None,
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
        prefix: optional known tokens [B or 1, K, P] (P < num_frames) for the first P frames: they are
            kept and the rest is generated after them (outpainting; see ``vatt_generate``).
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
    if prefix is not None:
        if prefix.dim() != 3 or prefix.shape[0] not in (1, batch) or prefix.shape[1] != K or not 0 < prefix.shape[2] < num_frames:
            raise ValueError(f"VATT: known tokens must be [1 or {batch}, {K}, fewer than {num_frames} frames], got {tuple(prefix.shape)}")
        tokens[:, :, :prefix.shape[2]] = prefix.to(device)
        target[:, :, :prefix.shape[2]] = False
    was_training = model.training
    model.eval()
    try:
        return masked_sample(vatt_model_fn(model, video, text), tokens, target, steps=steps, schedule=schedule,
                             temperature=temperature, cfg=cfg, cfg_mode=cfg_mode, top_k=top_k,
                             sampling_temperature=sampling_temperature, generator=generator, callback=callback,
                             check_interrupt=check_interrupt)
    finally:
        model.train(was_training)


def window_conditions(frame_vectors: torch.Tensor, rate_hz: float, clip_s: float, windows: int, tokens: int,
                      starts_s: Optional[list[float]] = None) -> torch.Tensor:
    """Per-frame features [n, D] (frames at ``rate_hz``) -> [windows, tokens, D]: window w holds the
    frames of [start_w, start_w + clip_s), pooled to ``tokens`` (``pool_frame_features``); start_w is
    ``starts_s[w]`` (default w * clip_s). Frames missing at the end repeat the last one (a video that
    stops moving)."""
    if frame_vectors.dim() != 2 or frame_vectors.shape[0] == 0:
        raise ValueError(f"VATT: expected frame features [frames, width], got {tuple(frame_vectors.shape)}")
    if not (rate_hz > 0 and clip_s > 0 and windows >= 1):
        raise ValueError(f"VATT: windows need a frame rate, a clip length and a count > 0, got {rate_hz}, {clip_s}, {windows}")
    starts_s = [w * clip_s for w in range(windows)] if starts_s is None else list(starts_s)
    if len(starts_s) != windows:
        raise ValueError(f"VATT: {windows} windows but {len(starts_s)} start times")
    per_window = max(1, round(clip_s * rate_hz))
    first = [round(start * rate_hz) for start in starts_s]
    need = max(first) + per_window
    if frame_vectors.shape[0] < need:
        pad = frame_vectors[-1:].expand(need - frame_vectors.shape[0], -1)
        frame_vectors = torch.cat([frame_vectors, pad])
    return torch.cat([pool_frame_features(frame_vectors[f:f + per_window], tokens) for f in first])


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
    overlap: Optional[int] = None,
    **sample_kwargs,
) -> torch.Tensor:
    """Codec tokens [1, K, num_frames] for one video from its per-frame features [n, D] at ``rate_hz``.

    With ``model.config.clip_s`` > 0 the video is cut into windows of that length, each after the
    first continuing the previous one over ``overlap`` codec frames (default ``default_overlap``; 0 =
    independent windows; see the module doc); otherwise its frames are pooled to ``tokens`` and the
    whole length is generated at once. ``callback(step, total, ...)`` counts steps over all windows;
    other arguments are :func:`vatt_sample`'s."""
    config = model.config
    clip_frames = round(config.clip_s * config.frame_rate_hz) if config.clip_s > 0 else 0
    if not clip_frames:
        return vatt_sample(model, pool_frame_features(frame_vectors, tokens), num_frames, text=text, steps=steps,
                           callback=callback, **sample_kwargs)
    overlap = default_overlap(clip_frames) if overlap is None else int(overlap)
    starts = window_starts(int(num_frames), clip_frames, overlap)
    windows = len(starts)
    conditions = window_conditions(frame_vectors, rate_hz, config.clip_s, windows, tokens,
                                   starts_s=[start / config.frame_rate_hz for start in starts])
    codes = None
    for w, start in enumerate(starts):
        step_callback = None
        if callback is not None:
            def step_callback(step, _total, *rest, _w=w):
                callback(_w * steps + step, windows * steps, *rest)
        prefix = codes[..., start:] if codes is not None and overlap else None
        window = vatt_sample(model, conditions[w:w + 1], clip_frames, text=text, steps=steps, callback=step_callback,
                             prefix=prefix, **sample_kwargs)
        codes = window if codes is None else torch.cat([codes[..., :start], window], dim=-1)
    return codes[..., :num_frames].contiguous()
