"""VQGAN checkpoints (taming-transformers, SpecVQGAN, diffusers, ours) -> diffusers `VQModel`.

Accepted inputs of `load_vq_model(path)`:
  * a diffusers VQModel folder (config.json + diffusion_pytorch_model.safetensors/.bin);
  * our own single-file safetensors (diffusers key names, config JSON in metadata "config"),
    or diffusers-named weights with a diffusers config.json beside them;
  * a taming-transformers / SpecVQGAN checkpoint: Lightning `.ckpt` (read with
    `torch.load(weights_only=True)` only) or `.safetensors`, with taming key names
    (`encoder.down.0.block.0.norm1.weight`, `quantize.embedding.weight`, ...). `loss.*` is
    dropped; a `first_stage_model.` prefix (a taming/SpecVQGAN transformer checkpoint) is
    stripped. The keys are converted at load time with the map of diffusers'
    scripts/convert_vq_diffusion_to_diffusers.py (1x1-conv q/k/v/proj_out become Linear, decoder
    up blocks reversed). The architecture is read from the tensor shapes; a taming config
    (`*.yaml`/`*.json` with `ddconfig`) beside the file is cross-checked when present.

Taming's GroupNorm always has 32 groups, which the shapes cannot reveal; pass
`norm_num_groups` for a checkpoint trained otherwise.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import asdict, dataclass

import torch

from .checkpoint_io import CONFIG_METADATA_KEY, check_state_dict, file_fact, holds_key, read_model_config, read_state_dict, save_model_file

TAMING_NORM_GROUPS = 32
DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
OUR_FORMAT = "diffusers-vqmodel"
VQ_CLASS_NAMES = ("VQModel", None)  # a diffusers config.json says "VQModel"; ours (metadata "config") says nothing


@dataclass(frozen=True)
class TamingArchitecture:
    """A taming VQGAN's hyper-parameters (taming's names in comments)."""

    in_channels: int  # in_channels
    out_channels: int  # out_ch
    base_channels: int  # ch
    channel_multipliers: tuple[int, ...]  # ch_mult, one per resolution level
    res_blocks_per_level: int  # num_res_blocks (the decoder has one more per level)
    encoder_attention_levels: tuple[int, ...]  # levels whose resolution is in attn_resolutions
    decoder_attention_levels: tuple[int, ...]
    z_channels: int  # z_channels
    embed_dim: int  # embed_dim (codebook vector size)
    codebook_size: int  # n_embed
    norm_num_groups: int = TAMING_NORM_GROUPS

    @property
    def n_levels(self) -> int:
        return len(self.channel_multipliers)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.n_levels - 1)

    def diffusers_config(self) -> dict:
        """Keyword arguments for `diffusers.VQModel` that build the same network."""
        levels = range(self.n_levels)
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": [
                "AttnDownEncoderBlock2D" if i in self.encoder_attention_levels else "DownEncoderBlock2D" for i in levels
            ],
            "up_block_types": [
                "AttnUpDecoderBlock2D" if i in self.decoder_attention_levels else "UpDecoderBlock2D"
                for i in reversed(levels)
            ],
            "block_out_channels": [self.base_channels * m for m in self.channel_multipliers],
            "layers_per_block": self.res_blocks_per_level,
            "act_fn": "silu",
            "latent_channels": self.z_channels,
            "num_vq_embeddings": self.codebook_size,
            "vq_embed_dim": self.embed_dim,
            "norm_num_groups": self.norm_num_groups,
            "norm_type": "group",
            "mid_block_add_attention": True,
            "lookup_from_codebook": False,
        }


# ---------------------------------------------------------------------------------------------
# key map


_RESNET_PARTS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_ATTENTION_PARTS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_CONV_1X1_AS_LINEAR = {"q", "k", "v", "proj_out"}


def _resnet_key(rest: str) -> str | None:
    part, _, leaf = rest.partition(".")
    return f"{_RESNET_PARTS[part]}.{leaf}" if part in _RESNET_PARTS and leaf in ("weight", "bias") else None


def _attention_key(rest: str) -> tuple[str, bool] | None:
    part, _, leaf = rest.partition(".")
    if part not in _ATTENTION_PARTS or leaf not in ("weight", "bias"):
        return None
    return f"{_ATTENTION_PARTS[part]}.{leaf}", part in _CONV_1X1_AS_LINEAR and leaf == "weight"


def taming_key_to_diffusers(key: str, n_levels: int) -> tuple[str, bool] | None:
    """Diffusers name of a taming key and whether its tensor is a 1x1 conv to squeeze into a Linear.

    Returns None for a key that is not part of a taming VQGAN.
    """
    if key in ("quant_conv.weight", "quant_conv.bias", "post_quant_conv.weight", "post_quant_conv.bias",
               "quantize.embedding.weight"):
        return key, False
    match = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)", key)
    if match:
        side, layer, leaf = match.groups()
        return f"{side}.{'conv_norm_out' if layer == 'norm_out' else layer}.{leaf}", False
    match = re.fullmatch(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.+)", key)
    if match:
        side, layer, rest = match.groups()
        if layer == "attn_1":
            mapped = _attention_key(rest)
            return (f"{side}.mid_block.attentions.0.{mapped[0]}", mapped[1]) if mapped else None
        mapped = _resnet_key(rest)
        index = 0 if layer == "block_1" else 1
        return (f"{side}.mid_block.resnets.{index}.{mapped}", False) if mapped else None
    match = re.fullmatch(r"(encoder)\.down\.(\d+)\.(block|attn)\.(\d+)\.(.+)|(decoder)\.up\.(\d+)\.(block|attn)\.(\d+)\.(.+)", key)
    if match:
        if match.group(1):
            side, level, kind, index, rest = match.group(1), int(match.group(2)), match.group(3), match.group(4), match.group(5)
            block = f"encoder.down_blocks.{level}"
        else:
            side, level, kind, index, rest = match.group(6), int(match.group(7)), match.group(8), match.group(9), match.group(10)
            block = f"decoder.up_blocks.{n_levels - 1 - level}"  # taming stores up blocks by level
        if kind == "block":
            mapped = _resnet_key(rest)
            return (f"{block}.resnets.{index}.{mapped}", False) if mapped else None
        mapped = _attention_key(rest)
        return (f"{block}.attentions.{index}.{mapped[0]}", mapped[1]) if mapped else None
    match = re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key)
    if match:
        return f"encoder.down_blocks.{match.group(1)}.downsamplers.0.conv.{match.group(2)}", False
    match = re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key)
    if match:
        return f"decoder.up_blocks.{n_levels - 1 - int(match.group(1))}.upsamplers.0.conv.{match.group(2)}", False
    return None


_RESNET_PARTS_BACK = {v: k for k, v in _RESNET_PARTS.items()}
_ATTENTION_PARTS_BACK = {v: k for k, v in _ATTENTION_PARTS.items()}


def diffusers_key_to_taming(key: str, n_levels: int) -> str:
    """Taming name of a diffusers VQModel key (inverse of `taming_key_to_diffusers`; for messages)."""

    def inner(rest: str, attention: bool) -> str:
        table = _ATTENTION_PARTS_BACK if attention else _RESNET_PARTS_BACK
        for new, old in table.items():
            if rest.startswith(new + "."):
                return old + rest[len(new):]
        return rest

    match = re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", key)
    if match:
        return f"{match.group(1)}.norm_out.{match.group(2)}"
    match = re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if match:
        side, kind, index, rest = match.groups()
        if kind == "attentions":
            return f"{side}.mid.attn_1.{inner(rest, True)}"
        return f"{side}.mid.block_{int(index) + 1}.{inner(rest, False)}"
    match = re.fullmatch(r"(encoder\.down|decoder\.up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", key)
    if match:
        prefix, block, kind, index, rest = match.groups()
        level = int(block) if prefix.startswith("encoder") else n_levels - 1 - int(block)
        if kind == "downsamplers":
            return f"{prefix}.{level}.downsample.{rest}"
        if kind == "upsamplers":
            return f"{prefix}.{level}.upsample.{rest}"
        attention = kind == "attentions"
        return f"{prefix}.{level}.{'attn' if attention else 'block'}.{index}.{inner(rest, attention)}"
    return key


# ---------------------------------------------------------------------------------------------
# architecture inference


def _need(state_dict: dict, key: str, source: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f"{source}: missing key {key!r} (expected in a taming/SpecVQGAN VQGAN checkpoint)")
    return state_dict[key]


def infer_taming_architecture(
    state_dict: dict[str, torch.Tensor], source: str, *, norm_num_groups: int = TAMING_NORM_GROUPS
) -> TamingArchitecture:
    """Read a taming VQGAN's hyper-parameters from its tensor shapes (taming key names)."""
    conv_in = _need(state_dict, "encoder.conv_in.weight", source)
    base_channels, in_channels = int(conv_in.shape[0]), int(conv_in.shape[1])
    n_levels = 1 + max(
        (int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down\.(\d+)\.", k))), default=-1
    )
    if n_levels == 0:
        raise ValueError(f"{source}: missing key 'encoder.down.0.block.0.conv1.weight' (no encoder levels found)")
    res_blocks = 1 + max(
        (int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))), default=-1
    )
    multipliers = []
    for level in range(n_levels):
        width = int(_need(state_dict, f"encoder.down.{level}.block.0.conv1.weight", source).shape[0])
        if width % base_channels:
            raise ValueError(
                f"{source}: key 'encoder.down.{level}.block.0.conv1.weight' has {width} output channels, "
                f"expected a multiple of ch={base_channels}"
            )
        multipliers.append(width // base_channels)
    if multipliers[0] != 1:
        raise ValueError(
            f"{source}: ch_mult starts with {multipliers[0]}; only ch_mult[0] == 1 (every published taming/SpecVQGAN "
            f"model) can be held by diffusers' VQModel"
        )
    encoder_attention = tuple(l for l in range(n_levels) if f"encoder.down.{l}.attn.0.q.weight" in state_dict)
    decoder_attention = tuple(l for l in range(n_levels) if f"decoder.up.{l}.attn.0.q.weight" in state_dict)
    z_channels = int(_need(state_dict, "encoder.conv_out.weight", source).shape[0])
    embed_dim = int(_need(state_dict, "quant_conv.weight", source).shape[0])
    codebook = _need(state_dict, "quantize.embedding.weight", source)
    out_channels = int(_need(state_dict, "decoder.conv_out.weight", source).shape[0])
    arch = TamingArchitecture(
        in_channels=in_channels,
        out_channels=out_channels,
        base_channels=base_channels,
        channel_multipliers=tuple(multipliers),
        res_blocks_per_level=res_blocks,
        encoder_attention_levels=encoder_attention,
        decoder_attention_levels=decoder_attention,
        z_channels=z_channels,
        embed_dim=embed_dim,
        codebook_size=int(codebook.shape[0]),
        norm_num_groups=norm_num_groups,
    )
    for width in {base_channels * m for m in multipliers}:
        if width % norm_num_groups:
            raise ValueError(
                f"{source}: a level has {width} channels, not divisible by {norm_num_groups} GroupNorm groups "
                f"(taming uses 32; pass norm_num_groups for a model trained otherwise)"
            )
    return arch


def _taming_config_beside(path: str) -> tuple[str, dict] | None:
    """A taming config (dict holding 'ddconfig') in a yaml/json file beside `path`, if any."""
    folder, stem = os.path.dirname(os.path.abspath(path)), os.path.splitext(os.path.basename(path))[0]
    candidates = [os.path.join(folder, stem + ext) for ext in (".yaml", ".yml", ".json")]
    candidates += [os.path.join(folder, "config" + ext) for ext in (".yaml", ".yml", ".json")]
    projects = sorted(glob.glob(os.path.join(folder, "..", "configs", "*-project.yaml")))
    if len(projects) == 1:  # taming/SpecVQGAN log layout: <run>/checkpoints/last.ckpt, <run>/configs/*-project.yaml
        candidates.append(projects[0])
    for candidate in candidates:
        if os.path.isfile(candidate):
            params = _find_ddconfig_params(_read_config_file(candidate))
            if params is not None:
                return candidate, params
    return None


def _read_config_file(path: str):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        if path.endswith(".json"):
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as error:
        raise ValueError(f"{os.path.basename(path)}: not a readable config ({error})") from error


def _find_ddconfig_params(node) -> dict | None:
    if isinstance(node, dict):
        if isinstance(node.get("ddconfig"), dict):
            return node
        for value in node.values():
            found = _find_ddconfig_params(value)
            if found is not None:
                return found
    return None


def _check_against_config(arch: TamingArchitecture, config_path: str, params: dict, source: str) -> None:
    dd = params["ddconfig"]
    expected = {
        "ch": arch.base_channels,
        "ch_mult": list(arch.channel_multipliers),
        "num_res_blocks": arch.res_blocks_per_level,
        "in_channels": arch.in_channels,
        "out_ch": arch.out_channels,
        "z_channels": arch.z_channels,
    }
    found = {key: dd.get(key) for key in expected}
    found["ch_mult"] = list(found["ch_mult"]) if found["ch_mult"] is not None else None
    for name, value in (("embed_dim", arch.embed_dim), ("n_embed", arch.codebook_size)):
        expected[name], found[name] = value, params.get(name)
    if dd.get("resolution") is not None and dd.get("attn_resolutions") is not None:
        resolution, attn = int(dd["resolution"]), {int(r) for r in dd["attn_resolutions"]}
        levels = []
        for level in range(arch.n_levels):
            if resolution in attn:
                levels.append(level)
            resolution //= 2
        expected["attention levels"], found["attention levels"] = list(arch.encoder_attention_levels), levels
    for name, want in expected.items():
        if found[name] is not None and found[name] != want:
            raise ValueError(
                f"{source}: the weights say {name} = {want}, but {os.path.basename(config_path)} says {found[name]}"
            )


# ---------------------------------------------------------------------------------------------
# conversion and loading


def strip_to_first_stage(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VQGAN part of a state dict: drops `loss.*` (discriminator, LPIPS) and strips a wrapper prefix."""
    if "encoder.conv_in.weight" not in state_dict:
        prefixes = [k[: -len("encoder.conv_in.weight")] for k in state_dict if k.endswith(".encoder.conv_in.weight")]
        if len(prefixes) == 1:
            prefix = prefixes[0]
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return {k: v for k, v in state_dict.items() if not k.startswith("loss.")}


class _TamingNames(dict):
    """diffusers key -> taming key; keys never seen are translated back by rule."""

    def __init__(self, n_levels: int):
        super().__init__()
        self.n_levels = n_levels

    def get(self, key, default=None):
        return super().get(key) or diffusers_key_to_taming(key, self.n_levels)


def convert_taming_state_dict(
    state_dict: dict[str, torch.Tensor], arch: TamingArchitecture, source: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Taming key names -> diffusers VQModel names.

    Returns:
        (converted state dict, diffusers key -> original taming key) for error messages.
    """
    converted: dict[str, torch.Tensor] = {}
    origin = _TamingNames(arch.n_levels)
    unknown = []
    for key, tensor in state_dict.items():
        mapped = taming_key_to_diffusers(key, arch.n_levels)
        if mapped is None:
            unknown.append(key)
            continue
        new_key, squeeze = mapped
        if squeeze:
            if tensor.dim() != 4 or tuple(tensor.shape[2:]) != (1, 1):
                raise ValueError(
                    f"{source}: key {key!r} has shape {tuple(tensor.shape)}, expected a 1x1 convolution (C, C, 1, 1)"
                )
            tensor = tensor[:, :, 0, 0]
        converted[new_key] = tensor
        origin[new_key] = key
    if unknown:
        shown = ", ".join(repr(k) for k in sorted(unknown)[:5])
        raise ValueError(
            f"{source}: {len(unknown)} key(s) are not part of a taming VQGAN, e.g. {shown} "
            f"(only the plain VectorQuantizer VQGAN is supported)"
        )
    return converted, origin


def load_checked_state_dict(model: torch.nn.Module, state_dict: dict, source: str, origin: dict | None = None) -> None:
    """`model.load_state_dict(strict=True)` with errors that name the file, the key and the shapes
    (`origin`: diffusers key -> the key's name in the file, for a converted checkpoint)."""
    check_state_dict(model, state_dict, source, names=origin)
    expected = model.state_dict()
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=True)


def vq_model_from_config(config: dict):
    """A diffusers VQModel (random weights) from a diffusers config dict."""
    from diffusers import VQModel

    return VQModel.from_config({k: v for k, v in config.items()})


def _info(vq, path: str, layout: str, **extra) -> dict:
    config = vq.config
    return {
        "path": path,
        "layout": layout,
        "codebook_size": int(config.num_vq_embeddings),
        "embed_dim": int(config.vq_embed_dim or config.latent_channels),
        "in_channels": int(config.in_channels),
        "downsample_factor": 2 ** (len(config.block_out_channels) - 1),
        **extra,
    }


VQ_CODEBOOK_KEY = "quantize.embedding.weight"  # every layout load_vq_model reads has it (taming: under first_stage_model.)


def is_vq_entry(path: str | os.PathLike) -> bool:
    """Whether `load_vq_model` can read `path`, judged cheaply for Load VQ Tokenizer's list: a folder's
    config.json names the VQModel class; a file holds a codebook (`quantize.embedding.weight`, under any
    prefix), by `checkpoint_io.holds_key` (never unpickled). Cached by size and modification time."""
    text = os.fspath(path)
    if os.path.isdir(text):
        try:
            with open(os.path.join(text, "config.json"), encoding="utf-8") as handle:
                return json.load(handle).get("_class_name") == "VQModel"
        except (OSError, ValueError, AttributeError):
            return False
    return file_fact("vq entry", text, lambda file: holds_key(
        file, lambda name: name == VQ_CODEBOOK_KEY or name.endswith("." + VQ_CODEBOOK_KEY), VQ_CODEBOOK_KEY.encode()),
        default=False)


def load_vq_model(path: str | os.PathLike, *, norm_num_groups: int | None = None):
    """Load a VQGAN as a diffusers `VQModel` in eval mode on the CPU.

    Args:
        path: a diffusers VQModel folder, or a `.safetensors` / `.ckpt` / `.pt` / `.pth` file in
            taming or diffusers key layout (see the module docstring).
        norm_num_groups: GroupNorm groups of a taming checkpoint (default: taming's 32).

    Returns:
        (vq_model, info): info holds "layout" ("diffusers-folder", "diffusers-file", "taming"),
        "codebook_size", "embed_dim", "in_channels", "downsample_factor", and for taming files the
        inferred "architecture" and "dropped_keys" (number of `loss.*` etc. keys not loaded).

    Raises:
        FileNotFoundError: no such file/folder, or a folder without config.json.
        ValueError: anything else that is wrong, naming the file and the key.
    """
    path = os.fspath(path)
    source = os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        return _load_diffusers_folder(path, source)
    state_dict, metadata = read_state_dict(path)
    if CONFIG_METADATA_KEY in metadata or any(k.startswith("encoder.down_blocks.") for k in state_dict):
        config = read_model_config(path, metadata, expected_class=VQ_CLASS_NAMES,
                                   missing="diffusers-named VQ weights need their config")
        return _load_diffusers_file(state_dict, config, path, source)
    return _load_taming(state_dict, path, source, norm_num_groups)


def _load_diffusers_folder(path: str, source: str):
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{source}: a diffusers VQModel folder needs config.json (not found in {path})")
    weights = [name for name in DIFFUSERS_WEIGHT_NAMES if os.path.isfile(os.path.join(path, name))]
    if not weights:
        raise FileNotFoundError(f"{source}: no {' or '.join(DIFFUSERS_WEIGHT_NAMES)} in {path}")
    config = read_model_config(os.path.join(path, weights[0]), expected_class=VQ_CLASS_NAMES)  # its config.json
    state_dict, _ = read_state_dict(os.path.join(path, weights[0]))  # .bin: torch.load(weights_only=True) only
    vq = _build_from_config(config, source)
    load_checked_state_dict(vq, state_dict, f"{source}/{weights[0]}")
    return vq.eval(), _info(vq, path, "diffusers-folder")


def _build_from_config(config: dict, source: str):
    try:
        return vq_model_from_config(config)
    except Exception as error:
        raise ValueError(f"{source}: its config does not describe a buildable VQModel ({error})") from error


def _load_diffusers_file(state_dict: dict, config: dict, path: str, source: str):
    vq = _build_from_config(config, source)
    load_checked_state_dict(vq, state_dict, source)
    return vq.eval(), _info(vq, path, "diffusers-file")


def _load_taming(state_dict: dict, path: str, source: str, norm_num_groups: int | None):
    from diffusers import VQModel

    first_stage = strip_to_first_stage(state_dict)
    arch = infer_taming_architecture(first_stage, source, norm_num_groups=norm_num_groups or TAMING_NORM_GROUPS)
    beside = _taming_config_beside(path)
    if beside is not None:
        _check_against_config(arch, beside[0], beside[1], source)
    converted, origin = convert_taming_state_dict(first_stage, arch, source)
    vq = VQModel(**arch.diffusers_config())
    load_checked_state_dict(vq, converted, source, origin)
    info = _info(
        vq,
        path,
        "taming",
        architecture=asdict(arch),
        dropped_keys=len(state_dict) - len(first_stage),
        config_file=beside[0] if beside else None,
    )
    return vq.eval(), info


def diffusers_config_of(vq) -> dict:
    """The JSON-serialisable diffusers config of a VQModel (private `_` entries left out)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dict(vq.config).items()
        if not key.startswith("_")
    }


def save_vq_model(vq, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write `vq` as one safetensors file: diffusers key names, config JSON in metadata "config".

    Extra `metadata` entries (e.g. training facts) are stored beside it (non-strings as JSON);
    "config" and "format" (= "diffusers-vqmodel") are reserved.
    """
    save_model_file(vq, diffusers_config_of(vq), path, metadata, format=OUR_FORMAT)
