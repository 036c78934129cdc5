"""The smallest FLUX the host accepts, and a FLUX-layout VAE, as safetensors files for host tests.

comfy/model_detection.py infers a FLUX from the key `double_blocks.0.img_attn.norm.key_norm.scale`
plus `img_in.weight`, takes hidden_size from img_in/txt_in, context_in_dim (4096 for T5-XXL) from
`txt_in.weight`, vec_in_dim (768 for CLIP-L pooled) from `vector_in.in_layer.weight`,
guidance_embed from the presence of `guidance_in`, and counts the double/single blocks. num_heads
(24) and axes_dim (16+56+56 = 128) are fixed for FLUX, so the width must stay 3072; the smallest
model is one double block and no single block (404M parameters at the published text widths,
stored in bfloat16: 0.8 GB on disk; load it with UNETLoader's weight_dtype fp8_e4m3fn to halve the
memory; the host casts each layer to float32 on the CPU). Other text widths (`context_dim`,
`pooled_dim`) give a FLUX for adapters trained against other text encoders.

The VAE has the layout of FLUX's `ae.safetensors` (comfy/sd.py: `decoder.conv_in.weight` with 16
latent channels and no `post_quant_conv` -> AutoencodingEngine with ch 128, ch_mult 1,2,4,4, two
res blocks per level; 8x upscaling), random: 84M parameters, 0.17 GB in bfloat16.
"""

import torch

H = 3072  # FLUX width (24 heads x 128)


def tiny_flux_state_dict(seed: int = 0, context_dim: int = 4096, pooled_dim: int = 768) -> dict:
    """A FLUX state dict in the published (BFL) layout with one double block and no single block."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def linear(name, out_features, in_features):
        bound = 1.0 / in_features ** 0.5
        sd[name + ".weight"] = torch.empty(out_features, in_features, dtype=torch.bfloat16).uniform_(-bound, bound, generator=g)
        sd[name + ".bias"] = torch.zeros(out_features, dtype=torch.bfloat16)

    linear("img_in", H, 16 * 2 * 2)  # 16 latent channels, 2x2 patches
    for name, width in (("time_in", 256), ("vector_in", pooled_dim), ("guidance_in", 256)):
        linear(f"{name}.in_layer", H, width)
        linear(f"{name}.out_layer", H, H)
    linear("txt_in", H, context_dim)
    for stream in ("img", "txt"):
        prefix = f"double_blocks.0.{stream}"
        linear(f"{prefix}_mod.lin", 6 * H, H)
        linear(f"{prefix}_attn.qkv", 3 * H, H)
        sd[f"{prefix}_attn.norm.query_norm.scale"] = torch.ones(128, dtype=torch.bfloat16)
        sd[f"{prefix}_attn.norm.key_norm.scale"] = torch.ones(128, dtype=torch.bfloat16)
        linear(f"{prefix}_attn.proj", H, H)
        linear(f"{prefix}_mlp.0", 4 * H, H)
        linear(f"{prefix}_mlp.2", H, 4 * H)
    linear("final_layer.linear", 16 * 2 * 2, H)
    linear("final_layer.adaLN_modulation.1", 2 * H, H)
    return sd


def tiny_flux_vae_state_dict(seed: int = 0) -> dict:
    """A FLUX-layout VAE (keys `encoder.*` and `decoder.*`, shapes of the host's own Encoder and Decoder
    classes at FLUX's settings), random, in bfloat16. Needs the host importable (a booted host)."""
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    settings = dict(double_z=True, z_channels=16, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
                    num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    with torch.device("meta"):
        parts = {"encoder": Encoder(**settings), "decoder": Decoder(**settings)}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, module in parts.items():
        for name, tensor in module.state_dict().items():
            shape = tuple(tensor.shape)
            if name.endswith(".bias"):
                value = torch.zeros(shape)
            elif len(shape) == 1:  # norm scales
                value = torch.ones(shape)
            else:
                bound = 1 / max(1, tensor[0].numel()) ** 0.5
                value = torch.empty(shape).uniform_(-bound, bound, generator=g)
            sd[f"{prefix}.{name}"] = value.to(torch.bfloat16)
    return sd


def release_models():
    """Lets the host drop the FLUX (1.6 GB in fp8 + casts) it keeps loaded between graphs."""
    import gc

    import comfy.model_management as mm

    mm.unload_all_models()
    mm.cleanup_models_gc()
    gc.collect()
