"""Tiny random audiocraft EnCodec compression packages in the exact exported layout
(``compression_state_dict.bin``: ``{'best_state', 'xp.cfg', 'version', 'exported'}``), and an
independent re-implementation of audiocraft's decode equations to check ours against.

Module and key names follow audiocraft (``modules/seanet.py`` SEANetEncoder/SEANetDecoder,
``modules/conv.py`` StreamableConv1d -> ``conv.conv`` / StreamableConvTranspose1d -> ``convtr.convtr``
with torch's old ``weight_norm`` (``weight_g``, ``weight_v``), ``modules/lstm.py`` StreamableLSTM,
``quantization/core_vq.py`` ``vq.layers.<q>._codebook.{inited,cluster_size,embed,embed_avg}``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The AudioGen compression model's settings (audiocraft config/model/encodec/default.yaml + AudioGen's
# 16 kHz, 4 x 2048 overrides), with tiny widths.
CONFIG_YAML = """\
compression_model: encodec
sample_rate: 16000
channels: 1
device: cpu
dora:
  dir: /checkpoint/${{oc.env:USER}}/experiments
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${{sample_rate}}
  channels: ${{channels}}
  causal: false
  renormalize: false
seanet:
  dimension: {dimension}
  channels: ${{channels}}
  causal: ${{encodec.causal}}
  n_filters: {n_filters}
  n_residual_layers: 1
  ratios:
  - 8
  - 5
  - 4
  - 2
  activation: ELU
  activation_params:
    alpha: 1.0
  norm: weight_norm
  norm_params: {{}}
  kernel_size: 7
  residual_kernel_size: 3
  last_kernel_size: 7
  dilation_base: 2
  pad_mode: constant
  true_skip: true
  compress: 2
  lstm: 2
  disable_norm_outer_blocks: 0
  decoder:
    trim_right_ratio: 1.0
    final_activation: null
    final_activation_params: null
  encoder: {{}}
rvq:
  n_q: {n_q}
  q_dropout: false
  bins: {bins}
  decay: 0.99
  kmeans_init: true
  kmeans_iters: 50
  threshold_ema_dead_code: 2
"""
RATIOS = [8, 5, 4, 2]


def _conv(state, prefix, out_ch, in_ch, k, g, transpose=False):
    shape = (in_ch, out_ch, k) if transpose else (out_ch, in_ch, k)
    v = torch.randn(shape, generator=g) / math.sqrt(in_ch * k)
    state[prefix + "bias"] = torch.randn(out_ch, generator=g) * 0.05
    state[prefix + "weight_g"] = v.flatten(1).norm(dim=1).reshape(-1, 1, 1) * (0.5 + torch.rand(shape[0], 1, 1, generator=g))
    state[prefix + "weight_v"] = v


def _lstm(state, prefix, dim, layers, g):
    for layer in range(layers):
        for kind in ("ih", "hh"):
            state[f"{prefix}weight_{kind}_l{layer}"] = torch.randn(4 * dim, dim, generator=g) / math.sqrt(dim)
            state[f"{prefix}bias_{kind}_l{layer}"] = torch.randn(4 * dim, generator=g) * 0.05


def _resblock(state, prefix, dim, g):
    _conv(state, prefix + "block.1.conv.conv.", dim // 2, dim, 3, g)
    _conv(state, prefix + "block.3.conv.conv.", dim, dim // 2, 1, g)


def audiocraft_state(n_filters=2, dimension=8, n_q=4, bins=2048, seed=0) -> dict:
    """best_state of a SEANet EnCodec (1 residual layer, 2 LSTM layers, true skips, weight norm)."""
    g = torch.Generator().manual_seed(seed)
    state: dict = {}
    # encoder: conv, per reversed ratio [resblock, ELU, down conv], lstm, ELU, conv
    i, mult = 0, 1
    _conv(state, f"encoder.model.{i}.conv.conv.", n_filters, 1, 7, g)
    i += 1
    for ratio in reversed(RATIOS):
        _resblock(state, f"encoder.model.{i}.", mult * n_filters, g)
        i += 2  # the block, then the ELU
        _conv(state, f"encoder.model.{i}.conv.conv.", mult * n_filters * 2, mult * n_filters, ratio * 2, g)
        i += 1
        mult *= 2
    _lstm(state, f"encoder.model.{i}.lstm.", mult * n_filters, 2, g)
    i += 2
    _conv(state, f"encoder.model.{i}.conv.conv.", dimension, mult * n_filters, 7, g)
    # decoder: conv, lstm, per ratio [ELU, up convtr, resblock], ELU, conv
    mult = 2 ** len(RATIOS)
    _conv(state, "decoder.model.0.conv.conv.", mult * n_filters, dimension, 7, g)
    _lstm(state, "decoder.model.1.lstm.", mult * n_filters, 2, g)
    i = 2
    for ratio in RATIOS:
        _conv(state, f"decoder.model.{i + 1}.convtr.convtr.", mult * n_filters // 2, mult * n_filters, ratio * 2, g, transpose=True)
        _resblock(state, f"decoder.model.{i + 2}.", mult * n_filters // 2, g)
        i += 3
        mult //= 2
    _conv(state, f"decoder.model.{i + 1}.conv.conv.", 1, n_filters, 7, g)
    for q in range(n_q):
        embed = torch.randn(bins, dimension, generator=g)
        prefix = f"quantizer.vq.layers.{q}._codebook."
        state[prefix + "inited"] = torch.tensor([1.0])
        state[prefix + "cluster_size"] = torch.rand(bins, generator=g)
        state[prefix + "embed"] = embed
        state[prefix + "embed_avg"] = embed.clone()
    return state


def write_compression_package(path, n_filters=2, dimension=8, n_q=4, bins=2048, seed=0, **package_overrides) -> dict:
    """Write ``path`` as audiocraft's export_encodec writes it; returns the best_state."""
    state = audiocraft_state(n_filters, dimension, n_q, bins, seed)
    package = {"best_state": state,
               "xp.cfg": CONFIG_YAML.format(dimension=dimension, n_filters=n_filters, n_q=n_q, bins=bins),
               "version": "1.4.0a2", "exported": True, **package_overrides}
    torch.save(package, path)
    return state


# ------------------------------------------------------------------------------------------------
# audiocraft's decode, written out from its equations (EncodecModel.decode: quantizer.decode -> SEANetDecoder)
# ------------------------------------------------------------------------------------------------
def _weight(state, prefix):
    v, g = state[prefix + "weight_v"].double(), state[prefix + "weight_g"].double()
    return g * v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1)


def _ref_conv(x, state, prefix, stride=1, dilation=1):
    w = _weight(state, prefix)
    k = (w.shape[-1] - 1) * dilation + 1
    total = k - stride
    length = x.shape[-1]
    n_frames = (length - k + total) / stride + 1
    extra = (math.ceil(n_frames) - 1) * stride + (k - total) - length
    right = total // 2
    x = F.pad(x, (total - right, right + extra))
    return F.conv1d(x, w, state[prefix + "bias"].double(), stride=stride, dilation=dilation)


def _ref_convtr(x, state, prefix, stride):
    w = _weight(state, prefix)
    y = F.conv_transpose1d(x, w, state[prefix + "bias"].double(), stride=stride)
    total = w.shape[-1] - stride
    right = total // 2
    return y[..., total - right: y.shape[-1] - right]


def _ref_lstm(x, state, prefix, layers):
    inp = x.permute(2, 0, 1)  # [T, B, C]
    out = inp
    for layer in range(layers):
        w_ih, w_hh = state[f"{prefix}weight_ih_l{layer}"].double(), state[f"{prefix}weight_hh_l{layer}"].double()
        b = state[f"{prefix}bias_ih_l{layer}"].double() + state[f"{prefix}bias_hh_l{layer}"].double()
        h = torch.zeros(out.shape[1], w_hh.shape[1], dtype=torch.float64)
        c = torch.zeros_like(h)
        steps = []
        for t in range(out.shape[0]):
            i, f, gg, o = (out[t] @ w_ih.T + h @ w_hh.T + b).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
            steps.append(h)
        out = torch.stack(steps)
    return (out + inp).permute(1, 2, 0)  # StreamableLSTM skip


def reference_decode(state, codes: torch.Tensor) -> torch.Tensor:
    """codes [B, K, N] -> waveform [B, 1, N * 320], float64."""
    z = sum(state[f"quantizer.vq.layers.{q}._codebook.embed"].double()[codes[:, q]] for q in range(codes.shape[1]))
    x = z.transpose(1, 2)  # [B, D, N]
    x = _ref_conv(x, state, "decoder.model.0.conv.conv.")
    x = _ref_lstm(x, state, "decoder.model.1.lstm.", 2)
    i = 2
    for ratio in RATIOS:
        x = _ref_convtr(F.elu(x), state, f"decoder.model.{i + 1}.convtr.convtr.", ratio)
        r = _ref_conv(F.elu(x), state, f"decoder.model.{i + 2}.block.1.conv.conv.")
        r = _ref_conv(F.elu(r), state, f"decoder.model.{i + 2}.block.3.conv.conv.")
        x = x + r
        i += 3
    return _ref_conv(F.elu(x), state, f"decoder.model.{i + 1}.conv.conv.")
