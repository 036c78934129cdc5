"""VATT's audio decoder ("VATT Audio"): a bidirectional masked transformer over codec frames.

Layout (read from the official code, vt2a/modules/vt2a_mlm_alibi_uni_coder.py ``VT2AModel``; the
paper gives only the outline):

* Audio input. Each codec frame t holds K tokens (one per codebook). Each token is looked up in
  its codebook's table of codec latents (``codebook_latents`` [K, V, D], EnCodec's own RVQ
  codebooks, frozen), a masked slot takes that codebook's learned MASK latent (``mask_latents``
  [K, D]); the K latents of a frame are summed and projected to the model width
  (``latent_proj``). So N frames give N positions, whatever K is.
* Condition. A sequence of vectors (video-frame features, optionally followed by text states) is
  projected to the model width (``video_proj`` / ``text_proj``). Unconditional rows (classifier-free
  guidance, and 10 % of training rows) have the projected condition zeroed.
* Both parts get fixed 1-D sin-cos positions (condition at 0..Lc-1, audio at Lc..Lc+N-1; MAE's
  formula) and a learned modality vector, and are concatenated ``[condition; audio]``.
* Encoder: ``encoder_depth`` pre-norm layers of self-attention and a "multiway" feed-forward
  (separate FFNs for condition and audio positions). As in the official code, ONE pair of
  LayerNorms (condition / audio) serves every encoder pre-norm and the encoder's final norm.
* Decoder: ``decoder_depth`` plain pre-norm layers (attention + FFN) over all positions, then a
  LayerNorm. Attention everywhere is bidirectional with ALiBi biases (``-|i - j| * slope_h``,
  the standard slopes), head width ``head_dim``; projections and FFNs have no biases; GELU.
* K output heads ``Linear(dim, V, bias=False)`` on the audio positions.

Logit layout. ``logit_layout="aligned"`` (our models): head k at frame t scores token (k, t).
``"vatt_official"``: the official code trains and samples with the heads' outputs flattened
codebook-major (``b k t -> b (k t)``) against targets flattened frame-major (``b c t -> b (t c)``),
so head k at frame t scores the token of flat index j = k * N + t of the frame-major order, i.e.
frame j // K, codebook j % K. The model learned that pairing; ``forward`` undoes it, so callers
always get logits aligned with the token grid [b, K, N, V].

Plain torch; the host is never imported here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOGIT_LAYOUTS", "VATTDecoderConfig", "VATTDecoder", "alibi_slopes", "sincos_positions"]

LOGIT_LAYOUTS = ("aligned", "vatt_official")


@dataclass
class VATTDecoderConfig:
    """Sizes of a :class:`VATTDecoder` and the spaces it was trained in.

    Defaults are the paper's: 16 kHz EnCodec (4 x 2048 codes, 128-d latents, 50 frames/s),
    1024-d, 12 + 12 layers, 16 heads of 64, eva-CLIP frame features (768-d) at 5 fps.
    """

    num_codebooks: int = 4
    codebook_size: int = 2048
    latent_dim: int = 128
    dim: int = 1024
    encoder_depth: int = 12
    decoder_depth: int = 12
    num_heads: int = 16
    head_dim: int = 64
    ff_mult: int = 4
    video_dim: int = 768
    text_dim: int = 0  # 0: no text conditioning
    dropout: float = 0.1
    logit_layout: str = "aligned"
    # the spaces the condition must come from (checked against Embedding payloads)
    video_family: str = "clip"
    video_model: str = ""
    video_rate_hz: float = 5.0
    video_tokens: int = 10
    text_family: str = ""
    text_model: str = ""
    # the codec the tokens belong to
    codec: str = ""
    sample_rate_hz: int = 16_000
    frame_rate_hz: float = 50.0
    # the clip length the decoder was trained on (seconds); > 0: longer videos are generated in
    # windows of this length, each from its own frames (samplers/vatt.py); 0: one window of any length
    clip_s: float = 0.0
    # text states per caption the decoder was trained on (T5 prompts padded to this many tokens); 0: any
    text_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("num_codebooks", "codebook_size", "latent_dim", "dim", "encoder_depth", "decoder_depth",
                     "num_heads", "head_dim", "ff_mult", "video_dim", "video_tokens", "sample_rate_hz"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VATTDecoderConfig: {name} must be a positive integer, got {value!r}")
        if isinstance(self.text_tokens, bool) or not isinstance(self.text_tokens, int) or self.text_tokens < 0:
            raise ValueError(f"VATTDecoderConfig: text_tokens must be an integer >= 0, got {self.text_tokens!r}")
        if isinstance(self.text_dim, bool) or not isinstance(self.text_dim, int) or self.text_dim < 0:
            raise ValueError(f"VATTDecoderConfig: text_dim must be an integer >= 0, got {self.text_dim!r}")
        if self.dim % 2:
            raise ValueError(f"VATTDecoderConfig: dim must be even (sin-cos positions), got {self.dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VATTDecoderConfig: dropout must be in [0, 1), got {self.dropout!r}")
        if self.logit_layout not in LOGIT_LAYOUTS:
            raise ValueError(f"VATTDecoderConfig: logit_layout must be one of {LOGIT_LAYOUTS}, got {self.logit_layout!r}")
        if isinstance(self.clip_s, bool) or not isinstance(self.clip_s, (int, float)) or not math.isfinite(self.clip_s) \
                or self.clip_s < 0:
            raise ValueError(f"VATTDecoderConfig: clip_s must be a number of seconds >= 0, got {self.clip_s!r}")
        for name in ("video_rate_hz", "frame_rate_hz"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"VATTDecoderConfig: {name} must be a positive number, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VATTDecoderConfig":
        """From :meth:`to_dict` output; keys starting with ``_`` are ignored, other unknown keys raise."""
        if not isinstance(data, dict):
            raise ValueError(f"VATTDecoderConfig: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in known and not str(k).startswith("_"))
        if unknown:
            raise ValueError(f"VATTDecoderConfig: unknown keys {unknown}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def tiny(cls, **overrides) -> "VATTDecoderConfig":
        """A small model for tests and CPU experiments."""
        values = dict(codebook_size=64, latent_dim=8, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2,
                      head_dim=16, video_dim=16)
        values.update(overrides)
        return cls(**values)


# ----------------------------------------------------------------------------------------------
# positions
# ----------------------------------------------------------------------------------------------
def sincos_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """MAE's 1-D sin-cos table [length, dim] (sin half then cos half), computed in float32 as the
    official code does with numpy."""
    omega = torch.arange(dim // 2, dtype=torch.float32, device=device) / (dim / 2.0)
    omega = 1.0 / (10000 ** omega)
    angles = torch.arange(length, dtype=torch.float32, device=device)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al.; the x-transformers formula the official code uses)."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_2(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_2(closest) + power_of_2(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------
class VATTAttention(nn.Module):
    """Bidirectional multi-head self-attention without biases; the ALiBi bias comes from outside."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, dropout: float):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t):
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.to_q(x)), heads(self.to_k(x)), heads(self.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class VATTFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        self.fc_in = nn.Linear(dim, dim * mult, bias=False)
        self.fc_out = nn.Linear(dim * mult, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.dropout(F.gelu(self.fc_in(x))))


class VATTEncoderLayer(nn.Module):
    """Attention over all positions + a feed-forward per part (condition / audio)."""

    def __init__(self, config: VATTDecoderConfig):
        super().__init__()
        self.attention = VATTAttention(config.dim, config.num_heads, config.head_dim, config.dropout)
        self.ff_condition = VATTFeedForward(config.dim, config.ff_mult, config.dropout)
        self.ff_audio = VATTFeedForward(config.dim, config.ff_mult, config.dropout)


class VATTDecoderLayer(nn.Module):
    def __init__(self, config: VATTDecoderConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.dim)
        self.attention = VATTAttention(config.dim, config.num_heads, config.head_dim, config.dropout)
        self.ff_norm = nn.LayerNorm(config.dim)
        self.ff = VATTFeedForward(config.dim, config.ff_mult, config.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), bias)
        return x + self.ff(self.ff_norm(x))


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
class VATTDecoder(nn.Module):
    """See the module doc. ``forward`` returns logits aligned with the token grid [b, K, N, V]."""

    def __init__(self, config: VATTDecoderConfig):
        super().__init__()
        self.config = config
        K, V, D, dim = config.num_codebooks, config.codebook_size, config.latent_dim, config.dim
        self.register_buffer("codebook_latents", torch.zeros(K, V, D))
        self.mask_latents = nn.Parameter(torch.randn(K, D))
        self.latent_proj = nn.Linear(D, dim)
        self.video_proj = nn.Linear(config.video_dim, dim)
        self.text_proj = nn.Linear(config.text_dim, dim) if config.text_dim else None
        self.modality_condition = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality_audio = nn.Parameter(torch.zeros(1, 1, dim))
        self.input_dropout = nn.Dropout(config.dropout)
        self.encoder_norm_condition = nn.LayerNorm(dim)
        self.encoder_norm_audio = nn.LayerNorm(dim)
        self.encoder_layers = nn.ModuleList(VATTEncoderLayer(config) for _ in range(config.encoder_depth))
        self.decoder_layers = nn.ModuleList(VATTDecoderLayer(config) for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList(nn.Linear(dim, V, bias=False) for _ in range(K))
        self.register_buffer("slopes", alibi_slopes(config.num_heads), persistent=False)
        # True when the codec tables do not travel with the weights (an official checkpoint): they are
        # then (re)set from the codec in use before every sampling run instead of checked against it
        self.codebooks_from_codec = False
        self._init_weights()

    def _init_weights(self) -> None:
        """The official scheme: truncated normal, std 1/sqrt(fan_in), divided by sqrt(2 * layer
        number) inside the transformer layers; zero biases; modality vectors N(0, 0.02)."""

        def init_linear(module: nn.Module, depth: Optional[int]) -> None:
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    std = 1.0 / math.sqrt(m.in_features) / (math.sqrt(2 * depth) if depth else 1.0)
                    nn.init.trunc_normal_(m.weight, std=std, a=-3 * std, b=3 * std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

        for i, layer in enumerate(self.encoder_layers):
            init_linear(layer, i + 1)
        for i, layer in enumerate(self.decoder_layers):
            init_linear(layer, i + 1)
        nn.init.normal_(self.modality_condition, std=0.02)
        nn.init.normal_(self.modality_audio, std=0.02)

    # ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mask_latents.device

    @property
    def has_codebooks(self) -> bool:
        """False while the codec tables are unset (all zeros: an official checkpoint keeps them
        outside the model; fill them with ``set_codebooks`` from the codec)."""
        return bool(self.codebook_latents.abs().sum() > 0)

    def set_codebooks(self, latents: torch.Tensor) -> None:
        expected = tuple(self.codebook_latents.shape)
        if tuple(latents.shape) != expected:
            raise ValueError(f"VATT decoder: codec codebooks have shape {tuple(latents.shape)}, expected {expected} "
                             f"(codebooks x codes x latent width)")
        self.codebook_latents.copy_(latents.to(self.codebook_latents))

    def _alibi(self, length: int, dtype: torch.dtype) -> torch.Tensor:
        position = torch.arange(length, device=self.slopes.device)
        distance = (position[None, :] - position[:, None]).abs().to(torch.float32)
        return (-distance[None] * self.slopes[:, None, None]).unsqueeze(0).to(dtype)

    def embed_audio(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """tokens [b, K, N] long, masked [b, K, N] bool -> summed latents [b, N, latent_dim]."""
        K = self.config.num_codebooks
        latents = 0
        for k in range(K):
            ids = tokens[:, k].clamp(0, self.config.codebook_size - 1)
            table = self.codebook_latents[k].to(self.mask_latents.dtype)
            looked_up = F.embedding(ids, table)
            latents = latents + torch.where(masked[:, k].unsqueeze(-1), self.mask_latents[k], looked_up)
        return latents

    def condition_sequence(self, video: torch.Tensor, text: Optional[torch.Tensor],
                           drop_condition: Optional[torch.Tensor]) -> torch.Tensor:
        """Projected condition [b, Lc, dim], zeroed on rows with ``drop_condition``."""
        parts = [self.video_proj(video)]
        if text is not None:
            if self.text_proj is None:
                raise ValueError("VATT decoder: this model was trained without text; no text states can be given")
            parts.append(self.text_proj(text))
        condition = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if drop_condition is not None:
            condition = condition * (~drop_condition).to(condition.dtype)[:, None, None]
        return condition

    def forward(self, tokens: torch.Tensor, masked: torch.Tensor, video: torch.Tensor,
                text: Optional[torch.Tensor] = None, drop_condition: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [b, K, N, V] aligned with ``tokens``.

        Args:
            tokens: [b, K, N] code ids (ids at masked slots are ignored).
            masked: [b, K, N] bool, True where the model sees that codebook's MASK latent.
            video: [b, Lv, video_dim] condition vectors (b or 1 rows).
            text: optional [b, Lt, text_dim] text states appended to the condition.
            drop_condition: optional [b] bool, True for unconditional rows (condition zeroed).
        """
        config = self.config
        b, K, N = tokens.shape
        if K != config.num_codebooks:
            raise ValueError(f"VATT decoder: got {K} codebooks, the model has {config.num_codebooks}")
        if video.dim() != 3 or video.shape[-1] != config.video_dim:
            raise ValueError(f"VATT decoder: video features must be [batch, tokens, {config.video_dim}], got {tuple(video.shape)}")
        if text is not None and self.text_proj is None:
            raise ValueError("VATT decoder: this model was trained without text; no text states can be given")
        if text is not None and (text.dim() != 3 or text.shape[-1] != config.text_dim):
            raise ValueError(f"VATT decoder: text states must be [batch, tokens, {config.text_dim}], got {tuple(text.shape)}")
        dtype = self.mask_latents.dtype
        video = video.to(dtype).expand(b, -1, -1) if video.shape[0] == 1 else video.to(dtype)
        if text is not None:
            text = text.to(dtype).expand(b, -1, -1) if text.shape[0] == 1 else text.to(dtype)

        condition = self.condition_sequence(video, text, drop_condition)
        Lc = condition.shape[1]
        positions = sincos_positions(Lc + N, config.dim, device=tokens.device).to(dtype)
        condition = condition + positions[:Lc] + self.modality_condition
        audio = self.latent_proj(self.embed_audio(tokens, masked)) + positions[Lc:] + self.modality_audio
        x = self.input_dropout(torch.cat([condition, audio], dim=1))
        bias = self._alibi(Lc + N, dtype)

        def multiway_norm(h):
            return torch.cat([self.encoder_norm_condition(h[:, :Lc]), self.encoder_norm_audio(h[:, Lc:])], dim=1)

        for layer in self.encoder_layers:
            x = x + layer.attention(multiway_norm(x), bias)
            h = multiway_norm(x)
            x = x + torch.cat([layer.ff_condition(h[:, :Lc]), layer.ff_audio(h[:, Lc:])], dim=1)
        x = self.input_dropout(multiway_norm(x))
        for layer in self.decoder_layers:
            x = layer(x, bias)
        out = self.decoder_norm(x)[:, Lc:]
        logits = torch.stack([head(out) for head in self.heads], dim=1)  # [b, K, N, V]
        if config.logit_layout == "vatt_official":
            # head k at frame t scores flat index k*N + t of the frame-major order (frame j//K, codebook j%K)
            logits = logits.reshape(b, K * N, -1).reshape(b, N, K, -1).permute(0, 2, 1, 3)
        return logits
