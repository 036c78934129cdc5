"""The diffusion mapper's noise schedule, forward (noising) process and reverse process.

Variance-preserving diffusion over ``num_train_timesteps`` steps with a cosine (Nichol & Dhariwal
2021, betas capped at 0.999) or linear (DDPM: 1e-4 .. 0.02, rescaled to the number of steps) beta
schedule. The network predicts the clean sample x0; the reverse process is DDIM (Song et al. 2021)
written for x0 prediction:

    eps_hat = (x_t - sqrt(a_t) x0_hat) / sqrt(1 - a_t)
    x_prev  = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_hat + sigma z,
    sigma   = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)

over ``steps`` timesteps evenly spaced from the last training timestep down to 0; the last
step returns x0_hat. ``eta`` = 0 is deterministic given the starting noise, 1 is DDPM-like. With a
normalised target space, x0_hat is projected onto the targets' sphere at every step (DALL-E 2
prior's l2-norm clamp). All randomness comes from the ``generator`` argument, so a seed fixes the
result. Classifier-free guidance: ``x0 = u + guidance_scale * (c - u)``, one batched pass.

Plain torch; no host imports. Progress and interruption go through the ``callback`` and
``check_interrupt`` arguments.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..networks.v2a_mapper import BETA_SCHEDULES, DiffusionMapper

__all__ = ["alphas_cumprod", "add_noise", "sampling_timesteps", "sample_diffusion_mapper"]


def alphas_cumprod(num_train_timesteps: int, beta_schedule: str = "cosine") -> torch.Tensor:
    """Cumulative products of (1 - beta), float64 [num_train_timesteps]."""
    if num_train_timesteps < 1:
        raise ValueError(f"mapper diffusion: num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if beta_schedule == "cosine":
        def f(t: float) -> float:
            return math.cos((t / num_train_timesteps + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1.0 - f(i + 1) / f(i), 0.999) for i in range(num_train_timesteps)], dtype=torch.float64)
    elif beta_schedule == "linear":
        scale = 1000.0 / num_train_timesteps
        betas = torch.linspace(1e-4 * scale, 0.02 * scale, num_train_timesteps, dtype=torch.float64).clamp(max=0.999)
    else:
        raise ValueError(f"mapper diffusion: beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {beta_schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise, for integer ``timesteps`` [B]."""
    a = alphas.to(x0.device)[timesteps.to(x0.device)].to(x0.dtype)[:, None]
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def sampling_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """``steps`` distinct timesteps from num_train_timesteps - 1 down to 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"mapper diffusion: steps must be a positive integer, got {steps!r}")
    steps = min(steps, num_train_timesteps)
    if steps == 1:
        return [num_train_timesteps - 1]
    points = torch.linspace(num_train_timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()
    return points


@torch.no_grad()
def sample_diffusion_mapper(
    model: DiffusionMapper,
    source: torch.Tensor,
    *,
    steps: int = 50,
    generator: Optional[torch.Generator] = None,
    eta: float = 0.0,
    guidance_scale: float = 1.0,
    callback: Optional[Callable[[int, int, torch.Tensor], None]] = None,
    check_interrupt: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """Target-space vectors [B, target_dim] for source vectors [B, source_dim].

    Args:
        model: the diffusion mapper (its device and dtype are used).
        source: condition vectors in the mapper's source space.
        steps: reverse steps (at most the training timesteps).
        generator: the only source of randomness (starting noise, and the per-step noise when
            eta > 0). Its device is where the noise is drawn; the noise is then moved to the model.
        eta: DDIM stochasticity, 0 (deterministic given the start) .. 1.
        guidance_scale: classifier-free guidance; 1 = conditional prediction only.
        callback: called after each step with (step index, steps, current x0 estimate in target units).
        check_interrupt: called before each step; may raise to stop.
    """
    config = model.config
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"mapper diffusion: eta must be in [0, 1], got {eta}")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"mapper diffusion: guidance_scale must be >= 0, got {guidance_scale}")
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    source = source.to(device=device, dtype=torch.float32)
    batch = source.shape[0]
    alphas = alphas_cumprod(config.num_train_timesteps, config.beta_schedule)
    timesteps = sampling_timesteps(config.num_train_timesteps, steps)
    noise_device = generator.device if generator is not None else torch.device("cpu")

    def noise() -> torch.Tensor:
        return torch.randn(batch, config.target_dim, generator=generator, device=noise_device, dtype=torch.float32).to(device)

    guided = guidance_scale != 1.0
    if guided:  # one batched pass: conditional rows, then the same rows with the null condition
        condition = torch.cat([source, source])
        drop = torch.cat([torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)]).to(device)
    else:
        condition, drop = source, None
    x = noise()
    x0 = x
    was_training = model.training
    model.eval()
    try:
        for index, t in enumerate(timesteps):
            if check_interrupt is not None:
                check_interrupt()
            t_batch = torch.full((condition.shape[0],), t, device=device, dtype=torch.long)
            model_input = torch.cat([x, x]) if guided else x
            prediction = model(model_input.to(dtype), t_batch, condition, drop).float()
            if guided:
                conditional, unconditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            x0 = model.project_model_units(prediction)
            if index == len(timesteps) - 1:
                x = x0
            else:
                a_t = float(alphas[t])
                a_prev = float(alphas[timesteps[index + 1]])
                eps = (x - math.sqrt(a_t) * x0) / math.sqrt(max(1.0 - a_t, 1e-12))
                sigma = eta * math.sqrt(max((1.0 - a_prev) / max(1.0 - a_t, 1e-12) * (1.0 - a_t / a_prev), 0.0))
                x = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma ** 2, 0.0)) * eps
                if sigma > 0:
                    x = x + sigma * noise()
            if callback is not None:
                callback(index, len(timesteps), model.to_target_units(x0))
    finally:
        model.train(was_training)
    return model.to_target_units(x)
