"""SeeingSounds audio adapters: audio-encoder tokens -> text-encoder conditioning.

The paper (SeeingSounds, arXiv 2510.11738) trains two light branches on top of a frozen AST:

* a **text branch** ``A_T``: an MLP over the m audio tokens, then attention pooling with L
  learnable queries, giving L tokens of the T5 width (FLUX: L >= 256, 4096-d);
* a **pooled branch** ``A_V``: its own MLP, then attention pooling with one learnable query,
  giving one CLIP pooled vector (FLUX: CLIP-L, 768-d).

The paper gives no layer sizes, so these are ours (documented in docs/seeing_sounds.md):

    audio tokens [B, m, audio_dim]
      -> MLP: Linear(audio_dim, hidden) -> GELU -> Linear(hidden, hidden) -> LayerNorm
      -> pooling: queries [n, hidden] cross-attend to the MLP tokens (multi-head attention,
         residual on the queries), then a feed-forward block with a residual
      -> LayerNorm -> Linear(hidden, out_dim)

with n = text_tokens for the text branch and n = 1 for the pooled branch. The **mean-pooling**
ablation (``pooling="mean"``) replaces the cross-attention by the mean of the MLP tokens, added to
every query (the queries then only tell the L output positions apart); everything else is equal,
so the two variants differ only in how the m audio tokens are pooled.

Profiles say which host conditioning an adapter's widths produce (see host.md):
FLUX (L x 4096 T5 tokens + 768 CLIP-L pooled), SD3 (154 x 4096 + 2048), SDXL (77 x 2048 + 1280).

Plain torch only; the host is never imported here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["AudioAdapterConfig", "AudioAdapter", "AdapterOutput", "PROFILES", "POOLING_MODES"]

POOLING_MODES = ("attention", "mean")

# target -> (text tokens, text width, pooled width) of the host's conditioning for that model
PROFILES: dict[str, tuple[int, int, int]] = {
    "flux": (256, 4096, 768),
    "sd3": (154, 4096, 2048),
    "sdxl": (77, 2048, 1280),
}


@dataclass
class AudioAdapterConfig:
    """Sizes of an :class:`AudioAdapter` and what it was trained against.

    ``target`` names the host conditioning the widths were made for ("flux", "sd3", "sdxl") or
    "custom" (any widths, e.g. adapters trained against tiny text encoders). ``audio_encoder``,
    ``text_encoder`` and ``pooled_encoder`` name the frozen models of training ("" when unknown);
    the node checks the audio embedding's model against ``audio_encoder`` when both are known.
    """

    audio_dim: int = 768
    hidden_dim: int = 1024
    text_tokens: int = 256
    text_dim: int = 4096
    pooled_dim: int = 768
    num_heads: int = 8
    mlp_ratio: float = 2.0
    pooling: str = "attention"
    target: str = "flux"
    audio_encoder: str = ""
    text_encoder: str = ""
    pooled_encoder: str = ""

    def __post_init__(self) -> None:
        for name in ("audio_dim", "hidden_dim", "text_tokens", "text_dim", "pooled_dim", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AudioAdapterConfig: {name} must be a positive integer, got {value!r}")
        if self.hidden_dim % self.num_heads != 0:
            raise ValueError(f"AudioAdapterConfig: hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"AudioAdapterConfig: mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"AudioAdapterConfig: pooling must be one of {list(POOLING_MODES)}, got {self.pooling!r}")
        if self.target not in PROFILES and self.target != "custom":
            raise ValueError(f"AudioAdapterConfig: target must be one of {list(PROFILES) + ['custom']}, got {self.target!r}")
        if self.target in PROFILES:
            tokens, width, pooled = PROFILES[self.target]
            if (self.text_dim, self.pooled_dim) != (width, pooled) or (self.target != "flux" and self.text_tokens != tokens):
                wanted = f"{'L' if self.target == 'flux' else tokens} tokens x {width} + pooled {pooled}"
                raise ValueError(f"AudioAdapterConfig: target {self.target!r} needs {wanted}, got {self.text_tokens} x "
                                 f"{self.text_dim} + pooled {self.pooled_dim}; use target 'custom' for other widths")

    @classmethod
    def for_target(cls, target: str, **overrides: Any) -> "AudioAdapterConfig":
        """The widths of a host conditioning profile ("flux", "sd3", "sdxl") plus overrides."""
        if target not in PROFILES:
            raise ValueError(f"AudioAdapterConfig: unknown target {target!r}; expected one of {list(PROFILES)}")
        tokens, width, pooled = PROFILES[target]
        values = dict(text_tokens=tokens, text_dim=width, pooled_dim=pooled, target=target)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AudioAdapterConfig":
        """Build from :meth:`to_dict` output; keys starting with ``_`` are ignored, other unknown keys refused."""
        if not isinstance(data, dict):
            raise ValueError(f"AudioAdapterConfig: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in known and not str(k).startswith("_"))
        if unknown:
            raise ValueError(f"AudioAdapterConfig: unknown keys {unknown}")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class AdapterOutput:
    """``tokens`` [B, text_tokens, text_dim] (T5-like states) and ``pooled`` [B, pooled_dim]."""

    tokens: torch.Tensor
    pooled: torch.Tensor


class TokenMLP(nn.Module):
    """Per-token MLP: audio width -> adapter width."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc2(self.act(self.fc1(x))))


class QueryPooling(nn.Module):
    """n learnable queries pool a token sequence: cross-attention ("attention") or the mean of the
    tokens added to every query ("mean", the ablation), then a residual feed-forward block."""

    def __init__(self, n_queries: int, dim: int, num_heads: int, mlp_ratio: float, mode: str):
        super().__init__()
        self.mode = mode
        self.queries = nn.Parameter(torch.randn(n_queries, dim) / math.sqrt(dim))
        if mode == "attention":
            self.norm_q = nn.LayerNorm(dim)
            self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)
        if self.mode == "attention":
            attended, _ = self.attention(self.norm_q(queries), tokens, tokens, need_weights=False)
            x = queries + attended
        else:
            x = queries + tokens.mean(dim=1, keepdim=True)
        return x + self.ff(self.norm_ff(x))


class AdapterBranch(nn.Module):
    """MLP -> pooling to n queries -> LayerNorm -> Linear to the target width."""

    def __init__(self, config: AudioAdapterConfig, n_queries: int, out_dim: int):
        super().__init__()
        self.mlp = TokenMLP(config.audio_dim, config.hidden_dim)
        self.pool = QueryPooling(n_queries, config.hidden_dim, config.num_heads, config.mlp_ratio, config.pooling)
        self.norm_out = nn.LayerNorm(config.hidden_dim)
        self.proj = nn.Linear(config.hidden_dim, out_dim)

    def forward(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm_out(self.pool(self.mlp(audio_tokens))))


class AudioAdapter(nn.Module):
    """Audio tokens [B, m, audio_dim] -> :class:`AdapterOutput` (T5-like tokens + pooled vector).

    ``text_branch`` and ``pooled_branch`` share nothing, so each can have its own optimiser (the
    paper trains them with two AdamW optimisers at different learning rates).
    """

    def __init__(self, config: AudioAdapterConfig):
        super().__init__()
        self.config = config
        self.text_branch = AdapterBranch(config, config.text_tokens, config.text_dim)
        self.pooled_branch = AdapterBranch(config, 1, config.pooled_dim)

    def forward(self, audio_tokens: torch.Tensor) -> AdapterOutput:
        if audio_tokens.ndim == 2:  # one pooled vector per clip: a sequence of one token
            audio_tokens = audio_tokens.unsqueeze(1)
        if audio_tokens.ndim != 3 or audio_tokens.shape[-1] != self.config.audio_dim or audio_tokens.shape[1] == 0:
            raise ValueError(f"audio adapter: expected audio tokens [batch, tokens, {self.config.audio_dim}], "
                             f"got shape {tuple(audio_tokens.shape)}")
        tokens = self.text_branch(audio_tokens)
        pooled = self.pooled_branch(audio_tokens)[:, 0]
        return AdapterOutput(tokens, pooled)
