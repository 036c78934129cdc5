"""The objects that travel on the pack's own sockets (plain data, no host imports)."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenGrid:
    """Codebook indices of one modality, as the tokenizer's spatial grid.

    `indices`: LongTensor [B, rows, cols]. Audio grids are (mel rows x time columns), image grids
    (height x width). `codebook_size` guards against feeding a grid into a model of another vocabulary.
    """

    indices: torch.Tensor
    modality: str  # "audio" | "image"
    codebook_size: int

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.indices.shape[-2:])

    def expect(self, modality: str, node: str) -> "TokenGrid":
        if self.modality != modality:
            raise ValueError(f"{node}: expected {modality} tokens, got {self.modality} tokens")
        return self


@dataclass(frozen=True)
class MelSpectrogram:
    """A SpecVQGAN-normalised mel spectrogram: `mel01` [B, n_mels, frames] in 0..1."""

    mel01: torch.Tensor
    sample_rate_hz: int
    hop_samples: int

    @property
    def duration_s(self) -> float:
        return self.mel01.shape[-1] * self.hop_samples / self.sample_rate_hz


EMBEDDING_FAMILIES = ("clip", "clap", "ast", "t5", "clip_text", "video_features")


@dataclass(frozen=True)
class Embedding:
    """Vectors in one encoder's space, with where they came from.

    `vectors`: float [B, D] (one pooled vector per row) or [B, T, D] (a sequence: video frames,
    text tokens, AST patches). `family` names the space ("clip", "clap", "ast", "t5", ...): CLIP
    image and CLIP text vectors share the "clip" space, CLAP audio and text the "clap" space.
    `model` names the weights (a folder or file name; "" when unknown), `modality` what was encoded
    ("image", "video", "audio", "text"; a mapper's output says e.g. "audio (mapped from image)").
    `weights` is a fingerprint of the encoder's weights (`encoders.pretrained.weights_fingerprint`; ""
    when unknown): the same weights give the same fingerprint whatever the folder or file is called.
    """

    vectors: torch.Tensor
    family: str
    model: str
    modality: str
    weights: str = ""

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def is_sequence(self) -> bool:
        return self.vectors.ndim == 3

    def describe(self) -> str:
        shape = "x".join(str(s) for s in self.vectors.shape)
        return f"a {self.family.upper()} {self.modality} embedding ({self.model or 'unknown model'}, {shape})"

    def expect(self, node: str, family: str, dim: int | None = None, model: str | None = None,
               sequence: bool | None = None, weights: str | None = None) -> "Embedding":
        """Raises a ValueError naming the node when this embedding is not of the expected space.
        When both sides know the weights' fingerprint, it decides (the names may differ: the same
        weights under another folder or file name are the same space); else `model` is checked when
        both sides know it."""
        wanted = f"a {family.upper()} embedding" + (f" of width {dim}" if dim else "") + (f" from '{model}'" if model else "")
        if self.family != family:
            raise ValueError(f"{node}: expected {wanted}, got {self.describe()}")
        if dim is not None and self.dim != dim:
            raise ValueError(f"{node}: expected {wanted}, got {self.describe()} (width {self.dim})")
        if weights and self.weights:
            if weights != self.weights:
                raise ValueError(f"{node}: expected {wanted} (weights {weights}), got {self.describe()} (weights "
                                 f"{self.weights}): embeddings of other weights live in another space (an fp8 or bf16 copy "
                                 f"of the same encoder counts as other weights: its rounded values move the embeddings; "
                                 f"use the encoder file these were made for, or train on this one)")
        elif model and self.model and model != self.model:
            raise ValueError(f"{node}: expected {wanted}, got {self.describe()}: embeddings of another model live in another space")
        if sequence is True and not self.is_sequence:
            raise ValueError(f"{node}: expected a sequence embedding [batch, tokens, width], got {self.describe()}")
        if sequence is False and self.is_sequence:
            raise ValueError(f"{node}: expected one pooled vector per row [batch, width], got {self.describe()}")
        if not bool(torch.isfinite(self.vectors).all()):
            raise ValueError(f"{node}: {self.describe()} holds NaN or infinite values")
        return self


def joined_embeddings(parts: list[Embedding]) -> Embedding:
    """Embeddings of consecutive batches (e.g. a video's frames encoded in chunks) as one: their rows in
    order, the first one's space."""
    if not parts:
        raise ValueError("no embeddings to join")
    first = parts[0]
    if len(parts) == 1:
        return first
    return Embedding(vectors=torch.cat([p.vectors for p in parts]), family=first.family, model=first.model,
                     modality=first.modality, weights=first.weights)
