"""audiocraft's EnCodec compression checkpoint (``compression_state_dict.bin``) -> a CodecTokenizer.

AudioGen (facebook/audiogen-medium) publishes its 16 kHz EnCodec, the codec the official VATT
decoders generate tokens for, as audiocraft's exported compression package: a ``torch.save`` of

* ``'xp.cfg'``: the training config as a YAML string (``OmegaConf.to_yaml``, interpolations such as
  ``${sample_rate}`` left unresolved), read here with ``yaml.safe_load``;
* ``'best_state'``: the ``CompressionModel`` state dict;
* ``'version'`` (string), ``'exported'`` (True).

It is read with ``torch.load(weights_only=True)``; the only globals allowed are the default
tensor/container ones (``EXTRA_SAFE_GLOBALS`` is empty), so nothing is ever unpickled as code. A
package that only names a pretrained model (``'pretrained'``) is refused: it holds no weights.

The SEANet encoder/decoder and the residual VQ of audiocraft are the same network as transformers'
``EncodecModel`` (both ported from the EnCodec paper's code); the config and keys map like this
(read from audiocraft ``models/builders.py``, ``modules/seanet.py``, ``modules/conv.py``,
``modules/lstm.py``, ``quantization/core_vq.py``):

=============================================================  =============================================
audiocraft ``best_state`` key                                  transformers ``EncodecModel`` key
=============================================================  =============================================
``{encoder,decoder}.model.{i}.conv.conv.{bias,weight_g,weight_v}``  ``{encoder,decoder}.layers.{i}.conv.{bias,``
                                                               ``parametrizations.weight.original0,original1}``
``decoder.model.{i}.convtr.convtr.*`` (upsampling)             ``decoder.layers.{i}.conv.*``
``{encoder,decoder}.model.{i}.block.{1,3}.conv.conv.*``        ``{encoder,decoder}.layers.{i}.block.{1,3}.conv.*``
``{encoder,decoder}.model.{i}.shortcut.conv.conv.*`` (if       ``{encoder,decoder}.layers.{i}.shortcut.conv.*``
``true_skip`` is false)
``{encoder,decoder}.model.{i}.lstm.*``                         ``{encoder,decoder}.layers.{i}.lstm.*``
``quantizer.vq.layers.{q}._codebook.{inited,cluster_size,``    ``quantizer.layers.{q}.codebook.*``
``embed,embed_avg}``
=============================================================  =============================================

config: ``sample_rate`` -> ``sampling_rate``, ``channels`` -> ``audio_channels``, ``seanet.dimension``
-> ``hidden_size`` (= ``codebook_dim``), ``n_filters`` -> ``num_filters``, ``ratios`` ->
``upsampling_ratios``, ``n_residual_layers``, ``kernel_size``, ``last_kernel_size``,
``residual_kernel_size``, ``dilation_base`` -> ``dilation_growth_rate``, ``causal`` ->
``use_causal_conv``, ``pad_mode``, ``compress``, ``lstm`` -> ``num_lstm_layers``, ``norm`` ->
``norm_type``, ``true_skip`` -> not ``use_conv_shortcut``, ``decoder.trim_right_ratio``;
``rvq.bins`` -> ``codebook_size``, ``rvq.n_q`` -> the quantizer count (through
``target_bandwidths``), ``encodec.renormalize`` -> ``normalize``. Settings transformers' EnCodec
cannot express (an activation other than ELU(1), a final activation, ``disable_norm_outer_blocks``,
norms other than weight_norm/none, a ``project_out`` in the VQ) are refused by name.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Dict

import torch

__all__ = ["COMPRESSION_FILE", "EXTRA_SAFE_GLOBALS", "is_audiocraft_codec", "read_compression_package",
           "audiocraft_to_transformers", "load_audiocraft_codec"]

COMPRESSION_FILE = "compression_state_dict.bin"
AUDIOCRAFT_EXTENSIONS = (".bin", ".th", ".pt", ".pth")
# Globals beyond torch's weights_only defaults that an exported package may reference. None are needed:
# the config is a YAML string and the state a dict of tensors.
EXTRA_SAFE_GLOBALS: list = []


def is_audiocraft_codec(path: str | os.PathLike) -> bool:
    """A compression package file, or a folder holding ``compression_state_dict.bin`` (and no config.json)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return (os.path.isfile(os.path.join(path, COMPRESSION_FILE))
                and not os.path.isfile(os.path.join(path, "config.json")))
    return os.path.isfile(path) and path.lower().endswith(AUDIOCRAFT_EXTENSIONS)


def read_compression_package(path: str | os.PathLike) -> tuple[dict, Dict[str, torch.Tensor]]:
    """(config dict, best_state) of an exported audiocraft compression package. ValueError names the file."""
    import pickle

    import yaml

    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with torch.serialization.safe_globals(EXTRA_SAFE_GLOBALS):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("\n")[0]
        raise ValueError(f"{name}: refused to unpickle ({reason}); an audiocraft compression package holds only "
                         f"tensors and a YAML config") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{name}: not a readable torch checkpoint ({str(error).splitlines()[0]}); truncated or not "
                         f"an audiocraft {COMPRESSION_FILE}?") from None
    if not isinstance(package, dict):
        raise ValueError(f"{name}: expected audiocraft's compression package (a dict), got {type(package).__name__}")
    if "pretrained" in package and "best_state" not in package:
        raise ValueError(f"{name}: this package only names the pretrained model {package['pretrained']!r} and holds no "
                         f"weights; download that model's own {COMPRESSION_FILE}")
    if "best_state" not in package or "xp.cfg" not in package:
        raise ValueError(f"{name}: expected keys 'best_state' and 'xp.cfg' of audiocraft's compression package, found "
                         f"{sorted(map(str, package))}")
    cfg = package["xp.cfg"]
    if isinstance(cfg, str):
        try:
            cfg = yaml.safe_load(cfg)
        except yaml.YAMLError as error:
            raise ValueError(f"{name}: 'xp.cfg' is not readable YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{name}: 'xp.cfg' should be the YAML config (a mapping), got {type(cfg).__name__}")
    state = package["best_state"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint's best_state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{name}: 'best_state' should be a dict of tensors")
    return cfg, state


_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def _lookup(cfg: dict, dotted: str, name: str, depth: int = 0) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"{name}: 'xp.cfg' has no '{dotted}' (needed to build the EnCodec)")
        node = node[part]
    return _resolve(cfg, node, name, depth)


def _resolve(cfg: dict, value: Any, name: str, depth: int = 0) -> Any:
    if isinstance(value, str) and (m := _INTERPOLATION.match(value.strip())):
        if depth > 16:
            raise ValueError(f"{name}: 'xp.cfg' interpolation '{value}' does not resolve")
        return _lookup(cfg, m.group(1), name, depth + 1)
    if isinstance(value, dict):
        return {k: _resolve(cfg, v, name, depth) for k, v in value.items()}
    return value


def _encodec_settings(cfg: dict, name: str) -> dict:
    """Resolved seanet (decoder overrides applied), rvq and encodec sections, as audiocraft's builders read them."""
    if _lookup(cfg, "compression_model", name) != "encodec":
        raise ValueError(f"{name}: compression_model is {cfg.get('compression_model')!r}; only 'encodec' is supported")
    encodec = _lookup(cfg, "encodec", name)
    if encodec.get("autoencoder") != "seanet" or encodec.get("quantizer") != "rvq":
        raise ValueError(f"{name}: expected a SEANet autoencoder with an RVQ quantizer, got "
                         f"{encodec.get('autoencoder')!r} / {encodec.get('quantizer')!r}")
    seanet = dict(_lookup(cfg, "seanet", name))
    encoder_overrides = seanet.pop("encoder", None) or {}
    decoder_overrides = seanet.pop("decoder", None) or {}
    encoder = {**seanet, **encoder_overrides}
    decoder = {**seanet, **decoder_overrides}
    for key in ("dimension", "n_filters", "n_residual_layers", "ratios", "kernel_size", "last_kernel_size",
                "residual_kernel_size", "dilation_base", "causal", "pad_mode", "true_skip", "compress", "lstm", "norm"):
        if encoder.get(key) != decoder.get(key):
            raise ValueError(f"{name}: seanet.{key} differs between encoder ({encoder.get(key)!r}) and decoder "
                             f"({decoder.get(key)!r}); transformers' EnCodec shares it")
    return {"encodec": encodec, "seanet": decoder, "rvq": _lookup(cfg, "rvq", name)}


def audiocraft_to_transformers(cfg: dict, state: Dict[str, torch.Tensor], name: str = "checkpoint"):
    """(transformers EncodecConfig, its state dict) from an audiocraft config + ``best_state``."""
    from transformers import EncodecConfig

    if not any(k.startswith("decoder.model.") for k in state):
        raise ValueError(f"{name}: holds no EnCodec weights ('decoder.model.*'); an audiocraft language model's "
                         f"state_dict.bin? The codec is the {COMPRESSION_FILE} beside it")
    settings = _encodec_settings(cfg, name)
    seanet, rvq, encodec = settings["seanet"], settings["rvq"], settings["encodec"]
    activation = seanet.get("activation", "ELU")
    alpha = (seanet.get("activation_params") or {}).get("alpha", 1.0)
    if activation != "ELU" or float(alpha) != 1.0:
        raise ValueError(f"{name}: seanet activation {activation}({alpha}) is not supported; expected ELU(alpha=1)")
    if seanet.get("final_activation") not in (None, "null"):
        raise ValueError(f"{name}: seanet.decoder.final_activation {seanet['final_activation']!r} is not supported")
    if int(seanet.get("disable_norm_outer_blocks") or 0) != 0:
        raise ValueError(f"{name}: seanet.disable_norm_outer_blocks must be 0 here, got {seanet['disable_norm_outer_blocks']}")
    norm = seanet.get("norm", "none")
    if norm not in ("weight_norm", "none"):
        raise ValueError(f"{name}: seanet.norm {norm!r} is not supported; expected 'weight_norm' or 'none'")
    if any(".project_out." in k or ".project_in." in k for k in state):
        raise ValueError(f"{name}: the RVQ has input/output projections (codebook_dim != dimension); not supported")
    sample_rate = int(encodec["sample_rate"])
    ratios = [int(r) for r in seanet["ratios"]]
    n_q = int(rvq["n_q"])
    found_q = len({m.group(1) for k in state if (m := re.match(r"quantizer\.vq\.layers\.(\d+)\._codebook\.embed$", k))})
    if found_q != n_q:
        raise ValueError(f"{name}: rvq.n_q is {n_q} but 'best_state' holds {found_q} codebooks "
                         f"('quantizer.vq.layers.<i>._codebook.embed')")
    frame_rate = math.ceil(sample_rate / math.prod(ratios))
    # transformers: num_quantizers = int(1000 * target_bandwidths[-1] // (frame_rate * ceil(log2(bins))))
    bits = frame_rate * math.ceil(math.log2(int(rvq["bins"])))
    bandwidth = round(n_q * bits / 1000, 6)  # AudioGen: 4 x 50 x 11 bits = 2.2 kbps
    if int(1000 * bandwidth // bits) != n_q:
        bandwidth = (n_q + 0.5) * bits / 1000
    config = EncodecConfig(
        sampling_rate=sample_rate, audio_channels=int(encodec["channels"]), normalize=bool(encodec.get("renormalize", False)),
        chunk_length_s=None, overlap=None, hidden_size=int(seanet["dimension"]), codebook_dim=int(seanet["dimension"]),
        num_filters=int(seanet["n_filters"]), num_residual_layers=int(seanet["n_residual_layers"]), upsampling_ratios=ratios,
        norm_type="weight_norm",
        kernel_size=int(seanet["kernel_size"]), last_kernel_size=int(seanet["last_kernel_size"]),
        residual_kernel_size=int(seanet["residual_kernel_size"]), dilation_growth_rate=int(seanet["dilation_base"]),
        use_causal_conv=bool(seanet["causal"]), pad_mode=str(seanet["pad_mode"]), compress=int(seanet["compress"]),
        num_lstm_layers=int(seanet["lstm"]), trim_right_ratio=float(seanet.get("trim_right_ratio", 1.0)),
        codebook_size=int(rvq["bins"]), use_conv_shortcut=not bool(seanet["true_skip"]), target_bandwidths=[bandwidth])
    ours: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        new = re.sub(r"^(encoder|decoder)\.model\.", r"\1.layers.", new)
        new = new.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
        new = re.sub(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook.", new)
        new = new.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1")
        ours[new] = value
    if norm == "none":  # plain convolutions: transformers always weight-normalises; express w as g * v / |v| with g = |w|
        for key in [k for k in ours if k.endswith(".conv.weight")]:
            weight = ours.pop(key)
            base = key[: -len("weight")]
            ours[base + "parametrizations.weight.original0"] = weight.flatten(1).norm(dim=1).reshape(-1, *[1] * (weight.dim() - 1))
            ours[base + "parametrizations.weight.original1"] = weight
    return config, ours


def load_audiocraft_codec(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """An audiocraft compression package (the file, or a folder holding ``compression_state_dict.bin``)
    -> CodecTokenizer (encode and decode). ValueError / FileNotFoundError name the file."""
    from transformers import EncodecModel

    from ..audio.codec_tokenizer import CodecTokenizer

    path = os.fspath(path)
    file = os.path.join(path, COMPRESSION_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: no audiocraft compression checkpoint")
    label = os.path.basename(os.path.normpath(path))
    cfg, state = read_compression_package(file)
    config, ours = audiocraft_to_transformers(cfg, state, os.path.basename(file))
    model = EncodecModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    if missing or unexpected:
        detail = (f"missing {missing[:3]}" if missing else "") + (" " if missing and unexpected else "") + (
            f"unexpected {unexpected[:3]}" if unexpected else "")
        raise ValueError(f"{os.path.basename(file)}: the weights do not fit the EnCodec its 'xp.cfg' describes ({detail})")
    for key, value in ours.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{os.path.basename(file)}: '{key}' has shape {tuple(value.shape)}, the config gives "
                             f"{tuple(expected[key].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in ours.items()})
    return CodecTokenizer(model.to(device).eval(), label)
