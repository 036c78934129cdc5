"""eva-CLIP (EVA02-CLIP) image towers from open_clip folders, as published on the Hub: the frame encoder
of the official VATT pipeline (`timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k`, open_clip model
`EVA02-L-14-336`: VATT's per-frame features are its `encode_image` at 5 frames/s, 768 wide).

A folder holds `open_clip_config.json` (`{"model_cfg": {...}, "preprocess_cfg": {...}}`) and the weights
`open_clip_model.safetensors` (read first) or `open_clip_pytorch_model.bin` (`torch.load(weights_only=True)`).
Only the image tower (`visual.*`) is read; the text tower, `logit_scale` and rope caches are ignored.

As open_clip's `TimmModel` builds it (`timm_model.py`), the tower is a timm `Eva` trunk
(`visual.trunk.*`, timm's own key names) whose classifier head is the projection to the joint space
when `timm_proj` is null (EVA02-L-14-336: `visual.trunk.head.{weight,bias}`, 1024 -> 768, with bias);
`timm_proj: "linear"` adds `visual.head.proj.weight` (bias when `timm_proj_bias`) after a trunk without
head; `"none"` keeps the trunk's pooled width. The trunk's pooling is `timm_pool` ("token": the class
token after the final norm). Architecture: the config's `timm_model_name` built by timm's registry with
its `timm_model_kwargs` (exactly what open_clip does: EVA02-L-14-336 = `eva02_large_patch14_clip_336`,
24 blocks of width 1024, 16 heads, SwiGLU MLP 2730 wide with its LayerNorm, separate q/k/v with the
attention output LayerNorm, rope on the 24 x 24 grid scaled to a 16 x 16 reference). Without a config
the arguments are read from the weights: width, depth, patch, image size (from `pos_embed`), MLP width,
projection width; heads = width / 64 and rope with the 16 x 16 reference, as every EVA02-CLIP
(SwiGLU) model of timm has them (a test checks this against timm's registry).

Preprocessing is open_clip's evaluation transform (`transform.image_transform`, `preprocess_cfg` over
open_clip's defaults): each frame as an 8-bit RGB picture, resized shortest side -> `image_size` (PIL
bicubic), centre-cropped, `ToTensor`, normalised with OPENAI_DATASET_MEAN / STD. Features are
`encode_image(x)` with open_clip's default `normalize=False` (VATT's extraction script is not public;
whether it normalised is unknown).

`encode_images` returns the pack's Embedding with family "eva_clip". timm is imported only here and only
when a folder is loaded. No host imports.
"""

from __future__ import annotations

import json
import math
import os
import re

import torch
from torch import nn

from ..loaders.checkpoint_io import read_state_dict_subset
from ..nodes.payloads import Embedding
from .preprocessing import CLIP_MEAN, CLIP_STD
from .pretrained import PretrainedEncoder, Progress

OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's preferred order
FAMILY = "eva_clip"
VISUAL = "visual."
EVA_HEAD_WIDTH = 64
EVA02_CLIP_REF_FEAT_SHAPE = (16, 16)  # rope reference grid of every EVA02-CLIP model in timm (224 / 14)
PROJECTIONS = (None, "none", "linear")  # open_clip's timm_proj values for a timm trunk ("mlp" is not read)
RESIZE_MODES = ("shortest", "squash")
EXPECTED = (f"an open_clip folder of an eva-CLIP image tower ({OPEN_CLIP_CONFIG} with "
            f"{' or '.join(WEIGHT_FILES)}, e.g. timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k)")


def is_open_clip_folder(folder: str) -> bool:
    """Whether `folder` holds open_clip's config or one of its weight files (no transformers config.json needed)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in (OPEN_CLIP_CONFIG, *WEIGHT_FILES))


def is_eva_clip_folder(folder: str) -> bool:
    """Whether an open_clip folder looks like an eva-CLIP image tower, cheaply (for listing): its config names
    a timm EVA trunk, or (no config) its safetensors header holds an EVA02 trunk's keys; a folder with only a
    .bin counts (loading tells)."""
    try:
        model_cfg, _ = read_open_clip_config(folder)
    except ValueError:
        return False
    if model_cfg:
        return str((model_cfg.get("vision_cfg") or {}).get("timm_model_name") or "").startswith("eva")
    path = os.path.join(folder, WEIGHT_FILES[0])
    if not os.path.isfile(path):
        return os.path.isfile(os.path.join(folder, WEIGHT_FILES[1]))
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as handle:
            keys = set(handle.keys())
    except Exception:  # safetensors raises its own error types for a bad header
        return False
    return {f"{VISUAL}trunk.pos_embed", f"{VISUAL}trunk.blocks.0.mlp.fc1_g.weight"} <= keys


def import_timm():
    """timm, or ImportError naming the package to install."""
    try:
        import timm
        from timm.models.eva import Eva  # noqa: F401  (the trunk class this module builds)
    except ImportError:
        raise ImportError("eva-CLIP encoders need the Python package timm (pip install timm; setup.sh installs the "
                          "version pinned in tools/pinned-requirements.txt)") from None
    return timm


def read_open_clip_config(folder: str) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) of the folder's open_clip_config.json; ({}, {}) without one."""
    path = os.path.join(folder, OPEN_CLIP_CONFIG)
    if not os.path.isfile(path):
        return {}, {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({e}); expected open_clip's config "
                         '{"model_cfg": {...}, "preprocess_cfg": {...}}') from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with model_cfg and preprocess_cfg")
    model_cfg = data.get("model_cfg", data)  # open_clip's own model_configs/*.json have no wrapper
    vision = model_cfg.get("vision_cfg") if isinstance(model_cfg, dict) else None
    if not isinstance(vision, dict):
        raise ValueError(f"{path}: no model_cfg.vision_cfg; expected open_clip's config of an image tower")
    preprocess = data.get("preprocess_cfg") or {}
    return model_cfg, preprocess if isinstance(preprocess, dict) else {}


def weight_file(folder: str) -> str:
    """The folder's weights: open_clip_model.safetensors first, else open_clip_pytorch_model.bin."""
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"'{folder}' has no {' or '.join(WEIGHT_FILES)}; expected {EXPECTED}")


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for key in keys if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


def infer_eva_arguments(shapes: dict[str, tuple], source: str) -> dict:
    """timm `Eva` arguments of an EVA02-CLIP trunk from its state dict's shapes (timm names, no prefix):
    see the module docstring. Raises ValueError naming `source` when the keys are not such a trunk."""
    needed = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1_g.weight", "blocks.0.attn.q_proj.weight")
    missing = [key for key in needed if key not in shapes]
    if missing:
        raise ValueError(f"{source}: no {', '.join(VISUAL + 'trunk.' + key for key in missing)}; without {OPEN_CLIP_CONFIG} "
                         "only EVA02-CLIP trunks (SwiGLU MLP, separate q/k/v) are read from their weights")
    width, _, patch, _ = shapes["patch_embed.proj.weight"]
    class_token = "cls_token" in shapes
    positions = shapes["pos_embed"][1] - (1 if class_token else 0)
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise ValueError(f"{source}: pos_embed holds {positions} patch positions, not a square grid")
    if width % EVA_HEAD_WIDTH:
        raise ValueError(f"{source}: width {width} is not a multiple of EVA's {EVA_HEAD_WIDTH}-wide heads")
    hidden = shapes["blocks.0.mlp.fc1_g.weight"][0]
    return dict(
        img_size=grid * patch, patch_size=patch, embed_dim=width, depth=_count(shapes, r"blocks\.(\d+)\."),
        num_heads=width // EVA_HEAD_WIDTH, mlp_ratio=(hidden + 0.5) / width,  # Eva takes int(width * ratio)
        qkv_fused=False, qkv_bias="blocks.0.attn.q_proj.bias" in shapes, swiglu_mlp=True,
        scale_mlp="blocks.0.mlp.norm.weight" in shapes, scale_attn_inner="blocks.0.attn.norm.weight" in shapes,
        class_token=class_token, use_rot_pos_emb=True, ref_feat_shape=EVA02_CLIP_REF_FEAT_SHAPE,
        use_fc_norm="fc_norm.weight" in shapes, use_post_transformer_norm="norm.weight" in shapes)


class EvaCLIPVision(nn.Module):
    """open_clip's TimmModel for an Eva trunk: `trunk` (timm Eva, its head = the projection or none),
    then `head` (empty, or `proj` for timm_proj "linear"). Its state dict is the file's `visual.*`."""

    def __init__(self, trunk: nn.Module, proj: nn.Linear | None = None):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential()
        if proj is not None:
            self.head.add_module("proj", proj)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pixels))


def _build_uninitialised(make) -> nn.Module:
    """`make()` without its random initialisation (300 M parameters of EVA02-L take ~8 s on one CPU thread,
    and the file replaces them all): built on the meta device and given empty CPU storage; its non-persistent
    buffers (the rope tables) are taken from `make(depth=0)`, a shell built on the CPU that has the same ones.
    The parameters and persistent buffers must then all be loaded (the caller loads strictly)."""
    with torch.device("meta"):
        trunk = make()
    trunk = trunk.to_empty(device="cpu")
    persistent = set(trunk.state_dict())
    shell = dict(make(depth=0).named_buffers())
    for name, _ in list(trunk.named_buffers()):
        if name in persistent:
            continue
        owner, _, leaf = name.rpartition(".")
        module = trunk.get_submodule(owner) if owner else trunk
        if name in shell:
            module._buffers[leaf] = shell[name].detach().clone()
        elif leaf == "k_bias":  # fused qkv: the key bias is zero by definition
            module._buffers[leaf] = torch.zeros_like(module._buffers[leaf])
        else:
            raise RuntimeError(f"the timm Eva trunk has a buffer {name} this loader does not know how to fill; "
                               f"timm {getattr(import_timm(), '__version__', '?')} may be newer than the pinned one")
    return trunk


def build_eva_clip_vision(state: dict[str, torch.Tensor], model_cfg: dict, source: str) -> EvaCLIPVision:
    """The tower of `state` (the file's `visual.*` keys without the prefix) as open_clip builds it from
    `model_cfg` (its vision_cfg; {} = inferred from the weights), with the weights loaded strictly."""
    timm = import_timm()
    from timm.models.eva import Eva

    vision = model_cfg.get("vision_cfg") or {}
    name = vision.get("timm_model_name")
    if vision:
        proj = vision.get("timm_proj", "linear") or None  # open_clip's defaults: "linear" projection, "avg" pool
        pool = vision.get("timm_pool", "avg")
    else:  # weights only: the trunk's head is the projection unless a separate one is stored
        proj = "linear" if "head.proj.weight" in state else None
        pool = "token"
    if proj not in PROJECTIONS:
        raise ValueError(f"{source}: timm_proj {proj!r} is not read here; expected null, \"none\" or \"linear\"")
    trunk_state = {key[len("trunk."):]: value for key, value in state.items()
                   if key.startswith("trunk.") and not key.startswith("trunk.rope.")}  # rope: fixed, recomputed
    if not trunk_state:
        raise ValueError(f"{source}: no {VISUAL}trunk.* tensors; expected {EXPECTED}")
    shapes = {key: tuple(value.shape) for key, value in trunk_state.items()}
    # open_clip (TimmModel): without a separate projection the trunk's classifier head projects to embed_dim
    # ("none": no head at all); with "linear" the trunk has no head and head.proj follows.
    embed_dim = model_cfg.get("embed_dim") or shapes.get("head.weight", (0,))[0]
    num_classes = int(embed_dim) if proj is None else 0
    if name:
        if not (timm.is_model(name) and name in timm.list_models(module="eva")):
            raise ValueError(f"{source}: timm_model_name {name!r} is not an EVA model of the installed timm "
                             f"{timm.__version__}; expected e.g. eva02_large_patch14_clip_336")
        kwargs = dict(vision.get("timm_model_kwargs") or {})

        def make(**overrides):
            return timm.create_model(name, pretrained=False, num_classes=num_classes, global_pool=pool, **{**kwargs, **overrides})
    else:
        arguments = infer_eva_arguments(shapes, source)

        def make(**overrides):
            return Eva(global_pool=pool, num_classes=num_classes, **{**arguments, **overrides})
    trunk = _build_uninitialised(make)
    projection = None
    if proj == "linear":
        weight = state.get("head.proj.weight")
        if weight is None:
            raise ValueError(f"{source}: timm_proj \"linear\" but no {VISUAL}head.proj.weight")
        projection = nn.Linear(weight.shape[1], weight.shape[0], bias="head.proj.bias" in state)
    module = EvaCLIPVision(trunk, projection)
    wanted = {key: value for key, value in state.items() if key.startswith(("trunk.", "head.")) and not key.startswith("trunk.rope.")}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(wanted))
    unexpected = sorted(set(wanted) - set(expected))
    wrong = sorted(key for key in set(expected) & set(wanted) if tuple(expected[key].shape) != tuple(wanted[key].shape))
    if missing or unexpected or wrong:
        shown = [f"missing {VISUAL}{k}" for k in missing[:3]] + [f"unexpected {VISUAL}{k}" for k in unexpected[:3]]
        shown += [f"{VISUAL}{k} {tuple(wanted[k].shape)} (expected {tuple(expected[k].shape)})" for k in wrong[:3]]
        raise ValueError(f"{source}: the weights do not fit the eva-CLIP tower {name or 'read from them'} "
                         f"({'; '.join(shown)}); expected {EXPECTED}")
    module.load_state_dict(wanted, strict=True)  # copied into the float32 parameters (a float16 file is widened there)
    return module.eval().requires_grad_(False)


def open_clip_pixel_values(images: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD,
                           interpolation: str = "bicubic", resize_mode: str = "shortest") -> torch.Tensor:
    """open_clip's evaluation transform of [B, H, W, 3] frames in 0..1 -> [B, 3, size, size]: each frame as the
    8-bit RGB picture it was decoded from, Resize (shortest side, or both sides for "squash"; PIL, bicubic
    unless "bilinear"), CenterCrop, ToTensor, Normalize — torchvision's transforms on PIL images, as open_clip
    composes them."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"preprocess_cfg resize_mode {resize_mode!r} is not read here; expected one of {', '.join(RESIZE_MODES)}")
    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.BICUBIC
    out = []
    for frame in images:
        array = (frame.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
        picture = Image.fromarray(np.ascontiguousarray(array), "RGB")
        if resize_mode == "squash":
            picture = TF.resize(picture, [size, size], interpolation=mode)
        else:
            picture = TF.center_crop(TF.resize(picture, size, interpolation=mode), [size, size])
        out.append(TF.normalize(TF.to_tensor(picture), list(mean), list(std)))
    return torch.stack(out)


class EVACLIPEncoder(PretrainedEncoder):
    """An open_clip eva-CLIP folder (see the module docstring): images -> `encode_image` [B, embed_dim]."""

    family = FAMILY
    modalities = ("image",)

    def __init__(self, folder: str):
        model_cfg, preprocess = read_open_clip_config(folder)
        super().__init__(folder, {"model_type": "open_clip", "model_cfg": model_cfg})
        path = weight_file(folder)
        source = os.path.join(folder, os.path.basename(path))
        state, _ = read_state_dict_subset(path, lambda keys: [k for k in keys if k.startswith(VISUAL)])
        if not state:
            raise ValueError(f"{source}: no {VISUAL}* tensors (open_clip's image tower); expected {EXPECTED}")
        self.module = build_eva_clip_vision({k[len(VISUAL):]: v for k, v in state.items()}, model_cfg, source)
        del state
        vision = model_cfg.get("vision_cfg") or {}
        size = vision.get("image_size") or self.module.trunk.patch_embed.img_size[0]
        self.image_size = int(size if not isinstance(size, (list, tuple)) else size[0])
        self.image_mean = tuple(preprocess.get("mean") or CLIP_MEAN)
        self.image_std = tuple(preprocess.get("std") or CLIP_STD)
        self.interpolation = preprocess.get("interpolation") or "bicubic"
        self.resize_mode = preprocess.get("resize_mode") or "shortest"
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"{os.path.join(folder, OPEN_CLIP_CONFIG)}: resize_mode {self.resize_mode!r} is not read "
                             f"here; expected one of {', '.join(RESIZE_MODES)}")

    def describe(self) -> str:
        return f"'{self.model_name}' (eva-CLIP image encoder, open_clip)"

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor, progress: Progress | None = None) -> Embedding:
        def encode_batch(batch, device, dtype):
            pixels = open_clip_pixel_values(batch, self.image_size, self.image_mean, self.image_std, self.interpolation,
                                            self.resize_mode)
            return self.module(pixels.to(device=device, dtype=dtype))

        return self._encode_image_batches(images, encode_batch, progress)
