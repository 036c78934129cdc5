"""`VQTokenizer`: a diffusers `VQModel` used as a tokenizer of images or mel spectrograms.

Token grids are LongTensors [B, h, w] of codebook indices, row-major (h = image rows or mel
frequency bands, w = image columns or time). Model inputs are [B, C, H, W] in [-1, 1].

Input conventions (the choices are documented here because the conversion is ours):
  * images: host IMAGE [B, H, W, 3] in 0..1 -> x = 2 * image - 1, channels first (taming's
    ImageNet VQGAN was trained on images scaled to [-1, 1]).
  * mels: SpecVQGAN's normalised mel [B, 80, T] in [0, 1] -> x = 2 * mel - 1 as one channel
    [B, 1, 80, T], frequency bin 0 (lowest) in row 0, as SpecVQGAN's datasets feed its VQGAN
    (their `item['image'] = 2 * spec - 1`; the published log-mel is not flipped). The time axis is
    cropped (default, as SpecVQGAN crops 860 -> 848) or padded with silence (mel 0) to a multiple
    of the downsample factor; 80 x 848 gives 5 x 53 tokens with SpecVQGAN's 16x downsampling.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Modality = Literal["image", "audio"]


def image_to_model(image: torch.Tensor) -> torch.Tensor:
    """Host IMAGE [B, H, W, C] in 0..1 -> model input [B, C, H, W] in [-1, 1]."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"image: expected [B, H, W, C], got {tuple(image.shape)}")
    return image.to(torch.float32).clamp(0, 1).permute(0, 3, 1, 2).mul(2).sub(1).contiguous()


def image_from_model(x: torch.Tensor) -> torch.Tensor:
    """Model output [B, C, H, W] (nominally [-1, 1]) -> host IMAGE [B, H, W, C] in 0..1."""
    return x.add(1).div(2).clamp(0, 1).permute(0, 2, 3, 1).contiguous().to(torch.float32)


def fit_time_to_multiple(mel01: torch.Tensor, multiple: int, mode: Literal["crop", "pad"] = "crop") -> torch.Tensor:
    """Crop (from the end) or pad (with mel 0 = silence) the last axis of [B, n_mels, T] to a multiple of `multiple`.

    "crop" falls back to padding when the clip is shorter than one multiple.
    """
    frames = mel01.shape[-1]
    if frames % multiple == 0 and frames > 0:
        return mel01
    if mode == "crop" and frames >= multiple:
        return mel01[..., : frames - frames % multiple]
    if mode not in ("crop", "pad"):
        raise ValueError(f"time fit mode must be 'crop' or 'pad', got {mode!r}")
    target = max(multiple, -(-frames // multiple) * multiple)
    return F.pad(mel01, (0, target - frames), value=0.0)


def mel_to_model(mel01: torch.Tensor, multiple: int = 1, mode: Literal["crop", "pad"] = "crop") -> torch.Tensor:
    """Normalised mel [B, n_mels, T] in [0, 1] -> model input [B, 1, n_mels, T'] in [-1, 1] (T' a multiple of `multiple`)."""
    if mel01.dim() == 2:
        mel01 = mel01.unsqueeze(0)
    if mel01.dim() != 3:
        raise ValueError(f"mel: expected [B, n_mels, frames], got {tuple(mel01.shape)}")
    mel01 = fit_time_to_multiple(mel01.to(torch.float32).clamp(0, 1), multiple, mode)
    return mel01.mul(2).sub(1).unsqueeze(1).contiguous()


def mel_from_model(x: torch.Tensor) -> torch.Tensor:
    """Model output [B, 1, n_mels, T] -> normalised mel [B, n_mels, T] in [0, 1]."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"mel model output: expected [B, 1, n_mels, T], got {tuple(x.shape)}")
    return x[:, 0].add(1).div(2).clamp(0, 1).to(torch.float32)


class VQTokenizer:
    """Images or mels <-> token grids through a diffusers `VQModel`.

    Args:
        vq_model: a `diffusers.VQModel` (e.g. from `loaders.vq_checkpoints.load_vq_model`).
        modality: "image" (3-channel pictures) or "audio" (1-channel SpecVQGAN mels).
    """

    def __init__(self, vq_model, modality: Modality):
        if modality not in ("image", "audio"):
            raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")
        self.vq = vq_model
        self.modality = modality
        expected_channels = 3 if modality == "image" else 1
        if int(vq_model.config.in_channels) != expected_channels:
            raise ValueError(
                f"a {modality} tokenizer needs a VQ model with {expected_channels} input channel(s), "
                f"this one has {vq_model.config.in_channels}"
            )

    # -- facts -------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return int(self.vq.config.num_vq_embeddings)

    @property
    def embed_dim(self) -> int:
        return int(self.vq.config.vq_embed_dim or self.vq.config.latent_channels)

    @property
    def downsample_factor(self) -> int:
        """Pixels (or mel bins / frames) per token along each axis."""
        return 2 ** (len(self.vq.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.vq.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vq.parameters()).dtype

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) for a model input of height x width (each stride-2 level floors)."""
        f = self.downsample_factor
        return height // f, width // f

    # -- tokens <-> model space ------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Model input [B, C, H, W] in [-1, 1] -> token grid LongTensor [B, h, w] (on the input's device)."""
        if x.dim() != 4:
            raise ValueError(f"VQ encode: expected [B, C, H, W], got {tuple(x.shape)}")
        if x.shape[1] != int(self.vq.config.in_channels):
            raise ValueError(f"VQ encode: expected {self.vq.config.in_channels} channel(s), got {x.shape[1]}")
        f = self.downsample_factor
        if x.shape[2] < f or x.shape[3] < f:
            raise ValueError(f"VQ encode: input {x.shape[2]}x{x.shape[3]} is smaller than one token ({f}x{f})")
        latents = self.vq.encode(x.to(self.device, self.dtype)).latents
        _, _, (_, _, indices) = self.vq.quantize(latents)
        batch, _, h, w = latents.shape
        return indices.reshape(batch, h, w).to(device=x.device, dtype=torch.long)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Token grid [B, h, w] -> model output [B, C, H, W] (H = h * factor, W = w * factor)."""
        if indices.dim() != 3:
            raise ValueError(f"VQ decode: expected a token grid [B, h, w], got {tuple(indices.shape)}")
        indices = indices.to(self.device, torch.long)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"VQ decode: token ids must lie in 0..{self.codebook_size - 1}, "
                f"found {int(indices.min())}..{int(indices.max())}"
            )
        batch, h, w = indices.shape
        shape = (batch, h, w, self.embed_dim)
        if self.vq.config.lookup_from_codebook:
            return self.vq.decode(indices.reshape(-1), force_not_quantize=True, shape=shape).sample
        quantized = self.vq.quantize.get_codebook_entry(indices.reshape(-1), shape)
        return self.vq.decode(quantized, force_not_quantize=True).sample

    # -- images ------------------------------------------------------------------------------------
    def crop_image_to_multiple(self, image: torch.Tensor) -> torch.Tensor:
        """Centre-crop host IMAGE [B, H, W, C] so H and W are multiples of the downsample factor."""
        f = self.downsample_factor
        height, width = image.shape[1], image.shape[2]
        if height < f or width < f:
            raise ValueError(f"image {height}x{width} is smaller than one token ({f}x{f} pixels)")
        new_h, new_w = height - height % f, width - width % f
        top, left = (height - new_h) // 2, (width - new_w) // 2
        return image[:, top : top + new_h, left : left + new_w]

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Host IMAGE [B, H, W, 3] in 0..1 -> tokens [B, H//f, W//f] (centre-cropped to multiples of f)."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        return self.encode(image_to_model(self.crop_image_to_multiple(image)))

    def decode_image(self, indices: torch.Tensor) -> torch.Tensor:
        """Tokens [B, h, w] -> host IMAGE [B, h*f, w*f, 3] in 0..1."""
        return image_from_model(self.decode(indices).float().cpu())

    # -- mels --------------------------------------------------------------------------------------
    def mel_to_model(self, mel01: torch.Tensor, mode: Literal["crop", "pad"] = "crop") -> torch.Tensor:
        return mel_to_model(mel01, self.downsample_factor, mode)

    def encode_mel(self, mel01: torch.Tensor, mode: Literal["crop", "pad"] = "crop") -> torch.Tensor:
        """Normalised mel [B, 80, T] in [0, 1] -> tokens [B, 80//f, T'//f] (T' = T cropped/padded to a multiple of f)."""
        return self.encode(self.mel_to_model(mel01, mode))

    def decode_mel(self, indices: torch.Tensor, window_columns: int | None = None) -> torch.Tensor:
        """Tokens [B, h, w] -> normalised mel [B, h*f, w*f] in [0, 1].

        With ``window_columns`` (the tokenizer's training clip, in token columns) a longer grid is decoded
        window by window, as VATT and Visual Echoes generate it: windows of that length, each after the
        first starting a quarter window before the previous one ends (``samplers.vatt.window_starts`` /
        ``default_overlap``; the last window ends at the grid's end), their mels crossfaded linearly over
        the overlaps. The decoder's group norms and attention span the whole grid it is given, so this is
        what it was trained on, and memory no longer grows with the length (a minute's grid at once took
        ~420 MB); a grid of one window decodes as before."""
        total = int(indices.shape[-1])
        if not window_columns or total <= window_columns:
            return mel_from_model(self.decode(indices).float().cpu())
        from ..samplers.vatt import default_overlap, window_starts

        window = int(window_columns)
        overlap = default_overlap(window)
        starts = window_starts(total, window, overlap)
        starts[-1] = total - window  # the last window whole too: it overlaps the one before it more
        f = self.downsample_factor
        ramp = torch.arange(overlap * f, dtype=torch.float32).add(0.5).div(overlap * f)
        mel = weight = None
        for w, start in enumerate(starts):
            piece = mel_from_model(self.decode(indices[..., start:start + window]).float().cpu())
            gain = torch.ones(window * f)
            if w > 0 and overlap:
                gain[:overlap * f] = ramp
            if w < len(starts) - 1 and overlap:
                gain[-overlap * f:] = torch.minimum(gain[-overlap * f:], ramp.flip(0))
            if mel is None:
                mel = torch.zeros(piece.shape[0], piece.shape[1], total * f)
                weight = torch.zeros(total * f)
            mel[..., start * f:(start + window) * f] += piece * gain
            weight[start * f:(start + window) * f] += gain
        return mel / weight
