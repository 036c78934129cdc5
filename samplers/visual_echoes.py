"""Visual Echoes glue: turns a :class:`MaskedAVTransformer` and a task into a call of the shared
masked sampler.

Sequence layout. The sampler sees one row per sample, ``[B, K=1, Na + Ni]``: the audio sequence
first, then the image sequence. Token order inside each modality:

* audio: SpecVQGAN maps a (1, 80, 848) mel to a grid [rows=5 (mel), columns=53 (time)]; the
  sequence reads it column-major (time first), as SpecVQGAN's own GPT did. Use
  :func:`audio_grid_to_sequence` / :func:`audio_sequence_to_grid` everywhere.
* image: the VQGAN grid [H, W] read row-major (diffusers' ``quantize`` order),
  :func:`image_grid_to_sequence` / :func:`image_sequence_to_grid`.

Tasks (``TASKS``):

* ``"image_to_audio"``: image tokens are the condition, all audio slots are generated. The
  unconditional CFG pass masks the image fully (off-the-shelf CFG, paper eq. 2).
* ``"audio_to_image"``: the mirror image.
* ``"co_generate"``: both modalities generated together. There is no condition, so the
  unconditional pass would equal the conditional one: guidance is skipped (effective cfg = 1,
  one forward per step) whatever ``cfg`` says.
* ``"inpaint_audio"``: audio tokens are given; ``audio_mask`` (True = regenerate, e.g. from
  :func:`audio_time_range_mask`) selects the slots to generate, the rest stays. Image tokens, if
  given, condition the result (CFG masks them in the unconditional pass); if absent the image
  is fully masked (unknown) and guidance is skipped.
* ``"inpaint_image"``: the mirror image with ``image_mask`` (e.g. :func:`image_region_mask`).

Any length (:func:`image_to_audio_windows`). The model makes one window of audio (its trained
grid, 5 x 53 columns = 2.04 s for SpecVQGAN). Longer audio is made the way VATT and the V2A
generator make it (samplers/vatt.py, samplers/embedding_to_audio.py): windows starting at
``window_starts`` with ``default_overlap`` (a quarter window); the first is plain ``image_to_audio``,
each next one is ``inpaint_audio`` with the same picture as condition, its first ``overlap`` columns
given as the previous window's last columns and the rest regenerated (outpainting), so the sound
runs on across the join; the windows are joined without repeating the overlap and cut to the
columns asked for. ``overlap_columns=0`` gives independent windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from ..networks.masked_transformer import MaskedAVTransformer
from .masked_sampler import ModelFn, masked_sample
from .vatt import default_overlap, window_starts

__all__ = [
    "TASKS",
    "SPECVQGAN_GRID_ROWS",
    "SPECVQGAN_SECONDS_PER_COLUMN",
    "audio_grid_to_sequence",
    "audio_sequence_to_grid",
    "image_grid_to_sequence",
    "image_sequence_to_grid",
    "audio_time_range_mask",
    "audio_columns_for_seconds",
    "image_region_mask",
    "VisualEchoesProblem",
    "build_visual_echoes_problem",
    "visual_echoes_sample",
    "image_to_audio_windows",
]

# The confidence-noise temperature of the embedded SynthAV default. The paper's is 9; on the embedded
# models 2 scores higher on every task (benchmarks/results/synthav_quality.md, "Sampler temperature").
TEMPERATURE = 2.0

TASKS = ("image_to_audio", "audio_to_image", "co_generate", "inpaint_audio", "inpaint_image")

SPECVQGAN_GRID_ROWS = 5
# 848 mel frames -> 53 columns: 16 frames of hop 256 at 22050 Hz per column
SPECVQGAN_SECONDS_PER_COLUMN = 16 * 256 / 22050


# ----------------------------------------------------------------------------------------------
# grid <-> sequence order
# ----------------------------------------------------------------------------------------------
def audio_grid_to_sequence(grid: torch.Tensor) -> torch.Tensor:
    """Audio token grid [B, rows, columns] (mel x time) -> sequence [B, rows * columns], column-major
    (all rows of time column 0, then column 1, ...)."""
    if grid.dim() != 3:
        raise ValueError(f"audio_grid_to_sequence: expected a grid [B, rows, columns], got {tuple(grid.shape)}")
    return grid.transpose(1, 2).reshape(grid.shape[0], -1)


def audio_sequence_to_grid(sequence: torch.Tensor, rows: int = SPECVQGAN_GRID_ROWS) -> torch.Tensor:
    """Inverse of :func:`audio_grid_to_sequence`: [B, rows * columns] -> [B, rows, columns]."""
    if sequence.dim() != 2 or sequence.shape[1] % rows != 0:
        raise ValueError(
            f"audio_sequence_to_grid: expected [B, rows * columns] with rows={rows}, got {tuple(sequence.shape)}")
    return sequence.reshape(sequence.shape[0], sequence.shape[1] // rows, rows).transpose(1, 2).contiguous()


def image_grid_to_sequence(grid: torch.Tensor) -> torch.Tensor:
    """Image token grid [B, H, W] -> sequence [B, H * W], row-major."""
    if grid.dim() != 3:
        raise ValueError(f"image_grid_to_sequence: expected a grid [B, H, W], got {tuple(grid.shape)}")
    return grid.reshape(grid.shape[0], -1)


def image_sequence_to_grid(sequence: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`image_grid_to_sequence`: [B, H * W] -> [B, H, W]."""
    if sequence.dim() != 2 or sequence.shape[1] != height * width:
        raise ValueError(
            f"image_sequence_to_grid: expected [B, {height * width}], got {tuple(sequence.shape)}")
    return sequence.reshape(sequence.shape[0], height, width)


# ----------------------------------------------------------------------------------------------
# inpainting masks
# ----------------------------------------------------------------------------------------------
def audio_time_range_mask(rows: int, columns: int, start_column: int, end_column: int) -> torch.Tensor:
    """Bool [rows * columns] in audio sequence order, True for every mel row of the time columns
    ``start_column <= c < end_column``."""
    if not 0 <= start_column <= end_column <= columns:
        raise ValueError(
            f"audio_time_range_mask: columns [{start_column}, {end_column}) outside [0, {columns}]")
    grid = torch.zeros(1, rows, columns, dtype=torch.bool)
    grid[:, :, start_column:end_column] = True
    return audio_grid_to_sequence(grid)[0]


def audio_columns_for_seconds(start_s: float, end_s: float, columns: int,
                              seconds_per_column: float = SPECVQGAN_SECONDS_PER_COLUMN) -> Tuple[int, int]:
    """Time range in seconds -> the token columns ``[start, end)`` that overlap it (clipped)."""
    if end_s < start_s:
        raise ValueError(f"audio_columns_for_seconds: end {end_s} s is before start {start_s} s")
    start = int(max(0.0, start_s) // seconds_per_column)
    end = int(-(-max(0.0, end_s) // seconds_per_column))  # ceil
    return min(start, columns), min(max(end, start), columns)


def image_region_mask(height: int, width: int, top: int, left: int, bottom: int, right: int) -> torch.Tensor:
    """Bool [H * W] in image sequence order, True inside the token box rows [top, bottom) x
    columns [left, right)."""
    if not (0 <= top <= bottom <= height and 0 <= left <= right <= width):
        raise ValueError(
            f"image_region_mask: box rows [{top}, {bottom}) x columns [{left}, {right}) "
            f"outside the {height} x {width} grid")
    grid = torch.zeros(1, height, width, dtype=torch.bool)
    grid[:, top:bottom, left:right] = True
    return image_grid_to_sequence(grid)[0]


# ----------------------------------------------------------------------------------------------
# the problem handed to the sampler
# ----------------------------------------------------------------------------------------------
@dataclass
class VisualEchoesProblem:
    """Everything :func:`masked_sample` needs for one Visual Echoes task.

    tokens [B, 1, Na + Ni] long and target [B, 1, Na + Ni] bool (audio first), the model wrapper
    and the guidance scale actually used (1.0 where the task has no condition).
    """

    task: str
    tokens: torch.Tensor
    target: torch.Tensor
    model_fn: ModelFn
    cfg: float
    audio_seq_len: int
    image_seq_len: int

    def split(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[B, 1, Na + Ni] -> (audio [B, Na], image [B, Ni])."""
        row = tokens[:, 0]
        return row[:, : self.audio_seq_len], row[:, self.audio_seq_len:]


def _as_batch(name: str, tokens: Optional[torch.Tensor], length: int) -> Optional[torch.Tensor]:
    if tokens is None:
        return None
    if tokens.dim() == 3:  # a token grid [B, rows, columns]
        tokens = audio_grid_to_sequence(tokens) if name.startswith("audio") else image_grid_to_sequence(tokens)
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 2 or tokens.shape[1] != length:
        raise ValueError(f"{name} has shape {tuple(tokens.shape)}, expected (B, {length})")
    if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"{name} must hold integer token ids, got {tokens.dtype}")
    return tokens.long()


def _check_ids(name: str, tokens: torch.Tensor, vocab_size: int) -> None:
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(
            f"{name}: token ids must lie in [0, {vocab_size - 1}], found [{int(tokens.min())}, {int(tokens.max())}]")


def _as_mask(name: str, mask: Optional[torch.Tensor], length: int) -> torch.Tensor:
    if mask is None:
        raise ValueError(f"{name} is required for this task (True = regenerate)")
    if mask.dim() == 3:  # a grid [B, rows, columns]
        mask = audio_grid_to_sequence(mask) if name.startswith("audio") else image_grid_to_sequence(mask)
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if mask.dim() != 2 or mask.shape[1] != length:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected ({length},) or (B, {length})")
    return mask.bool()


def _broadcast_rows(tensors: dict, batch_size: Optional[int]) -> int:
    sizes = {name: t.shape[0] for name, t in tensors.items() if t is not None}
    batch = max(list(sizes.values()) + [batch_size or 1])
    for name, size in sizes.items():
        if size not in (1, batch):
            raise ValueError(f"{name} has batch {size}, expected 1 or {batch}")
    if batch_size is not None and batch_size != batch and sizes:
        raise ValueError(f"batch_size {batch_size} does not match the inputs' batch {batch}")
    return batch


def _visual_echoes_model_fn(model: MaskedAVTransformer, condition: torch.Tensor,
                            always_masked: torch.Tensor) -> ModelFn:
    """Wrap the transformer as a sampler ``model_fn`` over rows ``[audio; image]`` (K = 1).

    condition [Na + Ni] bool: slots hidden in unconditional rows; always_masked [Na + Ni] bool:
    slots the model never sees (an absent modality). Logits of the smaller vocabulary are padded
    with the dtype's lowest value up to the larger one (never sampled).
    """
    audio_len = model.config.audio_seq_len
    vocab = max(model.config.audio_vocab_size, model.config.image_vocab_size)

    def pad(logits: torch.Tensor) -> torch.Tensor:
        missing = vocab - logits.shape[-1]
        if missing == 0:
            return logits
        filler = torch.full((*logits.shape[:-1], missing), torch.finfo(logits.dtype).min,
                            dtype=logits.dtype, device=logits.device)
        return torch.cat([logits, filler], dim=-1)

    def model_fn(tokens: torch.Tensor, masked: torch.Tensor, drop_condition: torch.Tensor) -> torch.Tensor:
        row_tokens = tokens[:, 0]
        hidden = masked[:, 0] | always_masked | (drop_condition.unsqueeze(1) & condition)
        audio_logits, image_logits = model(
            row_tokens[:, :audio_len], row_tokens[:, audio_len:], hidden[:, :audio_len], hidden[:, audio_len:])
        return torch.cat([pad(audio_logits), pad(image_logits)], dim=1).unsqueeze(1)

    return model_fn


def build_visual_echoes_problem(
    model: MaskedAVTransformer,
    task: str,
    audio_tokens: Optional[torch.Tensor] = None,
    image_tokens: Optional[torch.Tensor] = None,
    *,
    audio_mask: Optional[torch.Tensor] = None,
    image_mask: Optional[torch.Tensor] = None,
    batch_size: Optional[int] = None,
    cfg: float = 3.0,
) -> VisualEchoesProblem:
    """Set up a Visual Echoes task (see the module doc for what each task uses).

    Args:
        model: the transformer (its device is used for every tensor).
        task: one of ``TASKS``.
        audio_tokens: [B, Na] or [Na] audio sequence (column-major order), or the SpecVQGAN grid
            [B, rows, columns] (converted with :func:`audio_grid_to_sequence`); needed by
            ``audio_to_image`` and ``inpaint_audio``, optional condition for ``inpaint_image``,
            ignored by the tasks that generate all audio.
        image_tokens: [B, Ni], [Ni] or a grid [B, H, W]; the mirror of ``audio_tokens``.
        audio_mask / image_mask: [Na] / [Ni], per row [B, N*], or a grid [B, rows, columns] bool,
            True = regenerate (inpainting tasks only).
        batch_size: rows to generate; defaults to the inputs' batch (inputs of batch 1 are
            broadcast) or 1 for co-generation.
        cfg: requested guidance scale (replaced by 1.0 where the task has no condition).
    """
    if task not in TASKS:
        raise ValueError(f"Visual Echoes: task must be one of {TASKS}, got {task!r}")
    config = model.config
    audio_len, image_len = config.audio_seq_len, config.image_seq_len
    audio = _as_batch("audio_tokens", audio_tokens, audio_len)
    image = _as_batch("image_tokens", image_tokens, image_len)

    needs_audio = task in ("audio_to_image", "inpaint_audio")
    needs_image = task in ("image_to_audio", "inpaint_image")
    if needs_audio and audio is None:
        raise ValueError(f"Visual Echoes {task}: audio_tokens are required")
    if needs_image and image is None:
        raise ValueError(f"Visual Echoes {task}: image_tokens are required")
    uses_audio = task in ("audio_to_image", "inpaint_audio", "inpaint_image")
    uses_image = task in ("image_to_audio", "inpaint_audio", "inpaint_image")
    audio = audio if uses_audio else None
    image = image if uses_image else None
    if audio is not None:
        _check_ids("audio_tokens", audio, config.audio_vocab_size)
    if image is not None:
        _check_ids("image_tokens", image, config.image_vocab_size)

    audio_target_rows = image_target_rows = None
    if task == "inpaint_audio":
        audio_target_rows = _as_mask("audio_mask", audio_mask, audio_len)
    if task == "inpaint_image":
        image_target_rows = _as_mask("image_mask", image_mask, image_len)
    batch = _broadcast_rows({"audio_tokens": audio, "image_tokens": image,
                             "audio_mask": audio_target_rows, "image_mask": image_target_rows}, batch_size)

    device = model.device
    zeros_audio = torch.zeros(batch, audio_len, dtype=torch.long, device=device)
    zeros_image = torch.zeros(batch, image_len, dtype=torch.long, device=device)
    audio_rows = zeros_audio if audio is None else audio.to(device).expand(batch, -1)
    image_rows = zeros_image if image is None else image.to(device).expand(batch, -1)

    full_audio = torch.ones(batch, audio_len, dtype=torch.bool, device=device)
    full_image = torch.ones(batch, image_len, dtype=torch.bool, device=device)
    if task == "image_to_audio":
        audio_target, image_target = full_audio, ~full_image
    elif task == "audio_to_image":
        audio_target, image_target = ~full_audio, full_image
    elif task == "co_generate":
        audio_target, image_target = full_audio, full_image
    elif task == "inpaint_audio":
        audio_target, image_target = audio_target_rows.to(device).expand(batch, -1), ~full_image
    else:  # inpaint_image
        audio_target, image_target = ~full_audio, image_target_rows.to(device).expand(batch, -1)

    # condition = what the unconditional pass hides; absent = what the model never sees
    condition = torch.zeros(audio_len + image_len, dtype=torch.bool, device=device)
    absent = torch.zeros_like(condition)
    if task in ("image_to_audio", "inpaint_audio"):
        if image is None:
            absent[audio_len:] = True
        else:
            condition[audio_len:] = True
    if task in ("audio_to_image", "inpaint_image"):
        if audio is None:
            absent[:audio_len] = True
        else:
            condition[:audio_len] = True
    effective_cfg = float(cfg) if bool(condition.any()) else 1.0

    tokens = torch.cat([audio_rows, image_rows], dim=1).unsqueeze(1).contiguous()
    target = torch.cat([audio_target, image_target], dim=1).unsqueeze(1).contiguous()
    return VisualEchoesProblem(
        task=task, tokens=tokens, target=target,
        model_fn=_visual_echoes_model_fn(model, condition, absent),
        cfg=effective_cfg, audio_seq_len=audio_len, image_seq_len=image_len)


def visual_echoes_sample(
    model: MaskedAVTransformer,
    task: str,
    audio_tokens: Optional[torch.Tensor] = None,
    image_tokens: Optional[torch.Tensor] = None,
    *,
    audio_mask: Optional[torch.Tensor] = None,
    image_mask: Optional[torch.Tensor] = None,
    batch_size: Optional[int] = None,
    steps: int = 30,
    schedule: str = "cosine",
    temperature: float = TEMPERATURE,
    cfg: float = 3.0,
    cfg_mode: str = "batched",
    top_k: Optional[int] = None,
    sampling_temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]] = None,
    check_interrupt: Optional[Callable[[], None]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run a Visual Echoes task with the shared masked sampler (the paper's 30 steps and cfg 3; the
    temperature is the embedded default's 2, the paper's being 9).

    Arguments are those of :func:`build_visual_echoes_problem` and :func:`masked_sample`;
    ``callback(step, total_steps, audio_tokens [B, Na], image_tokens [B, Ni])`` is called after
    each step, ``step`` being the index of the step just finished (0 .. T-1; slots still masked
    hold the latest sample). The model is put in eval mode for the
    call and restored afterwards.

    Returns:
        (audio_tokens [B, Na], image_tokens [B, Ni]) long: generated slots filled, the others as
        given (zeros for a modality that was neither given nor generated).
    """
    problem = build_visual_echoes_problem(
        model, task, audio_tokens, image_tokens, audio_mask=audio_mask, image_mask=image_mask,
        batch_size=batch_size, cfg=cfg)

    step_callback = None
    if callback is not None:
        def step_callback(step, total_steps, tokens, still_masked):
            audio, image = problem.split(tokens)
            callback(step, total_steps, audio, image)

    was_training = model.training
    model.eval()
    try:
        tokens = masked_sample(
            problem.model_fn, problem.tokens, problem.target, steps=steps, schedule=schedule,
            temperature=temperature, cfg=problem.cfg, cfg_mode=cfg_mode, top_k=top_k,
            sampling_temperature=sampling_temperature, generator=generator,
            callback=step_callback, check_interrupt=check_interrupt)
    finally:
        model.train(was_training)
    return problem.split(tokens)


def image_to_audio_windows(
    model: MaskedAVTransformer,
    image_tokens: torch.Tensor,
    columns: int,
    *,
    rows: int = SPECVQGAN_GRID_ROWS,
    overlap_columns: Optional[int] = None,
    batch_size: Optional[int] = None,
    steps: int = 30,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]] = None,
    check_interrupt: Optional[Callable[[], None]] = None,
    **sample_kwargs,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Image -> audio of ``columns`` time columns, in windows of the model's grid (see the module doc).

    ``image_tokens`` as :func:`build_visual_echoes_problem`; ``rows`` = mel rows of the audio grid
    (the model's window is ``audio_seq_len // rows`` columns); ``overlap_columns`` defaults to
    ``default_overlap(window)``. One ``generator`` draws every window in turn, so a seed gives one
    result and the first window is exactly :func:`visual_echoes_sample`'s for that seed.
    ``callback(step, total, audio [B, rows * columns so far], image)`` counts steps over all windows;
    ``check_interrupt`` is called at every step of every window. Other keywords (schedule,
    temperature, cfg, cfg_mode, top_k, sampling_temperature) are :func:`visual_echoes_sample`'s.

    Returns:
        (audio_tokens [B, rows * columns] column-major, image_tokens [B, Ni]) as
        :func:`visual_echoes_sample` returns them.
    """
    audio_len = model.config.audio_seq_len
    if rows < 1 or audio_len % rows:
        raise ValueError(f"Visual Echoes: the model's {audio_len} audio tokens do not form a grid of {rows} rows")
    window = audio_len // rows
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"Visual Echoes: columns must be a positive integer, got {columns!r}")
    overlap = default_overlap(window) if overlap_columns is None else int(overlap_columns)
    starts = window_starts(columns, window, overlap)
    total = len(starts) * steps
    regenerate = audio_time_range_mask(rows, window, overlap, window)
    grid = image = None
    for w, start in enumerate(starts):
        step_callback = None
        if callback is not None:
            def step_callback(step, _total, audio, image_now, _w=w, _start=start, _before=grid):
                current = audio_sequence_to_grid(audio, rows)
                so_far = current if _before is None else torch.cat([_before[..., :_start], current], dim=-1)
                callback(_w * steps + step, total, audio_grid_to_sequence(so_far[..., :columns]), image_now)
        common = dict(image_tokens=image_tokens, batch_size=batch_size, steps=steps, generator=generator,
                      callback=step_callback, check_interrupt=check_interrupt, **sample_kwargs)
        if grid is None or not overlap:
            audio, image = visual_echoes_sample(model, "image_to_audio", **common)
        else:
            known = torch.zeros_like(grid[..., :window])
            known[..., :overlap] = grid[..., start:start + overlap]
            audio, image = visual_echoes_sample(model, "inpaint_audio", audio_tokens=audio_grid_to_sequence(known),
                                                audio_mask=regenerate, **common)
        current = audio_sequence_to_grid(audio, rows)
        grid = current if grid is None else torch.cat([grid[..., :start], current], dim=-1)
    return audio_grid_to_sequence(grid[..., :columns].contiguous()), image
