"""The learning-rate schedule the pack's trainers share."""

import math


def warmup_cosine_lr(step: int, lr: float, steps: int, warmup_steps: int, floor: float) -> float:
    """Learning rate at 1-based `step`: linear warm-up over `warmup_steps`, then half a cosine from `lr`
    down to `floor * lr` at `steps` (held there after)."""
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
