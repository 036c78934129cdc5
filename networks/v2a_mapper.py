"""V2A-Mapper networks: translate a vector of one embedding space (e.g. CLIP image) into another
(e.g. CLAP audio).

Two kinds, as in the paper (Wang et al., "V2A-Mapper", AAAI 2024):

* :class:`RegressionMapper`: an MLP with pre-norm residual blocks, trained by MSE. Deterministic;
  the paper finds it slightly better at relevance.
* :class:`DiffusionMapper`: a small transformer that, given the noised target ``x_t``, the
  timestep and the condition (the source vector), predicts the clean target ``x0`` (not the
  noise), like DALL-E 2's prior. Its input is a sequence of four tokens: condition, timestep
  embedding, noised target, and a learned query whose output is the prediction. The paper finds it
  better at fidelity and variety. The reverse process lives in ``samplers/mapper_diffusion.py``.

The paper gives no code; sizes, the token layout and the scaling below are our choices:

* Inputs: the source vector is L2-normalised (``normalize_input``, default on: CLIP/CLAP vectors
  carry their meaning in their direction) and multiplied by ``input_scale`` so that its entries are
  of order 1 (``sqrt(source_dim)`` after normalisation; ``1 / rms`` of the training data otherwise).
* Targets: the networks work in "model units", target * ``target_scale`` (``sqrt(target_dim)``
  for an L2-normalised target space, ``1 / rms`` of the training targets otherwise), so the
  diffusion runs on entries of unit scale. ``to_target_units`` turns a model-unit output back; when
  ``normalize_output`` is set (the target space is L2-normalised, e.g. CLAP) outputs are projected
  onto the unit sphere.
* Classifier-free guidance (diffusion): during training the condition is replaced by a learned
  null vector with probability ``condition_dropout``; sampling can then mix conditional and
  unconditional predictions.

Plain torch only; the host is never imported here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BETA_SCHEDULES",
    "RegressionMapperConfig",
    "DiffusionMapperConfig",
    "RegressionMapper",
    "DiffusionMapper",
    "timestep_embedding",
]

BETA_SCHEDULES = ("cosine", "linear")


def _positive_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def _positive_float(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive finite number, got {value!r}")


class _ConfigMixin:
    """to_dict / from_dict for the config dataclasses (unknown keys are refused by name)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass
class RegressionMapperConfig(_ConfigMixin):
    """Sizes of a :class:`RegressionMapper`."""

    source_dim: int = 768
    target_dim: int = 512
    hidden_dim: int = 1024
    num_blocks: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    normalize_input: bool = True
    normalize_output: bool = True
    input_scale: float = 1.0
    target_scale: float = 1.0

    def __post_init__(self) -> None:
        owner = "RegressionMapperConfig"
        for name in ("source_dim", "target_dim", "hidden_dim", "num_blocks"):
            _positive_int(owner, name, getattr(self, name))
        for name in ("mlp_ratio", "input_scale", "target_scale"):
            _positive_float(owner, name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{owner}: dropout must be in [0, 1), got {self.dropout!r}")


@dataclass
class DiffusionMapperConfig(_ConfigMixin):
    """Sizes and diffusion settings of a :class:`DiffusionMapper`."""

    source_dim: int = 768
    target_dim: int = 512
    width: int = 512
    depth: int = 6
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    normalize_input: bool = True
    normalize_output: bool = True
    input_scale: float = 1.0
    target_scale: float = 1.0
    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"
    condition_dropout: float = 0.1

    def __post_init__(self) -> None:
        owner = "DiffusionMapperConfig"
        for name in ("source_dim", "target_dim", "width", "depth", "num_heads", "num_train_timesteps"):
            _positive_int(owner, name, getattr(self, name))
        for name in ("mlp_ratio", "input_scale", "target_scale"):
            _positive_float(owner, name, getattr(self, name))
        if self.width % self.num_heads:
            raise ValueError(f"{owner}: width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"{owner}: beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {self.beta_schedule!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{owner}: dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"{owner}: condition_dropout must be in [0, 1), got {self.condition_dropout!r}")


class _SpaceScaling(nn.Module):
    """Input normalisation and target units shared by both mappers (reads ``self.config``)."""

    config: RegressionMapperConfig | DiffusionMapperConfig

    def _check(self, x: torch.Tensor, dim: int, what: str) -> None:
        if x.dim() != 2 or x.shape[1] != dim:
            raise ValueError(f"{type(self).__name__}: expected {what} of shape [batch, {dim}], got {tuple(x.shape)}")

    def prepare_source(self, source: torch.Tensor) -> torch.Tensor:
        """Source vectors [B, source_dim] -> the network's condition input (normalised, scaled)."""
        self._check(source, self.config.source_dim, "source vectors")
        if self.config.normalize_input:
            source = F.normalize(source, dim=-1, eps=1e-8)
        return source * self.config.input_scale

    def to_model_units(self, target: torch.Tensor) -> torch.Tensor:
        """Target vectors (as the target encoder gives them) -> model units."""
        self._check(target, self.config.target_dim, "target vectors")
        return target * self.config.target_scale

    def to_target_units(self, x: torch.Tensor) -> torch.Tensor:
        """Model-unit vectors -> target space (unit length when ``normalize_output``)."""
        if self.config.normalize_output:
            return F.normalize(x, dim=-1, eps=1e-8)
        return x / self.config.target_scale

    def project_model_units(self, x: torch.Tensor) -> torch.Tensor:
        """Onto the sphere the (scaled) targets live on when the target space is normalised; else x."""
        if self.config.normalize_output:
            return F.normalize(x, dim=-1, eps=1e-8) * self.config.target_scale
        return x


class _ResidualMLPBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm(x))))))


class RegressionMapper(_SpaceScaling):
    """MLP mapper: source [B, source_dim] -> target [B, target_dim].

    ``forward`` returns model units (for the loss); :meth:`map` returns target-space vectors.
    """

    def __init__(self, config: RegressionMapperConfig):
        super().__init__()
        self.config = config
        self.proj_in = nn.Linear(config.source_dim, config.hidden_dim)
        self.blocks = nn.ModuleList(
            _ResidualMLPBlock(config.hidden_dim, config.mlp_ratio, config.dropout) for _ in range(config.num_blocks))
        self.norm_out = nn.LayerNorm(config.hidden_dim)
        self.proj_out = nn.Linear(config.hidden_dim, config.target_dim)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(self.prepare_source(source))
        for block in self.blocks:
            h = block(h)
        return self.project_model_units(self.proj_out(self.norm_out(h)))

    @torch.no_grad()
    def map(self, source: torch.Tensor) -> torch.Tensor:
        return self.to_target_units(self(source))


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps [B] (cos half, then sin)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / max(half, 1)
    angles = timesteps.float()[:, None] * torch.exp(exponent)[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class _TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP block over the four tokens."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        hidden = max(1, int(round(width * mlp_ratio)))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class DiffusionMapper(_SpaceScaling):
    """Diffusion-prior mapper: predicts the clean target x0 (model units) from
    ``(x_t [B, target_dim] in model units, timesteps [B], source [B, source_dim])``.

    Tokens (in order): condition, timestep, noised target, query; learned position embeddings;
    ``depth`` pre-norm transformer blocks; the query token's output, through a LayerNorm and a
    linear layer, is the prediction.
    """

    NUM_TOKENS = 4

    def __init__(self, config: DiffusionMapperConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.condition_proj = nn.Linear(config.source_dim, width)
        self.null_condition = nn.Parameter(torch.zeros(config.source_dim))
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.noisy_proj = nn.Linear(config.target_dim, width)
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        self.position = nn.Parameter(torch.randn(self.NUM_TOKENS, width) * 0.02)
        self.blocks = nn.ModuleList(
            _TransformerBlock(width, config.num_heads, config.mlp_ratio, config.dropout) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, config.target_dim)

    def condition_input(self, source: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """The condition vector fed to the transformer: the prepared source, replaced by the learned
        null condition in the rows where ``drop`` [B] (bool) is True."""
        condition = self.prepare_source(source)
        if drop is not None:
            condition = torch.where(drop[:, None], self.null_condition.to(condition.dtype).unsqueeze(0), condition)
        return condition

    def forward(self, noisy_target: torch.Tensor, timesteps: torch.Tensor, source: torch.Tensor,
                drop_condition: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted x0 [B, target_dim] (model units) from the noised target [B, target_dim] (model
        units), integer timesteps [B] and source vectors [B, source_dim]; rows where
        ``drop_condition`` [B] is True get the null condition (classifier-free guidance)."""
        batch = noisy_target.shape[0]
        self._check(noisy_target, self.config.target_dim, "noised targets")
        if source.shape[0] != batch:
            raise ValueError(f"DiffusionMapper: {source.shape[0]} source vectors for {batch} noised targets")
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(batch)
        dtype = self.noisy_proj.weight.dtype
        condition = self.condition_input(source.to(dtype), drop_condition)
        time = self.time_mlp(timestep_embedding(timesteps, self.config.width).to(dtype))
        tokens = torch.stack([
            self.condition_proj(condition),
            time,
            self.noisy_proj(noisy_target.to(dtype)),
            self.query.to(dtype).unsqueeze(0).expand(batch, -1),
        ], dim=1) + self.position.to(dtype)
        for block in self.blocks:
            tokens = block(tokens)
        return self.proj_out(self.norm_out(tokens[:, -1]))
