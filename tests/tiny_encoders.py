"""Tiny random encoders saved in the published transformers layouts (save_pretrained: config.json,
model.safetensors, tokenizer and feature-extractor files), for tests of every node that reads an
encoder folder. No downloads: the CLIP and T5 tokenizers are copied from the host's own tree,
CLAP's RoBERTa tokenizer is a small byte-level BPE trained here.

Each `write_tiny_*(folder)` creates `folder` (if needed), fills it, and returns its path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

from comfyui_audiovisual.runner.host_location import find_host_dir

CLIP_PROJECTION = 16  # tiny CLIP joint-space width
CLAP_PROJECTION = 16  # tiny CLAP joint-space width (512 for the published models)
AST_HIDDEN = 32  # tiny AST width (768 published); token count stays the published 1214
T5_WIDTH = 16  # tiny T5 d_model (4096 for T5-XXL)
CLIP_TEXT_WIDTH = 24  # tiny CLIPTextModel hidden size (pooled output width)
CLIP_IMAGE_SIZE = 32


def _host_text_encoders_dir() -> str:
    return os.path.join(find_host_dir(), "comfy", "text_encoders")


def _sd1_tokenizer_dir() -> str:
    return os.path.join(find_host_dir(), "comfy", "sd1_tokenizer")


def _save_clip_tokenizer(folder: str) -> None:
    """The real CLIP tokenizer (the host's copy of openai/clip-vit-large-patch14's), saved the way the
    Hub folders have it: tokenizer.json plus the slow files vocab.json and merges.txt."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(_sd1_tokenizer_dir())
    tokenizer.model_max_length = 77
    tokenizer.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(_sd1_tokenizer_dir(), name), os.path.join(folder, name))


def _clip_text_config(hidden_size: int = 32, projection_dim: int = CLIP_PROJECTION) -> dict:
    return dict(vocab_size=49408, hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, projection_dim=projection_dim, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def _clip_vision_config() -> dict:
    return dict(image_size=CLIP_IMAGE_SIZE, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                num_attention_heads=2, projection_dim=CLIP_PROJECTION)


def _clip_image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE})


def write_tiny_clip(folder: str, seed: int = 0, with_tokenizer: bool = True) -> str:
    """CLIPModel (vision + text, joint width 16, 32x32 images) with CLIP tokenizer and image processor."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(text_config=_clip_text_config(), vision_config=_clip_vision_config(), projection_dim=CLIP_PROJECTION)
    CLIPModel(config).eval().save_pretrained(folder)
    if with_tokenizer:
        _save_clip_tokenizer(folder)
    _clip_image_processor().save_pretrained(folder)
    return folder


def write_tiny_clip_vision(folder: str, seed: int = 0) -> str:
    """CLIPVisionModelWithProjection (model_type clip_vision_model) with its image processor."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**_clip_vision_config())).eval().save_pretrained(folder)
    _clip_image_processor().save_pretrained(folder)
    return folder


def write_tiny_clip_text(folder: str, seed: int = 0, projection: bool = False) -> str:
    """CLIPTextModel (pooled width 24) or, with `projection`, CLIPTextModelWithProjection (width 16)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(**_clip_text_config(hidden_size=CLIP_TEXT_WIDTH))
    model_class = CLIPTextModelWithProjection if projection else CLIPTextModel
    model_class(config).eval().save_pretrained(folder)
    _save_clip_tokenizer(folder)
    return folder


def _roberta_tokenizer():
    """A small byte-level BPE in RoBERTa's format (vocab.json + merges.txt), trained on a few captions."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    captions = ["a dog barking in the park", "rain falling on a tin roof", "a car engine starting",
                "birds singing at dawn", "a person playing the piano", "waves crashing on the beach",
                "the sound of a train passing", "people talking in a crowded room"] * 4
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(captions, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    scratch = tempfile.mkdtemp(prefix="tiny-roberta-")
    bpe.save_model(scratch)
    tokenizer = RobertaTokenizer(os.path.join(scratch, "vocab.json"), os.path.join(scratch, "merges.txt"))
    tokenizer.model_max_length = 64
    return tokenizer, scratch


def write_tiny_clap(folder: str, seed: int = 0, with_tokenizer: bool = True) -> str:
    """ClapModel (HTSAT audio tower, RoBERTa text tower, joint width 16) with the published
    ClapFeatureExtractor settings (48 kHz, 64 mels, 10 s) and a tiny RoBERTa tokenizer."""
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    tokenizer, bpe_files = _roberta_tokenizer()
    torch.manual_seed(seed)
    text_config = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=37, max_position_embeddings=66, projection_dim=CLAP_PROJECTION,
                                 pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
    # hidden_size must equal patch_embeds_hidden_size * 2 ** (len(depths) - 1)
    audio_config = ClapAudioConfig(depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32,
                                   window_size=8, spec_size=256, num_mel_bins=64, patch_size=4, patch_stride=[4, 4],
                                   projection_dim=CLAP_PROJECTION, enable_fusion=False)
    config = ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(), projection_dim=CLAP_PROJECTION)
    ClapModel(config).eval().save_pretrained(folder)
    ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(folder)  # as laion/clap-htsat-unfused
    if with_tokenizer:
        tokenizer.save_pretrained(folder)
        for name in ("vocab.json", "merges.txt"):  # the slow files, as in laion/clap-htsat-unfused
            shutil.copyfile(os.path.join(bpe_files, name), os.path.join(folder, name))
    shutil.rmtree(bpe_files, ignore_errors=True)
    return folder


def write_tiny_ast(folder: str, seed: int = 0) -> str:
    """ASTModel with the published input geometry (128 mel bins, 1024 frames, patch 16, strides 10:
    1214 tokens) at width 32, with the published ASTFeatureExtractor (16 kHz, mean/std normalisation)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(seed)
    config = ASTConfig(hidden_size=AST_HIDDEN, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       patch_size=16, frequency_stride=10, time_stride=10, max_length=1024, num_mel_bins=128)
    ASTModel(config).eval().save_pretrained(folder)
    ASTFeatureExtractor().save_pretrained(folder)
    return folder


def write_tiny_t5(folder: str, seed: int = 0) -> str:
    """T5EncoderModel (d_model 16, one layer) with the host's T5 tokenizer (32100 tokens)."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(_host_text_encoders_dir(), "t5_tokenizer"))
    torch.manual_seed(seed)
    config = T5Config(vocab_size=32128, d_model=T5_WIDTH, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16, decoder_start_token_id=0)
    T5EncoderModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_not_an_encoder(folder: str) -> str:
    """A transformers folder of another kind (a BERT model) that the encoder loader must refuse."""
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20)).save_pretrained(folder)
    return folder


def write_config_only(folder: str, model_type: str) -> str:
    """A folder with only a config.json of `model_type` (no weights)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_type": model_type}, f)
    return folder


# ------------------------------------------------------------------------------------------
# ComfyUI single files: clip_vision/*.safetensors, text_encoders/*.safetensors (transformers key
# names, no config, no tokenizer), as the host reads them (comfy/clip_vision.py, comfy/sd.py)

SINGLE_VISION = dict(image_size=32, patch_size=8, hidden_size=128, intermediate_size=37, num_hidden_layers=2,
                     num_attention_heads=2, projection_dim=16, hidden_act="quick_gelu")  # 64-wide heads, as published
SINGLE_CLIP_TEXT = dict(vocab_size=49408, hidden_size=64, intermediate_size=37, num_hidden_layers=2, num_attention_heads=1,
                        max_position_embeddings=77, projection_dim=64, hidden_act="quick_gelu",
                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
SINGLE_T5 = dict(vocab_size=32128, d_model=32, d_kv=16, num_heads=2, d_ff=48, num_layers=2, relative_attention_num_buckets=32,
                 relative_attention_max_distance=128, feed_forward_proj="gated-gelu", decoder_start_token_id=0)


def _save_single_file(model, path: str, dtype: torch.dtype, scaled: bool = False, extra: dict | None = None,
                      prefix: str = ""):
    """Saves `model`'s state dict as the host's single files are: `dtype` for every tensor (fp8: the
    2-D weights, others fp16; `scaled`: the Linear layers' weights only, each divided by a per-layer
    `scale_weight`, plus the `scaled_fp8` marker, the rest fp16, as the host's scaled-fp8 ops read them:
    they scale Linear layers only; `prefix` before every key that lacks it). Loads the stored values back
    into `model` (float32), so it is the reference for what the file holds. Returns `path`."""
    from safetensors.torch import save_file

    linear = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    tensors, reference = {}, {}
    for key, value in model.state_dict().items():
        if key.endswith("position_ids"):
            continue
        value = value.detach().float()
        if (dtype in (torch.float8_e4m3fn, torch.float8_e5m2) and value.ndim == 2 and key.endswith(".weight")
                and (key in linear or not scaled)):
            scale = (value.abs().max() / 64).clamp(min=1e-6) if scaled else None
            stored = (value / scale if scaled else value).to(dtype)
            tensors[key] = stored
            if scaled:
                tensors[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
            reference[key] = stored.float() * (scale if scaled else 1)
        else:
            stored = value.to(torch.float16 if dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else dtype)
            tensors[key] = stored
            reference[key] = stored.float()
    if prefix:  # the published key names, whatever this transformers version calls the module's own
        tensors = {(k if k.startswith(prefix) else prefix + k): v for k, v in tensors.items()}
    if scaled:
        tensors["scaled_fp8"] = torch.empty(0, dtype=dtype)
    tensors.update(extra or {})
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    model.load_state_dict(reference, strict=False)
    return path


def write_single_clip_vision(path: str, seed: int = 0, dtype: torch.dtype = torch.float16):
    """clip_vision_*.safetensors: CLIPVisionModelWithProjection keys (vision_model.*, visual_projection.weight).
    Returns (path, the float32 reference model holding the stored values)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**SINGLE_VISION)).eval()
    return _save_single_file(model, path, dtype), model


def write_single_clip_text(path: str, seed: int = 0, dtype: torch.dtype = torch.float16):
    """clip_l.safetensors: text_model.* keys plus a text_projection.weight (as SD3's clip_l carries)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    model = CLIPTextModel(CLIPTextConfig(**SINGLE_CLIP_TEXT)).eval()
    projection = {"text_projection.weight": torch.randn(64, 64).to(dtype if dtype.itemsize > 1 else torch.float16)}
    return _save_single_file(model, path, dtype, extra=projection, prefix="text_model."), model


def write_single_t5(path: str, seed: int = 0, dtype: torch.dtype = torch.float16, scaled: bool = False):
    """t5xxl_*.safetensors: T5EncoderModel keys (shared.weight, encoder.block.*), fp16 / fp8 / scaled fp8."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    model = T5EncoderModel(T5Config(**SINGLE_T5)).eval()
    return _save_single_file(model, path, dtype, scaled=scaled), model


def host_tokenizer_dirs() -> tuple[str, str]:
    """The host's CLIP and T5 tokenizer folders (what the nodes give single-file text encoders)."""
    return _sd1_tokenizer_dir(), os.path.join(_host_text_encoders_dir(), "t5_tokenizer")


def write_t5_spiece_model(path: str) -> str:
    """A small unigram sentencepiece model in T5's layout (pad 0, eos 1, unk 2, no bos), trained here
    on a few captions: what a published T5 folder's `spiece.model` is, in miniature."""
    import io

    import sentencepiece

    captions = ["a dog barking in the park", "rain falling on a tin roof", "a car engine starting", "birds singing at dawn",
                "a person playing the piano", "waves crashing on the beach", "a cat purring softly"] * 8
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(captions), model_writer=model, vocab_size=40,
                                             model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                             minloglevel=2)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


def write_tiny_t5_spiece_only(folder: str, seed: int = 0) -> str:
    """A T5 encoder folder whose tokenizer is `spiece.model` alone (as google/t5-v1_1-xxl publishes it)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=128, d_model=T5_WIDTH, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16, decoder_start_token_id=0)
    T5EncoderModel(config).eval().save_pretrained(folder)
    write_t5_spiece_model(os.path.join(folder, "spiece.model"))
    return folder


def write_diffusers_text_encoders(pipeline: str, seed: int = 0) -> str:
    """A diffusers FLUX pipeline's text side: text_encoder (CLIP text) and text_encoder_2 (T5) with their
    tokenizers in the sibling folders tokenizer / tokenizer_2, as the pipeline is published."""
    write_tiny_clip_text(os.path.join(pipeline, "text_encoder"), seed=seed)
    write_tiny_t5(os.path.join(pipeline, "text_encoder_2"), seed=seed)
    for encoder, tokenizer in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        os.makedirs(os.path.join(pipeline, tokenizer))
        for name in os.listdir(os.path.join(pipeline, encoder)):
            if name not in ("config.json", "model.safetensors", "generation_config.json"):
                shutil.move(os.path.join(pipeline, encoder, name), os.path.join(pipeline, tokenizer, name))
    with open(os.path.join(pipeline, "model_index.json"), "w", encoding="utf-8") as f:
        json.dump({"_class_name": "FluxPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
                   "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                   "tokenizer_2": ["transformers", "T5TokenizerFast"]}, f)
    return pipeline


def write_open_clip_vision(path: str, seed: int = 0):
    """A CLIP vision tower in open_clip's key layout (`visual.conv1.weight`, `visual.transformer.resblocks.N.
    attn.in_proj_weight`, `visual.proj` [width, projection]), with the text tower's keys beside it, as a whole
    open_clip checkpoint saved as safetensors. Returns (path, the float32 reference CLIPVisionModelWithProjection)."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**SINGLE_VISION)).eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    renames = {"vision_model.embeddings.class_embedding": "class_embedding",
               "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
               "vision_model.embeddings.position_embedding.weight": "positional_embedding",
               "vision_model.pre_layrnorm.weight": "ln_pre.weight", "vision_model.pre_layrnorm.bias": "ln_pre.bias",
               "vision_model.post_layernorm.weight": "ln_post.weight", "vision_model.post_layernorm.bias": "ln_post.bias"}
    block = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    out = {"visual." + new: state[old] for old, new in renames.items()}
    out["visual.proj"] = state["visual_projection.weight"].t().contiguous()
    for layer in range(SINGLE_VISION["num_hidden_layers"]):
        hf = f"vision_model.encoder.layers.{layer}."
        oc = f"visual.transformer.resblocks.{layer}."
        for name, theirs in block.items():
            for kind in ("weight", "bias"):
                out[f"{oc}{theirs}.{kind}"] = state[f"{hf}{name}.{kind}"]
        for kind in ("weight", "bias"):
            out[f"{oc}attn.in_proj_{kind}"] = torch.cat([state[f"{hf}self_attn.{p}_proj.{kind}"] for p in "qkv"])
    out.update({"token_embedding.weight": torch.zeros(10, 8), "transformer.resblocks.0.attn.in_proj_weight": torch.zeros(24, 8),
                "logit_scale": torch.ones(())})  # the text tower of the same checkpoint: not the vision file's
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    return path, model


# ---- eva-CLIP in open_clip's Hub layout (timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k) ----------------
EVA_CLIP_EMBED = 24  # tiny joint-space width (768 published)
EVA_CLIP_IMAGE_SIZE = 56  # 4 x 4 patches of 14 (336: 24 x 24)
EVA_CLIP_TIMM_NAME = "eva02_large_patch14_clip_336"
# open_clip's vision_cfg.timm_model_kwargs, forwarded to timm.create_model: the published architecture
# (SwiGLU, scale norms, separate q/k/v, rope with the 16 x 16 reference grid) at a tiny size.
EVA_CLIP_TINY_KWARGS = {"img_size": EVA_CLIP_IMAGE_SIZE, "embed_dim": 128, "depth": 2, "num_heads": 2}  # heads of 64, as EVA's
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_eva_clip_trunk(seed: int = 0, embed: int = EVA_CLIP_EMBED):
    """The tiny timm Eva trunk as open_clip builds it for EVA02-L-14-336 (num_classes = embed_dim, token pool),
    every parameter randomised (timm's init leaves the head near zero and the norms at one)."""
    import timm

    torch.manual_seed(seed)
    trunk = timm.create_model(EVA_CLIP_TIMM_NAME, pretrained=False, num_classes=embed, global_pool="token",
                              **EVA_CLIP_TINY_KWARGS)
    with torch.no_grad():
        for name, parameter in trunk.named_parameters():
            scale = 0.1 if "norm" in name else 0.2
            parameter.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + scale * torch.randn_like(parameter))
    return trunk.eval()


def eva_clip_open_clip_config(embed: int = EVA_CLIP_EMBED) -> dict:
    """open_clip_config.json as push_to_hf_hub writes it: model_cfg (EVA02-L-14-336.json with the tiny sizes
    as timm_model_kwargs) and preprocess_cfg (mean / std)."""
    return {"model_cfg": {"embed_dim": embed,
                          "vision_cfg": {"image_size": EVA_CLIP_IMAGE_SIZE, "timm_model_name": EVA_CLIP_TIMM_NAME,
                                         "timm_model_pretrained": False, "timm_pool": "token", "timm_proj": None,
                                         "timm_model_kwargs": dict(EVA_CLIP_TINY_KWARGS)},
                          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
                          "custom_text": True},
            "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD}}


def write_tiny_eva_clip(folder: str, seed: int = 0, weights: str = "safetensors", with_config: bool = True,
                        embed: int = EVA_CLIP_EMBED) -> str:
    """An open_clip eva-CLIP folder: open_clip_config.json and open_clip_model.safetensors (or, with
    weights="bin", open_clip_pytorch_model.bin) holding the whole CLIP: `visual.trunk.*` (timm names),
    a stand-in text tower (`text.*`) and `logit_scale`, as open_clip's state dict has them."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    state = {f"visual.trunk.{key}": value.contiguous() for key, value in tiny_eva_clip_trunk(seed, embed).state_dict().items()}
    generator = torch.Generator().manual_seed(seed + 1)
    state.update({"text.token_embedding.weight": torch.randn(512, 32, generator=generator),
                  "text.transformer.resblocks.0.attn.in_proj_weight": torch.randn(96, 32, generator=generator),
                  "text.text_projection": torch.randn(32, embed, generator=generator),
                  "logit_scale": torch.tensor(4.6052)})
    if weights == "bin":
        torch.save(state, os.path.join(folder, "open_clip_pytorch_model.bin"))
    else:
        save_file(state, os.path.join(folder, "open_clip_model.safetensors"))
    if with_config:
        with open(os.path.join(folder, "open_clip_config.json"), "w", encoding="utf-8") as f:
            json.dump(eva_clip_open_clip_config(embed), f, indent=2)
    return folder
