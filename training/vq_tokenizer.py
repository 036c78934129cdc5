"""Train a small VQGAN tokenizer for images or SpecVQGAN mels (saved as our single-file safetensors).

    python -m comfyui_audiovisual train vq --modality image --data DATA.safetensors --out vq.safetensors

DATA.safetensors holds "images" [M, 3, H, W] in [0, 1] (modality image) or "mels" [M, 80, T] in
[0, 1] (modality audio, SpecVQGAN's normalisation; T is cropped to a multiple of the downsample
factor). The model is a diffusers `VQModel` in taming's shape (ch, ch_mult, res blocks, attention
in the mid block). Loss: L1 reconstruction + codebook + 0.25 * commitment (VQ-VAE), plus an
optional hinge PatchGAN term (`--adv-weight`, 0 by default). For images, `--chroma-weight` weights
the L1 term by each target pixel's chroma, so small saturated objects on a grey background get most
of the capacity (0 by default: plain L1). Unused codebook entries are
re-seeded from recent encoder outputs (dead-code restarts), which keeps tiny codebooks alive.
No perceptual (LPIPS) term: it needs pretrained VGG weights that this pack does not ship.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..loaders.checkpoint_io import read_state_dict, torch_save_atomic
from ..loaders.vq_checkpoints import load_vq_model, save_vq_model
from ..vq.tokenizer import mel_to_model

DATA_KEYS = {"image": "images", "audio": "mels"}


def norm_groups_for(widths) -> int:
    """The largest of 32, 16, 8, 4, 2, 1 that divides every width (taming uses 32)."""
    for groups in (32, 16, 8, 4, 2, 1):
        if all(w % groups == 0 for w in widths):
            return groups
    return 1


def build_vq_model(
    modality: str,
    *,
    ch: int = 32,
    ch_mult=(1, 2, 2),
    res_blocks: int = 1,
    codebook_size: int = 256,
    embed_dim: int = 32,
    attention_levels=(),
):
    """A fresh diffusers VQModel for `modality` ("image": 3 channels, "audio": 1-channel mels)."""
    from diffusers import VQModel

    if modality not in DATA_KEYS:
        raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")
    channels = 3 if modality == "image" else 1
    widths = [ch * m for m in ch_mult]
    levels = range(len(widths))
    return VQModel(
        in_channels=channels,
        out_channels=channels,
        down_block_types=["AttnDownEncoderBlock2D" if i in attention_levels else "DownEncoderBlock2D" for i in levels],
        up_block_types=["AttnUpDecoderBlock2D" if i in attention_levels else "UpDecoderBlock2D" for i in reversed(levels)],
        block_out_channels=widths,
        layers_per_block=res_blocks,
        latent_channels=embed_dim,
        num_vq_embeddings=codebook_size,
        vq_embed_dim=embed_dim,
        norm_num_groups=norm_groups_for(widths),
    )


def load_training_data(path: str, modality: str, downsample_factor: int) -> torch.Tensor:
    """Model-space training data [M, C, H, W] in [-1, 1] from DATA.safetensors."""
    key = DATA_KEYS[modality]
    tensors, _ = read_state_dict(path)
    name = os.path.basename(path)
    if key not in tensors:
        raise ValueError(f"{name}: missing tensor {key!r} (modality {modality}; found {sorted(tensors)[:5]})")
    data = tensors[key].to(torch.float32)
    return data_to_model_space(data, modality, downsample_factor, f"{name}: tensor {key!r}")


def data_to_model_space(data01: torch.Tensor, modality: str, downsample_factor: int, what: str = "data") -> torch.Tensor:
    """[M, 3, H, W] images or [M, n_mels, T] mels in [0, 1] -> [M, C, H, W] in [-1, 1], sized to the factor."""
    if not torch.isfinite(data01).all():
        raise ValueError(f"{what}: holds NaN or infinite values")
    if data01.numel() and (float(data01.min()) < -1e-3 or float(data01.max()) > 1 + 1e-3):
        raise ValueError(f"{what}: values must lie in [0, 1], found {float(data01.min()):.3g}..{float(data01.max()):.3g}")
    f = downsample_factor
    if modality == "image":
        if data01.dim() != 4 or data01.shape[1] != 3:
            raise ValueError(f"{what}: expected images [M, 3, H, W], got {tuple(data01.shape)}")
        height, width = data01.shape[2] - data01.shape[2] % f, data01.shape[3] - data01.shape[3] % f
        if height == 0 or width == 0:
            raise ValueError(f"{what}: images smaller than {f}x{f} pixels")
        return data01[:, :, :height, :width].clamp(0, 1) * 2 - 1
    if data01.dim() != 3:
        raise ValueError(f"{what}: expected mels [M, n_mels, T], got {tuple(data01.shape)}")
    if data01.shape[1] % f:
        raise ValueError(f"{what}: {data01.shape[1]} mel bins is not a multiple of the downsample factor {f}")
    return mel_to_model(data01, f, "crop")


class PatchDiscriminator(nn.Module):
    """Small PatchGAN (taming's NLayerDiscriminator shape, fewer layers), for the optional adversarial term."""

    def __init__(self, channels: int, width: int = 32, n_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers):
            layers += [nn.Conv2d(width * 2 ** (i - 1), width * 2**i, 4, 2, 1), nn.GroupNorm(1, width * 2**i), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(width * 2 ** (n_layers - 1), 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def vq_forward(vq, x: torch.Tensor):
    """(reconstruction [B,C,H,W], VQ loss scalar, indices [N], pre-quantisation vectors [N, D])."""
    latents = vq.encode(x).latents
    quantized, vq_loss, (_, _, indices) = vq.quantize(latents)
    reconstruction = vq.decode(quantized, force_not_quantize=True).sample
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    return reconstruction, vq_loss, indices.reshape(-1), flat


@torch.no_grad()
def reconstruction_l1(vq, data: torch.Tensor, batch_size: int = 16) -> float:
    """Mean |x - decode(encode(x))| over model-space data [M, C, H, W] (eval mode, quantised)."""
    was_training = vq.training
    vq.eval()
    device = next(vq.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        x = data[start : start + batch_size].to(device)
        reconstruction, _, _, _ = vq_forward(vq, x)
        total += float((reconstruction - x).abs().sum())
        count += x.numel()
    vq.train(was_training)
    return total / max(count, 1)


def edge_l1(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the horizontal and vertical finite differences of two [B, C, H, W] batches."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return 0.5 * ((dx(reconstruction) - dx(target)).abs().mean() + (dy(reconstruction) - dy(target)).abs().mean())


def chroma_weights(target: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel L1 weights [B, 1, H, W] for model-space RGB images [B, 3, H, W] in [-1, 1]:
    1 + weight * chroma, chroma = max - min over the channels in [0, 1] units, max-pooled over 3x3
    so the pixels just outside a coloured object (where a blurred outline bleeds) count as the object."""
    chroma = (target.amax(1, keepdim=True) - target.amin(1, keepdim=True)) / 2
    return 1 + weight * F.max_pool2d(chroma, 3, stride=1, padding=1)


@torch.no_grad()
def code_usage(vq, data: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """How often each codebook entry is chosen over model-space data [M, C, H, W]: long [codebook size]."""
    device = next(vq.parameters()).device
    size = vq.quantize.embedding.weight.shape[0]
    counts = torch.zeros(size, dtype=torch.long)
    was_training = vq.training
    vq.eval()
    for start in range(0, len(data), batch_size):
        latents = vq.encode(data[start : start + batch_size].to(device)).latents
        _, _, (_, _, indices) = vq.quantize(latents)
        counts += torch.bincount(indices.reshape(-1).cpu(), minlength=size)
    vq.train(was_training)
    return counts


@torch.no_grad()
def prune_codebook(vq, counts: torch.Tensor, min_fraction: float = 1e-5):
    """A copy of `vq` keeping only the codes chosen more than `min_fraction` of the time (in their
    order). Every input whose codes are all kept tokenizes to the renumbered ids; inputs that used a
    dropped (all but unused) code fall to their next-nearest kept code. Returns (vq, kept ids [K])."""
    from diffusers import VQModel

    keep = torch.nonzero(counts.float() > min_fraction * float(counts.sum())).flatten()
    if len(keep) == 0:
        raise ValueError("prune_codebook: no code is used")
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    state["quantize.embedding.weight"] = state["quantize.embedding.weight"][keep.to(state["quantize.embedding.weight"].device)]
    pruned = VQModel.from_config({**dict(vq.config), "num_vq_embeddings": int(len(keep))})
    pruned.load_state_dict(state)
    return pruned.to(next(vq.parameters()).device).eval(), keep


@torch.no_grad()
def restart_dead_codes(vq, usage: torch.Tensor, recent_vectors: torch.Tensor, threshold: float, generator) -> int:
    """Re-seed codebook rows whose usage (running count) is below `threshold` with recent encoder outputs."""
    dead = torch.nonzero(usage < threshold).flatten()
    if len(dead) == 0 or len(recent_vectors) == 0:
        return 0
    picks = torch.randint(0, len(recent_vectors), (len(dead),), generator=generator).to(recent_vectors.device)
    weight = vq.quantize.embedding.weight
    noise = 0.01 * recent_vectors.std() * torch.randn(len(dead), weight.shape[1], generator=generator).to(weight.device)
    weight[dead.to(weight.device)] = recent_vectors[picks].to(weight.dtype) + noise.to(weight.dtype)
    usage[dead] = threshold  # give them a grace period
    return len(dead)


def train_vq_tokenizer(
    vq,
    data: torch.Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 8,
    lr: float = 2e-4,
    adv_weight: float = 0.0,
    commitment_beta: float = 0.25,
    restart_every: int = 20,
    seed: int = 0,
    log_every: int = 0,
    device: str | torch.device = "cpu",
    decoder_only: bool = False,
    lr_schedule: str = "constant",
    restart_until: float = 1.0,
    edge_weight: float = 0.0,
    chroma_weight: float = 0.0,
    state_path: str | None = None,
    checkpoint_seconds: float = 0.0,
    run_key: str = "",
) -> dict:
    """Train `vq` in place on model-space data [M, C, H, W] in [-1, 1].

    decoder_only: encoder, quant_conv and codebook stay frozen (no restarts), so every image or mel
    keeps its token ids and a transformer trained on them stays valid; only the decoder learns.
    lr_schedule: "constant" or "cosine" (decays to 0 over `steps`).
    restart_until: dead-code restarts happen only in the first `restart_until` fraction of the
        steps; afterwards codes nobody needs stay dead, so usage measures what the data needs
        (and :func:`prune_codebook` can drop them) instead of spreading one pattern over synonyms.
    edge_weight: weight of an L1 term on horizontal and vertical finite differences (edges), which
        keeps outlines (a triangle against a star) that a plain L1 blurs away.
    chroma_weight: RGB images only; the L1 term becomes mean((1 + chroma_weight * chroma) * |error|)
        (:func:`chroma_weights`), so saturated objects outweigh a low-saturation background that
        would otherwise take most of the codes. 0: plain L1. history["l1"] stays the plain L1.
    state_path, checkpoint_seconds: when both are set, the whole training state (weights, optimizer,
        schedule, code usage, random streams, history) is written to `state_path` at least every
        `checkpoint_seconds` of wall time; a later call with the same `state_path` and `run_key`
        (the run's arguments) continues from it and ends with the same model as an uninterrupted run.

    Returns:
        history: {"loss": [...], "l1": [...], "restarted_codes": int, "seconds": float}.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vq.to(device).train()
    vq.quantize.legacy = False  # beta on the commitment term, as in the VQ-VAE paper
    vq.quantize.beta = commitment_beta
    if chroma_weight < 0 or (chroma_weight > 0 and data.shape[1] != 3):
        raise ValueError(f"chroma_weight needs RGB images [M, 3, H, W] and a weight >= 0, got {chroma_weight} "
                         f"for data {tuple(data.shape[1:])}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    if decoder_only:
        trainable = [p for name, p in vq.named_parameters() if name.startswith(("post_quant_conv.", "decoder."))]
        restart_every = 0
    else:
        trainable = list(vq.parameters())
    optimizer = torch.optim.Adam(trainable, lr=lr, betas=(0.5, 0.9))
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
                 if lr_schedule == "cosine" else None)
    discriminator = disc_optimizer = None
    if adv_weight > 0:
        discriminator = PatchDiscriminator(data.shape[1]).to(device)
        disc_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.9))
    codebook_size = vq.quantize.embedding.weight.shape[0]
    usage = torch.zeros(codebook_size)
    history = {"loss": [], "l1": [], "restarted_codes": 0}
    first_step = 0
    modules = {"vq": vq, "optimizer": optimizer, "scheduler": scheduler,
               "discriminator": discriminator, "disc_optimizer": disc_optimizer}
    if state_path and os.path.exists(state_path):
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("run_key") != run_key:
            raise ValueError(f"{state_path}: the training state of another run (its arguments differ: "
                             f"{state.get('run_key')} vs {run_key}); delete it or write to another --out")
        for name, module in modules.items():
            if module is not None:
                module.load_state_dict(state[name])
        usage, history, first_step = state["usage"], state["history"], int(state["step"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        print(f"train vq: resuming from {os.path.basename(state_path)} at step {first_step}/{steps}", flush=True)
    started = last_saved = time.time()
    for step in range(first_step, steps):
        batch_indices = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=generator)
        x = data[batch_indices].to(device)
        if decoder_only:
            with torch.no_grad():
                latents = vq.encode(x).latents
                quantized, _, (_, _, indices) = vq.quantize(latents)
            reconstruction = vq.decode(quantized, force_not_quantize=True).sample
            vq_loss, indices, vectors = torch.zeros((), device=x.device), indices.reshape(-1), None
        else:
            reconstruction, vq_loss, indices, vectors = vq_forward(vq, x)
        error = (reconstruction - x).abs()
        l1 = error.mean()
        loss = (chroma_weights(x, chroma_weight) * error).mean() if chroma_weight > 0 else l1
        loss = loss + vq_loss
        if edge_weight > 0:
            loss = loss + edge_weight * edge_l1(reconstruction, x)
        if discriminator is not None:
            loss = loss - adv_weight * discriminator(reconstruction).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if discriminator is not None:
            real, fake = discriminator(x), discriminator(reconstruction.detach())
            disc_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            disc_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            disc_optimizer.step()
        usage = 0.9 * usage + torch.bincount(indices.detach().cpu(), minlength=codebook_size).float()
        if restart_every and (step + 1) % restart_every == 0 and step + 1 < steps * restart_until:
            threshold = 1e-3 * len(indices)
            history["restarted_codes"] += restart_dead_codes(vq, usage, vectors.detach(), threshold, generator)
        history["loss"].append(loss.item())
        history["l1"].append(l1.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps}  loss {history['loss'][-1]:.4f}  l1 {history['l1'][-1]:.4f}  "
                  f"codes used {int((usage > 1e-3 * len(indices)).sum())}/{codebook_size}", flush=True)
        if state_path and checkpoint_seconds > 0 and step + 1 < steps and time.time() - last_saved >= checkpoint_seconds:
            torch_save_atomic({"run_key": run_key, "step": step + 1, "usage": usage, "history": history,
                               "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                               **{name: module.state_dict() for name, module in modules.items() if module is not None}},
                              state_path)
            last_saved = time.time()
    vq.eval()
    history["seconds"] = time.time() - started
    return history


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual train vq", description=__doc__.split("\n")[0])
    parser.add_argument("--modality", choices=("image", "audio"), required=True)
    parser.add_argument("--data", required=True, help='safetensors with "images" [M,3,H,W] or "mels" [M,80,T] in [0,1]')
    parser.add_argument("--out", required=True, help="output .safetensors (our single-file VQModel)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--ch", type=int, default=32)
    parser.add_argument("--ch-mult", default="1,2,2", help="channel multipliers per level (downsampling 2**(levels-1))")
    parser.add_argument("--res-blocks", type=int, default=1)
    parser.add_argument("--attention-last-level", action="store_true", help="attention at the coarsest level too")
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--adv-weight", type=float, default=0.0, help="hinge PatchGAN weight (0: off)")
    parser.add_argument("--restart-every", type=int, default=20, help="dead-code restart period in steps (0: off)")
    parser.add_argument("--restart-until", type=float, default=1.0,
                        help="restarts only during this fraction of the steps (then unneeded codes stay dead)")
    parser.add_argument("--edge-weight", type=float, default=0.0, help="weight of an L1 term on image/mel edges (0: off)")
    parser.add_argument("--chroma-weight", type=float, default=0.0,
                        help="images: weight the L1 by 1 + this x each target pixel's chroma, so coloured objects "
                             "outweigh a grey background (0: plain L1)")
    parser.add_argument("--prune-below", type=float, default=0.0,
                        help="after training, drop codes chosen in at most this fraction of the training data's tokens (0: keep all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", default=None, help="a VQ model file to continue training from")
    parser.add_argument("--decoder-only", action="store_true",
                        help="with --resume: train the decoder alone (token ids, and so a transformer trained on them, stay valid)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--checkpoint-seconds", type=float, default=540.0,
                        help="write the training state (OUT.training_state.pt) at least this often; a rerun of the same "
                             "command continues from it (0: off)")
    args = parser.parse_args(argv)
    try:
        args.ch_mult = tuple(int(v) for v in args.ch_mult.split(","))
    except ValueError:
        parser.error(f"--ch-mult must be comma-separated integers, got {args.ch_mult!r}")
    for name in ("steps", "batch_size", "ch", "codebook_size", "embed_dim"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


ARCHITECTURE_ARGS = ("ch", "ch_mult", "res_blocks", "attention_last_level", "codebook_size", "embed_dim")
"""Options that build a new model; with --resume the model comes from the file and these are ignored."""


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    previous_steps, metadata = 0, {}
    if args.decoder_only and not args.resume:
        raise SystemExit("train vq: --decoder-only needs --resume (a trained tokenizer whose decoder to refine)")
    if args.resume:
        vq, info = load_vq_model(args.resume)
        _, metadata = read_state_dict(args.resume)
        previous_steps = int(metadata.get("train_steps", 0))
        if metadata.get("modality", args.modality) != args.modality:
            raise ValueError(f"{os.path.basename(args.resume)}: trained for {metadata['modality']}, not {args.modality}")
        factor = info["downsample_factor"]
    else:
        attention = (len(args.ch_mult) - 1,) if args.attention_last_level else ()
        vq = build_vq_model(args.modality, ch=args.ch, ch_mult=args.ch_mult, res_blocks=args.res_blocks,
                            codebook_size=args.codebook_size, embed_dim=args.embed_dim, attention_levels=attention)
        factor = 2 ** (len(args.ch_mult) - 1)
    data = load_training_data(args.data, args.modality, factor)
    state_path = args.out + ".training_state.pt"
    plain_args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}  # JSON-ready
    run_key = json.dumps({k: v for k, v in sorted(plain_args.items())
                          if k not in ("log_every", "checkpoint_seconds", "device")
                          and not (k == "chroma_weight" and not v)})  # states written before the option resume
    check = data[:512]  # a fixed subset for the before/after figures
    before = reconstruction_l1(vq.to(args.device), check)
    print(f"{len(data)} examples {tuple(data.shape[1:])}, downsample {factor}, tokens "
          f"{data.shape[2] // factor}x{data.shape[3] // factor}; L1 before {before:.4f}", flush=True)
    history = train_vq_tokenizer(vq, data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 adv_weight=args.adv_weight, restart_every=args.restart_every, seed=args.seed,
                                 log_every=args.log_every, device=args.device, decoder_only=args.decoder_only,
                                 lr_schedule=args.lr_schedule, restart_until=args.restart_until,
                                 edge_weight=args.edge_weight, chroma_weight=args.chroma_weight, state_path=state_path,
                                 checkpoint_seconds=args.checkpoint_seconds, run_key=run_key)
    usage = code_usage(vq, data)
    pruned_from = None
    if args.prune_below > 0:
        if args.decoder_only:
            raise SystemExit("train vq: --prune-below renumbers the codes; it cannot be combined with --decoder-only")
        pruned_from = int(usage.numel())
        vq, kept = prune_codebook(vq, usage, args.prune_below)
        usage = usage[kept]
    print(f"codes used on the training data: {int((usage > 0).sum())}/{usage.numel()}"
          + (f" (pruned from {pruned_from})" if pruned_from else ""), flush=True)
    after = reconstruction_l1(vq, check)
    train_args = {k: v for k, v in plain_args.items()
                  if not (args.resume and k in ARCHITECTURE_ARGS)}  # resumed: the architecture is the file's, not these defaults
    save_vq_model(vq.to("cpu"), args.out, {
        "modality": args.modality,
        "train_steps": str(previous_steps + args.steps),
        "decoder_steps": str(int(metadata.get("decoder_steps", 0)) + args.steps) if args.decoder_only else metadata.get("decoder_steps", "0"),
        "train_args": json.dumps(train_args),
        **({"earlier_train_args": metadata["train_args"]} if "train_args" in metadata else {}),
        "reconstruction_l1": f"{after:.6f}",
        "codes_used": str(int((usage > 0).sum())),
        **({"pruned_from": str(pruned_from)} if pruned_from else {}),
    })
    if os.path.exists(state_path):
        os.remove(state_path)  # the finished model replaces the interrupted run's state
    print(f"L1 after {after:.4f} ({history['seconds']:.1f} s, {history['restarted_codes']} codes restarted); "
          f"wrote {args.out}", flush=True)
    return 0 if math.isfinite(after) else 1
