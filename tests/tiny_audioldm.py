"""A tiny random AudioLDM pipeline saved in the published diffusers layout of cvssp/audioldm-s-full-v2
(model_index.json, unet/, vae/, vocoder/, scheduler/, text_encoder/, tokenizer/), built offline.

Shapes follow the real model where they matter to the pack: a 1-channel VAE, a UNet conditioned
through `class_embed_type="simple_projection"` (CLAP width TINY_CLAP_DIM here, 512 in the real one),
and a SpeechT5HifiGan vocoder at 16 kHz with hop 160 (10 ms frames), so durations map to the same
sample counts as with the real model. Everything else is as small as diffusers allows.
"""

import json
import os

import torch

TINY_CLAP_DIM = 16
TINY_SAMPLE_RATE = 16000
TINY_HOP = 160
TINY_MELS = 16


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / RoBERTa byte -> printable character table (every byte gets one vocabulary entry)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def write_tiny_roberta_tokenizer(folder: str, model_max_length: int = 77) -> int:
    """A byte-level BPE RoBERTa tokenizer in the published slow-tokenizer layout (vocab.json, merges.txt,
    tokenizer_config.json, special_tokens_map.json) whose vocabulary is the special tokens, the 256 byte
    symbols and a few merges. Returns the vocab size."""
    os.makedirs(folder, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in bytes_to_unicode().values():
        vocab.setdefault(symbol, len(vocab))
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab["<mask>"] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    # the published folder's files: vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "pad_token": "<pad>",
                "cls_token": "<s>", "mask_token": "<mask>"}
    with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as handle:
        json.dump(specials, handle)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as handle:
        json.dump({"tokenizer_class": "RobertaTokenizer", "model_max_length": model_max_length, "add_prefix_space": False,
                   "errors": "replace", "trim_offsets": True, **specials}, handle)
    return len(vocab)


def tiny_audioldm_components(seed: int = 0, with_text_encoder: bool = True) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16), class_embed_type="simple_projection", projection_class_embeddings_input_dim=TINY_CLAP_DIM,
        class_embeddings_concat=True, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=1, out_channels=1, norm_num_groups=8,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=TINY_MELS, sampling_rate=TINY_SAMPLE_RATE, upsample_initial_channel=16, upsample_rates=[10, 16],
        upsample_kernel_sizes=[20, 32], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False,
        initializer_range=0.1))  # audible output (the default 0.01 gives ~1e-5, silent in a 16-bit WAV)
    scheduler = DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
    components = {"unet": unet.eval(), "vae": vae.eval(), "vocoder": vocoder.eval(), "scheduler": scheduler}
    if with_text_encoder:
        components["text_encoder"] = ClapTextModelWithProjection(ClapTextConfig(
            bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=8, intermediate_size=16, num_attention_heads=1,
            num_hidden_layers=1, vocab_size=300, projection_dim=TINY_CLAP_DIM, max_position_embeddings=80, layer_norm_eps=1e-5)).eval()
    return components


def write_tiny_audioldm(folder: str, seed: int = 0, with_text_encoder: bool = True) -> str:
    """Writes a tiny random AudioLDM pipeline folder (safetensors weights, published layout); returns `folder`.
    `with_text_encoder=False` leaves out text_encoder/ and tokenizer/ (and lists them as null in model_index.json)."""
    components = tiny_audioldm_components(seed, with_text_encoder)
    os.makedirs(folder, exist_ok=True)
    for name in ("unet", "vae", "vocoder", "text_encoder"):
        if name in components:
            components[name].save_pretrained(os.path.join(folder, name), safe_serialization=True)
    components["scheduler"].save_pretrained(os.path.join(folder, "scheduler"))
    if with_text_encoder:
        vocab_size = write_tiny_roberta_tokenizer(os.path.join(folder, "tokenizer"))
        assert vocab_size <= components["text_encoder"].config.vocab_size
    import diffusers

    index = {
        "_class_name": "AudioLDMPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "ClapTextModelWithProjection"] if with_text_encoder else [None, None],
        "tokenizer": ["transformers", "RobertaTokenizer"] if with_text_encoder else [None, None],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "vocoder": ["transformers", "SpeechT5HifiGan"],
    }
    with open(os.path.join(folder, "model_index.json"), "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2)
    return folder
