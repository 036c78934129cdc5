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
