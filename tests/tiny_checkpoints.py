"""Writers of tiny random checkpoints in the published layouts (used by the tests only).

* taming-transformers / SpecVQGAN VQGAN: a minimal re-statement of taming's
  `taming/modules/diffusionmodules/model.py` Encoder/Decoder and `VectorQuantizer2`, with the exact
  module names (`encoder.down.0.block.0.norm1`, `encoder.mid.attn_1.q`, `decoder.up.3.upsample.conv`,
  `quantize.embedding`, ...) and taming's forward numerics, saved as a Lightning `.ckpt`
  ({"state_dict": ..., "epoch": ..., "global_step": ..., "callbacks": {ModelCheckpoint: ...}}, with
  `loss.*` keys as taming's discriminator leaves them and Lightning's callback class pickled as the
  releases carry it) or as `.safetensors`.
* SpecVQGAN's MelGAN vocoder (`best_netG.pt`): descriptinc/melgan-neurips' Generator built with
  the old `torch.nn.utils.weight_norm`, so the keys are `model.1.weight_g` / `weight_v`.
* transformers `SpeechT5HifiGan` folders (save_pretrained of a tiny config).
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------
# taming-transformers reference (names and numerics as in taming/modules/diffusionmodules/model.py)


def Normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def nonlinearity(x):
    return x * torch.sigmoid(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class ResnetBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = Normalize(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x):
        h = self.conv1(nonlinearity(self.norm1(x)))
        h = self.conv2(nonlinearity(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)
        k = k.reshape(b, c, hh * ww)
        w = torch.softmax(torch.bmm(q, k) * (int(c) ** -0.5), dim=2)
        v = v.reshape(b, c, hh * ww)
        h = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class TamingEncoder(nn.Module):
    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        curr_res, in_ch_mult = resolution, (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](h)
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = self.down[i_level].downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(nonlinearity(self.norm_out(h)))


class TamingDecoder(nn.Module):
    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample(block_in)
                curr_res *= 2
            self.up.insert(0, up)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](h)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))


class VectorQuantizer2(nn.Module):
    def __init__(self, n_e, e_dim):
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

    def indices(self, z):
        z = z.permute(0, 2, 3, 1).contiguous()
        flat = z.view(-1, z.shape[-1])
        d = (flat ** 2).sum(1, keepdim=True) + (self.embedding.weight ** 2).sum(1) - 2 * flat @ self.embedding.weight.t()
        return torch.argmin(d, dim=1).view(z.shape[:3])

    def lookup(self, idx):
        return self.embedding(idx).permute(0, 3, 1, 2).contiguous()


class TamingVQGAN(nn.Module):
    """taming.models.vqgan.VQModel without the loss: encode -> quantize -> decode."""

    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution,
                 z_channels, embed_dim, n_embed):
        super().__init__()
        common = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                      resolution=resolution, z_channels=z_channels)
        self.encoder = TamingEncoder(in_channels=in_channels, **common)
        self.decoder = TamingDecoder(out_ch=out_ch, **common)
        self.quantize = VectorQuantizer2(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.ddconfig = dict(double_z=False, z_channels=z_channels, resolution=resolution, in_channels=in_channels,
                             out_ch=out_ch, ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                             attn_resolutions=list(attn_resolutions), dropout=0.0)
        self.embed_dim, self.n_embed = embed_dim, n_embed

    def encode_latent(self, x):
        return self.quant_conv(self.encoder(x))

    def encode_indices(self, x):
        return self.quantize.indices(self.encode_latent(x))

    def decode_indices(self, idx):
        return self.decoder(self.post_quant_conv(self.quantize.lookup(idx)))

    def forward(self, x):
        return self.decode_indices(self.encode_indices(x))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Give every parameter (norm affine params and codebook too) non-trivial random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("embedding.weight"):
                param.copy_(torch.randn(param.shape, generator=generator))
            elif "norm" in name.split(".")[-2] and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


def tiny_image_vqgan(seed: int = 0) -> TamingVQGAN:
    """taming's ImageNet f16 VQGAN shape family, tiny: 3 levels (f4), attention at the last level."""
    torch.manual_seed(seed)
    model = TamingVQGAN(ch=32, out_ch=3, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(4,),
                        in_channels=3, resolution=16, z_channels=32, embed_dim=8, n_embed=16)
    return _randomize(model, seed)


def tiny_spec_vqgan(seed: int = 0) -> TamingVQGAN:
    """SpecVQGAN's spectrogram VQGAN family (1 channel, 5 levels, 80x848 -> 5x53, attention at 53), tiny."""
    torch.manual_seed(seed)
    model = TamingVQGAN(ch=32, out_ch=1, ch_mult=(1, 1, 1, 1, 2), num_res_blocks=1, attn_resolutions=(53,),
                        in_channels=1, resolution=848, z_channels=32, embed_dim=8, n_embed=32)
    return _randomize(model, seed)


LIGHTNING_CALLBACK_MODULE = "pytorch_lightning.callbacks.model_checkpoint"


@contextlib.contextmanager
def lightning_model_checkpoint_class():
    """A class pickled as `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`, as Lightning
    1.0-1.2 pickle theirs (pickle stores a class by module and name, so the file is the same as the
    releases'). The fake modules are in `sys.modules` only while this is open: Lightning is not
    installed, so a reader that tried to import the class would fail."""
    modules = LIGHTNING_CALLBACK_MODULE.split(".")
    names = [".".join(modules[:i + 1]) for i in range(len(modules))]
    present = [name for name in names if name in sys.modules]
    if present:
        raise RuntimeError(f"{present[0]} is importable here; this writer fakes it and would shadow it")
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": LIGHTNING_CALLBACK_MODULE})
    fakes = {name: types.ModuleType(name) for name in names}
    for parent, child in zip(names, names[1:]):
        setattr(fakes[parent], child.rsplit(".", 1)[1], fakes[child])
    fakes[LIGHTNING_CALLBACK_MODULE].ModelCheckpoint = ModelCheckpoint
    sys.modules.update(fakes)
    try:
        yield ModelCheckpoint
    finally:
        for name in names:
            sys.modules.pop(name, None)


def _lightning_checkpoint(model: TamingVQGAN, callback_class=None) -> dict:
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    # what taming's VQLPIPSWithDiscriminator leaves in the Lightning state dict
    state_dict["loss.logvar"] = torch.zeros(())
    state_dict["loss.discriminator.main.0.weight"] = torch.randn(8, model.ddconfig["out_ch"], 4, 4)
    state_dict["loss.discriminator.main.0.bias"] = torch.zeros(8)
    state_dict["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1)
    checkpoint = {"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.0.8", "state_dict": state_dict,
                  "optimizer_states": [], "lr_schedulers": []}
    if callback_class is not None:  # Lightning 1.0-1.2: the callback's class is the key of its state
        checkpoint["callbacks"] = {callback_class: {
            "monitor": "val/rec_loss", "best_model_score": torch.tensor(0.125), "current_score": torch.tensor(0.25),
            "best_model_path": "logs/2020-11-09T13-31-51_faceshq_vqgan/checkpoints/epoch=000003.ckpt",
            "dirpath": "logs/2020-11-09T13-31-51_faceshq_vqgan/checkpoints"}}
    return checkpoint


def write_taming_ckpt(model: TamingVQGAN, path: str) -> str:
    """Lightning 1.0 `.ckpt` as taming-transformers and SpecVQGAN released them: {"state_dict": ...
    (with `loss.*` keys), "epoch": ..., "callbacks": {ModelCheckpoint (the class itself): {...}}}."""
    with lightning_model_checkpoint_class() as model_checkpoint:
        torch.save(_lightning_checkpoint(model, model_checkpoint), path)
    return path


def write_taming_safetensors(model: TamingVQGAN, path: str, *, with_loss_keys: bool = True) -> str:
    from safetensors.torch import save_file

    state_dict = _lightning_checkpoint(model)["state_dict"] if with_loss_keys else model.state_dict()
    save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    return path


def write_taming_yaml(model: TamingVQGAN, path: str, **overrides) -> str:
    """A taming-style project config: model.params.{embed_dim, n_embed, ddconfig}."""
    import yaml

    ddconfig = {**model.ddconfig, **overrides}
    config = {"model": {"target": "taming.models.vqgan.VQModel",
                        "params": {"embed_dim": model.embed_dim, "n_embed": model.n_embed, "ddconfig": ddconfig}}}
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return path


# ------------------------------------------------------------------------------------------
# SpecVQGAN MelGAN vocoder (descriptinc/melgan-neurips Generator, old weight_norm)


def _old_weight_norm(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nn.utils.weight_norm(module)


class MelGANResnetBlock(nn.Module):
    def __init__(self, dim, dilation=1):
        super().__init__()
        self.block = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ReflectionPad1d(dilation),
            _old_weight_norm(nn.Conv1d(dim, dim, kernel_size=3, dilation=dilation)),
            nn.LeakyReLU(0.2),
            _old_weight_norm(nn.Conv1d(dim, dim, kernel_size=1)),
        )
        self.shortcut = _old_weight_norm(nn.Conv1d(dim, dim, kernel_size=1))

    def forward(self, x):
        return self.shortcut(x) + self.block(x)


class ReferenceMelGANGenerator(nn.Module):
    def __init__(self, input_size=80, ngf=32, n_residual_layers=3, ratios=(8, 8, 2, 2)):
        super().__init__()
        mult = int(2 ** len(ratios))
        model = [nn.ReflectionPad1d(3), _old_weight_norm(nn.Conv1d(input_size, mult * ngf, kernel_size=7, padding=0))]
        for r in ratios:
            model += [nn.LeakyReLU(0.2),
                      _old_weight_norm(nn.ConvTranspose1d(mult * ngf, mult * ngf // 2, kernel_size=r * 2, stride=r,
                                                          padding=r // 2 + r % 2, output_padding=r % 2))]
            for j in range(n_residual_layers):
                model += [MelGANResnetBlock(mult * ngf // 2, dilation=3 ** j)]
            mult //= 2
        model += [nn.LeakyReLU(0.2), nn.ReflectionPad1d(3), _old_weight_norm(nn.Conv1d(ngf, 1, kernel_size=7, padding=0)),
                  nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


def tiny_melgan(seed: int = 0, ngf: int = 4, n_residual_layers: int = 2) -> ReferenceMelGANGenerator:
    torch.manual_seed(seed)
    return ReferenceMelGANGenerator(80, ngf, n_residual_layers).eval()


def write_melgan_checkpoint(model: ReferenceMelGANGenerator, path: str) -> str:
    """SpecVQGAN's `best_netG.pt`: the plain generator state dict (weight_g / weight_v keys)."""
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state_dict, path)
    else:
        torch.save(state_dict, path)
    return path


# ------------------------------------------------------------------------------------------
# transformers SpeechT5HifiGan


def write_speecht5_hifigan_folder(path: str, *, model_in_dim: int = 80, sampling_rate: int = 16000,
                                  normalize_before: bool = False, seed: int = 0, upsample_rates=(4, 4)) -> str:
    """A tiny `SpeechT5HifiGan` saved with save_pretrained (config.json model_type 'hifigan'); its hop is the
    product of `upsample_rates` (the published ones: 4, 4, 4, 4 = 256)."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(seed)
    config = SpeechT5HifiGanConfig(model_in_dim=model_in_dim, sampling_rate=sampling_rate, upsample_initial_channel=16,
                                   upsample_rates=list(upsample_rates), upsample_kernel_sizes=[2 * r for r in upsample_rates],
                                   resblock_kernel_sizes=[3],
                                   resblock_dilation_sizes=[[1, 3]], normalize_before=normalize_before)
    model = SpeechT5HifiGan(config).eval()
    if normalize_before:
        with torch.no_grad():
            model.mean.copy_(torch.randn(model_in_dim) * 0.5 - 2)
            model.scale.copy_(torch.rand(model_in_dim) + 0.5)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    return path
