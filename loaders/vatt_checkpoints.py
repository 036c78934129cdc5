"""VATT audio decoder files -> :class:`VATTDecoder`: our safetensors, and the official checkpoint layout.

Our files: one safetensors per model, the config as JSON in metadata ``"config"`` (with
``"_class_name": "VATTDecoder"``), keys = ``VATTDecoder.state_dict()``; the codec's codebook tables
travel inside (``codebook_latents``), so a decoder refuses a codec it was not trained with.

Official layout (github.com/DragonLiu1995/video-to-audio-through-text, ``vt2a``): a PyTorch
Lightning ``.ckpt`` of ``V2TA`` whose ``state_dict`` holds the audio decoder under
``audio_token_decoder.`` (``VT2AModel``) beside the frozen LLM (``encoder.``, ignored here). A
state dict of ``VT2AModel`` alone (no prefix) is read too. The key names below were read from the
official code (x-transformers-style layer lists: ``layers.<i>.0.0`` = the layer's pre-norm,
``layers.<i>.1`` = its block; encoder layers alternate attention and a "multiway" FFN whose ``A``
copy serves the condition and ``B`` the audio; all encoder norms are one shared multiway norm).
They are NOT verified against the released weights, which cannot be downloaded here:

==========================================================  =============================================
official key (after ``audio_token_decoder.``)               ours
==========================================================  =============================================
``embedding.special.MASK``                                  ``mask_latents``
``embedding.out_proj.{weight,bias}``                        ``latent_proj.*``
``img_linear.{weight,bias}``                                ``video_proj.*`` (absent: identity, eva-CLIP 768-d)
``modality_v`` / ``modality_a``                             ``modality_condition`` / ``modality_audio``
``pos_embed``                                               checked against the sin-cos formula, not stored
``encoder.attn_layers.layers.{2l}.1.to_{q,k,v,out}.weight`` ``encoder_layers.{l}.attention.to_*.weight``
``encoder.attn_layers.layers.{2l+1}.1.A.ff.0.0.weight``     ``encoder_layers.{l}.ff_condition.fc_in.weight``
``encoder.attn_layers.layers.{2l+1}.1.A.ff.2.weight``       ``encoder_layers.{l}.ff_condition.fc_out.weight``
``encoder.attn_layers.layers.{2l+1}.1.B.ff.*``              ``encoder_layers.{l}.ff_audio.*``
``encoder.attn_layers.final_norm.{A,B}.*`` (= every         ``encoder_norm_condition.*`` / ``encoder_norm_audio.*``
``encoder.attn_layers.layers.{i}.0.0.{A,B}.*``)
``decoder.attn_layers.layers.{2l}.0.0.*``                   ``decoder_layers.{l}.attention_norm.*``
``decoder.attn_layers.layers.{2l}.1.to_*.weight``           ``decoder_layers.{l}.attention.to_*.weight``
``decoder.attn_layers.layers.{2l+1}.0.0.*``                 ``decoder_layers.{l}.ff_norm.*``
``decoder.attn_layers.layers.{2l+1}.1.ff.0.0.weight``       ``decoder_layers.{l}.ff.fc_in.weight``
``decoder.attn_layers.layers.{2l+1}.1.ff.2.weight``         ``decoder_layers.{l}.ff.fc_out.weight``
``decoder.attn_layers.final_norm.*``                        ``decoder_norm.*``
``classifier.{k}.weight``                                   ``heads.{k}.weight``
``quantizer.{k}[.weight]`` (only if present)                ``codebook_latents[k]`` (else from the codec)
==========================================================  =============================================

Inferred: K, V and the width from ``classifier``; the latent width from ``out_proj``; depths by
counting layers; heads = query width / 64 (x-transformers' default head width, which the official
config does not change); ``logit_layout = "vatt_official"`` (see networks/vatt_decoder.py). The
condition: ``img_linear`` of width 768 takes eva-CLIP frame features directly (family "eva_clip": the
EVA02-L-14-336 open_clip tower of encoders/eva_clip.py, any folder name);
the released VATT-LLaMA / VATT-Gemma decoders take the VATT Converter LLM's hidden states (4096 /
2048 wide, family "vatt_converter"), which the VATT Converter node makes (encoders/vatt_converter.py). Ignored keys: the
LLM, ``critic_head.*``, ``ct_*_linear.*`` (training-only heads).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from ..networks.vatt_decoder import VATTDecoder, VATTDecoderConfig, alibi_slopes, sincos_positions
from .checkpoint_io import CONFIG_METADATA_KEY, check_state_dict, read_model_config, read_state_dict_subset, save_model_file

__all__ = [
    "CLASS_NAME",
    "OFFICIAL_PREFIX",
    "save_vatt_decoder",
    "load_vatt_decoder",
    "official_to_ours",
    "is_official_state_dict",
]

CLASS_NAME = "VATTDecoder"
OFFICIAL_PREFIX = "audio_token_decoder."
OFFICIAL_HEAD_DIM = 64
LLM_CONDITION_FAMILY = "vatt_converter"
EVA_CLIP_CONDITION_FAMILY = "eva_clip"  # encoders.eva_clip.FAMILY: the official frame features (VATT: EVA02-L-14-336, 768)

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------
# ours
# ----------------------------------------------------------------------------------------------
def save_vatt_decoder(model: VATTDecoder, path: PathLike, extra_metadata: Optional[Dict[str, object]] = None) -> Path:
    """Write ``model`` as one safetensors file with its config (temporary name, then rename)."""
    return save_model_file(model, {"_class_name": CLASS_NAME, **model.config.to_dict()}, path, extra_metadata)


# ----------------------------------------------------------------------------------------------
# the official layout
# ----------------------------------------------------------------------------------------------
def _official_prefix(state: Dict[str, torch.Tensor]) -> Optional[str]:
    if any(k.startswith(OFFICIAL_PREFIX + "classifier.") for k in state):
        return OFFICIAL_PREFIX
    if "classifier.0.weight" in state and "embedding.out_proj.weight" in state:
        return ""
    return None


def is_official_state_dict(state: Dict[str, torch.Tensor]) -> bool:
    """True when ``state`` holds an official ``VT2AModel`` (bare or under ``audio_token_decoder.``)."""
    return _official_prefix(state) is not None


def _count(state: Dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.fullmatch(k))})


def official_to_ours(state: Dict[str, torch.Tensor], name: str = "checkpoint"
                     ) -> Tuple[VATTDecoderConfig, Dict[str, torch.Tensor], bool]:
    """Map an official ``VT2AModel`` state dict to (config, our state dict, codebooks present).

    Raises ValueError naming the file and the first missing/mis-shaped key."""
    prefix = _official_prefix(state)
    if prefix is None:
        raise ValueError(f"{name}: not an official VATT checkpoint (no '{OFFICIAL_PREFIX}classifier.0.weight')")
    sd = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def get(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(f"{name}: missing key '{prefix}{key}' of the official VATT layout")
        return sd[key]

    num_codebooks = _count(sd, r"classifier\.(\d+)\.weight")
    codebook_size, dim = get("classifier.0.weight").shape
    latent_dim = get("embedding.out_proj.weight").shape[1]
    enc_layers = _count(sd, r"encoder\.attn_layers\.layers\.(\d+)\.1\.to_q\.weight")
    dec_layers = _count(sd, r"decoder\.attn_layers\.layers\.(\d+)\.1\.to_q\.weight")
    if enc_layers == 0 or dec_layers == 0:
        raise ValueError(f"{name}: found {enc_layers} encoder and {dec_layers} decoder attention layers, expected some of each")
    inner = get("encoder.attn_layers.layers.0.1.to_q.weight").shape[0]
    if inner % OFFICIAL_HEAD_DIM:
        raise ValueError(f"{name}: attention width {inner} is not a multiple of the 64-wide heads the official code uses")
    ff_inner = get("encoder.attn_layers.layers.1.1.A.ff.0.0.weight").shape[0]
    video_dim = sd["img_linear.weight"].shape[1] if "img_linear.weight" in sd else dim
    llm = "img_linear.weight" in sd and video_dim != 768  # 768: eva-CLIP ViT-L/14 features; else LLM states
    config = VATTDecoderConfig(
        num_codebooks=num_codebooks, codebook_size=int(codebook_size), latent_dim=int(latent_dim), dim=int(dim),
        encoder_depth=enc_layers, decoder_depth=dec_layers, num_heads=inner // OFFICIAL_HEAD_DIM, head_dim=OFFICIAL_HEAD_DIM,
        ff_mult=max(1, ff_inner // dim), video_dim=int(video_dim), text_dim=0, dropout=0.1, logit_layout="vatt_official",
        video_family=LLM_CONDITION_FAMILY if llm else EVA_CLIP_CONDITION_FAMILY, video_model="", video_rate_hz=5.0,
        video_tokens=10, codec="", sample_rate_hz=16_000, frame_rate_hz=50.0)

    ours: Dict[str, torch.Tensor] = {
        "mask_latents": get("embedding.special.MASK"),
        "latent_proj.weight": get("embedding.out_proj.weight"),
        "latent_proj.bias": get("embedding.out_proj.bias"),
        "modality_condition": get("modality_v").reshape(1, 1, dim),
        "modality_audio": get("modality_a").reshape(1, 1, dim),
        "encoder_norm_condition.weight": get("encoder.attn_layers.final_norm.A.weight"),
        "encoder_norm_condition.bias": get("encoder.attn_layers.final_norm.A.bias"),
        "encoder_norm_audio.weight": get("encoder.attn_layers.final_norm.B.weight"),
        "encoder_norm_audio.bias": get("encoder.attn_layers.final_norm.B.bias"),
        "decoder_norm.weight": get("decoder.attn_layers.final_norm.weight"),
        "decoder_norm.bias": get("decoder.attn_layers.final_norm.bias"),
    }
    if "img_linear.weight" in sd:
        ours["video_proj.weight"] = sd["img_linear.weight"]
        ours["video_proj.bias"] = get("img_linear.bias")
    else:  # use_eva_clip at width 768: nn.Identity
        ours["video_proj.weight"] = torch.eye(dim)
        ours["video_proj.bias"] = torch.zeros(dim)
    for k in range(num_codebooks):
        ours[f"heads.{k}.weight"] = get(f"classifier.{k}.weight")
    for layer in range(enc_layers):
        a, f = f"encoder.attn_layers.layers.{2 * layer}", f"encoder.attn_layers.layers.{2 * layer + 1}"
        for proj in ("to_q", "to_k", "to_v", "to_out"):
            ours[f"encoder_layers.{layer}.attention.{proj}.weight"] = get(f"{a}.1.{proj}.weight")
        for way, part in (("A", "ff_condition"), ("B", "ff_audio")):
            ours[f"encoder_layers.{layer}.{part}.fc_in.weight"] = get(f"{f}.1.{way}.ff.0.0.weight")
            ours[f"encoder_layers.{layer}.{part}.fc_out.weight"] = get(f"{f}.1.{way}.ff.2.weight")
        for i in (2 * layer, 2 * layer + 1):  # the shared multiway norm: every copy must equal the final one
            for way in ("A", "B"):
                for p in ("weight", "bias"):
                    key = f"encoder.attn_layers.layers.{i}.0.0.{way}.{p}"
                    if key in sd and not torch.equal(sd[key], sd[f"encoder.attn_layers.final_norm.{way}.{p}"]):
                        raise ValueError(f"{name}: '{prefix}{key}' differs from the shared encoder norm "
                                         f"'{prefix}encoder.attn_layers.final_norm.{way}.{p}'; expected one shared multiway norm")
    for layer in range(dec_layers):
        a, f = f"decoder.attn_layers.layers.{2 * layer}", f"decoder.attn_layers.layers.{2 * layer + 1}"
        ours[f"decoder_layers.{layer}.attention_norm.weight"] = get(f"{a}.0.0.weight")
        ours[f"decoder_layers.{layer}.attention_norm.bias"] = get(f"{a}.0.0.bias")
        for proj in ("to_q", "to_k", "to_v", "to_out"):
            ours[f"decoder_layers.{layer}.attention.{proj}.weight"] = get(f"{a}.1.{proj}.weight")
        ours[f"decoder_layers.{layer}.ff_norm.weight"] = get(f"{f}.0.0.weight")
        ours[f"decoder_layers.{layer}.ff_norm.bias"] = get(f"{f}.0.0.bias")
        ours[f"decoder_layers.{layer}.ff.fc_in.weight"] = get(f"{f}.1.ff.0.0.weight")
        ours[f"decoder_layers.{layer}.ff.fc_out.weight"] = get(f"{f}.1.ff.2.weight")

    codebooks = []
    for k in range(num_codebooks):
        table = sd.get(f"quantizer.{k}.weight", sd.get(f"quantizer.{k}"))
        codebooks.append(table)
    has_codebooks = all(t is not None for t in codebooks)
    ours["codebook_latents"] = torch.stack(codebooks) if has_codebooks else torch.zeros(num_codebooks, codebook_size, latent_dim)

    if "pos_embed" in sd:
        table = sd["pos_embed"].reshape(-1, dim).float()
        expected = sincos_positions(table.shape[0], int(dim))
        if not torch.allclose(table, expected, atol=1e-3):
            raise ValueError(f"{name}: '{prefix}pos_embed' is not the fixed sin-cos table the official code builds")
    return config, ours, has_codebooks


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def _decoder_keys(keys: list) -> list:
    """The keys to read: an official checkpoint's ``audio_token_decoder.*`` only (never the frozen LLM
    ``encoder.*`` beside it); any other file (ours, a bare VT2AModel) whole."""
    if any(k.startswith(OFFICIAL_PREFIX + "classifier.") for k in keys):
        return [k for k in keys if k.startswith(OFFICIAL_PREFIX)]
    return keys


def load_vatt_decoder(path: PathLike, device: Union[str, torch.device] = "cpu",
                      dtype: Optional[torch.dtype] = None) -> VATTDecoder:
    """Load a VATT audio decoder in eval mode: our safetensors (config in metadata or a
    config.json beside it) or an official checkpoint (``.ckpt``/``.pt``/``.safetensors``, mapped).

    Only the decoder's tensors are read into memory (safetensors key by key, a torch pickle through
    ``mmap``), so the frozen LLM of an official checkpoint costs no RAM. A truncated file is refused.

    An official checkpoint without the codec's codebook tables gives a model whose
    ``has_codebooks`` is False: fill them from the codec before sampling.

    Raises FileNotFoundError (no file) or ValueError (unreadable, wrong kind of model, missing or
    mis-shaped key: the message names the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: VATT decoder checkpoint not found")
    state, metadata = read_state_dict_subset(path, _decoder_keys)
    config = read_model_config(path, metadata, expected_class=CLASS_NAME, parse=VATTDecoderConfig.from_dict,
                               what=f"a {CLASS_NAME!r} (a VATT audio decoder)", missing=None)
    if config is None:
        if not is_official_state_dict(state):
            raise ValueError(f"{path.name}: neither a VATT decoder of this pack (no '{CONFIG_METADATA_KEY}' metadata or "
                             f"config.json) nor an official VATT checkpoint (no '{OFFICIAL_PREFIX}classifier.0.weight')")
        config, state, has_codebooks = official_to_ours(state, path.name)
    else:
        has_codebooks = True
    with torch.device("meta"):
        model = VATTDecoder(config)
    check_state_dict(model, state, path.name)
    model.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    model.register_buffer("slopes", alibi_slopes(config.num_heads), persistent=False)  # was on the meta device
    model.codebooks_from_codec = not has_codebooks
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()
