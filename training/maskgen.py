"""Mask-denoising training of the Visual Echoes :class:`MaskedAVTransformer` (MAGE recipe).

Per sample and per modality a mask ratio is drawn from a truncated Gaussian (mean 0.7, std 0.25,
range [0.2, 1]); that fraction of the modality's tokens (rounded up, at least one) is masked.
Then 50 % of all positions are dropped from the encoder input, never more than are masked: every
row drops ``min(floor(0.5 * N), fewest masked tokens in the batch)`` of its masked positions, so all
rows keep the same length. The loss is cross-entropy with label smoothing 0.1 over the masked
positions of both modalities (one mean over all masked tokens of the batch).

Checkpoints (``out_dir``): ``model.safetensors`` (weights + config, see loaders/masked_transformer)
and ``training_state.pt`` (step, optimizer state, arguments; read back with
``torch.load(weights_only=True)``), both replaced atomically every ``checkpoint_every`` steps, at
least every ``checkpoint_seconds`` of wall time, and at the end; ``log.jsonl`` holds one JSON line per logged step.

Distributed: when launched by torchrun (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA); rank 0 logs and writes checkpoints; each
rank draws its own batches and masks.

CLI (``python -m comfyui_audiovisual train maskgen ...``), see :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..loaders.checkpoint_io import torch_save_atomic
from ..loaders.masked_transformer import load_masked_transformer, save_masked_transformer
from ..networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig, init_positions_sincos
from .schedules import warmup_cosine_lr

__all__ = [
    "MaskGenTrainingArgs",
    "truncated_normal",
    "random_masks_with_ratios",
    "drop_masked_positions",
    "sample_training_masks",
    "maskgen_loss",
    "train_maskgen",
    "load_token_dataset",
    "condition_token_accuracy",
    "parse_mask_modes",
    "token_batches",
    "main",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
LOG_FILE = "log.jsonl"

Batch = Tuple[torch.Tensor, torch.Tensor]
BatchSource = Union[Iterable[Batch], Callable[[int], Iterable[Batch]]]


@dataclass
class MaskGenTrainingArgs:
    """Hyper-parameters of :func:`train_maskgen` (MAGE / Visual Echoes defaults)."""

    steps: int = 1000
    lr: float = 3e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 0
    lr_schedule: str = "cosine"  # "cosine" (to 10 % of lr after warm-up) or "constant"
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    mask_ratio_mean: float = 0.7
    mask_ratio_std: float = 0.25
    mask_ratio_min: float = 0.2
    mask_ratio_max: float = 1.0
    drop_fraction: float = 0.5
    # Masking modes, as "name=weight,...": "mage" masks both modalities at once (ratios above);
    # "audio|image" shows all image tokens and masks audio at a MaskGIT cosine ratio (the
    # image -> audio task the sampler runs), "image|audio" the mirror. In the two conditional modes
    # the shown modality is hidden entirely with probability `uncond_prob`, which trains the
    # unconditional pass of classifier-free guidance.
    mask_modes: str = "mage=1"
    uncond_prob: float = 0.1
    checkpoint_every: int = 500
    checkpoint_seconds: float = 540.0  # also checkpoint when this much wall time passed since the last one
    log_every: int = 10
    seed: int = 0
    precision: str = "fp32"  # "fp32" or "bf16" (autocast on CUDA)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"maskgen: steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"maskgen: lr must be > 0, got {self.lr}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"maskgen: lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if not 0.0 < self.mask_ratio_min <= self.mask_ratio_max <= 1.0:
            raise ValueError(
                f"maskgen: mask ratio range must satisfy 0 < min <= max <= 1, got "
                f"[{self.mask_ratio_min}, {self.mask_ratio_max}]")
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError(f"maskgen: drop_fraction must be in [0, 1), got {self.drop_fraction}")
        parse_mask_modes(self.mask_modes)
        if not 0.0 <= self.uncond_prob < 1.0:
            raise ValueError(f"maskgen: uncond_prob must be in [0, 1), got {self.uncond_prob}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"maskgen: precision must be 'fp32' or 'bf16', got {self.precision!r}")


# ----------------------------------------------------------------------------------------------
# masks
# ----------------------------------------------------------------------------------------------
MASK_MODES = ("mage", "audio|image", "image|audio")


def parse_mask_modes(text: str) -> Dict[str, float]:
    """``"mage=0.2,audio|image=0.5,image|audio=0.3"`` -> normalised weights per mode."""
    weights: Dict[str, float] = {}
    for part in str(text).split(","):
        name, _, value = part.strip().partition("=")
        if name not in MASK_MODES:
            raise ValueError(f"maskgen: mask mode {name!r} is not one of {list(MASK_MODES)} (in {text!r})")
        try:
            weights[name] = float(value) if value else 1.0
        except ValueError as error:
            raise ValueError(f"maskgen: mask mode weight {value!r} is not a number (in {text!r})") from error
        if not weights[name] >= 0:
            raise ValueError(f"maskgen: mask mode weight must be >= 0, got {value!r} (in {text!r})")
    total = sum(weights.values())
    if not total > 0:
        raise ValueError(f"maskgen: mask modes {text!r} have no positive weight")
    return {name: weight / total for name, weight in weights.items()}


def cosine_mask_ratios(count: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """MaskGIT's training ratios: cos(pi/2 * u), u ~ U(0, 1) (mostly high, as early sampling steps)."""
    return torch.cos(0.5 * math.pi * torch.rand(count, generator=generator, dtype=torch.float64))
def truncated_normal(count: int, mean: float, std: float, low: float, high: float,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``count`` draws of N(mean, std) truncated to [low, high] (inverse CDF), float64 [count]."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    cdf_low = normal.cdf(torch.tensor((low - mean) / std, dtype=torch.float64))
    cdf_high = normal.cdf(torch.tensor((high - mean) / std, dtype=torch.float64))
    uniform = torch.rand(count, generator=generator, dtype=torch.float64)
    values = mean + std * torch.special.ndtri(cdf_low + uniform * (cdf_high - cdf_low))
    return values.clamp(low, high)


def random_masks_with_ratios(ratios: torch.Tensor, length: int,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Bool [B, length]: row b masks ``ceil(ratios[b] * length)`` (at least 1) random positions."""
    counts = torch.ceil(ratios.double() * length).long().clamp(1, length)
    scores = torch.rand(ratios.shape[0], length, generator=generator)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < counts.unsqueeze(1)


def drop_masked_positions(masked: torch.Tensor, fraction: float,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Bool [B, N]: ``min(floor(fraction * N), fewest masked in a row)`` random masked positions
    per row (the same count for every row), never an unmasked one."""
    batch, length = masked.shape
    count = min(int(math.floor(fraction * length)), int(masked.sum(dim=1).min()) if batch else 0)
    scores = torch.rand(batch, length, generator=generator)
    scores = torch.where(masked, scores, torch.full_like(scores, 2.0))  # unmasked never chosen
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < count


def sample_training_masks(batch: int, audio_len: int, image_len: int, args: MaskGenTrainingArgs,
                          generator: Optional[torch.Generator] = None
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(audio_masked [B, Na], image_masked [B, Ni], drop [B, Na + Ni]) on CPU. Each sample draws a
    mode from ``args.mask_modes``; in "mage" the ratios are drawn independently per modality."""
    draw = lambda: truncated_normal(batch, args.mask_ratio_mean, args.mask_ratio_std,  # noqa: E731
                                    args.mask_ratio_min, args.mask_ratio_max, generator)
    audio_masked = random_masks_with_ratios(draw(), audio_len, generator)
    image_masked = random_masks_with_ratios(draw(), image_len, generator)
    modes = parse_mask_modes(args.mask_modes)
    if modes.get("mage", 0.0) < 1.0:
        names = list(modes)
        choice = torch.multinomial(torch.tensor([modes[n] for n in names], dtype=torch.float64), batch,
                                   replacement=True, generator=generator)
        uncond = torch.rand(batch, generator=generator, dtype=torch.float64) < args.uncond_prob
        audio_cosine = random_masks_with_ratios(cosine_mask_ratios(batch, generator), audio_len, generator)
        image_cosine = random_masks_with_ratios(cosine_mask_ratios(batch, generator), image_len, generator)
        for index, name in enumerate(names):
            rows = choice == index
            if name == "audio|image":
                audio_masked[rows] = audio_cosine[rows]
                image_masked[rows] = uncond[rows].unsqueeze(1).expand(-1, image_len)
            elif name == "image|audio":
                image_masked[rows] = image_cosine[rows]
                audio_masked[rows] = uncond[rows].unsqueeze(1).expand(-1, audio_len)
    drop = drop_masked_positions(torch.cat([audio_masked, image_masked], dim=1), args.drop_fraction, generator)
    return audio_masked, image_masked, drop


# ----------------------------------------------------------------------------------------------
# loss
# ----------------------------------------------------------------------------------------------
def maskgen_loss(model: torch.nn.Module, audio_tokens: torch.Tensor, image_tokens: torch.Tensor,
                 audio_masked: torch.Tensor, image_masked: torch.Tensor, drop: Optional[torch.Tensor],
                 label_smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy (label smoothing) over the masked positions of both modalities, one mean over
    all masked tokens. Inputs: tokens [B, Na] / [B, Ni] long, masks bool, drop [B, Na + Ni] or None."""
    audio_logits, image_logits = model(audio_tokens, image_tokens, audio_masked, image_masked, drop)
    audio_ce = F.cross_entropy(audio_logits.float().transpose(1, 2), audio_tokens,
                               reduction="none", label_smoothing=label_smoothing)
    image_ce = F.cross_entropy(image_logits.float().transpose(1, 2), image_tokens,
                               reduction="none", label_smoothing=label_smoothing)
    total = (audio_ce * audio_masked).sum() + (image_ce * image_masked).sum()
    count = audio_masked.sum() + image_masked.sum()
    return total / count.clamp(min=1)


def lr_at_step(step: int, args: MaskGenTrainingArgs) -> float:
    """Learning rate for 1-based ``step``: linear warm-up, then constant or cosine to 10 %."""
    if args.lr_schedule == "constant" and step > args.warmup_steps:
        return args.lr
    return warmup_cosine_lr(step, args.lr, args.steps, args.warmup_steps, floor=0.1)


# ----------------------------------------------------------------------------------------------
# distributed helpers
# ----------------------------------------------------------------------------------------------
@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device) -> _Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(context: _Distributed) -> None:
    if context.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _step_generator(seed: int, rank: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator fixed by (seed, rank, step, stream): resuming replays the same draws."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 10_007 + step) * 4 + stream)


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def save_training_checkpoint(out_dir: Path, model: MaskedAVTransformer, optimizer: torch.optim.Optimizer,
                             step: int, args: MaskGenTrainingArgs) -> None:
    """Write ``model.safetensors`` and ``training_state.pt`` for ``step``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_save_atomic({"step": step, "optimizer": optimizer.state_dict(), "args": dataclasses.asdict(args)},
                       out_dir / STATE_FILE)
    save_masked_transformer(model, out_dir / MODEL_FILE, extra_metadata={"step": step, "trainer": "maskgen"})


def load_training_checkpoint(out_dir: Path, model: MaskedAVTransformer,
                             optimizer: torch.optim.Optimizer) -> int:
    """Load weights and optimizer state from ``out_dir`` into ``model``/``optimizer``; returns the
    step they were saved at."""
    model_path, state_path = out_dir / MODEL_FILE, out_dir / STATE_FILE
    for path in (model_path, state_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: cannot resume, checkpoint file not found")
    saved = load_masked_transformer(model_path)
    if saved.config != model.config:
        raise ValueError(
            f"{model_path}: config {saved.config.to_dict()} differs from the model being trained "
            f"{model.config.to_dict()}")
    model.load_state_dict(saved.state_dict())
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        return int(state["step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{state_path}: not a maskgen training state ({error})") from error


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
def train_maskgen(
    model: MaskedAVTransformer,
    batches: BatchSource,
    out_dir: Union[str, os.PathLike],
    args: Optional[MaskGenTrainingArgs] = None,
    *,
    resume: bool = False,
    device: Union[str, torch.device, None] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, object]:
    """Train ``model`` by mask denoising.

    Args:
        model: the transformer (moved to ``device``; trained in place).
        batches: an iterable of ``(audio_tokens [B, Na], image_tokens [B, Ni])`` long batches, or
            a callable ``start_step -> iterable`` (lets a resumed run continue the data order).
        out_dir: checkpoint folder.
        args: hyper-parameters (:class:`MaskGenTrainingArgs`).
        resume: continue from ``out_dir``'s checkpoint (weights, optimizer and step).
        device: default CUDA (``cuda:LOCAL_RANK``) when available, else CPU.
        log: receives one human-readable line per logged step.

    Returns:
        ``{"step": last step, "losses": [(step, loss), ...] logged on this rank, "out_dir": path}``.
    """
    args = args or MaskGenTrainingArgs()
    out_dir = Path(out_dir)
    if device is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    context = _setup_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  betas=(args.beta1, args.beta2))
    start_step = 0
    if resume:
        start_step = load_training_checkpoint(out_dir, model, optimizer)
        log(f"maskgen: resumed from {out_dir / MODEL_FILE} at step {start_step}")
    model.to(device)
    train_model: torch.nn.Module = model
    if context.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    batch_iterator: Iterator[Batch] = iter(batches(start_step) if callable(batches) else batches)
    config = model.config
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if args.precision == "bf16" and device.type == "cuda" else None)
    losses: List[Tuple[int, float]] = []
    log_file = out_dir / LOG_FILE
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    train_model.train()
    started = last_saved = time.perf_counter()
    step = start_step
    for step in range(start_step + 1, args.steps + 1):
        try:
            audio_tokens, image_tokens = next(batch_iterator)
        except StopIteration:
            log(f"maskgen: data ran out at step {step - 1}")
            step -= 1
            break
        _check_batch(audio_tokens, image_tokens, config)
        generator = _step_generator(args.seed, context.rank, step, stream=1)
        audio_masked, image_masked, drop = sample_training_masks(
            audio_tokens.shape[0], config.audio_seq_len, config.image_seq_len, args, generator)
        for group in optimizer.param_groups:
            group["lr"] = lr_at_step(step, args)

        tensors = [t.to(device, non_blocking=True) for t in (audio_tokens, image_tokens, audio_masked, image_masked, drop)]
        if autocast is not None:
            with autocast:
                loss = maskgen_loss(train_model, *tensors, label_smoothing=args.label_smoothing)
        else:
            loss = maskgen_loss(train_model, *tensors, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()

        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise ValueError(f"maskgen: loss became {loss_value} at step {step}")
        if args.log_every > 0 and (step % args.log_every == 0 or step == args.steps):
            losses.append((step, loss_value))
            if context.is_main:
                rate = (step - start_step) / max(1e-9, time.perf_counter() - started)
                record = {"step": step, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                          "steps_per_s": rate}
                with open(log_file, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                log(f"maskgen: step {step}/{args.steps} loss {loss_value:.4f} "
                    f"lr {record['lr']:.2e} {rate:.2f} steps/s")
        due_by_time = args.checkpoint_seconds > 0 and time.perf_counter() - last_saved >= args.checkpoint_seconds
        if context.world_size > 1 and args.checkpoint_seconds > 0:  # every rank must agree to meet at the barrier
            import torch.distributed as dist

            flag = torch.tensor([int(due_by_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            due_by_time = bool(flag.item())
        if ((args.checkpoint_every > 0 and step % args.checkpoint_every == 0) or due_by_time) and step != args.steps:
            if context.is_main:
                save_training_checkpoint(out_dir, model, optimizer, step, args)
            last_saved = time.perf_counter()
            _barrier(context)
    if step > start_step or not (out_dir / MODEL_FILE).is_file():
        if context.is_main:
            save_training_checkpoint(out_dir, model, optimizer, step, args)
            log(f"maskgen: saved {out_dir / MODEL_FILE} at step {step}")
        _barrier(context)
    return {"step": step, "losses": losses, "out_dir": str(out_dir)}


def _check_batch(audio_tokens: torch.Tensor, image_tokens: torch.Tensor, config: MaskedAVTransformerConfig) -> None:
    if audio_tokens.dim() != 2 or audio_tokens.shape[1] != config.audio_seq_len:
        raise ValueError(f"maskgen: audio batch has shape {tuple(audio_tokens.shape)}, expected (B, {config.audio_seq_len})")
    if image_tokens.dim() != 2 or image_tokens.shape[1] != config.image_seq_len:
        raise ValueError(f"maskgen: image batch has shape {tuple(image_tokens.shape)}, expected (B, {config.image_seq_len})")
    if audio_tokens.shape[0] != image_tokens.shape[0]:
        raise ValueError(f"maskgen: audio batch {audio_tokens.shape[0]} != image batch {image_tokens.shape[0]}")


@torch.no_grad()
def condition_token_accuracy(model: MaskedAVTransformer, audio: torch.Tensor, image: torch.Tensor,
                             batch_size: int = 64) -> Dict[str, float]:
    """How much of its condition the model uses: one forward pass, argmax accuracy on held-out
    token pairs (audio [M, Na], image [M, Ni]): audio given the image, audio given nothing, image
    given the audio, image given nothing. Conditioned well above unconditioned = it reads the other
    modality."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = {"audio|image": 0.0, "audio|nothing": 0.0, "image|audio": 0.0, "image|nothing": 0.0}
    for start in range(0, audio.shape[0], batch_size):
        a, i = audio[start:start + batch_size].to(device), image[start:start + batch_size].to(device)
        hide_a, show_a = torch.ones_like(a, dtype=torch.bool), torch.zeros_like(a, dtype=torch.bool)
        hide_i, show_i = torch.ones_like(i, dtype=torch.bool), torch.zeros_like(i, dtype=torch.bool)
        hits["audio|image"] += float((model(a, i, hide_a, show_i)[0].argmax(-1) == a).sum())
        both_hidden = model(a, i, hide_a, hide_i)
        hits["audio|nothing"] += float((both_hidden[0].argmax(-1) == a).sum())
        hits["image|nothing"] += float((both_hidden[1].argmax(-1) == i).sum())
        hits["image|audio"] += float((model(a, i, show_a, hide_i)[1].argmax(-1) == i).sum())
    model.train(was_training)
    return {k: v / (audio.numel() if k.startswith("audio") else image.numel()) for k, v in hits.items()}


# ----------------------------------------------------------------------------------------------
# data and CLI
# ----------------------------------------------------------------------------------------------
def load_token_dataset(path: Union[str, os.PathLike]) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, str]]:
    """Read a token file: safetensors with ``audio_tokens`` [M, Na] (or an audio grid [M, rows,
    columns], turned into the column-major sequence) and ``image_tokens`` [M, Ni] (or [M, H, W],
    row-major). Returns (audio [M, Na] long, image [M, Ni] long, metadata)."""
    from safetensors import safe_open

    from ..samplers.visual_echoes import audio_grid_to_sequence, image_grid_to_sequence

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: token data file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            keys = set(handle.keys())
            for key in ("audio_tokens", "image_tokens"):
                if key not in keys:
                    raise ValueError(f"{path.name}: missing key '{key}' (found {sorted(keys)})")
            audio, image = handle.get_tensor("audio_tokens"), handle.get_tensor("image_tokens")
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(f"{path.name}: not a readable safetensors file ({error})") from error
    for key, tensor in (("audio_tokens", audio), ("image_tokens", image)):
        if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.dim() not in (2, 3):
            raise ValueError(
                f"{path.name}: key '{key}' has shape {tuple(tensor.shape)} and dtype {tensor.dtype}, "
                f"expected integer (M, N) or (M, rows, columns)")
        if tensor.numel() and int(tensor.min()) < 0:
            raise ValueError(f"{path.name}: key '{key}' holds negative token ids")
    audio = audio_grid_to_sequence(audio) if audio.dim() == 3 else audio
    image = image_grid_to_sequence(image) if image.dim() == 3 else image
    if audio.shape[0] != image.shape[0] or audio.shape[0] == 0:
        raise ValueError(f"{path.name}: 'audio_tokens' has {audio.shape[0]} rows and 'image_tokens' "
                         f"{image.shape[0]}, expected the same non-zero count")
    return audio.long(), image.long(), metadata


def token_batches(audio: torch.Tensor, image: torch.Tensor, batch_size: int, seed: int = 0,
                  rank: int = 0, start_step: int = 0) -> Iterator[Batch]:
    """Endless random batches (with replacement across batches, without inside one when
    possible); the batch of step s depends only on (seed, rank, s), so a resumed run continues
    the same sequence."""
    count = audio.shape[0]
    step = start_step
    while True:
        step += 1
        generator = _step_generator(seed, rank, step, stream=0)
        if batch_size <= count:
            indices = torch.randperm(count, generator=generator)[:batch_size]
        else:
            indices = torch.randint(0, count, (batch_size,), generator=generator)
        yield audio[indices], image[indices]


def _config_from_argument(text: str) -> dict:
    """--config as a dict of config fields (checked once the data's sequence lengths are in, so a JSON
    that sets token groups need not repeat the lengths)."""
    if text == "tiny":
        return MaskedAVTransformerConfig.tiny().to_dict()
    if text in ("vit_large", "vit-large"):
        return MaskedAVTransformerConfig.vit_large().to_dict()
    if text.lstrip().startswith("{"):
        return _config_dict(json.loads(text), "--config")
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: --config is neither tiny, vit_large, inline JSON nor a JSON file")
    try:
        return _config_dict(json.loads(path.read_text(encoding="utf-8")), path.name)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path.name}: invalid JSON ({error})") from error


def _config_dict(data, what: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a JSON object of MaskedAVTransformerConfig fields, got {type(data).__name__}")
    return data


def _resolve_config(base: dict, audio: torch.Tensor, image: torch.Tensor,
                    metadata: Dict[str, str], data_name: str, audio_vocab: Optional[int],
                    image_vocab: Optional[int]) -> MaskedAVTransformerConfig:
    """Sequence lengths from the data; vocabularies from the CLI, else the data file's metadata
    (``audio_vocab_size`` / ``image_vocab_size``), else the preset."""
    values = dict(base)
    values["audio_seq_len"], values["image_seq_len"] = audio.shape[1], image.shape[1]
    for key, override in (("audio_vocab_size", audio_vocab), ("image_vocab_size", image_vocab)):
        if override is not None:
            values[key] = override
        elif key in metadata:
            values[key] = int(metadata[key])
    config = MaskedAVTransformerConfig.from_dict(values)
    for key, tokens, vocab in (("audio_tokens", audio, config.audio_vocab_size),
                               ("image_tokens", image, config.image_vocab_size)):
        if int(tokens.max()) >= vocab:
            raise ValueError(f"{data_name}: key '{key}' has ids up to {int(tokens.max())}, "
                             f"expected below the vocabulary size {vocab}")
    return config


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m comfyui_audiovisual train maskgen",
        description="Train the Visual Echoes masked audio-visual transformer on a token file.")
    parser.add_argument("--data", required=True, help="safetensors with 'audio_tokens' [M,Na] and 'image_tokens' [M,Ni]")
    parser.add_argument("--out", required=True, help="output folder (model.safetensors, training_state.pt, log.jsonl)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=None, help="default: min(500, steps // 20)")
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--config", default="tiny", help="tiny | vit_large | inline JSON | JSON file")
    parser.add_argument("--audio-vocab-size", type=int, default=None)
    parser.add_argument("--image-vocab-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--checkpoint-seconds", type=float, default=540.0, help="also checkpoint after this much wall time (0: off)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast on CUDA")
    parser.add_argument("--mask-modes", default="mage=1",
                        help='masking modes and weights, e.g. "audio|image=0.45,image|audio=0.35,mage=0.2" (see MaskGenTrainingArgs)')
    parser.add_argument("--uncond-prob", type=float, default=0.1, help="conditional modes: hide the condition entirely (CFG)")
    parser.add_argument("--drop-fraction", type=float, default=0.5, help="MAGE token drop from the encoder (0: off)")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--position-init", choices=("random", "sincos"), default="random",
                        help="a fresh model's position embeddings: random (MAGE) or 2-D sin-cos of each position's place, "
                             "audio time and image x on one scale (needs the token file's audio_grid/image_grid)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns 0 on success."""
    options = build_argument_parser().parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    audio, image, metadata = load_token_dataset(options.data)
    out_dir = Path(options.out)
    data_name = Path(options.data).name
    if options.resume:
        config = load_masked_transformer(out_dir / MODEL_FILE).config
        if (config.audio_seq_len, config.image_seq_len) != (audio.shape[1], image.shape[1]):
            raise ValueError(
                f"{data_name}: sequences ({audio.shape[1]}, {image.shape[1]}) do not match the checkpoint's "
                f"({config.audio_seq_len}, {config.image_seq_len})")
    else:
        config = _resolve_config(_config_from_argument(options.config), audio, image, metadata, data_name,
                                 options.audio_vocab_size, options.image_vocab_size)
    warmup = options.warmup_steps if options.warmup_steps is not None else min(500, options.steps // 20)
    args = MaskGenTrainingArgs(
        steps=options.steps, lr=options.lr, weight_decay=options.weight_decay, warmup_steps=warmup,
        lr_schedule=options.lr_schedule, checkpoint_every=options.checkpoint_every,
        checkpoint_seconds=options.checkpoint_seconds,
        log_every=options.log_every, seed=options.seed, precision=options.precision,
        mask_modes=options.mask_modes, uncond_prob=options.uncond_prob, drop_fraction=options.drop_fraction,
        label_smoothing=options.label_smoothing)
    device = None if options.device == "auto" else torch.device(options.device)
    if device is not None and device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    rank = int(os.environ.get("RANK", "0"))

    torch.manual_seed(options.seed)
    model = MaskedAVTransformer(config)
    if options.position_init == "sincos" and not options.resume:
        if "audio_grid" not in metadata or "image_grid" not in metadata:
            raise ValueError(f"{data_name}: --position-init sincos needs the token grids (metadata audio_grid, image_grid)")
        init_positions_sincos(model, json.loads(metadata["audio_grid"]), json.loads(metadata["image_grid"]))
    print(f"maskgen: {model.num_parameters() / 1e6:.2f}M parameters, {audio.shape[0]} pairs, "
          f"audio {config.audio_seq_len} x {config.audio_vocab_size}, image {config.image_seq_len} x {config.image_vocab_size}")
    result = train_maskgen(
        model, lambda start: token_batches(audio, image, options.batch_size, options.seed, rank, start),
        out_dir, args, resume=options.resume, device=device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    print(f"maskgen: done at step {result['step']}, checkpoint {out_dir / MODEL_FILE}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
