"""Adapter outputs -> the host's CONDITIONING, the list the host's own samplers (KSampler) read.

CONDITIONING is a list of ``[tokens, extras]`` pairs (host.md). The layouts written here are the
ones the host's model classes read (comfy/model_base.py, comfy/text_encoders/sd3_clip.py):

* FLUX: tokens = T5 states [B, L, 4096] -> ``c_crossattn`` -> the model's ``txt_in``;
  ``pooled_output`` = CLIP-L pooled [B, 768] -> ``y`` -> ``vector_in``; ``guidance`` (float) ->
  ``guidance_in`` (FLUX dev's distilled guidance).
* SD3: tokens [B, 154, 4096] = 77 CLIP-L/G positions (their 2048 widths zero-padded to 4096)
  followed by 77 T5 positions; ``pooled_output`` [B, 2048] = CLIP-L 768 then CLIP-G 1280.
  A FLUX-width adapter drives SD3 the way the host's own SD3 text encoder fills parts it lacks:
  the CLIP-L/G positions are zeros (the adapter makes no CLIP token states), the T5 part is the
  adapter's first 77 tokens, and the pooled vector is the adapter's CLIP-L vector followed by
  1280 zeros (the host's value when CLIP-G is absent).
* SDXL: tokens [B, 77, 2048] (CLIP-L 768 + CLIP-G 1280 states), ``pooled_output`` [B, 1280];
  only an SDXL-width adapter fits (no zero-filling makes 4096-wide T5 states 2048 wide).
* "FLUX (adapter widths)": FLUX's layout at the adapter's own widths, for adapters trained against
  other (e.g. tiny) text encoders and a FLUX model built for those widths: the host infers a
  FLUX's ``context_in_dim`` from ``txt_in`` and its ``vec_in_dim`` from ``vector_in``. The embedded
  SynthAV adapter (T5 16 + CLIP text 16) runs this way on the tests' tiny FLUX; the published FLUX
  reads only the "FLUX" widths.

Combining with a text CONDITIONING from the host's own text encoder (same layout):

* ``concat``: tokens = [text tokens ; audio tokens] along the token axis (as the host's
  ConditioningConcat); pooled = (1 - weight) * text pooled + weight * audio pooled.
* ``blend``: the audio tokens are cropped or zero-padded to the text's token count (as the host's
  ConditioningAverage), then tokens = (1 - weight) * text + weight * audio; pooled likewise.

The text entry's other extras are kept, except an ``attention_mask`` (its length no longer fits
after a concat; FLUX and SD3 run without one by default). ``guidance`` is set for FLUX.
Plain torch; the host is never imported here.
"""

from __future__ import annotations

import torch

from ..networks.audio_adapter import PROFILES, AdapterOutput

FLUX_ADAPTER_WIDTHS = "FLUX (adapter widths)"
TARGETS = ("FLUX", "SD3", "SDXL", FLUX_ADAPTER_WIDTHS)
COMBINE_MODES = ("concat", "blend")
SD3_CLIP_TOKENS = 77
SD3_T5_TOKENS = 77


def _target_key(target: str) -> str:
    if target == FLUX_ADAPTER_WIDTHS:
        return "flux"
    key = str(target).lower()
    if key not in PROFILES:
        raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
    return key


def host_layout(output: AdapterOutput, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, pooled) in the layout the host's `target` model reads, or a ValueError that says
    which widths the adapter has and which the target needs."""
    key = _target_key(target)
    tokens, pooled = output.tokens, output.pooled
    if target == FLUX_ADAPTER_WIDTHS:
        return tokens, pooled
    _, width, pooled_width = PROFILES[key]
    got = f"the adapter makes {tokens.shape[1]} x {tokens.shape[-1]} tokens + a {pooled.shape[-1]}-wide pooled vector"
    if key == "sd3" and (tokens.shape[-1], pooled.shape[-1]) == PROFILES["flux"][1:]:
        batch = tokens.shape[0]
        t5 = tokens[:, :SD3_T5_TOKENS]
        if t5.shape[1] < SD3_T5_TOKENS:
            t5 = torch.cat([t5, t5.new_zeros(batch, SD3_T5_TOKENS - t5.shape[1], width)], dim=1)
        tokens = torch.cat([tokens.new_zeros(batch, SD3_CLIP_TOKENS, width), t5], dim=1)
        pooled = torch.cat([pooled, pooled.new_zeros(batch, PROFILES["sd3"][2] - pooled.shape[-1])], dim=-1)
        return tokens, pooled
    if (tokens.shape[-1], pooled.shape[-1]) != (width, pooled_width):
        extra = " (or a FLUX-width adapter: 4096 + 768)" if key == "sd3" else ""
        hint = (f"; an adapter trained against other text encoders (such as the embedded SynthAV one) needs target "
                f"'{FLUX_ADAPTER_WIDTHS}' and a FLUX model built for its widths") if key == "flux" else ""
        raise ValueError(f"target {key.upper()} reads {width}-wide tokens + a {pooled_width}-wide pooled vector{extra}; {got}{hint}")
    return tokens, pooled


def _check_text_conditioning(text_conditioning, width: int, pooled_width: int) -> None:
    if not isinstance(text_conditioning, (list, tuple)) or not text_conditioning:
        raise ValueError("text_conditioning: expected a CONDITIONING (a non-empty list of [tensor, dict])")
    for i, entry in enumerate(text_conditioning):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], torch.Tensor) or not isinstance(entry[1], dict):
            raise ValueError(f"text_conditioning: entry {i} is not a [tensor, dict] pair")
        tokens = entry[0]
        if tokens.ndim != 3 or tokens.shape[-1] != width:
            raise ValueError(f"text_conditioning: entry {i} has tokens of shape {tuple(tokens.shape)}, the audio tokens are "
                             f"{width} wide; connect a text encoder of the same model family as the target")
        pooled = entry[1].get("pooled_output")
        if pooled is not None and pooled.shape[-1] != pooled_width:
            raise ValueError(f"text_conditioning: entry {i} has a {pooled.shape[-1]}-wide pooled_output, the audio's is {pooled_width} wide")
        if not bool(torch.isfinite(tokens).all()):
            raise ValueError(f"text_conditioning: entry {i} holds NaN or infinite values")


def _rows(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """`x` with `batch` rows (a single row is repeated)."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:]).contiguous()
    raise ValueError(f"{what}: has {x.shape[0]} rows, the other side {batch}; use one text or one clip, or as many texts as clips")


def build_conditioning(output: AdapterOutput, target: str = "FLUX", guidance: float = 3.5, text_conditioning=None,
                       combine: str = "concat", weight: float = 0.5) -> list:
    """The host CONDITIONING for `target` from an adapter output, optionally combined with a text
    CONDITIONING (see the module docstring for the rules). Tensors are float32 on the CPU, one row
    per clip."""
    key = _target_key(target)
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine: expected one of {', '.join(COMBINE_MODES)}, got {combine!r}")
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"weight: expected a value in 0..1, got {weight!r}")
    tokens, pooled = host_layout(output, target)
    tokens, pooled = tokens.detach().float().cpu(), pooled.detach().float().cpu()
    if not (bool(torch.isfinite(tokens).all()) and bool(torch.isfinite(pooled).all())):
        raise ValueError("the adapter produced NaN or infinite values")
    extras_for_target = {"guidance": float(guidance)} if key == "flux" else {}
    if text_conditioning is None:
        return [[tokens, {"pooled_output": pooled, **extras_for_target}]]
    _check_text_conditioning(text_conditioning, tokens.shape[-1], pooled.shape[-1])
    w = float(weight)
    out = []
    for text_tokens, text_extras in text_conditioning:
        batch = max(tokens.shape[0], text_tokens.shape[0])
        audio_tokens, audio_pooled = _rows(tokens, batch, "the audio"), _rows(pooled, batch, "the audio")
        text_tokens = _rows(text_tokens.float().cpu(), batch, "text_conditioning")
        if combine == "concat":
            mixed = torch.cat([text_tokens, audio_tokens], dim=1)
        else:
            length = text_tokens.shape[1]
            audio = audio_tokens[:, :length]
            if audio.shape[1] < length:
                audio = torch.cat([audio, audio.new_zeros(audio.shape[0], length - audio.shape[1], audio.shape[2])], dim=1)
            mixed = (1.0 - w) * text_tokens + w * audio
        extras = {k: v for k, v in text_extras.items() if k != "attention_mask"}
        text_pooled = text_extras.get("pooled_output")
        if text_pooled is not None:
            extras["pooled_output"] = (1.0 - w) * _rows(text_pooled.float().cpu(), batch, "text pooled_output") + w * audio_pooled
        else:
            extras["pooled_output"] = audio_pooled
        extras.update(extras_for_target)
        out.append([mixed, extras])
    return out
