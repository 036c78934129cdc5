"""Training a V2A-Mapper (regression or diffusion) on pairs of embeddings.

The data are N pairs (source vector, target vector), e.g. (CLIP image embedding, CLAP audio
embedding) of the same clip. A held-out fraction (``heldout_fraction``, chosen with the seed) is
never trained on; its MSE and mean cosine similarity (in the target space) are measured before and
after training. Optimiser AdamW, learning rate with optional linear warm-up then cosine decay to
10 % (training/maskgen.py's schedule), gradient clipping.

Losses (in the networks' model units, see networks/v2a_mapper.py):
  * regression: MSE between the mapped source and the target;
  * diffusion: timestep t uniform, x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, MSE between the
    network's x0 prediction and x0 (the paper predicts the target, not the noise); the condition is
    replaced by the learned null condition with probability ``condition_dropout``.

Distributed: when launched by torchrun (``WORLD_SIZE`` > 1) the network is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA), each rank trains on its own shard of the
training pairs (every WORLD_SIZE-th pair), and only rank 0 evaluates, logs and writes.

CLI: ``python -m comfyui_audiovisual train mapper (--pairs F | --folder D | --synthav N) --out M.safetensors``;
see :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..loaders.checkpoint_io import write_safetensors_atomic
from ..loaders.mapper import MAPPER_KINDS, EmbeddingSpace, V2AMapper, build_network, save_mapper
from ..samplers.mapper_diffusion import add_noise, alphas_cumprod
from .maskgen import _barrier, _setup_distributed, lr_at_step

__all__ = ["MapperTrainingArgs", "infer_space", "new_mapper", "heldout_split", "evaluate_mapper", "train_mapper",
           "save_pairs", "load_pairs", "folder_pairs", "read_pair", "encode_each", "encode_folder", "encode_synthav", "main"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
NORMALISED_TOLERANCE = 1e-3


@dataclass
class MapperTrainingArgs:
    """Hyper-parameters of :func:`train_mapper` and the network sizes of :func:`new_mapper`."""

    kind: str = "regression"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    lr_schedule: str = "cosine"  # "cosine" (to 10 % after warm-up) or "constant"
    grad_clip: float = 1.0
    heldout_fraction: float = 0.1
    seed: int = 0
    log_every: int = 50
    eval_steps: int = 25  # reverse steps when evaluating a diffusion mapper on the held-out pairs
    network: Dict = field(default_factory=dict)  # overrides of the network config fields (sizes, dropout, ...)

    def __post_init__(self) -> None:
        if self.kind not in MAPPER_KINDS:
            raise ValueError(f"mapper: kind must be one of {', '.join(MAPPER_KINDS)}, got {self.kind!r}")
        if self.steps < 1:
            raise ValueError(f"mapper: steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"mapper: batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"mapper: learning rate must be > 0, got {self.lr}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"mapper: lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"mapper: heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        for key in ("source_dim", "target_dim", "normalize_output", "input_scale", "target_scale"):
            if key in self.network:
                raise ValueError(f"mapper: network field '{key}' comes from the data, it cannot be set")


# ----------------------------------------------------------------------------------------------
# spaces and the model
# ----------------------------------------------------------------------------------------------
def infer_space(vectors: torch.Tensor, family: str, model: str = "", modality: str = "") -> EmbeddingSpace:
    """The space of pooled vectors [N, D]: normalised when every row has unit length (+-1e-3)."""
    if vectors.dim() != 2 or vectors.shape[0] == 0:
        raise ValueError(f"mapper: expected vectors [N, D] with N >= 1, got {tuple(vectors.shape)}")
    norms = vectors.float().norm(dim=-1)
    normalised = bool(((norms - 1.0).abs() <= NORMALISED_TOLERANCE).all())
    return EmbeddingSpace(family=family, model=model, dim=int(vectors.shape[1]), normalised=normalised, modality=modality)


def _rms(x: torch.Tensor) -> float:
    value = float(x.float().pow(2).mean().sqrt())
    if not math.isfinite(value) or value <= 0:
        raise ValueError("mapper: the vectors are all zero or not finite; cannot scale them")
    return value


def new_mapper(kind: str, source_space: EmbeddingSpace, target_space: EmbeddingSpace, source: torch.Tensor,
               target: torch.Tensor, network: Optional[Dict] = None, seed: int = 0) -> V2AMapper:
    """A freshly initialised mapper whose input and target scales are fitted to the data (see
    networks/v2a_mapper.py); ``network`` overrides config fields (sizes, dropout, schedule)."""
    network = dict(network or {})
    normalize_input = bool(network.pop("normalize_input", True))
    prepared = F.normalize(source.float(), dim=-1) if normalize_input else source.float()
    targets = F.normalize(target.float(), dim=-1) if target_space.normalised else target.float()
    config = {"source_dim": source_space.dim, "target_dim": target_space.dim, "normalize_input": normalize_input,
              "normalize_output": target_space.normalised, "input_scale": 1.0 / _rms(prepared),
              "target_scale": 1.0 / _rms(targets), **network}
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_network(kind, config)
    finally:
        torch.random.set_rng_state(generator_state)
    return V2AMapper(model, source_space, target_space)


def heldout_split(count: int, fraction: float, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) of ``count`` pairs; round(count * fraction) held out, at
    least one when fraction > 0, and at least one pair left to train on."""
    if count < 1:
        raise ValueError("mapper: no training pairs")
    held = 0 if fraction <= 0 else min(count - 1, max(1, round(count * fraction)))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[held:].sort().values, order[:held].sort().values


def _check_pairs(source: torch.Tensor, target: torch.Tensor, mapper: V2AMapper) -> None:
    if source.dim() != 2 or target.dim() != 2:
        raise ValueError(f"mapper: expected source [N, Ds] and target [N, Dt], got {tuple(source.shape)} and {tuple(target.shape)}")
    if source.shape[0] != target.shape[0]:
        raise ValueError(f"mapper: {source.shape[0]} source vectors but {target.shape[0]} target vectors; pairs need equal counts")
    if source.shape[1] != mapper.source.dim:
        raise ValueError(f"mapper: source vectors have width {source.shape[1]}, the mapper takes {mapper.source.describe()}")
    if target.shape[1] != mapper.target.dim:
        raise ValueError(f"mapper: target vectors have width {target.shape[1]}, the mapper gives {mapper.target.describe()}")
    for name, tensor in (("source", source), ("target", target)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"mapper: the {name} vectors hold NaN or infinite values")


@torch.no_grad()
def evaluate_mapper(mapper: V2AMapper, source: torch.Tensor, target: torch.Tensor, *, steps: int = 25,
                    seed: int = 0, batch_size: int = 1024) -> Dict[str, float]:
    """MSE and mean cosine similarity between mapped ``source`` and ``target`` (target units)."""
    parameter = next(mapper.network.parameters())
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for start in range(0, source.shape[0], batch_size):
        chunk = source[start:start + batch_size].to(parameter.device)
        outputs.append(mapper.map(chunk, steps=steps, generator=generator).float().cpu())
    mapped = torch.cat(outputs)
    target = target.float()
    if mapper.target.normalised:
        target = F.normalize(target, dim=-1)
    return {"mse": float(F.mse_loss(mapped, target)), "cosine": float(F.cosine_similarity(mapped, target, dim=-1).mean()),
            "count": int(source.shape[0])}


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
def _loss(train_model: torch.nn.Module, network, kind: str, source: torch.Tensor, target: torch.Tensor,
          alphas: Optional[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    x0 = network.to_model_units(F.normalize(target, dim=-1) if network.config.normalize_output else target)
    if kind == "regression":
        return F.mse_loss(train_model(source), x0)
    batch = x0.shape[0]
    config = network.config
    timesteps = torch.randint(0, config.num_train_timesteps, (batch,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    drop = (torch.rand(batch, generator=generator) < config.condition_dropout).to(x0.device)
    noisy = add_noise(x0, noise, timesteps, alphas)
    return F.mse_loss(train_model(noisy, timesteps, source, drop), x0)


def train_mapper(
    mapper: V2AMapper,
    source: torch.Tensor,
    target: torch.Tensor,
    args: Optional[MapperTrainingArgs] = None,
    *,
    device: Optional[torch.device | str] = None,
    on_step: Optional[Callable[[int, int], None]] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, object]:
    """Train ``mapper`` in place on the pairs (``source`` [N, Ds], ``target`` [N, Dt]).

    Args:
        mapper: from :func:`new_mapper` (or a loaded one, to fine-tune); its kind must match ``args.kind``.
        args: hyper-parameters; ``args.heldout_fraction`` of the pairs is kept out of training.
        device: where to train (default: the network's device; under torchrun, ``cuda:LOCAL_RANK`` when CUDA is there).
        on_step: called after every step with (step, steps); may raise to stop (nothing is written here).
        log: receives one line per logged step and the held-out figures.

    Returns:
        {"steps", "losses": [(step, loss)], "train_count", "heldout_count", "heldout_before",
        "heldout_after"} (the held-out dicts hold mse, cosine, count; None when nothing is held
        out or on ranks other than 0).
    """
    args = args or MapperTrainingArgs(kind=mapper.kind)
    if args.kind != mapper.kind:
        raise ValueError(f"mapper: training arguments are for a {args.kind} mapper, the mapper is {mapper.kind}")
    _check_pairs(source, target, mapper)
    network = mapper.network
    if device is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = torch.device(f"cuda:{local_rank}") if world > 1 and torch.cuda.is_available() else next(network.parameters()).device
    device = torch.device(device)
    context = _setup_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    network.to(device=device, dtype=torch.float32)

    train_index, held_index = heldout_split(source.shape[0], args.heldout_fraction, args.seed)
    shard = train_index[context.rank::context.world_size]
    if shard.numel() == 0:
        raise ValueError(f"mapper: {train_index.numel()} training pairs cannot be shared by {context.world_size} processes")
    train_source, train_target = source[shard].float(), target[shard].float()
    held_source, held_target = source[held_index].float(), target[held_index].float()

    def evaluate() -> Optional[Dict[str, float]]:
        if held_index.numel() == 0 or not context.is_main:
            return None
        return evaluate_mapper(mapper, held_source, held_target, steps=args.eval_steps, seed=args.seed)

    before = evaluate()
    if before is not None:
        log(f"mapper: held-out before training ({before['count']} pairs): mse {before['mse']:.5f} cosine {before['cosine']:.4f}")

    train_model: torch.nn.Module = network
    if context.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    alphas = alphas_cumprod(network.config.num_train_timesteps, network.config.beta_schedule).float().to(device) \
        if mapper.kind == "diffusion" else None
    batch = min(args.batch_size, shard.numel())
    generator = torch.Generator().manual_seed((args.seed * 1_000_003 + context.rank) % (2 ** 63))
    losses: List[Tuple[int, float]] = []
    network.train()
    try:
        for step in range(1, args.steps + 1):
            rows = torch.randperm(shard.numel(), generator=generator)[:batch]
            for group in optimizer.param_groups:
                group["lr"] = lr_at_step(step, args)
            loss = _loss(train_model, network, mapper.kind, train_source[rows].to(device), train_target[rows].to(device),
                         alphas, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(network.parameters(), args.grad_clip)
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ValueError(f"mapper: loss became {value} at step {step}; lower the learning rate")
            if args.log_every > 0 and (step % args.log_every == 0 or step == args.steps):
                losses.append((step, value))
                if context.is_main:
                    log(f"mapper: step {step}/{args.steps} loss {value:.5f} lr {optimizer.param_groups[0]['lr']:.2e}")
            if on_step is not None:
                on_step(step, args.steps)
    finally:
        network.eval()
    after = evaluate()
    if after is not None:
        log(f"mapper: held-out after training: mse {after['mse']:.5f} cosine {after['cosine']:.4f}")
    _barrier(context)
    return {"steps": args.steps, "losses": losses, "train_count": int(train_index.numel()),
            "heldout_count": int(held_index.numel()), "heldout_before": before, "heldout_after": after}


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def save_pairs(path: str | os.PathLike, source: torch.Tensor, target: torch.Tensor, source_space: EmbeddingSpace,
               target_space: EmbeddingSpace) -> None:
    """Write a pairs file: tensors ``source`` [N, Ds], ``target`` [N, Dt]; metadata ``source`` and
    ``target`` hold the spaces as JSON ({family, model, dim, normalised, modality})."""
    write_safetensors_atomic({"source": source.float(), "target": target.float()}, path,
                             {"source": asdict(source_space), "target": asdict(target_space)})


def load_pairs(path: str | os.PathLike) -> Tuple[torch.Tensor, torch.Tensor, EmbeddingSpace, EmbeddingSpace]:
    """Read a pairs file (see :func:`save_pairs`). A space's ``model`` may be missing (unknown) and
    ``normalised`` is inferred from the vectors when missing; ``family`` is required."""
    from ..loaders.checkpoint_io import read_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pairs file")
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path.name}: a pairs file must be .safetensors with tensors 'source' and 'target'")
    tensors, metadata = read_state_dict(path)
    for key in ("source", "target"):
        if key not in tensors:
            raise ValueError(f"{path.name}: missing tensor '{key}' (found {', '.join(sorted(tensors)) or 'none'})")
        if tensors[key].dim() != 2 or not tensors[key].is_floating_point():
            raise ValueError(f"{path.name}: tensor '{key}' has shape {tuple(tensors[key].shape)} and dtype "
                             f"{tensors[key].dtype}, expected float [N, D]")
    source, target = tensors["source"].float(), tensors["target"].float()
    if source.shape[0] != target.shape[0] or source.shape[0] == 0:
        raise ValueError(f"{path.name}: 'source' has {source.shape[0]} rows and 'target' {target.shape[0]}; expected the same non-zero count")
    spaces = []
    for key, vectors in (("source", source), ("target", target)):
        if key not in metadata:
            raise ValueError(f"{path.name}: missing metadata '{key}' (JSON {{\"family\": ..., \"model\": ..., \"dim\": ...}} "
                             f"naming the space of the '{key}' vectors)")
        try:
            data = json.loads(metadata[key])
            if not isinstance(data, dict) or "family" not in data:
                raise ValueError("expected an object with at least 'family'")
            inferred = infer_space(vectors, data["family"], data.get("model", ""))
            data = {"dim": inferred.dim, "normalised": inferred.normalised, "model": "", **data}
            space = EmbeddingSpace.from_dict(data)
        except (json.JSONDecodeError, ValueError) as error:
            raise ValueError(f"{path.name}: metadata '{key}': {error}") from error
        if space.dim != vectors.shape[1]:
            raise ValueError(f"{path.name}: metadata '{key}' says width {space.dim}, the tensor has {vectors.shape[1]}")
        spaces.append(space)
    return source, target, spaces[0], spaces[1]


def _call_encoder(encoder, modality: str, batch):
    """One batch through an encoder of encoders.pretrained.load_encoder: images [B, H, W, C] in 0..1,
    or audio {"waveform": [B, C, T], "sample_rate": int}; returns the Embedding."""
    encoder.check_modality(modality)
    with torch.inference_mode():
        if modality == "image":
            return encoder.encode_images(batch)
        return encoder.encode_audio(batch["waveform"], batch["sample_rate"])


def _pooled(embedding, what: str) -> torch.Tensor:
    vectors = embedding.vectors
    if vectors.dim() == 3:  # a sequence (e.g. windows of a long clip): average, as the paper does for video frames
        vectors = vectors.mean(dim=1)
    if vectors.dim() != 2:
        raise ValueError(f"mapper: the {what} encoder gave vectors of shape {tuple(vectors.shape)}, expected [B, D]")
    return vectors.float().cpu().clone()  # an ordinary tensor (encoders run under inference mode)


def encode_each(encoder, modality: str, items: Sequence, what: str, log: Callable[[str], None] = lambda _: None,
                on_item: Callable[[int, int], None] = lambda done, total: None) -> Tuple[torch.Tensor, object]:
    """Each batch through the encoder, pooled to one vector per row: ([N, D] vectors, the first Embedding)."""
    vectors, first = [], None
    for index, item in enumerate(items):
        embedding = _call_encoder(encoder, modality, item)
        first = embedding if first is None else first
        vectors.append(_pooled(embedding, what))
        if (index + 1) % 50 == 0:
            log(f"mapper: encoded {index + 1}/{len(items)} {what} batches")
        on_item(index + 1, len(items))
    return torch.cat(vectors), first


def _space_of(vectors: torch.Tensor, embedding) -> EmbeddingSpace:
    """The space of encoded vectors, with the encoder's weights fingerprint (what a mapper checks at use,
    so the same weights under another folder name are accepted and other weights under the same name refused)."""
    return dataclasses.replace(infer_space(vectors, embedding.family, embedding.model, embedding.modality),
                               weights=getattr(embedding, "weights", "") or "")


def encode_pairs(image_batches: Sequence, audio_batches: Sequence, image_encoder_path: str, audio_encoder_path: str,
                 direction: str = "image-to-audio", log: Callable[[str], None] = print
                 ) -> Tuple[torch.Tensor, torch.Tensor, EmbeddingSpace, EmbeddingSpace]:
    """Encode image batches ([B, H, W, C] 0..1) and audio batches ({"waveform", "sample_rate"}) with
    the two encoders (transformers folders, see encoders/pretrained.py); returns (source, target,
    spaces) in ``direction``. Sequence outputs (AST tokens) are averaged to one vector per clip."""
    from ..encoders.pretrained import load_encoder

    image_encoder, audio_encoder = load_encoder(image_encoder_path), load_encoder(audio_encoder_path)
    images, image_embedding = encode_each(image_encoder, "image", image_batches, "image", log)
    audio, audio_embedding = encode_each(audio_encoder, "audio", audio_batches, "audio", log)
    if images.shape[0] != audio.shape[0]:
        raise ValueError(f"mapper: {images.shape[0]} image vectors but {audio.shape[0]} audio vectors")
    image_space, audio_space = _space_of(images, image_embedding), _space_of(audio, audio_embedding)
    if direction == "image-to-audio":
        return images, audio, image_space, audio_space
    if direction == "audio-to-image":
        return audio, images, audio_space, image_space
    raise ValueError(f"mapper: direction must be 'image-to-audio' or 'audio-to-image', got {direction!r}")


VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def folder_pairs(folder: str | os.PathLike) -> List[Tuple[Path, Path]]:
    """(picture, sound) files of a folder, sorted by name: an image and an audio file with the same stem
    (x.png + x.wav), or a video clip with its sound (x.mp4 alone: the pair is (x.mp4, x.mp4))."""
    from ..audio.files import AUDIO_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of image/audio pairs or video clips")
    images, audios, videos = {}, {}, {}
    for entry in sorted(folder.iterdir()):
        suffix = entry.suffix.lower()
        if not entry.is_file():
            continue
        if suffix in IMAGE_EXTENSIONS:
            images.setdefault(entry.stem, entry)
        elif suffix in AUDIO_EXTENSIONS:
            audios.setdefault(entry.stem, entry)
        elif suffix in VIDEO_EXTENSIONS:
            videos.setdefault(entry.stem, entry)
    pairs = {s: (images[s], audios[s]) for s in set(images) & set(audios)}
    pairs.update({s: (v, v) for s, v in videos.items() if s not in pairs})
    if not pairs:
        raise ValueError(f"{folder}: no image/audio pairs or video clips (expected files with the same name, e.g. x.png and "
                         f"x.wav, or videos with sound such as x.mp4; found {len(images)} images, {len(audios)} audio files)")
    return [pairs[s] for s in sorted(pairs)]


def _middle_frame(path: Path) -> np.ndarray:
    """The frame shown at the middle of a video [H, W, 3] float32 0..1 (PyAV, as the host reads video)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise ValueError(f"{path.name}: the clip has no video stream (expected a video with sound)")
            middle_s = float(container.duration or 0) / av.time_base / 2 if container.duration else 0.0
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= middle_s:
                    break
    except ValueError:
        raise
    except Exception as error:  # PyAV raises its own error types
        raise ValueError(f"{path.name}: not a readable video ({error})") from error
    if chosen is None:
        raise ValueError(f"{path.name}: the clip has no frames")
    return chosen.to_ndarray(format="rgb24").astype(np.float32) / 255.0


def read_pair(picture_path: Path, sound_path: Path) -> Tuple[torch.Tensor, Dict]:
    """One pair of :func:`folder_pairs` as an IMAGE [1, H, W, 3] (0..1) and an AUDIO dict; a video clip
    gives its middle frame and its own sound."""
    from PIL import Image

    from ..audio.files import read_audio_file

    picture_path, sound_path = Path(picture_path), Path(sound_path)
    if picture_path.suffix.lower() in VIDEO_EXTENSIONS:
        array = _middle_frame(picture_path)
    else:
        try:
            with Image.open(picture_path) as picture:
                array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
        except OSError as error:
            raise ValueError(f"{picture_path.name}: not a readable image ({error})") from error
    waveform, rate = read_audio_file(sound_path)
    return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(0), {"waveform": waveform.unsqueeze(0), "sample_rate": rate}


def encode_folder(folder: str | os.PathLike, image_encoder: str, audio_encoder: str, direction: str = "image-to-audio",
                  log: Callable[[str], None] = print):
    """Pairs of a folder (:func:`folder_pairs`, :func:`read_pair`) through the encoders; see :func:`encode_pairs`."""
    pairs = folder_pairs(folder)
    log(f"mapper: {len(pairs)} image/audio pairs in {folder}")
    image_batches, audio_batches = [], []
    for picture_path, sound_path in pairs:
        image, audio = read_pair(picture_path, sound_path)
        image_batches.append(image)
        audio_batches.append(audio)
    return encode_pairs(image_batches, audio_batches, image_encoder, audio_encoder, direction, log)


def encode_synthav(count: int, image_encoder: str, audio_encoder: str, direction: str = "image-to-audio", start: int = 0,
                   split: str = "train", batch_size: int = 16, log: Callable[[str], None] = print):
    """``count`` SynthAV scenes of ``split`` (from ``start``), rendered and encoded; see :func:`encode_pairs`."""
    from ..synthav import split as synthav_split
    from ..synthav.world import SAMPLE_RATE, render_audio, render_image

    if count < 2:
        raise ValueError(f"mapper: --synthav needs at least 2 scenes, got {count}")
    image_batches, audio_batches = [], []
    for first in range(start, start + count, batch_size):
        scenes = [synthav_split.split_scene(split, k) for k in range(first, min(first + batch_size, start + count))]
        image_batches.append(torch.stack([torch.from_numpy(render_image(s)).float() for s in scenes]))
        waves = torch.stack([torch.from_numpy(render_audio(s)).float() for s in scenes])
        audio_batches.append({"waveform": waves.unsqueeze(1), "sample_rate": SAMPLE_RATE})
    log(f"mapper: rendered {count} SynthAV {split} scenes")
    return encode_pairs(image_batches, audio_batches, image_encoder, audio_encoder, direction, log)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m comfyui_audiovisual train mapper",
                                description="Train a V2A-Mapper (source embedding space -> target space) on pairs.")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--pairs", help="safetensors with 'source' [N, Ds] and 'target' [N, Dt] and their spaces in metadata")
    data.add_argument("--folder", help="folder of image/audio pairs with the same name (x.png + x.wav) and/or videos with sound (x.mp4)")
    data.add_argument("--synthav", type=int, metavar="N", help="render N SynthAV training scenes")
    p.add_argument("--source-encoder", help="encoder folder/file for the images (--folder/--synthav)")
    p.add_argument("--target-encoder", help="encoder folder/file for the audio (--folder/--synthav)")
    p.add_argument("--direction", choices=["image-to-audio", "audio-to-image"], default="image-to-audio")
    p.add_argument("--save-pairs", help="also write the encoded pairs here (a --pairs file for later runs)")
    p.add_argument("--out", required=True, help="the mapper file to write (.safetensors)")
    p.add_argument("--kind", choices=MAPPER_KINDS, default="regression")
    p.add_argument("--init", help="start from this mapper file instead of a fresh network (fine-tuning)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256, help="per process")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--heldout", type=float, default=0.1, help="fraction of pairs kept out of training and evaluated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-steps", type=int, default=25, help="diffusion steps when evaluating a diffusion mapper")
    p.add_argument("--hidden-dim", type=int, help="regression: MLP width (default 1024)")
    p.add_argument("--blocks", type=int, help="regression: residual blocks (default 4)")
    p.add_argument("--width", type=int, help="diffusion: transformer width (default 512)")
    p.add_argument("--depth", type=int, help="diffusion: transformer blocks (default 6)")
    p.add_argument("--heads", type=int, help="diffusion: attention heads (default 8)")
    p.add_argument("--dropout", type=float)
    p.add_argument("--beta-schedule", choices=["cosine", "linear"], help="diffusion: noise schedule (default cosine)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when available)")
    return p


def _network_overrides(args: argparse.Namespace) -> Dict:
    names = {"regression": {"hidden_dim": "hidden_dim", "blocks": "num_blocks", "dropout": "dropout"},
             "diffusion": {"width": "width", "depth": "depth", "heads": "num_heads", "dropout": "dropout",
                           "beta_schedule": "beta_schedule"}}[args.kind]
    given = {field_name: getattr(args, option) for option, field_name in names.items() if getattr(args, option) is not None}
    other = {"regression": ("width", "depth", "heads", "beta_schedule"), "diffusion": ("hidden_dim", "blocks")}[args.kind]
    wrong = [f"--{o.replace('_', '-')}" for o in other if getattr(args, o) is not None]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} do(es) not apply to a {args.kind} mapper")
    return given


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    rank = int(os.environ.get("RANK", "0"))
    log = print if rank == 0 else (lambda _line: None)
    try:
        if not args.out.lower().endswith(".safetensors"):
            raise ValueError(f"--out {args.out}: the mapper file must end in .safetensors")
        if args.pairs:
            source, target, source_space, target_space = load_pairs(args.pairs)
        else:
            if not args.source_encoder or not args.target_encoder:
                raise ValueError("--folder and --synthav need --source-encoder (images) and --target-encoder (audio)")
            image_encoder, audio_encoder = args.source_encoder, args.target_encoder
            if args.direction == "audio-to-image":
                image_encoder, audio_encoder = audio_encoder, image_encoder
            if args.folder:
                source, target, source_space, target_space = encode_folder(args.folder, image_encoder, audio_encoder, args.direction, log)
            else:
                source, target, source_space, target_space = encode_synthav(args.synthav, image_encoder, audio_encoder, args.direction, log=log)
            if args.save_pairs and rank == 0:
                save_pairs(args.save_pairs, source, target, source_space, target_space)
                log(f"mapper: wrote the encoded pairs to {args.save_pairs}")
        log(f"mapper: {source.shape[0]} pairs, {source_space.describe()} -> {target_space.describe()}")
        training = MapperTrainingArgs(kind=args.kind, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                      weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, heldout_fraction=args.heldout,
                                      seed=args.seed, log_every=args.log_every, eval_steps=args.eval_steps,
                                      network=_network_overrides(args))
        if args.init:
            from ..loaders.mapper import load_mapper

            mapper = load_mapper(args.init)
            if mapper.kind != args.kind:
                raise ValueError(f"--init {args.init}: is a {mapper.kind} mapper, --kind is {args.kind}")
            if (mapper.source.family, mapper.source.dim, mapper.target.family, mapper.target.dim) != \
                    (source_space.family, source_space.dim, target_space.family, target_space.dim):
                raise ValueError(f"--init {args.init}: maps {mapper.source.describe()} -> {mapper.target.describe()}, the data are "
                                 f"{source_space.describe()} -> {target_space.describe()}")
        else:
            mapper = new_mapper(args.kind, source_space, target_space, source, target, training.network, seed=args.seed)
        device = torch.device(args.device) if args.device else None
        if device is None and torch.cuda.is_available():
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        result = train_mapper(mapper, source, target, training, device=device, log=log)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if rank == 0:
        extra = {"trainer": "mapper", "steps": result["steps"], "pairs": int(source.shape[0]),
                 "heldout": result["heldout_after"] or {}, "heldout_untrained": result["heldout_before"] or {}}
        save_mapper(mapper, args.out, extra_metadata=extra)
        log(f"mapper: wrote {args.out}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    return 0
