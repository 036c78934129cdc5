"""Input preparation for the pretrained encoders, in torch: CLIP image preprocessing and audio windows."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_images(images: torch.Tensor, what: str = "image") -> torch.Tensor:
    """IMAGE [B, H, W, C] float in 0..1 -> [B, H, W, 3] float32 (grey repeated, alpha dropped)."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what}: expected an image tensor [batch, height, width, channels], got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"{what}: expected an image tensor [batch, height, width, channels], got shape {tuple(images.shape)}")
    batch, height, width, channels = images.shape
    if batch == 0 or height == 0 or width == 0:
        raise ValueError(f"{what}: the image batch is empty (shape {tuple(images.shape)})")
    if channels not in (1, 3, 4):
        raise ValueError(f"{what}: expected 1, 3 or 4 channels in the last axis, got {channels} (shape {tuple(images.shape)})")
    images = images.detach().to(torch.float32)
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{what}: the image holds NaN or infinite values")
    if channels == 1:
        images = images.expand(-1, -1, -1, 3)
    elif channels == 4:
        images = images[..., :3]
    return images


def clip_pixel_values(images: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """CLIP's preprocessing in torch: [B, H, W, 3] in 0..1 -> pixel values [B, 3, size, size].

    Resizes the shortest side to `size` (bicubic, antialiased, as CLIPImageProcessor does with PIL),
    crops the centre square, and normalises with `mean` / `std` per channel.
    """
    x = images.permute(0, 3, 1, 2)
    height, width = x.shape[-2:]
    # the long side as transformers computes it: int(size * long / short), truncated
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top:top + size, left:left + size].clamp(0.0, 1.0)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def window_starts(n_samples: int, window_samples: int) -> list[int]:
    """Start samples of the windows that cover a clip of `n_samples`.

    A clip no longer than one window is one window at 0 (the encoder's feature extractor pads it).
    A longer clip is cut into ceil(n / window) full windows: back to back from the start, the last
    one aligned to the clip's end (it overlaps its neighbour instead of being padded with silence).
    """
    if n_samples <= window_samples:
        return [0]
    count = math.ceil(n_samples / window_samples)
    return [i * window_samples for i in range(count - 1)] + [n_samples - window_samples]


def refuse_silent_rows(mono: torch.Tensor, what: str = "audio", threshold: float = 1e-8) -> None:
    """Raises when any clip of a [B, T] batch is silent (every |sample| below `threshold`)."""
    silent = (mono.abs() < threshold).all(dim=-1)
    if bool(silent.any()):
        rows = [int(i) for i in torch.nonzero(silent).flatten()]
        which = "the clip is" if mono.shape[0] == 1 else f"clip(s) {rows} of the batch are"
        raise ValueError(f"{what}: {which} silent (every |sample| < {threshold:g}); expected some sound")
