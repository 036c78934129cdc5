"""Tiny random models in the pack's own formats, with the grids of the SynthAV defaults
(64x64 images -> 8x8 tokens; 176-frame mels -> 5x11 tokens), for host tests of every workflow."""

import json
import os

import torch
from diffusers import VQModel

from comfyui_audiovisual.loaders.masked_transformer import save_masked_transformer
from comfyui_audiovisual.loaders.vq_checkpoints import save_vq_model
from comfyui_audiovisual.networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig

IMAGE_GRID = (8, 8)
AUDIO_GRID = (5, 11)
MEL_FRAMES = 176
CODEBOOK = 32


def tiny_vq(in_channels: int, levels: int, seed: int) -> VQModel:
    torch.manual_seed(seed)
    return VQModel(in_channels=in_channels, out_channels=in_channels, down_block_types=("DownEncoderBlock2D",) * levels,
                   up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=(8,) * levels, layers_per_block=1,
                   latent_channels=4, num_vq_embeddings=CODEBOOK, vq_embed_dim=4, norm_num_groups=4, sample_size=64).eval()


def write_tiny_pack_models(folder: str) -> dict[str, str]:
    """Writes tiny_image_vq / tiny_spec_vq / tiny_maskgen .safetensors into `folder`; returns their names by role."""
    os.makedirs(folder, exist_ok=True)
    save_vq_model(tiny_vq(3, 4, 0), os.path.join(folder, "tiny_image_vq.safetensors"), {"image_size": 64})
    save_vq_model(tiny_vq(1, 5, 1), os.path.join(folder, "tiny_spec_vq.safetensors"), {"mel_frames": MEL_FRAMES})
    torch.manual_seed(2)
    config = MaskedAVTransformerConfig(audio_vocab_size=CODEBOOK, image_vocab_size=CODEBOOK, audio_seq_len=AUDIO_GRID[0] * AUDIO_GRID[1],
                                       image_seq_len=IMAGE_GRID[0] * IMAGE_GRID[1], dim=32, encoder_depth=1, decoder_depth=1, num_heads=2)
    save_masked_transformer(MaskedAVTransformer(config), os.path.join(folder, "tiny_maskgen.safetensors"),
                            {"audio_grid": json.dumps(AUDIO_GRID), "image_grid": json.dumps(IMAGE_GRID), "seconds_per_column": 16 * 256 / 22050})
    return {"image_vq": "tiny_image_vq.safetensors", "spec_vq": "tiny_spec_vq.safetensors", "maskgen": "tiny_maskgen.safetensors"}
