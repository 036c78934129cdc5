"""The one iterative-unmasking sampler (MaskGIT / MAGE) with classifier-free guidance.

Every masked-token method of the pack goes through :func:`masked_sample`: Visual Echoes (audio and
image tokens concatenated into one row, K = 1) and VATT (4 EnCodec codebooks, K = 4).

Token grids are ``[B, K, N]``: B rows, K codebooks, N positions. A boolean ``target`` grid of the
same shape says which slots are generated; every other slot is passed through unchanged (the
condition, or the known part when inpainting). The K * N grid of a row is treated as one flat
sequence: the schedule counts and ranks target slots across all codebooks jointly (as VATT does).

The model is reached through a callable::

    model_fn(tokens [b, K, N] long, masked [b, K, N] bool, drop_condition [b] bool) -> logits [b, K, N, V]

``masked`` marks the slots the model must not see (their ids are arbitrary placeholders: the
wrapper replaces them with its [MASK] id). Rows with ``drop_condition`` True are the unconditional
ones; what "unconditional" means belongs to the wrapper (Visual Echoes masks the condition modality
fully, VATT zeroes its conditioning states).

Algorithm (the reference, MaskGIT/MAGE; Visual Echoes appendix A.2). With T steps and N_t target
slots in a row, all target slots start masked; at step s = 0 .. T-1:

1. logits from the model; with CFG ``l = l_u + cfg * (l_c - l_u)`` (cfg == 1: only the
   conditional pass runs; cfg == 0: only the unconditional pass runs);
2. a token is sampled for every masked slot from ``softmax(top_k(l) / sampling_temperature)``
   (``sampling_temperature == 0`` takes the argmax);
3. r = (s + 1) / T; the row keeps ``n_mask = max(1, min(masked - 1, floor(N_t * ratio(r))))``
   slots masked, ``ratio(r) = cos(pi / 2 * r)`` (cosine) or ``1 - r`` (linear); at the last step
   n_mask = 0 (everything revealed);
4. the slots kept masked are the n_mask lowest ``log p(sampled) + temperature * (1 - r) * g``,
   g ~ Gumbel(0, 1), among the slots that were masked before this step; revealed slots have
   confidence +inf and never change again.

Randomness: every draw (the categorical samples by inverse CDF, one uniform per masked slot, and
the Gumbel noise) comes from ``generator`` on the generator's device and is moved to the logits'
device, so a seed gives the same draws on any device. ``generator=None`` uses torch's global CPU
RNG.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional

import torch

__all__ = [
    "SCHEDULES",
    "CFG_MODES",
    "ModelFn",
    "mask_ratio",
    "masked_count_after_step",
    "reveal_schedule",
    "guided_logits",
    "masked_sample",
]

SCHEDULES = ("cosine", "linear")
CFG_MODES = ("batched", "two_pass")

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


# ----------------------------------------------------------------------------------------------
# schedule
# ----------------------------------------------------------------------------------------------
def mask_ratio(progress: float, schedule: str = "cosine") -> float:
    """Fraction of the target kept masked after a step, ``progress`` = r = (s + 1) / T in (0, 1]."""
    if schedule == "cosine":
        return math.cos(math.pi / 2.0 * progress)
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"masked_sample: schedule must be one of {SCHEDULES}, got {schedule!r}")


def masked_count_after_step(num_target: int, masked_before: int, step: int, steps: int,
                            schedule: str = "cosine") -> int:
    """How many slots of a row stay masked after ``step`` (0-based) of ``steps``.

    ``max(1, min(masked_before - 1, floor(num_target * ratio)))``, 0 at the last step or when
    nothing was masked.
    """
    if masked_before <= 0 or step >= steps - 1:
        return 0
    target_masked = math.floor(num_target * mask_ratio((step + 1) / steps, schedule))
    return max(1, min(masked_before - 1, target_masked))


def reveal_schedule(num_target: int, steps: int, schedule: str = "cosine") -> List[int]:
    """Number of slots revealed at each step for a row with ``num_target`` target slots that
    starts fully masked. The list has ``steps`` entries and sums to ``num_target``."""
    if steps < 1:
        raise ValueError(f"masked_sample: steps must be >= 1, got {steps}")
    revealed, masked = [], num_target
    for step in range(steps):
        still_masked = masked_count_after_step(num_target, masked, step, steps, schedule)
        revealed.append(masked - still_masked)
        masked = still_masked
    return revealed


def _masked_counts_after_step(num_target: torch.Tensor, masked_before: torch.Tensor, step: int,
                              steps: int, schedule: str) -> torch.Tensor:
    """Vectorised :func:`masked_count_after_step` over rows: [B] long -> [B] long."""
    if step >= steps - 1:
        return torch.zeros_like(masked_before)
    ratio = mask_ratio((step + 1) / steps, schedule)
    # same arithmetic as the scalar version (Python float = double), kept off the device
    target_masked = torch.tensor([math.floor(int(n) * ratio) for n in num_target.tolist()],
                                 dtype=torch.long, device=num_target.device)
    kept = torch.clamp(torch.minimum(masked_before - 1, target_masked), min=1)
    return torch.where(masked_before > 0, kept, torch.zeros_like(kept))


# ----------------------------------------------------------------------------------------------
# guidance
# ----------------------------------------------------------------------------------------------
def _call_model(model_fn: ModelFn, tokens: torch.Tensor, masked: torch.Tensor,
                drop_condition: torch.Tensor) -> torch.Tensor:
    logits = model_fn(tokens, masked, drop_condition)
    if logits.dim() != 4 or tuple(logits.shape[:3]) != tuple(tokens.shape):
        raise ValueError(
            f"masked_sample: model_fn returned logits of shape {tuple(logits.shape)}, "
            f"expected ({', '.join(map(str, tokens.shape))}, V)")
    return logits


def _model_passes(model_fn: ModelFn, tokens: torch.Tensor, masked: torch.Tensor, cfg: float,
                  cfg_mode: str) -> List[torch.Tensor]:
    """Raw logits of the passes guidance needs: [conditional] (cfg == 1), [unconditional]
    (cfg == 0) or [conditional, unconditional], each [B, K, N, V]."""
    if cfg_mode not in CFG_MODES:
        raise ValueError(f"masked_sample: cfg_mode must be one of {CFG_MODES}, got {cfg_mode!r}")
    batch = tokens.shape[0]
    device = tokens.device
    if cfg == 1.0 or cfg == 0.0:
        drop = torch.full((batch,), cfg == 0.0, dtype=torch.bool, device=device)
        return [_call_model(model_fn, tokens, masked, drop)]
    if cfg_mode == "batched":
        drop = torch.cat([torch.zeros(batch, dtype=torch.bool, device=device),
                          torch.ones(batch, dtype=torch.bool, device=device)])
        both = _call_model(model_fn, torch.cat([tokens, tokens]), torch.cat([masked, masked]), drop)
        return list(both.split(batch, dim=0))
    return [_call_model(model_fn, tokens, masked, torch.zeros(batch, dtype=torch.bool, device=device)),
            _call_model(model_fn, tokens, masked, torch.ones(batch, dtype=torch.bool, device=device))]


def _combine(passes: List[torch.Tensor], cfg: float) -> torch.Tensor:
    """``l_u + cfg * (l_c - l_u)`` in float32 (a single pass is returned as is, as float32)."""
    if len(passes) == 1:
        return passes[0].float()
    conditional, unconditional = passes[0].float(), passes[1].float()
    return unconditional + cfg * (conditional - unconditional)


def guided_logits(model_fn: ModelFn, tokens: torch.Tensor, masked: torch.Tensor, cfg: float = 1.0,
                  cfg_mode: str = "batched") -> torch.Tensor:
    """Classifier-free-guided logits ``l_u + cfg * (l_c - l_u)`` as float32 [B, K, N, V].

    cfg == 1 runs only the conditional pass and cfg == 0 only the unconditional one. "batched" runs
    one forward on ``[cond rows; uncond rows]``; "two_pass" runs two forwards (the reference).
    """
    return _combine(_model_passes(model_fn, tokens, masked, cfg, cfg_mode), cfg)


# ----------------------------------------------------------------------------------------------
# random draws
# ----------------------------------------------------------------------------------------------
def _draw_uniform(count: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``count`` uniforms in [0, 1) on the generator's own device (CPU when None), float64 where
    the device has it."""
    source = generator.device if generator is not None else torch.device("cpu")
    dtype = torch.float64 if source.type in ("cpu", "cuda") else torch.float32  # MPS has no float64
    return torch.rand(count, generator=generator, device=source, dtype=dtype)


def _uniform(count: int, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Uniforms as float32 on ``device`` (float64 never reaches the device: MPS lacks it)."""
    return _draw_uniform(count, generator).to(device=device, dtype=torch.float32)


def _gumbel(count: int, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Gumbel(0, 1) noise as float32 on ``device``."""
    uniform = _draw_uniform(count, generator).clamp_(min=1e-300)
    return (-torch.log(-torch.log(uniform))).to(device=device, dtype=torch.float32)


def _sample_categorical(logits: torch.Tensor, generator: Optional[torch.Generator],
                        top_k: Optional[int], sampling_temperature: float):
    """Sample one code per row of ``logits`` [M, V] (float32).

    Returns (codes [M] long, log-probability of each sampled code [M] float32) under the
    distribution actually sampled from (after top-k and temperature).
    """
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if sampling_temperature <= 0.0:
        codes = logits.argmax(dim=-1)
        log_probs = torch.log_softmax(logits, dim=-1)
    else:
        log_probs = torch.log_softmax(logits / sampling_temperature, dim=-1)
        # inverse-CDF sampling: one uniform per slot, exact and cheap to draw from a CPU generator
        cdf = torch.cumsum(log_probs.exp(), dim=-1)
        uniform = _uniform(logits.shape[0], generator, logits.device) * cdf[:, -1]
        codes = torch.searchsorted(cdf, uniform.unsqueeze(-1), right=True).squeeze(-1)
        # u * total can round up to total itself (p ~ 1e-7): take the mode then
        codes = torch.where(codes >= logits.shape[-1], log_probs.argmax(dim=-1), codes)
    return codes, log_probs.gather(-1, codes.unsqueeze(-1)).squeeze(-1)


def _lowest_confidence(confidence: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool [B, L]: True at the ``counts[b]`` lowest entries of each row of ``confidence`` [B, L]."""
    order = torch.argsort(confidence, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(confidence.shape[1], device=confidence.device)
                  .expand_as(order).contiguous())
    return rank < counts.unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# the sampler
# ----------------------------------------------------------------------------------------------
def _validate(tokens, target, steps, schedule, cfg_mode, top_k, sampling_temperature, temperature):
    if tokens.dim() != 3:
        raise ValueError(f"masked_sample: tokens must be [B, K, N], got shape {tuple(tokens.shape)}")
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"masked_sample: tokens must be an integer tensor, got {tokens.dtype}")
    if target.dtype != torch.bool or target.shape != tokens.shape:
        raise ValueError(
            f"masked_sample: target must be a bool tensor of shape {tuple(tokens.shape)}, "
            f"got {target.dtype} {tuple(target.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"masked_sample: steps must be an integer >= 1, got {steps!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"masked_sample: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if cfg_mode not in CFG_MODES:
        raise ValueError(f"masked_sample: cfg_mode must be one of {CFG_MODES}, got {cfg_mode!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"masked_sample: top_k must be None or an integer >= 1, got {top_k!r}")
    if not sampling_temperature >= 0.0:
        raise ValueError(f"masked_sample: sampling_temperature must be >= 0, got {sampling_temperature!r}")
    if not temperature >= 0.0:
        raise ValueError(f"masked_sample: temperature must be >= 0, got {temperature!r}")


@torch.no_grad()
def masked_sample(
    model_fn: ModelFn,
    tokens: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 30,
    schedule: str = "cosine",
    temperature: float = 9.0,
    cfg: float = 3.0,
    cfg_mode: str = "batched",
    top_k: Optional[int] = None,
    sampling_temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    callback: Optional[StepCallback] = None,
    check_interrupt: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """Generate the ``target`` slots of ``tokens`` by iterative unmasking (see the module doc).

    Args:
        model_fn: ``(tokens [b,K,N], masked [b,K,N], drop_condition [b]) -> logits [b,K,N,V]``.
        tokens: [B, K, N] integer ids; non-target slots are the known context and are returned
            unchanged; ids at target slots are ignored.
        target: [B, K, N] bool, True where a token is generated. Rows may differ (inpainting).
        steps: T, number of model evaluations (each one or two forwards with CFG).
        schedule: "cosine" (MaskGIT / paper) or "linear".
        temperature: confidence (Gumbel) noise scale, annealed by (1 - r); paper 9.0.
        cfg: guidance scale; 1.0 = no guidance (one pass), paper 3.0.
        cfg_mode: "batched" (one forward over [cond; uncond]) or "two_pass" (the reference).
        top_k: restrict sampling to the k most likely codes (VATT uses 256); None = all.
        sampling_temperature: divides the logits before sampling; 0 = argmax.
        generator: torch.Generator for every random draw (seed-deterministic); None = global RNG.
        callback: ``callback(step, total_steps, tokens, still_masked)`` after each step with
            ``step`` = index of the step just finished (0 .. T-1, so ``step + 1`` steps are done),
            ``tokens`` [B,K,N] (slots still masked hold the latest sample, useful for previews)
            and ``still_masked`` [B,K,N] bool.
        check_interrupt: called before every step; may raise to stop sampling.

    Returns:
        [B, K, N] long tensor, every target slot filled, every other slot as given.
    """
    _validate(tokens, target, steps, schedule, cfg_mode, top_k, sampling_temperature, temperature)
    batch, codebooks, length = tokens.shape
    grid_shape = tokens.shape
    device = tokens.device
    flat_tokens = tokens.long().reshape(batch, codebooks * length).clone()
    masked = target.reshape(batch, codebooks * length).clone().to(device)
    num_target = masked.sum(dim=1)
    flat_tokens[masked] = 0  # placeholder; the model never sees ids at masked slots

    for step in range(steps):
        if check_interrupt is not None:
            check_interrupt()
        progress = (step + 1) / steps
        if bool(masked.any()):
            passes = _model_passes(model_fn, flat_tokens.view(grid_shape), masked.view(grid_shape),
                                   cfg, cfg_mode)
            # guidance only where a token is drawn: [M, V] for the M masked slots
            masked_logits = _combine([p.reshape(batch, codebooks * length, -1)[masked] for p in passes], cfg)
            codes, code_log_probs = _sample_categorical(masked_logits, generator, top_k, sampling_temperature)
            sampled_tokens = flat_tokens.clone()
            sampled_tokens[masked] = codes

            masked_before = masked.sum(dim=1)
            keep_counts = _masked_counts_after_step(num_target, masked_before, step, steps, schedule)
            confidence = torch.full(masked.shape, float("inf"), dtype=torch.float32, device=device)
            noise = _gumbel(code_log_probs.shape[0], generator, device)
            confidence[masked] = code_log_probs + temperature * (1.0 - progress) * noise
            masked = _lowest_confidence(confidence, keep_counts) & masked
            flat_tokens = sampled_tokens
        if callback is not None:
            callback(step, steps, flat_tokens.view(grid_shape).clone(), masked.view(grid_shape).clone())

    return flat_tokens.view(grid_shape)

