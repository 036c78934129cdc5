"""Tiny random VATT models for host tests: a 16 kHz 4 x 2048 EnCodec in the transformers layout and
VATT decoders (our safetensors) trained-for that codec and a tiny CLIP (and T5 for text)."""

from __future__ import annotations

import os

import torch

from comfyui_audiovisual.audio.codec_tokenizer import CodecTokenizer, encodec_config, save_codec
from comfyui_audiovisual.loaders.vatt_checkpoints import save_vatt_decoder
from comfyui_audiovisual.networks.vatt_decoder import VATTDecoder, VATTDecoderConfig

CODEC_LATENT = 8


def tiny_vatt_codec(seed: int = 0):
    from transformers import EncodecModel

    torch.manual_seed(seed)
    model = EncodecModel(encodec_config("vatt_16khz", num_filters=4, hidden_size=CODEC_LATENT, num_lstm_layers=1)).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
    return model


def write_tiny_vatt_codec(folder: str, seed: int = 0) -> str:
    save_codec(tiny_vatt_codec(seed), folder)
    return folder


def write_tiny_vatt_decoder(path: str, codec_model, video_dim: int, video_model: str = "", text_dim: int = 0,
                            text_family: str = "", text_model: str = "", seed: int = 0) -> str:
    """A tiny decoder whose codebook tables are `codec_model`'s (as training would store them)."""
    torch.manual_seed(seed)
    config = VATTDecoderConfig.tiny(codebook_size=2048, latent_dim=CODEC_LATENT, dim=32, num_heads=2, head_dim=16,
                                    video_dim=video_dim, video_model=video_model, text_dim=text_dim,
                                    text_family=text_family, text_model=text_model, codec="tiny_vatt_codec")
    decoder = VATTDecoder(config).eval()
    decoder.set_codebooks(CodecTokenizer(codec_model).codebook_latents(4))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_vatt_decoder(decoder, path)
    return path


# ----------------------------------------------------------------------------------------------
# the official release layout (VT2AModel Lightning checkpoint), random, at any size
# ----------------------------------------------------------------------------------------------
OFFICIAL_PREFIX = "audio_token_decoder."


def mae_sincos(length, dim):
    """MAE's fixed 1-D sin-cos position table [length, dim] (the official pos_embed)."""
    import numpy as np

    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.arange(length, dtype=np.float64)[:, None] * omega[None]
    return torch.from_numpy(np.concatenate([np.sin(out), np.cos(out)], axis=1)).float()


def official_vatt_state_dict(seed=0, *, dim, heads, encoder_layers, decoder_layers, codebooks, vocab, latent, video_dim,
                             pos_len=64, scale=0.2):
    """A random VT2AModel state dict under the official key names (Lightning prefix included), with a
    token of the frozen LLM beside it and the critic head the pack ignores. Used by the tests (tiny) and
    by benchmarks/vatt_decoder_loading.py (the released size)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * scale

    sd = {}
    inner = heads * 64  # x-transformers' default head width
    for i in range(2 * encoder_layers):
        if i % 2 == 0:
            for proj in ("to_q", "to_k", "to_v"):
                sd[f"encoder.attn_layers.layers.{i}.1.{proj}.weight"] = r(inner, dim)
            sd[f"encoder.attn_layers.layers.{i}.1.to_out.weight"] = r(dim, inner)
        else:
            for way in ("A", "B"):
                sd[f"encoder.attn_layers.layers.{i}.1.{way}.ff.0.0.weight"] = r(4 * dim, dim)
                sd[f"encoder.attn_layers.layers.{i}.1.{way}.ff.2.weight"] = r(dim, 4 * dim)
    shared = {f"{way}.{p}": (1 + r(dim) if p == "weight" else r(dim)) for way in ("A", "B") for p in ("weight", "bias")}
    for i in range(2 * encoder_layers):
        for name, value in shared.items():
            sd[f"encoder.attn_layers.layers.{i}.0.0.{name}"] = value.clone()
    for name, value in shared.items():
        sd[f"encoder.attn_layers.final_norm.{name}"] = value.clone()
    for i in range(2 * decoder_layers):
        sd[f"decoder.attn_layers.layers.{i}.0.0.weight"] = 1 + r(dim)
        sd[f"decoder.attn_layers.layers.{i}.0.0.bias"] = r(dim)
        if i % 2 == 0:
            for proj in ("to_q", "to_k", "to_v"):
                sd[f"decoder.attn_layers.layers.{i}.1.{proj}.weight"] = r(inner, dim)
            sd[f"decoder.attn_layers.layers.{i}.1.to_out.weight"] = r(dim, inner)
        else:
            sd[f"decoder.attn_layers.layers.{i}.1.ff.0.0.weight"] = r(4 * dim, dim)
            sd[f"decoder.attn_layers.layers.{i}.1.ff.2.weight"] = r(dim, 4 * dim)
    sd["decoder.attn_layers.final_norm.weight"] = 1 + r(dim)
    sd["decoder.attn_layers.final_norm.bias"] = r(dim)
    sd["embedding.special.MASK"] = r(codebooks, latent)
    sd["embedding.out_proj.weight"] = r(dim, latent)
    sd["embedding.out_proj.bias"] = r(dim)
    sd["img_linear.weight"] = r(dim, video_dim)
    sd["img_linear.bias"] = r(dim)
    sd["modality_v"] = r(1, 1, dim)
    sd["modality_a"] = r(1, 1, dim)
    sd["pos_embed"] = mae_sincos(pos_len, dim).unsqueeze(0)
    for k in range(codebooks):
        sd[f"classifier.{k}.weight"] = r(vocab, dim)
    state = {OFFICIAL_PREFIX + k: v for k, v in sd.items()}
    state["encoder.base_model.model.model.embed_tokens.weight"] = r(10, 4)  # the frozen LLM beside it
    state[OFFICIAL_PREFIX + "critic_head.0.weight"] = r(1, dim)
    return state


# ----------------------------------------------------------------------------------------------
# the official VATT-LLaMA release, in miniature: the converter's LLM folder (Vicuna's layout: a
# LlamaForCausalLM with its sentencepiece tokenizer) and the Lightning checkpoint that holds the frozen
# LLM with its LoRA and projector under 'encoder.' beside the decoder under 'audio_token_decoder.'
# ----------------------------------------------------------------------------------------------
LLM_HIDDEN, LLM_LAYERS, LLM_HEADS, LLM_FF, LORA_R = 32, 2, 4, 48, 16
CONVERTER_PREFIX = "encoder.base_model.model.model."
_TOKENIZER_TEXT = ["### Instruction:", "### Response:", "Describe possible sounds that could match the video.",
                   "a dog barking in the park", "rain falling on a tin roof", "a car engine starting", "birds singing at dawn"]


def write_llama_tokenizer(folder: str) -> None:
    """A small BPE sentencepiece model in LLaMA's layout (unk 0, bos 1, eos 2; BOS added, no EOS), as a
    Vicuna folder's tokenizer.model + tokenizer_config.json."""
    import io
    import json

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(_TOKENIZER_TEXT * 8), model_writer=model, vocab_size=60,
                                             model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                   "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 2048}, f)


def write_tiny_vicuna(folder: str, seed: int = 0, quiet_eos: bool = False):
    """A tiny random LlamaForCausalLM folder with its tokenizer (vocab 60); returns the model. `quiet_eos` zeroes
    the lm_head row of EOS (its logit is always 0, below the best of the other 59), so captions run to max_new_tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=60, hidden_size=LLM_HIDDEN, intermediate_size=LLM_FF, num_hidden_layers=LLM_LAYERS,
                         num_attention_heads=LLM_HEADS, num_key_value_heads=LLM_HEADS, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        if quiet_eos:
            model.lm_head.weight[2] = 0.0
    model.save_pretrained(folder)
    write_llama_tokenizer(folder)
    return model


GEMMA_PREFIX = "encoder.base_model.model."  # VATT-Gemma: peft wraps the GemmaModel itself


def write_tiny_gemma(folder: str, seed: int = 0, quiet_eos: bool = False):
    """A tiny random GemmaForCausalLM folder (tied lm_head, one key/value head as Gemma-2B has, head width 8), with
    the tiny sentencepiece tokenizer above standing in for Gemma's; returns the model."""
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(seed)
    config = GemmaConfig(vocab_size=60, hidden_size=LLM_HIDDEN, intermediate_size=LLM_FF, num_hidden_layers=LLM_LAYERS,
                         num_attention_heads=LLM_HEADS, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    model = GemmaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)
        if quiet_eos:
            model.model.embed_tokens.weight[2] = 0.0
    model.save_pretrained(folder)
    write_llama_tokenizer(folder)
    return model


def converter_state(llm_model, seed: int = 1, prefix: str = CONVERTER_PREFIX) -> dict:
    """The converter as V2TA's Lightning checkpoint holds it: the frozen base model, q/v LoRA (peft's 'default'
    adapter, r 16) and the video projector (768 -> hidden), all under `prefix` ('encoder.base_model.model.model.' for
    VATT-LLaMA, GEMMA_PREFIX for VATT-Gemma)."""
    g = torch.Generator().manual_seed(seed)
    base = llm_model.model if hasattr(llm_model, "lm_head") else llm_model
    state = {f"{prefix}{k}": v.detach().clone() for k, v in base.state_dict().items()}
    hidden = base.config.hidden_size
    for layer in range(base.config.num_hidden_layers):
        for proj in ("q_proj", "v_proj"):
            m = f"{prefix}layers.{layer}.self_attn.{proj}"
            linear = dict(base.named_modules())[f"layers.{layer}.self_attn.{proj}"]
            state[f"{m}.lora_A.default.weight"] = torch.randn(LORA_R, linear.in_features, generator=g) * 0.1
            state[f"{m}.lora_B.default.weight"] = torch.randn(linear.out_features, LORA_R, generator=g) * 0.1
    state[f"{prefix}video_proj.weight"] = torch.randn(hidden, 768, generator=g) * 0.05
    state[f"{prefix}video_proj.bias"] = torch.randn(hidden, generator=g) * 0.05
    return state


def write_official_vatt_llama(models_dir: str, llm_folder: str, checkpoint_name: str = "vatt_llama.ckpt", seed: int = 0,
                              quiet_eos: bool = False, gemma: bool = False) -> tuple:
    """A tiny Vicuna folder at `llm_folder` and models_dir/audiovisual/vatt/<checkpoint_name>: the converter
    (LoRA + projector + frozen base) and a decoder reading its 32-wide states, with AudioGen's 4 x 2048 codes of
    `CODEC_LATENT`-wide latents. Returns (llm model, checkpoint state)."""
    llm = (write_tiny_gemma if gemma else write_tiny_vicuna)(llm_folder, seed=seed, quiet_eos=quiet_eos)
    state = official_vatt_state_dict(seed, dim=32, heads=1, encoder_layers=1, decoder_layers=1, codebooks=4, vocab=2048,
                                     latent=CODEC_LATENT, video_dim=LLM_HIDDEN)
    state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    state.update(converter_state(llm, seed + 1, GEMMA_PREFIX if gemma else CONVERTER_PREFIX))
    folder = os.path.join(models_dir, "audiovisual", "vatt")
    os.makedirs(folder, exist_ok=True)
    torch.save({"state_dict": state, "epoch": 1}, os.path.join(folder, checkpoint_name))
    return llm, state
