"""MAGE-style masked audio-visual transformer (the Visual Echoes model).

The model reads one audio token sequence and one image token sequence, each a flat sequence of
VQGAN codebook indices, and predicts a distribution over the codebook at every position.

Layout (Visual Echoes, section 3.3; MAGE):

* per modality: a token embedding with ``vocab_size + 1`` rows (the last row is the [MASK] token),
  a learned position embedding, plus a learned modality embedding;
* encoder: ViT blocks over the concatenated ``[audio; image]`` embeddings. Masked positions enter
  as the [MASK] embedding. During training a ``drop`` mask removes some masked positions from the
  encoder input altogether (same count in every row);
* decoder: the encoder output is projected, dropped slots are refilled with a learned
  modality-shared mask embedding and every masked slot is replaced by that embedding too; decoder
  position and modality embeddings are added and ViT blocks run over all positions;
* head per modality: ``Linear -> GELU -> LayerNorm`` then a product with that modality's token
  embedding matrix (weight-tied, real codes only, the [MASK] row excluded) plus a bias.

Token groups (``audio_group`` / ``image_group``, default 1 = the paper's model): ``g`` consecutive
tokens of a modality's flat sequence share one transformer position. The position's input is the sum
of one embedding per slot (each slot has its own ``vocab_size + 1`` rows, so a group may be partly
masked), and its head predicts every slot (``Linear(dim, g * dim)``, then per slot the tied product).
Callers still see one token per sequence element: ids, masks and logits keep their per-token shapes,
so the sampler and the training loss are the same code. A SynthAV spectrogram column (10 rows, read
column by column) or a 4-token strip of an image row is one position, which makes the sequence 5.5x
shorter and training on a CPU about 9x faster per example (``training/synthav_defaults.py``). With
``g = 1`` every tensor and key is the ungrouped model's.

Plain torch only; the host is never imported here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MaskedAVTransformerConfig",
    "MaskedAVTransformer",
    "AUDIO_MODALITY",
    "IMAGE_MODALITY",
    "init_positions_sincos",
]

AUDIO_MODALITY = 0
IMAGE_MODALITY = 1


@dataclass
class MaskedAVTransformerConfig:
    """Sizes of a :class:`MaskedAVTransformer`.

    The defaults are the paper's model: SpecVQGAN audio (5 x 53 = 265 tokens, 1024 codes),
    taming VQGAN image (16 x 16 = 256 tokens, 1024 codes), ViT-L widths.
    """

    audio_vocab_size: int = 1024
    image_vocab_size: int = 1024
    audio_seq_len: int = 265
    image_seq_len: int = 256
    dim: int = 1024
    encoder_depth: int = 24
    decoder_depth: int = 8
    num_heads: int = 16
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    audio_group: int = 1  # consecutive audio tokens per transformer position (module docstring)
    image_group: int = 1

    def __post_init__(self) -> None:
        for name in ("audio_vocab_size", "image_vocab_size", "audio_seq_len", "image_seq_len",
                     "dim", "encoder_depth", "decoder_depth", "num_heads", "audio_group", "image_group"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MaskedAVTransformerConfig: {name} must be a positive integer, got {value!r}")
        if self.dim % self.num_heads != 0:
            raise ValueError(
                f"MaskedAVTransformerConfig: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        for modality in ("audio", "image"):
            length, group = getattr(self, f"{modality}_seq_len"), getattr(self, f"{modality}_group")
            if length % group:
                raise ValueError(f"MaskedAVTransformerConfig: {modality}_seq_len {length} is not a multiple of "
                                 f"{modality}_group {group}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"MaskedAVTransformerConfig: mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MaskedAVTransformerConfig: dropout must be in [0, 1), got {self.dropout!r}")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MaskedAVTransformerConfig":
        """Build from :meth:`to_dict` output. Keys starting with ``_`` (e.g. ``_class_name``) are
        ignored; any other unknown key raises ``ValueError``; missing keys take the defaults."""
        if not isinstance(data, dict):
            raise ValueError(f"MaskedAVTransformerConfig: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in known and not str(k).startswith("_"))
        if unknown:
            raise ValueError(f"MaskedAVTransformerConfig: unknown keys {unknown}")
        return cls(**{k: v for k, v in data.items() if k in known})

    # -- presets -------------------------------------------------------------------------------
    @property
    def audio_positions(self) -> int:
        """Transformer positions of the audio sequence (``audio_seq_len / audio_group``)."""
        return self.audio_seq_len // self.audio_group

    @property
    def image_positions(self) -> int:
        return self.image_seq_len // self.image_group

    @classmethod
    def tiny(cls, **overrides: Any) -> "MaskedAVTransformerConfig":
        """A small model (64-d, 2 encoder + 1 decoder layers) for tests and SynthAV smoke runs."""
        values = dict(dim=64, encoder_depth=2, decoder_depth=1, num_heads=4, mlp_ratio=4.0)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def vit_large(cls, **overrides: Any) -> "MaskedAVTransformerConfig":
        """The paper's size: ViT-L (1024-d, 16 heads), 24 encoder and 8 decoder layers (MAGE-L)."""
        values = dict(dim=1024, encoder_depth=24, decoder_depth=8, num_heads=16, mlp_ratio=4.0)
        values.update(overrides)
        return cls(**values)


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
class MaskedAVAttention(nn.Module):
    """Full (bidirectional) multi-head self-attention with ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_out = nn.Linear(dim, dim)
        self.attention_dropout = dropout
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, N, D] -> [B, N, D]."""
        batch, length, dim = hidden_states.shape
        qkv = self.to_qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh]
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.attention_dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(batch, length, dim)
        return self.out_dropout(self.to_out(attended))


class MaskedAVFeedForward(nn.Module):
    """Linear -> GELU -> Linear (ViT MLP)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc_in = nn.Linear(dim, hidden_dim)
        self.fc_out = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, N, D] -> [B, N, D]."""
        hidden_states = self.dropout(F.gelu(self.fc_in(hidden_states)))
        return self.dropout(self.fc_out(hidden_states))


class MaskedAVTransformerBlock(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = MaskedAVAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.feed_forward = MaskedAVFeedForward(dim, int(dim * mlp_ratio), dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, N, D] -> [B, N, D]."""
        hidden_states = hidden_states + self.attention(self.norm1(hidden_states))
        return hidden_states + self.feed_forward(self.norm2(hidden_states))


class MaskedTokenHead(nn.Module):
    """MAGE's MLM head: ``Linear -> GELU -> LayerNorm``, then logits against the (tied) token
    embedding matrix plus a per-code bias. The embedding matrix is passed in at call time so the
    weights are shared without registering them twice."""

    def __init__(self, dim: int, vocab_size: int, group: int = 1):
        super().__init__()
        self.group, self.vocab_size = group, vocab_size
        self.fc = nn.Linear(dim, group * dim)
        self.norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(group * vocab_size))

    def forward(self, hidden_states: torch.Tensor, code_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, P, D], code_embeddings [g, V, D] (or [V, D] when g = 1) -> logits
        [B, P * g, V]: slot s of position p is token p * g + s."""
        batch, positions, dim = hidden_states.shape
        hidden_states = self.norm(F.gelu(self.fc(hidden_states)).view(batch, positions, self.group, dim))
        if self.group == 1:
            logits = hidden_states.squeeze(2) @ code_embeddings.reshape(self.vocab_size, dim).t()
        else:
            logits = torch.einsum("bpgd,gvd->bpgv", hidden_states, code_embeddings)
        return logits.reshape(batch, positions * self.group, self.vocab_size) + self.bias.view(
            self.group, self.vocab_size).repeat(positions, 1)


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
class MaskedAVTransformer(nn.Module):
    """MAGE-style encoder/decoder transformer over ``[audio tokens; image tokens]``.

    Token ids: audio codes are ``0 .. audio_vocab_size - 1`` and the audio [MASK] id is
    ``audio_vocab_size`` (same for images). Callers pass masks explicitly, so the ids found at
    masked positions are ignored.
    """

    def __init__(self, config: MaskedAVTransformerConfig):
        super().__init__()
        self.config = config
        dim = config.dim
        # encoder-side embeddings
        # one block of vocab_size + 1 rows per slot of a token group ([MASK] last in each block)
        self.audio_token_embedding = nn.Embedding((config.audio_vocab_size + 1) * config.audio_group, dim)
        self.image_token_embedding = nn.Embedding((config.image_vocab_size + 1) * config.image_group, dim)
        self.audio_position_embedding = nn.Parameter(torch.zeros(1, config.audio_positions, dim))
        self.image_position_embedding = nn.Parameter(torch.zeros(1, config.image_positions, dim))
        self.modality_embedding = nn.Embedding(2, dim)
        self.embedding_norm = nn.LayerNorm(dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        # encoder
        self.encoder_blocks = nn.ModuleList(
            MaskedAVTransformerBlock(dim, config.num_heads, config.mlp_ratio, config.dropout)
            for _ in range(config.encoder_depth))
        self.encoder_norm = nn.LayerNorm(dim)
        # decoder
        self.decoder_embed = nn.Linear(dim, dim)
        self.decoder_mask_embedding = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_audio_position_embedding = nn.Parameter(torch.zeros(1, config.audio_positions, dim))
        self.decoder_image_position_embedding = nn.Parameter(torch.zeros(1, config.image_positions, dim))
        self.decoder_modality_embedding = nn.Embedding(2, dim)
        self.decoder_blocks = nn.ModuleList(
            MaskedAVTransformerBlock(dim, config.num_heads, config.mlp_ratio, config.dropout)
            for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim)
        # heads (weight-tied to the token embeddings)
        self.audio_head = MaskedTokenHead(dim, config.audio_vocab_size, config.audio_group)
        self.image_head = MaskedTokenHead(dim, config.image_vocab_size, config.image_group)
        self.reset_parameters()

    # -- properties ----------------------------------------------------------------------------
    @property
    def audio_mask_id(self) -> int:
        return self.config.audio_vocab_size

    @property
    def image_mask_id(self) -> int:
        return self.config.image_vocab_size

    @property
    def device(self) -> torch.device:
        return self.audio_token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.audio_token_embedding.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- initialisation (MAE / MAGE) -----------------------------------------------------------
    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for parameter in (self.audio_position_embedding, self.image_position_embedding,
                          self.decoder_audio_position_embedding, self.decoder_image_position_embedding):
            nn.init.trunc_normal_(parameter, std=0.02)
        nn.init.normal_(self.decoder_mask_embedding, std=0.02)
        for head in (self.audio_head, self.image_head):
            nn.init.zeros_(head.bias)

    # -- pieces of the forward pass ------------------------------------------------------------
    def _check_inputs(self, audio_tokens, image_tokens, audio_masked, image_masked, drop) -> None:
        config = self.config
        expected = {
            "audio_tokens": (audio_tokens, config.audio_seq_len),
            "image_tokens": (image_tokens, config.image_seq_len),
            "audio_masked": (audio_masked, config.audio_seq_len),
            "image_masked": (image_masked, config.image_seq_len),
        }
        batch = audio_tokens.shape[0] if audio_tokens.dim() == 2 else None
        for name, (tensor, length) in expected.items():
            if tensor.dim() != 2 or tensor.shape[1] != length or tensor.shape[0] != batch:
                raise ValueError(
                    f"MaskedAVTransformer: {name} has shape {tuple(tensor.shape)}, expected ({batch}, {length})")
        for name in ("audio_masked", "image_masked"):
            if expected[name][0].dtype != torch.bool:
                raise ValueError(f"MaskedAVTransformer: {name} must be a bool tensor, got {expected[name][0].dtype}")
        if drop is not None:
            total = config.audio_seq_len + config.image_seq_len
            if drop.dtype != torch.bool or tuple(drop.shape) != (batch, total):
                raise ValueError(
                    f"MaskedAVTransformer: drop has shape {tuple(drop.shape)} and dtype {drop.dtype}, "
                    f"expected bool ({batch}, {total})")

    def embed_tokens(self, audio_tokens: torch.Tensor, image_tokens: torch.Tensor,
                     audio_masked: torch.Tensor, image_masked: torch.Tensor) -> torch.Tensor:
        """Encoder input embeddings.

        audio_tokens [B, Na], image_tokens [B, Ni] (long); *_masked [B, N*] (bool) -> [B, Pa+Pi, D]
        (P = N / group). Masked tokens use their slot's [MASK] row; a group's slots are summed.
        """
        config = self.config
        audio = self._embed_modality(self.audio_token_embedding, audio_tokens, audio_masked, config.audio_vocab_size,
                                     config.audio_group) + self.audio_position_embedding
        image = self._embed_modality(self.image_token_embedding, image_tokens, image_masked, config.image_vocab_size,
                                     config.image_group) + self.image_position_embedding
        hidden_states = torch.cat([audio + self.modality_embedding.weight[AUDIO_MODALITY],
                                   image + self.modality_embedding.weight[IMAGE_MODALITY]], dim=1)
        return self.embedding_dropout(self.embedding_norm(hidden_states))

    @staticmethod
    def _embed_modality(embedding: nn.Embedding, tokens: torch.Tensor, masked: torch.Tensor, vocab_size: int,
                        group: int) -> torch.Tensor:
        ids = torch.where(masked, torch.full_like(tokens, vocab_size), tokens)
        if group == 1:
            return embedding(ids)
        ids = ids + (torch.arange(ids.shape[1], device=ids.device) % group) * (vocab_size + 1)
        vectors = embedding(ids)
        batch, length, dim = vectors.shape
        return vectors.view(batch, length // group, group, dim).sum(dim=2)

    def _positions_masked(self, audio_masked: torch.Tensor, image_masked: torch.Tensor) -> torch.Tensor:
        """[B, Pa + Pi]: True where every token of the position is masked."""
        batch, config = audio_masked.shape[0], self.config
        return torch.cat([audio_masked.view(batch, config.audio_positions, config.audio_group).all(dim=2),
                          image_masked.view(batch, config.image_positions, config.image_group).all(dim=2)], dim=1)

    def _code_embeddings(self, embedding: nn.Embedding, vocab_size: int, group: int) -> torch.Tensor:
        """The real codes' rows for the tied head: [V, D], or [g, V, D] for token groups."""
        if group == 1:
            return embedding.weight[:vocab_size]
        return embedding.weight.view(group, vocab_size + 1, -1)[:, :vocab_size]

    @staticmethod
    def drop_tokens(hidden_states: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Remove dropped positions: hidden_states [B, N, D], drop [B, N] (same count of True per
        row) -> [B, N - dropped, D], keeping the order of the kept positions."""
        counts = drop.sum(dim=1)
        if counts.numel() and not bool((counts == counts[0]).all()):
            raise ValueError(
                f"MaskedAVTransformer: drop must remove the same number of tokens from every row, "
                f"got counts {counts.tolist()}")
        batch, length, dim = hidden_states.shape
        kept = length - (int(counts[0]) if counts.numel() else 0)
        return hidden_states[~drop].reshape(batch, kept, dim)

    def decoder_input(self, encoded: torch.Tensor, masked: torch.Tensor,
                      drop: Optional[torch.Tensor]) -> torch.Tensor:
        """encoded [B, kept, D] (already through ``decoder_embed``), masked [B, N], drop [B, N] or
        None -> decoder input [B, N, D]: dropped slots refilled and every masked slot replaced by
        the learned mask embedding, then decoder position and modality embeddings added."""
        batch, length = masked.shape
        mask_embedding = self.decoder_mask_embedding.to(encoded.dtype).expand(batch, length, -1)
        if drop is None:
            hidden_states = encoded
        else:
            hidden_states = mask_embedding.clone()
            hidden_states[~drop] = encoded.reshape(-1, encoded.shape[-1])
        hidden_states = torch.where(masked.unsqueeze(-1), mask_embedding, hidden_states)
        audio, image = hidden_states.split([self.config.audio_positions, self.config.image_positions], dim=1)
        audio = (audio + self.decoder_audio_position_embedding
                 + self.decoder_modality_embedding.weight[AUDIO_MODALITY])
        image = (image + self.decoder_image_position_embedding
                 + self.decoder_modality_embedding.weight[IMAGE_MODALITY])
        return torch.cat([audio, image], dim=1)

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self,
        audio_tokens: torch.LongTensor,
        image_tokens: torch.LongTensor,
        audio_masked: torch.BoolTensor,
        image_masked: torch.BoolTensor,
        drop: Optional[torch.BoolTensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predict codebook logits at every position.

        Args:
            audio_tokens: [B, Na] audio codes (ids at masked positions are ignored).
            image_tokens: [B, Ni] image codes.
            audio_masked: [B, Na] True where the audio token is hidden from the model.
            image_masked: [B, Ni] True where the image token is hidden.
            drop: optional [B, Na + Ni] True where a position is removed from the encoder input
                (training speed-up). Only masked positions may be dropped and every row must drop
                the same number.

        Returns:
            (audio_logits [B, Na, audio_vocab_size], image_logits [B, Ni, image_vocab_size]) over
            the real codes (the [MASK] id is not a class).
        """
        self._check_inputs(audio_tokens, image_tokens, audio_masked, image_masked, drop)
        if drop is not None and (self.config.audio_group > 1 or self.config.image_group > 1):
            if bool(drop.any()):
                raise ValueError("MaskedAVTransformer: drop is not supported with token groups (audio_group/image_group > 1)")
            drop = None  # nothing dropped (the training loop's drop_fraction 0)
        masked = self._positions_masked(audio_masked, image_masked)
        hidden_states = self.embed_tokens(audio_tokens, image_tokens, audio_masked, image_masked)
        if drop is not None:
            if bool((drop & ~masked).any()):
                raise ValueError("MaskedAVTransformer: drop may only remove masked positions")
            hidden_states = self.drop_tokens(hidden_states, drop)
        for block in self.encoder_blocks:
            hidden_states = block(hidden_states)
        hidden_states = self.decoder_embed(self.encoder_norm(hidden_states))
        hidden_states = self.decoder_input(hidden_states, masked, drop)
        for block in self.decoder_blocks:
            hidden_states = block(hidden_states)
        hidden_states = self.decoder_norm(hidden_states)
        config = self.config
        audio_hidden, image_hidden = hidden_states.split([config.audio_positions, config.image_positions], dim=1)
        audio_logits = self.audio_head(audio_hidden, self._code_embeddings(
            self.audio_token_embedding, config.audio_vocab_size, config.audio_group))
        image_logits = self.image_head(image_hidden, self._code_embeddings(
            self.image_token_embedding, config.image_vocab_size, config.image_group))
        return audio_logits, image_logits


def _sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] coordinates in [0, 1) -> [N, dim] sines and cosines (MAE's frequencies, the unit range scaled to 100)."""
    half = dim // 2
    omega = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float64) / max(half, 1)))
    angles = positions.to(torch.float64)[:, None] * 100.0 * omega[None]
    features = torch.cat([angles.sin(), angles.cos()], dim=1)
    return torch.cat([features, features.new_zeros(len(positions), dim - 2 * half)], dim=1).float()


def init_positions_sincos(model: MaskedAVTransformer, audio_grid: Tuple[int, int], image_grid: Tuple[int, int]) -> None:
    """Set the four position embeddings (still learned afterwards) to 2-D sin-cos features of where each
    position lies, as MAE does, on one shared scale: the first half of the channels holds the horizontal
    axis (image x, audio time), the second half the vertical one (image y, mel frequency), each
    normalised to [0, 1). Audio grids are read column by column and images row by row (the samplers'
    layouts); a token group's coordinate is the mean of its tokens'. So an audio column and the image
    strip at the same relative place start out similar, instead of learning that from scratch."""
    config, dim = model.config, model.config.dim
    rows, columns = audio_grid
    height, width = image_grid
    if rows * columns != config.audio_seq_len or height * width != config.image_seq_len:
        raise ValueError(f"init_positions_sincos: grids {audio_grid} / {image_grid} do not give the model's "
                         f"{config.audio_seq_len} / {config.image_seq_len} tokens")
    token = torch.arange(config.audio_seq_len, dtype=torch.float64)
    audio_x = ((token // rows + 0.5) / columns).view(-1, config.audio_group).mean(1)
    audio_y = ((token % rows + 0.5) / rows).view(-1, config.audio_group).mean(1)
    token = torch.arange(config.image_seq_len, dtype=torch.float64)
    image_x = ((token % width + 0.5) / width).view(-1, config.image_group).mean(1)
    image_y = ((token // width + 0.5) / height).view(-1, config.image_group).mean(1)
    half = dim // 2
    audio = torch.cat([_sincos(audio_x, half), _sincos(audio_y, dim - half)], dim=1)
    image = torch.cat([_sincos(image_x, half), _sincos(image_y, dim - half)], dim=1)
    with torch.no_grad():
        for name, value in (("audio_position_embedding", audio), ("decoder_audio_position_embedding", audio),
                            ("image_position_embedding", image), ("decoder_image_position_embedding", image)):
            getattr(model, name).copy_(value.unsqueeze(0))


def count_parameters_for(config: MaskedAVTransformerConfig) -> int:
    """Parameter count of a model with ``config`` without allocating its weights."""
    with torch.device("meta"):
        return MaskedAVTransformer(config).num_parameters()

