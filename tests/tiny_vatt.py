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
