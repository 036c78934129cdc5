"""AudioLDM generation from CLAP embeddings: (embedding [B, D], negative, steps, guidance, duration,
seed) -> waveform [B, 1, T] at the vocoder's sample rate.

The denoising loop is diffusers' `AudioLDMPipeline.__call__` with `prompt_embeds` /
`negative_prompt_embeds`, step for step (same noise from the same generator, same scheduler
calls, same guidance formula, VAE decode and vocoder), so the numbers match the pipeline's
(tests/test_audioldm.py checks this). It is written out rather than called because the pipeline
(deprecated in diffusers since 0.33) needs its text encoder even when given embeddings, and
because the duration here is exact: the pipeline rounds the length up to the VAE/vocoder grid;
here the waveform is then cut (or padded) to round(duration_s * sample_rate) samples.

Conditioning is L2-normalised per row, as AudioLDM's CLAP embeddings are. Without a negative
embedding the unconditional vector is the model's `unconditional_embedding()` (the empty text's
embedding when the folder has its text encoder, as in AudioLDM and diffusers; zeros otherwise).
Guidance <= 1 runs one UNet pass per step and no unconditional pass (as the pipeline).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F

StepCallback = Callable[[int, int], None]  # (steps done, total steps)


def _rows(vectors: torch.Tensor, what: str, dim: int, batch: int | None = None) -> torch.Tensor:
    if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2:
        shape = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__
        raise ValueError(f"{what}: expected CLAP vectors [batch, {dim}], got {shape}")
    if vectors.shape[1] != dim:
        raise ValueError(f"{what}: the vectors are {vectors.shape[1]}-d, the AudioLDM UNet takes {dim}-d CLAP embeddings")
    if vectors.shape[0] == 0:
        raise ValueError(f"{what}: no vectors (batch of 0)")
    if not bool(torch.isfinite(vectors).all()):
        raise ValueError(f"{what}: holds NaN or infinite values")
    if batch is not None and vectors.shape[0] not in (1, batch):
        raise ValueError(f"{what}: has {vectors.shape[0]} rows, expected 1 or {batch} (one per embedding)")
    vectors = vectors.float()
    return vectors.expand(batch, -1) if batch is not None else vectors


def latent_frames(model, duration_s: float) -> tuple[int, int]:
    """(samples, mel frames): the exact sample count asked for, and the mel height generated for it
    (at least the samples, rounded up to a multiple of the VAE's factor)."""
    samples = int(round(float(duration_s) * model.sample_rate_hz))
    if samples < 1:
        raise ValueError(f"duration_s: {duration_s} s is shorter than one sample at {model.sample_rate_hz} Hz")
    frames = math.ceil(samples / model.hop_samples)
    factor = model.vae_scale_factor
    return samples, max(factor, math.ceil(frames / factor) * factor)


@torch.no_grad()
def audioldm_generate(model, embedding: torch.Tensor, negative: torch.Tensor | None = None, *, steps: int = 50,
                      guidance: float = 2.5, duration_s: float = 5.0, seed: int | None = 0, generator: torch.Generator | None = None,
                      eta: float = 0.0, callback: StepCallback | None = None) -> tuple[torch.Tensor, int]:
    """Generates one clip per embedding row.

    Args:
        model: a `loaders.audioldm.AudioLDM` (on any device; inputs follow it).
        embedding: CLAP vectors [B, D], D = model.clap_dim; L2-normalised here.
        negative: [B, D] or [1, D] vectors guidance steers away from; None -> model.unconditional_embedding().
        steps: scheduler steps (the UNet runs once per step, twice per step batched when guidance > 1).
        guidance: classifier-free guidance scale; <= 1 disables guidance.
        duration_s: length of the output; exact to the sample.
        seed: seeds a CPU torch.Generator (the same noise on every device), unless `generator` is given.
        eta: DDIM's eta (ignored by schedulers without it).
        callback: called after every denoising step with (steps done, total); may raise to interrupt.

    Returns:
        (waveform float32 [B, 1, round(duration_s * sample_rate)] on the CPU, sample_rate_hz).
    """
    from diffusers.utils.torch_utils import randn_tensor

    if int(steps) < 1:
        raise ValueError(f"steps: expected at least 1, got {steps}")
    if not math.isfinite(float(guidance)) or guidance < 0:
        raise ValueError(f"guidance: expected a finite value >= 0, got {guidance}")
    if not math.isfinite(float(duration_s)) or duration_s <= 0:
        raise ValueError(f"duration_s: expected a positive number of seconds, got {duration_s}")
    dim = model.clap_dim
    condition = F.normalize(_rows(embedding, "embedding", dim), dim=-1)
    batch = condition.shape[0]
    guided = guidance > 1.0
    if guided:
        uncond = model.unconditional_embedding() if negative is None else negative
        uncond = F.normalize(_rows(uncond, "negative embedding", dim, batch), dim=-1)
    samples, height = latent_frames(model, duration_s)

    device, dtype = model.device, model.dtype
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(int(seed or 0))
    scheduler = type(model.scheduler).from_config(model.scheduler.config)  # fresh state every call (PNDM keeps some)
    scheduler.set_timesteps(int(steps), device=device)
    timesteps = scheduler.timesteps
    class_labels = torch.cat([uncond, condition]) if guided else condition
    class_labels = class_labels.to(device=device, dtype=dtype)

    factor = model.vae_scale_factor
    shape = (batch, model.unet.config.in_channels, height // factor, model.n_mels // factor)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * scheduler.init_noise_sigma
    step_parameters = set(inspect.signature(scheduler.step).parameters)
    extra = {key: value for key, value in (("eta", eta), ("generator", generator)) if key in step_parameters}

    total = len(timesteps)
    for i, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        noise = model.unet(model_input, t, encoder_hidden_states=None, class_labels=class_labels).sample
        if guided:
            noise_uncond, noise_cond = noise.chunk(2)
            noise = noise_uncond + guidance * (noise_cond - noise_uncond)
        latents = scheduler.step(noise, t, latents, **extra).prev_sample
        if callback is not None:
            callback(i + 1, total)

    mel = model.vae.decode(latents / model.vae.config.scaling_factor).sample  # [B, 1, frames, n_mels]
    waveform = model.vocoder(mel.squeeze(1)).reshape(batch, -1).float().cpu()
    if waveform.shape[-1] < samples:
        waveform = F.pad(waveform, (0, samples - waveform.shape[-1]))
    waveform = waveform[:, :samples]
    if not bool(torch.isfinite(waveform).all()):
        raise ValueError("the AudioLDM decoder produced NaN or infinite samples")
    return waveform.unsqueeze(1), model.sample_rate_hz
