"""SpecVQGAN's vocoder: the MelGAN generator of descriptinc/melgan-neurips.

Layout (indices of `self.model`, which fix the state-dict key names), for ratios (8, 8, 2, 2),
n_residual_layers R:
  0 ReflectionPad1d(3), 1 WN Conv1d(n_mels -> 16*ngf, k7),
  per ratio r: LeakyReLU(0.2), WN ConvTranspose1d(k=2r, stride r), R residual blocks
  (dilations 1, 3, 9, ...; each `block` = LReLU, ReflectionPad(d), WN conv k3 dil d, LReLU,
  WN conv k1; plus a WN 1x1 `shortcut`), then LeakyReLU, ReflectionPad1d(3), WN Conv1d(ngf -> 1, k7),
  Tanh.
Input: SpecVQGAN's normalised mel [B, 80, T] in [0, 1]; output [B, 1, T * 256] in [-1, 1] at
22050 Hz. Checkpoints (`best_netG.pt`) store weight norm as old `torch.nn.utils.weight_norm`
keys (`model.1.weight_g`, `model.1.weight_v`); `legacy_weight_norm_to_parametrizations` renames
them for torch's current `parametrizations.weight_norm` (`parametrizations.weight.original0/1`).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import weight_norm

SPECVQGAN_RATIOS = (8, 8, 2, 2)


def _wn_conv1d(*args, **kwargs) -> nn.Module:
    return weight_norm(nn.Conv1d(*args, **kwargs))


def _wn_conv_transpose1d(*args, **kwargs) -> nn.Module:
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


class MelGANResidualBlock(nn.Module):
    """Dilated residual block: shortcut(x) + block(x), channels unchanged."""

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ReflectionPad1d(dilation),
            _wn_conv1d(channels, channels, kernel_size=3, dilation=dilation),
            nn.LeakyReLU(0.2),
            _wn_conv1d(channels, channels, kernel_size=1),
        )
        self.shortcut = _wn_conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class MelGANGenerator(nn.Module):
    """MelGAN generator: mel [B, n_mels, T] -> waveform [B, 1, T * prod(ratios)] in [-1, 1].

    Args:
        n_mels: input mel bins (SpecVQGAN: 80).
        ngf: base width (SpecVQGAN: 32); the first conv has ngf * 2**len(ratios) channels.
        n_residual_layers: residual blocks per upsampling stage (SpecVQGAN: 3).
        ratios: upsampling factors (SpecVQGAN: 8, 8, 2, 2 -> hop 256).
    """

    def __init__(self, n_mels: int = 80, ngf: int = 32, n_residual_layers: int = 3, ratios=SPECVQGAN_RATIOS):
        super().__init__()
        self.n_mels, self.ngf, self.n_residual_layers, self.ratios = n_mels, ngf, n_residual_layers, tuple(ratios)
        self.hop_samples = int(math.prod(self.ratios))
        mult = 2 ** len(self.ratios)
        layers: list[nn.Module] = [nn.ReflectionPad1d(3), _wn_conv1d(n_mels, mult * ngf, kernel_size=7, padding=0)]
        for r in self.ratios:
            layers += [
                nn.LeakyReLU(0.2),
                _wn_conv_transpose1d(
                    mult * ngf, mult * ngf // 2, kernel_size=2 * r, stride=r, padding=r // 2 + r % 2, output_padding=r % 2
                ),
            ]
            layers += [MelGANResidualBlock(mult * ngf // 2, dilation=3**j) for j in range(n_residual_layers)]
            mult //= 2
        layers += [nn.LeakyReLU(0.2), nn.ReflectionPad1d(3), _wn_conv1d(ngf, 1, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model(mel)


_LEGACY_SUFFIX = re.compile(r"^(.*)\.weight_([gv])$")


def legacy_weight_norm_to_parametrizations(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old weight-norm keys (`X.weight_g`, `X.weight_v`) to `X.parametrizations.weight.original0/1`."""
    renamed = {}
    for key, tensor in state_dict.items():
        match = _LEGACY_SUFFIX.match(key)
        if match:
            key = f"{match.group(1)}.parametrizations.weight.original{0 if match.group(2) == 'g' else 1}"
        renamed[key] = tensor
    return renamed


def melgan_hparams_from_state_dict(state_dict: dict[str, torch.Tensor], source: str = "MelGAN checkpoint") -> dict:
    """n_mels, ngf, n_residual_layers and ratios of a MelGAN generator state dict (either weight-norm naming)."""
    sd = legacy_weight_norm_to_parametrizations(state_dict)

    def weight_v(index: int) -> torch.Tensor | None:
        return sd.get(f"model.{index}.parametrizations.weight.original1")

    first = weight_v(1)
    if first is None:
        raise ValueError(f"{source}: missing key 'model.1.weight_v' (expected a SpecVQGAN/MelGAN generator state dict)")
    n_mels, first_width = int(first.shape[1]), int(first.shape[0])
    res_indices = {int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.block\.", k))}
    ratios, index, n_residual_layers = [], 3, None
    while weight_v(index) is not None and weight_v(index).dim() == 3 and f"model.{index}.bias" in sd:
        kernel = int(weight_v(index).shape[-1])
        ratios.append(kernel // 2)
        count = 0
        while index + 1 + count in res_indices:
            count += 1
        if n_residual_layers is None:
            n_residual_layers = count
        elif count != n_residual_layers:
            raise ValueError(f"{source}: upsampling stages have different numbers of residual blocks")
        index += 2 + count
        if weight_v(index) is None:  # the last stage is followed by LReLU, pad, conv: index+2
            break
    if not ratios:
        raise ValueError(f"{source}: missing key 'model.3.weight_v' (the first upsampling layer)")
    mult = 2 ** len(ratios)
    if first_width % mult:
        raise ValueError(f"{source}: key 'model.1.weight_v' has {first_width} channels, expected a multiple of {mult}")
    return {"n_mels": n_mels, "ngf": first_width // mult, "n_residual_layers": n_residual_layers or 0, "ratios": tuple(ratios)}


def melgan_from_state_dict(state_dict: dict[str, torch.Tensor], source: str = "MelGAN checkpoint") -> MelGANGenerator:
    """Build a `MelGANGenerator` with the hyper-parameters the state dict implies and load it (strict)."""
    hparams = melgan_hparams_from_state_dict(state_dict, source)
    model = MelGANGenerator(**hparams)
    sd = legacy_weight_norm_to_parametrizations(state_dict)
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in sd:
            old = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
            raise ValueError(f"{source}: missing key {old!r} (shape {tuple(tensor.shape)} expected)")
        if tuple(sd[key].shape) != tuple(tensor.shape):
            raise ValueError(f"{source}: key {key!r} has shape {tuple(sd[key].shape)}, expected {tuple(tensor.shape)}")
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise ValueError(f"{source}: unexpected key(s) {', '.join(repr(k) for k in extra[:5])} for a MelGAN generator")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()
