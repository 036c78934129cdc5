"""Training SeeingSounds audio adapters: MSE against frozen text-encoder outputs of class captions.

Data: clips with a caption each (a folder of labelled clips, or SynthAV scenes with their
``Scene.audio_caption()``). Every clip is encoded once by the frozen audio encoder (AST token
sequence); every distinct caption once by the frozen T5 (``last_hidden_state``, padded to the
adapter's L tokens with the pad token and no attention mask, as the host's FLUX T5 runs) and by the
frozen CLIP text model (pooled vector). Then the adapter is trained by

    loss = MSE(text branch(audio), T5 states) + MSE(pooled branch(audio), CLIP pooled)

with two AdamW optimisers, one per branch (the paper's learning rates are the defaults: 1e-5 for
the T5 branch, 1e-7 for the CLIP branch; for the tiny SynthAV encoders we use larger rates, see
docs/seeing_sounds.md).

Folder layout (``--data``): either ``captions.csv`` with columns ``file,caption`` (paths relative
to the folder), or one sub-folder per class whose clips all share that class's caption: the
sub-folder name with ``_`` read as a space, or the text given for it in ``captions.json``
({"dog_bark": "a dog barking"}).

Distributed: under torchrun (``WORLD_SIZE`` > 1) the adapter is wrapped in DistributedDataParallel
(gloo on CPU, nccl on CUDA); rank 0 encodes the data and writes a features file that the other
ranks read, every rank draws its own batches, rank 0 evaluates and writes the adapter.

CLI: ``python -m comfyui_audiovisual train adapter ...`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..loaders.audio_adapter import save_audio_adapter
from ..loaders.checkpoint_io import read_state_dict, write_safetensors_atomic
from ..networks.audio_adapter import PROFILES, AudioAdapter, AudioAdapterConfig

__all__ = ["AdapterTrainingArgs", "AdapterFeatures", "encode_features", "synthav_clips", "folder_clips", "adapter_mse", "mean_target_mse",
           "train_adapter", "main", "SYNTHAV_DEFAULT_LRS"]

PAPER_LR_TEXT = 1e-5
PAPER_LR_POOLED = 1e-7
SYNTHAV_DEFAULT_LRS = (1e-3, 1e-3)
"""The rates used for the SynthAV default against tiny random text encoders (the paper's 1e-5 / 1e-7
move a small freshly initialised adapter too little in a few hundred steps)."""

Clip = tuple  # (waveform [C, T] float tensor, sample rate in Hz, caption)


@dataclass
class AdapterTrainingArgs:
    steps: int = 2000
    batch_size: int = 16
    lr_text: float = PAPER_LR_TEXT
    lr_pooled: float = PAPER_LR_POOLED
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 50
    eval_every: int = 0  # 0: only before and after training
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"adapter training: steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"adapter training: batch_size must be >= 1, got {self.batch_size}")
        for name in ("lr_text", "lr_pooled"):
            if not getattr(self, name) > 0:
                raise ValueError(f"adapter training: {name} must be > 0, got {getattr(self, name)}")


@dataclass
class AdapterFeatures:
    """Encoded training data: ``audio`` [N, m, a] per clip, ``caption_ids`` [N] into ``captions``,
    ``text`` [C, L, d] and ``pooled`` [C, p] per distinct caption."""

    audio: torch.Tensor
    caption_ids: torch.Tensor
    captions: list
    text: torch.Tensor
    pooled: torch.Tensor
    audio_encoder: str = ""
    text_encoder: str = ""
    pooled_encoder: str = ""
    heldout: Optional[torch.Tensor] = None  # bool [N]: clips kept out of training (when saved with the data)

    def __len__(self) -> int:
        return int(self.audio.shape[0])

    def subset(self, indices) -> "AdapterFeatures":
        indices = torch.as_tensor(indices, dtype=torch.long)
        return AdapterFeatures(self.audio[indices], self.caption_ids[indices], self.captions, self.text, self.pooled,
                               self.audio_encoder, self.text_encoder, self.pooled_encoder)

    def batch(self, indices: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.caption_ids[indices]
        return (self.audio[indices].to(device=device, dtype=torch.float32), self.text[ids].to(device=device, dtype=torch.float32),
                self.pooled[ids].to(device=device, dtype=torch.float32))

    def save(self, path) -> None:
        meta = {"captions": self.captions, "audio_encoder": self.audio_encoder, "text_encoder": self.text_encoder,
                "pooled_encoder": self.pooled_encoder, "kind": "audio_adapter_features"}
        tensors = {"audio": self.audio, "caption_ids": self.caption_ids, "text": self.text, "pooled": self.pooled}
        if self.heldout is not None:
            tensors["heldout"] = self.heldout.to(torch.uint8)
        write_safetensors_atomic(tensors, path, meta)

    @classmethod
    def load(cls, path) -> "AdapterFeatures":
        tensors, meta = read_state_dict(path)
        name = os.path.basename(os.fspath(path))
        if meta.get("kind") != "audio_adapter_features":
            raise ValueError(f"{name}: not an audio adapter features file (metadata 'kind' is {meta.get('kind')!r})")
        missing = [k for k in ("audio", "caption_ids", "text", "pooled") if k not in tensors]
        if missing:
            raise ValueError(f"{name}: missing key '{missing[0]}'")
        heldout = tensors["heldout"].bool() if "heldout" in tensors else torch.zeros(tensors["audio"].shape[0], dtype=torch.bool)
        return cls(tensors["audio"], tensors["caption_ids"].long(), json.loads(meta["captions"]), tensors["text"], tensors["pooled"],
                   meta.get("audio_encoder", ""), meta.get("text_encoder", ""), meta.get("pooled_encoder", ""), heldout)


# ---------------------------------------------------------------------------------------------
# data


def synthav_clips(split: str, count: int, start: int = 0) -> list:
    """`count` SynthAV scenes of `split` ("train", "heldout", "unseen") from index `start`:
    (waveform [1, T], 22050, Scene.audio_caption())."""
    from ..synthav.split import split_scene
    from ..synthav.world import SAMPLE_RATE, render_audio

    if count < 1:
        raise ValueError(f"synthav: count must be >= 1, got {count}")
    clips = []
    for i in range(start, start + count):
        scene = split_scene(split, i)
        clips.append((torch.from_numpy(render_audio(scene)).float().unsqueeze(0), SAMPLE_RATE, scene.audio_caption()))
    return clips


def folder_clips(folder) -> list:
    """Labelled clips of a folder (layout in the module docstring), sorted by path."""
    from ..audio.files import AUDIO_EXTENSIONS, read_audio_file

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: data folder not found")
    entries = []
    table = folder / "captions.csv"
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
                raise ValueError(f"{table}: expected the columns 'file' and 'caption', got {reader.fieldnames}")
            for row in reader:
                caption = " ".join((row["caption"] or "").split())
                if not caption:
                    raise ValueError(f"{table}: empty caption for '{row['file']}'")
                entries.append((folder / row["file"], caption))
    else:
        names = {}
        names_file = folder / "captions.json"
        if names_file.is_file():
            try:
                names = json.loads(names_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ValueError(f"{names_file}: invalid JSON ({error})") from error
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            caption = " ".join(str(names.get(sub.name, sub.name.replace("_", " "))).split())
            for path in sorted(sub.rglob("*")):
                if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
                    entries.append((path, caption))
    if not entries:
        raise ValueError(f"{folder}: no labelled clips found (expected captions.csv, or class sub-folders of audio files "
                         f"{', '.join(AUDIO_EXTENSIONS)})")
    clips = []
    for path, caption in entries:
        waveform, rate = read_audio_file(path)
        clips.append((waveform, rate, caption))
    return clips


def encode_features(clips: Sequence[Clip], audio_encoder, text_encoder, pooled_encoder, text_tokens: int,
                    progress: Optional[Callable[[int, int], None]] = None, check_interrupt: Optional[Callable[[], None]] = None
                    ) -> AdapterFeatures:
    """Encodes clips with the frozen audio encoder and their distinct captions with the frozen text
    encoders (objects from encoders.pretrained.load_encoder: AST, T5, CLIP text).

    Audio wider than 256 is stored in float16 (AST's 1214 x 768 is 1.9 MB per clip then)."""
    _check_encoder(audio_encoder, "ast", "audio_encoder")
    _check_encoder(text_encoder, "t5", "text_encoder")
    _check_encoder(pooled_encoder, "clip_text", "pooled_encoder")
    if not clips:
        raise ValueError("adapter training: no clips to encode")
    captions = sorted({c[2] for c in clips})
    caption_index = {c: i for i, c in enumerate(captions)}
    total = len(clips) + len(captions)
    done = 0
    audio = []
    for i, (waveform, rate, caption) in enumerate(clips):
        if check_interrupt:
            check_interrupt()
        waveform = waveform if waveform.ndim == 3 else waveform.unsqueeze(0)
        try:
            embedding = audio_encoder.encode_audio(waveform, rate)
        except ValueError as error:
            raise ValueError(f"clip {i} ('{caption}'): {error}") from None
        vectors = embedding.vectors
        audio.append(vectors.to(torch.float16) if vectors.shape[-1] > 256 else vectors)
        done += 1
        if progress:
            progress(done, total)
    text, pooled = [], []
    for start in range(0, len(captions), 16):
        if check_interrupt:
            check_interrupt()
        chunk = captions[start:start + 16]
        text.append(text_encoder.encode_text(chunk, sequence_length=text_tokens).vectors)
        pooled.append(pooled_encoder.encode_text(chunk).vectors)
        done += len(chunk)
        if progress:
            progress(done, total)
    return AdapterFeatures(torch.cat(audio), torch.tensor([caption_index[c[2]] for c in clips]), captions, torch.cat(text), torch.cat(pooled),
                           audio_encoder.model_name, text_encoder.model_name, pooled_encoder.model_name)


def _check_encoder(encoder, family: str, what: str) -> None:
    got = getattr(encoder, "family", None)
    if got != family:
        described = encoder.describe() if hasattr(encoder, "describe") else type(encoder).__name__
        raise ValueError(f"{what}: expected a {family.upper().replace('_', ' ')} encoder, got {described}")


def config_for(features: AdapterFeatures, hidden_dim: int = 256, num_heads: int = 4, pooling: str = "attention",
               target: str = "auto", mlp_ratio: float = 2.0) -> AudioAdapterConfig:
    """An adapter config whose widths are the features' (target "auto": "flux" when they are FLUX's, else "custom")."""
    widths = (features.text.shape[-1], features.pooled.shape[-1])
    if target == "auto":
        target = "flux" if widths == PROFILES["flux"][1:] else "custom"
    return AudioAdapterConfig(audio_dim=int(features.audio.shape[-1]), hidden_dim=hidden_dim, text_tokens=int(features.text.shape[1]),
                              text_dim=widths[0], pooled_dim=widths[1], num_heads=num_heads, mlp_ratio=mlp_ratio, pooling=pooling,
                              target=target, audio_encoder=features.audio_encoder, text_encoder=features.text_encoder,
                              pooled_encoder=features.pooled_encoder)


# ---------------------------------------------------------------------------------------------
# loss, evaluation, loop


def adapter_losses(adapter: torch.nn.Module, audio: torch.Tensor, text: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = adapter(audio)
    return F.mse_loss(out.tokens, text), F.mse_loss(out.pooled, pooled)


@torch.no_grad()
def adapter_mse(adapter: AudioAdapter, features: AdapterFeatures, batch_size: int = 32) -> dict:
    """Mean squared errors over `features`: {"text", "pooled", "total" = text + pooled}."""
    was_training = adapter.training
    adapter.eval()
    device = next(adapter.parameters()).device
    sums = torch.zeros(2, dtype=torch.float64)
    for start in range(0, len(features), batch_size):
        indices = torch.arange(start, min(start + batch_size, len(features)))
        audio, text, pooled = features.batch(indices, device)
        out = adapter(audio)
        sums[0] += float(F.mse_loss(out.tokens, text, reduction="sum")) / text[0].numel()
        sums[1] += float(F.mse_loss(out.pooled, pooled, reduction="sum")) / pooled[0].numel()
    adapter.train(was_training)
    text_mse, pooled_mse = (sums / max(1, len(features))).tolist()
    return {"text": text_mse, "pooled": pooled_mse, "total": text_mse + pooled_mse}


def mean_target_mse(train: AdapterFeatures, heldout: AdapterFeatures) -> dict:
    """The MSE on `heldout` of always answering the training clips' mean targets (a model that ignores the
    audio): an adapter has learned something from the sound only when it goes below this."""
    text = train.text[train.caption_ids].float().mean(dim=0)
    pooled = train.pooled[train.caption_ids].float().mean(dim=0)
    text_mse = float(((heldout.text[heldout.caption_ids].float() - text) ** 2).mean())
    pooled_mse = float(((heldout.pooled[heldout.caption_ids].float() - pooled) ** 2).mean())
    return {"text": text_mse, "pooled": pooled_mse, "total": text_mse + pooled_mse}


def _check_widths(adapter: AudioAdapter, features: AdapterFeatures, what: str) -> None:
    c = adapter.config
    wanted = (c.audio_dim, c.text_tokens, c.text_dim, c.pooled_dim)
    got = (features.audio.shape[-1], features.text.shape[1], features.text.shape[-1], features.pooled.shape[-1])
    if wanted != got:
        raise ValueError(f"{what}: audio width, T5 tokens, T5 width, pooled width are {got}, the adapter's are {wanted}")


def _distributed(device: torch.device):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def train_adapter(adapter: AudioAdapter, train: AdapterFeatures, heldout: Optional[AdapterFeatures] = None,
                  args: Optional[AdapterTrainingArgs] = None, out_path=None, *, device=None, extra_metadata: Optional[dict] = None,
                  log: Callable[[str], None] = print, progress: Optional[Callable[[int, int], None]] = None,
                  check_interrupt: Optional[Callable[[], None]] = None) -> dict:
    """Trains `adapter` in place; writes it to `out_path` (rank 0) when given.

    Returns {"step", "train_before", "train_after", "heldout_before", "heldout_after" (MSE dicts or
    None), "history": [(step, loss)]}.
    """
    with torch.inference_mode(False), torch.enable_grad():  # a host node runs under inference mode
        return _train_adapter(adapter, train, heldout, args or AdapterTrainingArgs(), out_path, device, extra_metadata, log, progress,
                              check_interrupt)


def _train_adapter(adapter, train, heldout, args, out_path, device, extra_metadata, log, progress, check_interrupt) -> dict:
    if any(p.is_inference() for p in adapter.parameters()):
        raise ValueError("adapter training: the adapter was created under torch.inference_mode(); create it outside")
    _check_widths(adapter, train, "training data")
    if heldout is not None:
        _check_widths(adapter, heldout, "held-out data")
    if len(train) == 0:
        raise ValueError("adapter training: the training set is empty")
    if device is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    rank, world = _distributed(device)
    adapter.to(device).train()
    model: torch.nn.Module = adapter
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(adapter, device_ids=[device.index] if device.type == "cuda" else None)
    optimisers = [
        torch.optim.AdamW(adapter.text_branch.parameters(), lr=args.lr_text, weight_decay=args.weight_decay),
        torch.optim.AdamW(adapter.pooled_branch.parameters(), lr=args.lr_pooled, weight_decay=args.weight_decay),
    ]
    result = {"train_before": adapter_mse(adapter, train) if rank == 0 else None,
              "heldout_before": adapter_mse(adapter, heldout) if heldout is not None and rank == 0 else None,
              "heldout_mean_baseline": mean_target_mse(train, heldout) if heldout is not None else None, "history": []}
    if rank == 0:
        log(f"adapter: {len(train)} training clips, {len(train.captions)} captions; train MSE {result['train_before']['total']:.5f}"
            + (f", held-out MSE {result['heldout_before']['total']:.5f}" if result["heldout_before"] else ""))
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        if check_interrupt:
            check_interrupt()
        generator = torch.Generator().manual_seed((args.seed * 1_000_003 + rank * 10_007 + step) * 2)
        indices = torch.randint(0, len(train), (args.batch_size,), generator=generator)
        audio, text, pooled = train.batch(indices, device)
        text_loss, pooled_loss = adapter_losses(model, audio, text, pooled)
        loss = text_loss + pooled_loss
        for optimiser in optimisers:
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(adapter.text_branch.parameters(), args.grad_clip)
            torch.nn.utils.clip_grad_norm_(adapter.pooled_branch.parameters(), args.grad_clip)
        for optimiser in optimisers:
            optimiser.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"adapter training: the loss became {value} at step {step}; lower the learning rates")
        if progress:
            progress(step, args.steps)
        if rank == 0 and args.log_every > 0 and (step % args.log_every == 0 or step == args.steps):
            result["history"].append((step, value))
            line = f"adapter: step {step}/{args.steps} loss {value:.5f} (T5 {float(text_loss.detach()):.5f}, CLIP {float(pooled_loss.detach()):.5f}) " \
                   f"{step / max(1e-9, time.perf_counter() - started):.1f} steps/s"
            if heldout is not None and args.eval_every > 0 and step % args.eval_every == 0:
                line += f", held-out MSE {adapter_mse(adapter, heldout)['total']:.5f}"
            log(line)
    result["step"] = args.steps
    if rank == 0:
        result["train_after"] = adapter_mse(adapter, train)
        result["heldout_after"] = adapter_mse(adapter, heldout) if heldout is not None else None
        log(f"adapter: done; train MSE {result['train_after']['total']:.5f}"
            + (f", held-out MSE {result['heldout_before']['total']:.5f} -> {result['heldout_after']['total']:.5f} (answering the mean "
               f"target: {result['heldout_mean_baseline']['total']:.5f})" if heldout is not None else ""))
        if out_path is not None:
            metadata = {"trainer": "adapter", "steps": args.steps, "training_args": asdict(args), "train_clips": len(train),
                        "train_mse": result["train_after"], **(extra_metadata or {})}
            if heldout is not None:
                metadata.update(heldout_clips=len(heldout), heldout_mse_before=result["heldout_before"], heldout_mse_after=result["heldout_after"],
                                heldout_mse_of_the_mean_target=result["heldout_mean_baseline"])
            save_audio_adapter(adapter, out_path, metadata)
            log(f"adapter: wrote {out_path}")
    else:
        result["train_after"] = result["heldout_after"] = None
    _barrier(world)
    return result


# ---------------------------------------------------------------------------------------------
# CLI


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual train adapter",
                                     description="Train a SeeingSounds audio adapter (AST tokens -> T5 tokens + CLIP pooled vector) "
                                                 "by MSE against frozen text encoders on class captions.")
    parser.add_argument("--audio-encoder", required=True, help="AST transformers folder (e.g. MIT/ast-finetuned-audioset-10-10-0.4593)")
    parser.add_argument("--t5", required=True, help="T5 encoder folder (T5EncoderModel + tokenizer; FLUX: T5-XXL)")
    parser.add_argument("--clip-text", required=True, help="CLIP text model folder (CLIPTextModel + tokenizer; FLUX: CLIP-L)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder of labelled clips (captions.csv, or one sub-folder per class)")
    source.add_argument("--synthav", type=int, metavar="N", help="train on N SynthAV training scenes (captions: Scene.audio_caption())")
    parser.add_argument("--heldout", type=int, default=None, metavar="M",
                        help="held-out clips: M SynthAV held-out scenes (default 64), or with --data M clips kept out (default 10%%)")
    parser.add_argument("--out", required=True, help="output adapter file (.safetensors)")
    parser.add_argument("--features-cache", default=None, help="encoded-data file to reuse or write (default: <out>.features.safetensors under torchrun)")
    parser.add_argument("--text-tokens", type=int, default=256, help="T5 tokens L (FLUX: 256)")
    parser.add_argument("--hidden-dim", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--pooling", choices=("attention", "mean"), default="attention", help="mean = the paper's ablation")
    parser.add_argument("--target", choices=("auto", "flux", "custom"), default="auto",
                        help="auto: flux when the encoders have FLUX's widths (T5 4096, CLIP 768), else custom")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--lr-text", type=float, default=PAPER_LR_TEXT, help="AdamW rate of the T5 branch (paper: 1e-5)")
    parser.add_argument("--lr-pooled", type=float, default=PAPER_LR_POOLED, help="AdamW rate of the CLIP branch (paper: 1e-7)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def _load_data(options, rank: int, world: int, device: torch.device):
    """(train, held-out) features: read from --features-cache when it exists, else encoded by rank 0
    (and written to the cache, which the other ranks then read)."""
    from ..encoders.pretrained import load_encoder, read_config

    for path in (options.audio_encoder, options.t5, options.clip_text):
        read_config(path)  # a missing folder fails before any data is read
    cache = options.features_cache or (str(options.out) + ".features.safetensors" if world > 1 else None)
    reuse = bool(options.features_cache) and os.path.isfile(options.features_cache)
    features = None
    if not reuse and rank == 0:
        if options.synthav:
            clips = synthav_clips("train", options.synthav)
            heldout_clips = synthav_clips("heldout", options.heldout if options.heldout is not None else 64)
        else:
            clips = folder_clips(options.data)
            n_held = options.heldout if options.heldout is not None else (len(clips) // 10 if len(clips) >= 10 else 0)
            order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(options.seed)).tolist()
            heldout_clips = [clips[i] for i in order[:n_held]]
            clips = [clips[i] for i in order[n_held:]]
        encoders = [load_encoder(p) for p in (options.audio_encoder, options.t5, options.clip_text)]
        for encoder in encoders:
            encoder.module.to(device)
        features = encode_features(clips + heldout_clips, *encoders, text_tokens=options.text_tokens)
        features.heldout = torch.arange(len(features)) >= len(clips)
        if cache:
            features.save(cache)
    _barrier(world)
    if features is None:
        features = AdapterFeatures.load(cache)
    if cache and not options.features_cache:  # the automatic cache of a torchrun run: gone once every rank read it
        _barrier(world)
        if rank == 0 and os.path.isfile(cache):
            os.remove(cache)
    held = torch.nonzero(features.heldout).flatten()
    train = torch.nonzero(~features.heldout).flatten()
    return features.subset(train), (features.subset(held) if len(held) else None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; 0 on success, 2 with a one-line error on bad input."""
    options = build_argument_parser().parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.device == "auto":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(options.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    try:
        rank, world = _distributed(device)
        train, heldout = _load_data(options, rank, world, device)
        torch.manual_seed(options.seed)
        config = config_for(train, hidden_dim=options.hidden_dim, num_heads=options.heads, pooling=options.pooling, target=options.target)
        adapter = AudioAdapter(config)
        source = f"synthav:{options.synthav}" if options.synthav else f"folder:{os.path.basename(os.path.normpath(options.data))}"
        args = AdapterTrainingArgs(steps=options.steps, batch_size=options.batch_size, lr_text=options.lr_text, lr_pooled=options.lr_pooled,
                                   weight_decay=options.weight_decay, log_every=options.log_every, eval_every=options.eval_every, seed=options.seed)
        train_adapter(adapter, train, heldout, args, options.out, device=device, extra_metadata={"data": source})
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    finally:
        if world_size_from_env() > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
