"""Single-file encoders as ComfyUI users hold them: `clip_vision/*.safetensors` (CLIP-L/H/G vision
towers with their projection) and `text_encoders/*.safetensors` (CLIP-L text, T5-XXL), in the key
layouts the host reads (`comfy/clip_vision.py`, `comfy/sd.py` `detect_te_model`): transformers key
names, fp32 / fp16 / bf16, and fp8 (float8_e4m3fn / e5m2, plain or "scaled" with per-layer
`scale_weight`, as `t5xxl_fp8_e4m3fn_scaled.safetensors`), widened to float16 once at load (the
host instead widens each layer as it runs: the memory at rest is twice the fp8 file's).

A file holds no config and no tokenizer, so:
- the architecture is read from the weights' shapes (layers, widths, patch and image size, vocabulary,
  T5's heads from its relative-attention table); CLIP's head count is 16 for the ViT-H (1280) and
  ViT-bigG (1664) vision towers and width / 64 otherwise (CLIP-L, and every published text tower),
  and its activation is GELU for the OpenCLIP widths (ViT-H 1280, ViT-bigG 1664 vision; 1024 / 1280
  text), quick-GELU otherwise (OpenAI's CLIPs, CLIP-L among them), as the host's own config files
  say (a test checks the configs derived for L, H, G and the text towers against those files);
- the tokenizer comes from a folder the caller gives (the nodes give the host's own copies:
  `comfy/sd1_tokenizer` for CLIP, `comfy/text_encoders/t5_tokenizer` for T5).

`single_file_kind(path)` reads only the header (for listing); `load_single_file_encoder(path, ...)`
returns the same `PretrainedEncoder` classes the folders give. No host imports here.
"""

from __future__ import annotations

import os
import re

import torch

from .pretrained import CLIP_MEAN, CLIP_STD, CLIPEncoder, CLIPTextEncoder, T5TextEncoder, load_tokenizer

SINGLE_FILE_EXTENSIONS = (".safetensors",)
CLIP_VOCAB = 49408  # CLIP's BPE vocabulary (the host's sd1_tokenizer)
T5_VOCAB = 32128  # T5 / T5 v1.1's sentencepiece vocabulary, padded (the host's t5_tokenizer)
CLIP_HEAD_WIDTH = 64
# Head counts of the published towers whose heads are not 64 wide, as the host's config files give
# them (clip_vision_config_h.json, clip_vision_config_g.json: ViT-H and ViT-bigG vision, 16 heads).
PUBLISHED_HEADS = {"vision": {1280: 16, 1664: 16}, "text": {}}
OPENCLIP_GELU_WIDTHS = {"vision": (1280, 1664), "text": (1024, 1280)}  # ViT-H, ViT-bigG (host: clip_vision_config_h/g.json)
FP8_DTYPES = tuple(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name))

_VISION_KEYS = ("vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight",
                "vision_model.encoder.layers.0.mlp.fc1.weight", "visual_projection.weight")
_CLIP_TEXT_KEYS = ("text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
                   "text_model.encoder.layers.0.mlp.fc1.weight")
_T5_KEYS = ("encoder.block.0.layer.0.SelfAttention.q.weight",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder.final_layer_norm.weight")
_IGNORED = re.compile(r"(^|\.)(scale_weight|scale_input)$|^scaled_fp8$|^logit_scale$|^text_projection(\.weight)?$"
                      r"|position_ids$")
KINDS = {"clip_vision": "a CLIP vision tower with its projection (clip_vision_l/h/g.safetensors)",
         "clip_text": "a CLIP text encoder (clip_l.safetensors)",
         "t5": "a T5 encoder (t5xxl_fp16.safetensors, t5xxl_fp8_e4m3fn.safetensors)"}


def _header(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) from the safetensors header, without reading any tensor."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as handle:
        return {key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype()) for key in handle.keys()}


OPEN_CLIP_VISION_PREFIX = "visual."
_OPEN_CLIP_RENAMES = {"class_embedding": "vision_model.embeddings.class_embedding",
                      "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
                      "positional_embedding": "vision_model.embeddings.position_embedding.weight",
                      "ln_pre.weight": "vision_model.pre_layrnorm.weight", "ln_pre.bias": "vision_model.pre_layrnorm.bias",
                      "ln_post.weight": "vision_model.post_layernorm.weight", "ln_post.bias": "vision_model.post_layernorm.bias"}
_OPEN_CLIP_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                    "attn.out_proj": "self_attn.out_proj"}
_OPEN_CLIP_BLOCK_KEY = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")


def from_open_clip_vision(state: dict) -> dict:
    """An open_clip vision tower (`visual.conv1.weight`, `visual.transformer.resblocks.N.attn.in_proj_weight`,
    `visual.proj`, ...) in transformers' key names, as the host's `comfy/clip_vision.py` converts it;
    values may be tensors or shapes (for listing from a header). Other keys (open_clip's text tower) are
    dropped; a state dict in another layout comes back unchanged."""
    if f"{OPEN_CLIP_VISION_PREFIX}transformer.resblocks.0.attn.in_proj_weight" not in state:
        return state
    out = {}
    for key, value in state.items():
        if not key.startswith(OPEN_CLIP_VISION_PREFIX):
            continue
        name = key[len(OPEN_CLIP_VISION_PREFIX):]
        if name in _OPEN_CLIP_RENAMES:
            out[_OPEN_CLIP_RENAMES[name]] = value
        elif name == "proj":  # [width, projection] in open_clip, a Linear weight [projection, width] in transformers
            out["visual_projection.weight"] = value.t() if isinstance(value, torch.Tensor) else tuple(reversed(value))
        elif (match := _OPEN_CLIP_BLOCK_KEY.match(name)) is not None:
            block, part, kind = match.groups()
            target = f"vision_model.encoder.layers.{block}."
            if part in _OPEN_CLIP_BLOCK:
                out[f"{target}{_OPEN_CLIP_BLOCK[part]}.{kind}"] = value
        elif (match := re.match(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", name)) is not None:
            block, kind = match.groups()
            for index, projection in enumerate(("q_proj", "k_proj", "v_proj")):
                if isinstance(value, torch.Tensor):
                    part = value.chunk(3, dim=0)[index]
                else:
                    part = (value[0] // 3, *value[1:])
                out[f"vision_model.encoder.layers.{block}.self_attn.{projection}.{kind}"] = part
    return out


def kind_of_keys(shapes: dict[str, tuple]) -> str | None:
    """"clip_vision", "clip_text", "t5" or None for the shapes of a state dict (name -> shape); an
    open_clip vision tower counts as "clip_vision" (`from_open_clip_vision`)."""
    shapes = from_open_clip_vision(shapes)
    if all(key in shapes for key in _VISION_KEYS):
        return "clip_vision"
    if all(key in shapes for key in _CLIP_TEXT_KEYS) and shapes["text_model.embeddings.token_embedding.weight"][0] == CLIP_VOCAB:
        return "clip_text"
    embed = shapes.get("shared.weight") or shapes.get("encoder.embed_tokens.weight")
    if (all(key in shapes for key in _T5_KEYS) and embed is not None and embed[0] == T5_VOCAB
            and "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in shapes):  # not UMT5
        return "t5"
    return None


def single_file_kind(path: str) -> str | None:
    """The kind of encoder a single `.safetensors` file holds ("clip_vision", "clip_text", "t5"), or None
    (another model, another layout, unreadable). Reads the header only; cached by size and mtime."""
    from ..loaders.checkpoint_io import file_fact

    return file_fact("single-file encoder kind", path, _kind_of_file)


def _kind_of_file(path: str) -> str | None:
    try:
        shapes = {name: shape for name, (shape, _) in _header(path).items()}
    except Exception:  # not a safetensors file: not listed
        shapes = {}
    return kind_of_keys(shapes)


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """The file's tensors, fp8 ones widened to float16 (exact: fp8's range and precision fit in it),
    times their `scale_weight` in scaled files (float32 where the product would overflow float16)."""
    from ..loaders.checkpoint_io import read_state_dict

    state, _ = read_state_dict(path)
    out = {}
    for key, tensor in state.items():
        if _IGNORED.search(key):
            continue
        if tensor.dtype in FP8_DTYPES:
            scale = state.get(key[: -len("weight")] + "scale_weight") if key.endswith(".weight") else None
            widened = tensor.to(torch.float32)
            if scale is not None:
                widened = widened * scale.to(torch.float32)
            fits = bool(widened.abs().max() < torch.finfo(torch.float16).max) if widened.numel() else True
            tensor = widened.to(torch.float16) if fits else widened
        out[key] = tensor
    return out


def _count(shapes, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({match.group(1) for key in shapes if (match := regex.match(key))})


def _heads(width: int, tower: str) -> int:
    return PUBLISHED_HEADS[tower].get(width, max(1, width // CLIP_HEAD_WIDTH))


def _activation(width: int, tower: str) -> str:
    return "gelu" if width in OPENCLIP_GELU_WIDTHS[tower] else "quick_gelu"


def clip_vision_config(shapes) -> dict:
    """CLIPVisionConfig arguments read from a CLIP vision state dict's shapes."""
    hidden, channels, patch, _ = shapes["vision_model.embeddings.patch_embedding.weight"]
    positions = shapes["vision_model.embeddings.position_embedding.weight"][0]
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1:
        raise ValueError(f"{positions} position embeddings is not a square grid plus the class token")
    return dict(hidden_size=hidden, num_channels=channels, patch_size=patch, image_size=side * patch,
                num_hidden_layers=_count(shapes, r"vision_model\.encoder\.layers\.(\d+)\."),
                intermediate_size=shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0],
                num_attention_heads=_heads(hidden, "vision"), projection_dim=shapes["visual_projection.weight"][0],
                hidden_act=_activation(hidden, "vision"), layer_norm_eps=1e-5)


def clip_text_config(shapes) -> dict:
    vocab, hidden = shapes["text_model.embeddings.token_embedding.weight"]
    return dict(vocab_size=vocab, hidden_size=hidden, max_position_embeddings=shapes["text_model.embeddings.position_embedding.weight"][0],
                num_hidden_layers=_count(shapes, r"text_model\.encoder\.layers\.(\d+)\."),
                intermediate_size=shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0],
                num_attention_heads=_heads(hidden, "text"), hidden_act=_activation(hidden, "text"),
                layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def t5_config(shapes) -> dict:
    buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    inner, d_model = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    d_ff = shapes["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"][0]
    vocab = (shapes.get("shared.weight") or shapes["encoder.embed_tokens.weight"])[0]
    return dict(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, num_heads=heads, d_ff=d_ff,
                num_layers=_count(shapes, r"encoder\.block\.(\d+)\."), relative_attention_num_buckets=buckets,
                relative_attention_max_distance=128, feed_forward_proj="gated-gelu" if gated else "relu",
                is_encoder_decoder=False, use_cache=False, decoder_start_token_id=0)


def _build(model_class, config, state: dict[str, torch.Tensor], name: str) -> torch.nn.Module:
    """`model_class(config)` built on the meta device and given the file's tensors (no random init,
    no second copy); every parameter must come from the file."""
    from ..loaders.checkpoint_io import check_state_dict

    with torch.device("meta"):
        module = model_class(config)
    reference = {k: v for k, v in module.state_dict().items() if not _IGNORED.search(k)}
    for prefix in ("text_model.",):  # transformers 5's CLIPTextModel has no text_model. level; the files do
        if not any(k.startswith(prefix) for k in reference) and any(k.startswith(prefix) for k in state):
            state = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    if "shared.weight" in reference:  # T5: the embedding is tied; files hold either name
        for a, b in (("shared.weight", "encoder.embed_tokens.weight"), ("encoder.embed_tokens.weight", "shared.weight")):
            if a not in state and b in state:
                state[a] = state[b]
    check_state_dict(reference, state, name)
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    dtype = torch.float32 if len(dtypes) != 1 else dtypes.pop()
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=False, assign=True)
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    for owner in module.modules():  # non-persistent buffers (CLIP's position_ids) are not in the file
        for buffer_name, buffer in list(owner.named_buffers(recurse=False)):
            if buffer.is_meta and buffer_name == "position_ids":
                owner.register_buffer(buffer_name, torch.arange(buffer.shape[-1]).expand(buffer.shape).clone(), persistent=False)
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{name}: the file does not give '{left[0]}'")
    return module.eval().requires_grad_(False)


def _init_common(self, path: str, config: dict) -> None:
    """What PretrainedEncoder.__init__ sets for a folder, for a file (named by its stem)."""
    self.path = path
    self.model_name = os.path.splitext(os.path.basename(path))[0]
    self.model_type = config["model_type"]
    self.config = config
    self.module = None


class SingleFileCLIPVisionEncoder(CLIPEncoder):
    """A CLIP vision tower + projection from one file: image embeddings (`image_embeds`) [B, projection]."""

    def __init__(self, path: str, module, config: dict):
        _init_common(self, path, config)
        self.module = module
        self.tokenizer = None
        self.modalities = ("image",)
        self.image_size = int(config["image_size"])
        self.image_mean, self.image_std = CLIP_MEAN, CLIP_STD  # what the host's clip_preprocess uses

    def _missing_hint(self, modality: str) -> str:
        return " (a CLIP vision file; its text tower is a separate file in text_encoders)" if modality == "text" else ""


class SingleFileCLIPTextEncoder(CLIPTextEncoder):
    """A CLIP text tower from one file: the pooled vector `pooler_output` [B, width] (what FLUX takes;
    a `text_projection` the file may carry is not applied)."""

    def __init__(self, path: str, module, config: dict, tokenizer):
        _init_common(self, path, config)
        self.projected = False
        self.module = module
        self.tokenizer = tokenizer


class SingleFileT5Encoder(T5TextEncoder):
    def __init__(self, path: str, module, config: dict, tokenizer):
        _init_common(self, path, config)
        self.module = module
        self.tokenizer = tokenizer


def load_single_file_encoder(path: str, clip_tokenizer: str | None = None, t5_tokenizer: str | None = None):
    """The encoder in one ComfyUI-layout `.safetensors` file.

    Args:
        clip_tokenizer, t5_tokenizer: folders with the CLIP / T5 tokenizer files (text encoders need them).

    Raises:
        FileNotFoundError: no such file, or a text encoder without its tokenizer folder.
        ValueError: not a single-file encoder of a kind listed in KINDS, or weights that do not fit the
            architecture their shapes describe; naming the file.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection, T5Config, T5EncoderModel

    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such encoder file")
    if not name.lower().endswith(SINGLE_FILE_EXTENSIONS):
        raise ValueError(f"{name}: expected a .safetensors encoder file ({'; '.join(KINDS.values())})")
    kind = single_file_kind(path)
    if kind is None:
        raise ValueError(f"{name}: not an encoder file this pack reads; expected {'; or '.join(KINDS.values())}, "
                         f"with the key names the host reads")
    state = from_open_clip_vision(read_weights(path))
    shapes = {key: tuple(tensor.shape) for key, tensor in state.items()}
    try:
        if kind == "clip_vision":
            arguments = clip_vision_config(shapes)
            module = _build(CLIPVisionModelWithProjection, CLIPVisionConfig(**arguments), state, name)
            return SingleFileCLIPVisionEncoder(path, module, {"model_type": "clip_vision_model", **arguments})
        tokenizer_folder = clip_tokenizer if kind == "clip_text" else t5_tokenizer
        if not tokenizer_folder or not os.path.isdir(tokenizer_folder):
            tokenizer, problem = None, f"the tokenizer folder '{tokenizer_folder}' does not exist" if tokenizer_folder else "no tokenizer folder was given"
        else:
            tokenizer, problem = load_tokenizer(tokenizer_folder)
        if tokenizer is None:
            raise FileNotFoundError(f"{name}: {KINDS[kind]} needs tokenizer files; {problem}")
        if kind == "clip_text":
            arguments = clip_text_config(shapes)
            module = _build(CLIPTextModel, CLIPTextConfig(**arguments), state, name)
            return SingleFileCLIPTextEncoder(path, module, {"model_type": "clip_text_model", **arguments}, tokenizer)
        arguments = t5_config(shapes)
        module = _build(T5EncoderModel, T5Config(**arguments), state, name)
        return SingleFileT5Encoder(path, module, {"model_type": "t5", **arguments}, tokenizer)
    except (KeyError, ValueError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if message.startswith(name):
            raise ValueError(message) from None
        raise ValueError(f"{name}: weights do not fit {KINDS[kind]} ({message})") from None
