"""Contrastive training of small CLIP (image <-> caption) and CLAP (audio <-> caption) encoders on SynthAV.

The models are the transformers classes themselves (`CLIPModel`, `ClapModel`) at tiny sizes, saved
with `save_pretrained` as ordinary transformers folders, so `encoders.load_encoder` reads them like
any published CLIP or CLAP. The inputs are prepared with the encoders' own functions
(`encoders.preprocessing.clip_pixel_values`, `audio.prepare.prepare_waveform` and the folder's
`ClapFeatureExtractor` called as `CLAPEncoder` calls it; the tokenizers as `encode_text` calls them),
so what is trained is exactly what the nodes encode.

Tokenizers: SynthAV captions use about 40 words, so each model gets a small BPE trained on the
training captions in its own format (CLIP's lower-cased BPE with `</w>` word ends, CLAP's RoBERTa
byte-level BPE), 384 entries instead of 49408 / 50265.

Loss: the models' symmetric contrastive loss (cross-entropy over the batch's similarity matrix,
scaled by the learned logit scale, both directions), with one change: scenes with the same
caption in a batch are all positives of each other (soft targets spread over them), because
single-object SynthAV captions repeat (336 distinct) and calling an identical caption a negative
would train against the truth.

CLI::

    python -m comfyui_audiovisual.training.contrastive_encoders --kind clip|clap --data TRAIN.safetensors \
        --out FOLDER [--steps N] [--batch-size B] [--lr LR] [--eval-scenes N]

`--data` is a SynthAV dataset file (`synthav.dataset.make_dataset`). The folder is written to a
temporary name and renamed when training ends; `FOLDER.log.jsonl` beside it holds the loss log and
the held-out retrieval scores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from .schedules import warmup_cosine_lr

__all__ = [
    "KINDS",
    "CLIP_SIZES",
    "CLAP_SIZES",
    "ContrastiveArgs",
    "caption_for",
    "train_caption_tokenizer",
    "build_clip",
    "build_clap",
    "write_encoder_folder",
    "clip_training_inputs",
    "clap_training_inputs",
    "text_training_inputs",
    "soft_contrastive_loss",
    "train_contrastive",
    "retrieval_scores",
    "main",
]

KINDS = ("clip", "clap")

# Sizes of the embedded models (a few hundred thousand parameters each).
CLIP_SIZES = dict(image_size=64, patch_size=8, vision_hidden=64, vision_layers=3, vision_heads=4,
                  text_hidden=64, text_layers=2, text_heads=4, max_text_tokens=32, projection_dim=64, vocab_size=384)
CLAP_SIZES = dict(sampling_rate=22050, window_s=3, hop_length=320, fft_window_size=1024, n_mels=64,
                  frequency_min=100.0, frequency_max=4000.0, spec_size=128, patch_size=8, patch_stride=8,
                  window_size=8, patch_hidden=32, depths=[2, 2], audio_heads=[2, 4],
                  text_hidden=64, text_layers=2, text_heads=4, max_text_tokens=38, projection_dim=64, vocab_size=384)


@dataclass
class ContrastiveArgs:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"contrastive training: steps must be >= 1 and batch_size >= 2, got {self.steps}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"contrastive training: lr must be > 0, got {self.lr}")


def caption_for(scene, kind: str) -> str:
    """The caption a `kind` encoder pairs with the scene: the picture's for CLIP, the sound's for CLAP."""
    _check_kind(kind)
    return scene.image_caption() if kind == "clip" else scene.audio_caption()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"contrastive training: kind must be one of {KINDS}, got {kind!r}")


# ----------------------------------------------------------------------------------------------
# tokenizers, models, feature extractors
# ----------------------------------------------------------------------------------------------
def train_caption_tokenizer(kind: str, captions: Sequence[str], vocab_size: int, max_tokens: int):
    """A BPE in the model's own tokenizer format trained on `captions`: `CLIPTokenizer` (clip) or
    `RobertaTokenizer` (clap). `model_max_length` is set to `max_tokens`; raises ValueError when a
    caption needs more tokens than that."""
    from transformers import CLIPTokenizer, RobertaTokenizer

    _check_kind(kind)
    base = CLIPTokenizer() if kind == "clip" else RobertaTokenizer()
    tokenizer = base.train_new_from_iterator(list(captions), vocab_size=vocab_size)
    tokenizer.model_max_length = max_tokens
    longest = max(len(ids) for ids in tokenizer(list(captions))["input_ids"])
    if longest > max_tokens:
        raise ValueError(f"{kind} tokenizer: a caption needs {longest} tokens, more than the model's {max_tokens}; "
                         "raise vocab_size or max_text_tokens")
    return tokenizer


def build_clip(tokenizer, sizes: dict = CLIP_SIZES, seed: int = 0):
    """(CLIPModel, CLIPImageProcessor) at `sizes`, with the tokenizer's special ids."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    s = dict(CLIP_SIZES, **sizes)
    text = dict(vocab_size=len(tokenizer), hidden_size=s["text_hidden"], intermediate_size=2 * s["text_hidden"],
                num_hidden_layers=s["text_layers"], num_attention_heads=s["text_heads"],
                max_position_embeddings=s["max_text_tokens"], bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=s["image_size"], patch_size=s["patch_size"], hidden_size=s["vision_hidden"],
                  intermediate_size=2 * s["vision_hidden"], num_hidden_layers=s["vision_layers"],
                  num_attention_heads=s["vision_heads"])
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=s["projection_dim"]))
    size = s["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, processor


def build_clap(tokenizer, sizes: dict = CLAP_SIZES, seed: int = 0):
    """(ClapModel, ClapFeatureExtractor) at `sizes`.

    The extractor keeps CLAP's computation (power mel in dB, Slaney filters in "rand_trunc" mode) at
    SynthAV's rate with a 3 s window, 64 mels over 100-4000 Hz (the notes' fundamentals and their
    first harmonics) and zero padding ("pad": a short clip keeps its timing). HTSAT folds the
    207 frames x 64 mels into a 128 x 128 picture (freq_ratio 2) cut into 8 x 8 patches.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    s = dict(CLAP_SIZES, **sizes)
    n_stages = len(s["depths"])
    audio = dict(spec_size=s["spec_size"], num_mel_bins=s["n_mels"], patch_size=s["patch_size"], patch_stride=s["patch_stride"],
                 window_size=s["window_size"], depths=list(s["depths"]), num_attention_heads=list(s["audio_heads"]),
                 patch_embeds_hidden_size=s["patch_hidden"], hidden_size=s["patch_hidden"] * 2 ** (n_stages - 1),
                 enable_fusion=False)
    text = dict(vocab_size=len(tokenizer), hidden_size=s["text_hidden"], intermediate_size=2 * s["text_hidden"],
                num_hidden_layers=s["text_layers"], num_attention_heads=s["text_heads"],
                max_position_embeddings=s["max_text_tokens"] + 2, type_vocab_size=1,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=s["projection_dim"]))
    extractor = ClapFeatureExtractor(feature_size=s["n_mels"], sampling_rate=s["sampling_rate"], hop_length=s["hop_length"],
                                     max_length_s=s["window_s"], fft_window_size=s["fft_window_size"],
                                     frequency_min=s["frequency_min"], frequency_max=s["frequency_max"],
                                     truncation="rand_trunc", padding="pad")
    frames = 1 + s["window_s"] * s["sampling_rate"] // s["hop_length"]
    ratio = s["spec_size"] // s["n_mels"]
    if frames > s["spec_size"] * ratio or s["n_mels"] > s["spec_size"] // ratio:
        raise ValueError(f"clap sizes: {frames} frames x {s['n_mels']} mels do not fit HTSAT's {s['spec_size']} spec_size")
    return model, extractor


def write_encoder_folder(model, tokenizer, processor, folder: str) -> str:
    """save_pretrained of the model (safetensors), its tokenizer and its preprocessor into `folder`,
    written under a temporary name beside it and renamed (an existing folder is replaced)."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the finished folder gets the usual permissions
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if not os.path.isfile(os.path.join(tmp, "model.safetensors")):
            raise RuntimeError(f"{folder}: save_pretrained wrote no model.safetensors")
        old = None
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix=".old-", dir=parent)
            os.replace(folder, os.path.join(old, "x"))
        os.replace(tmp, folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ----------------------------------------------------------------------------------------------
# inputs, prepared exactly as encoders/ prepares them
# ----------------------------------------------------------------------------------------------
def clip_training_inputs(encoder, images: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """IMAGE [M, H, W, 3] in 0..1 -> pixel values [M, 3, S, S] as `CLIPEncoder.encode_images` makes them."""
    from ..encoders.preprocessing import check_images, clip_pixel_values

    out = [clip_pixel_values(check_images(images[i:i + chunk]), encoder.image_size, encoder.image_mean, encoder.image_std)
           for i in range(0, images.shape[0], chunk)]
    return torch.cat(out)


def clap_training_inputs(encoder, waves: torch.Tensor, sample_rate: int, chunk: int = 64,
                         progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Waveforms [M, T] at `sample_rate` -> input_features [M, 1, frames, mels] as `CLAPEncoder`
    makes them for a clip that fits one window (prepare_waveform, then the folder's extractor with
    the encoder's truncation mode). Raises ValueError for clips longer than the window."""
    from ..audio.prepare import prepare_waveform

    out = []
    for i in range(0, waves.shape[0], chunk):
        mono = prepare_waveform(waves[i:i + chunk].float().unsqueeze(1), sample_rate, encoder.sample_rate_hz,
                                what="audio", allow_silent=False)
        if mono.shape[-1] > encoder.window_samples:
            raise ValueError(f"clap training: clips of {mono.shape[-1]} samples are longer than the encoder's window "
                             f"({encoder.window_samples}); train on clips that fit one window")
        clips = [row.numpy().astype(np.float32) for row in mono]
        features = encoder.feature_extractor(clips, sampling_rate=encoder.sample_rate_hz, truncation=encoder.truncation,
                                             return_tensors="pt")
        out.append(features["input_features"].float())
        if progress:
            progress(i + len(clips))
    return torch.cat(out)


def text_training_inputs(encoder, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) as the encoder's `encode_text` tokenizes (CLIP: padded to the
    model's length; CLAP: padded to the longest, at most positions - 2)."""
    tokenizer = encoder.tokenizer
    if encoder.family == "clip":
        max_length = min(int(tokenizer.model_max_length), int(encoder.module.config.text_config.max_position_embeddings))
        tokens = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    else:
        max_length = min(int(tokenizer.model_max_length), int(encoder.module.config.text_config.max_position_embeddings) - 2)
        tokens = tokenizer(list(texts), padding=True, max_length=max_length, truncation=True, return_tensors="pt")
    return tokens["input_ids"], tokens["attention_mask"]


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def soft_contrastive_loss(logits: torch.Tensor, group: torch.Tensor, logits_per_text: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric contrastive cross-entropy of a [B, B] similarity matrix (rows: images or sounds,
    columns: captions) and of `logits_per_text` (default: its transpose; CLAP scales each direction
    with its own temperature). Rows whose `group` ids [B] are equal (same caption) are all
    positives, the target spread evenly over them; with distinct groups this is CLIP's loss exactly."""
    logits_per_text = logits.t() if logits_per_text is None else logits_per_text
    same = (group.unsqueeze(0) == group.unsqueeze(1)).float()
    targets = same / same.sum(dim=1, keepdim=True)
    forward = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    backward = -(targets * F.log_softmax(logits_per_text, dim=1)).sum(dim=1).mean()
    return 0.5 * (forward + backward)


def _lr_at(step: int, args: ContrastiveArgs) -> float:
    return warmup_cosine_lr(step, args.lr, args.steps, args.warmup_steps, floor=0.05)


def train_contrastive(kind: str, model: torch.nn.Module, inputs: torch.Tensor, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor, group: torch.Tensor, args: ContrastiveArgs,
                      log: Callable[[dict], None] | None = None) -> list[dict]:
    """Trains `model` in place on (inputs[i], caption i) pairs; returns the log records.

    inputs: pixel values [M, 3, S, S] (clip) or input_features [M, 1, frames, mels] (clap);
    input_ids / attention_mask [M, L]; group [M] long: equal ids = identical captions.
    """
    _check_kind(kind)
    count = inputs.shape[0]
    if not (input_ids.shape[0] == attention_mask.shape[0] == group.shape[0] == count):
        raise ValueError(f"contrastive training: {count} inputs but {input_ids.shape[0]} captions")
    if count < args.batch_size:
        raise ValueError(f"contrastive training: {count} pairs, fewer than one batch of {args.batch_size}")
    generator = torch.Generator().manual_seed(args.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    scales = [p for n, p in model.named_parameters() if n.startswith("logit_scale")]
    model.train()
    records, running, start = [], [], time.time()
    order = torch.randperm(count, generator=generator)
    cursor = 0
    for step in range(1, args.steps + 1):
        if cursor + args.batch_size > count:
            order, cursor = torch.randperm(count, generator=generator), 0
        batch = order[cursor:cursor + args.batch_size]
        cursor += args.batch_size
        for group_ in optimizer.param_groups:
            group_["lr"] = _lr_at(step, args)
        ids, mask = input_ids[batch], attention_mask[batch]
        if kind == "clip":
            out = model(input_ids=ids, attention_mask=mask, pixel_values=inputs[batch])
            logits = out.logits_per_image
        else:
            out = model(input_ids=ids, attention_mask=mask, input_features=inputs[batch])
            logits = out.logits_per_audio
        loss = soft_contrastive_loss(logits, group[batch], out.logits_per_text)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100 (CLAP has one per direction)
            for scale in scales:
                scale.clamp_(0, math.log(100))
        running.append(float(loss.detach()))
        if step % args.log_every == 0 or step == args.steps:
            record = {"step": step, "loss": round(sum(running) / len(running), 4), "lr": _lr_at(step, args),
                      "logit_scale": round(float(scales[0].detach().exp()), 2), "seconds": round(time.time() - start, 1)}
            running = []
            records.append(record)
            if log:
                log(record)
    model.eval()
    return records


# ----------------------------------------------------------------------------------------------
# held-out retrieval
# ----------------------------------------------------------------------------------------------
ATTRIBUTES = ("shape", "colour", "size", "column")


def retrieval_scores(encoder, scenes: Sequence, kind: str) -> dict:
    """Retrieval of each scene's caption among the distinct captions of `scenes`, through the
    encoder's own encode_images / encode_audio / encode_text.

    Returns top1 (the exact caption ranks first), top5, caption_to_{image|audio}_top1 (the
    caption's nearest picture/sound is one with that caption), and per-attribute accuracy of the
    top-1 caption (its objects against the scene's, left to right; a wrong object count makes every
    attribute of the scene wrong): shape, colour, size, column (= timbre, pitch, loudness, onset
    for sounds).
    """
    from ..synthav.world import render_audio, render_image

    _check_kind(kind)
    captions = [caption_for(s, kind) for s in scenes]
    distinct = sorted(set(captions))
    index = {c: i for i, c in enumerate(distinct)}
    owner = {}
    for s, c in zip(scenes, captions):
        owner.setdefault(c, s)
    truth = torch.tensor([index[c] for c in captions])
    with torch.inference_mode():
        if kind == "clip":
            images = torch.from_numpy(np.stack([render_image(s) for s in scenes]))
            media = encoder.encode_images(images).vectors
        else:
            waves = torch.from_numpy(np.stack([render_audio(s) for s in scenes])).float()
            from ..synthav.world import SAMPLE_RATE

            media = torch.cat([encoder.encode_audio(waves[i:i + 64].unsqueeze(1), SAMPLE_RATE).vectors
                               for i in range(0, len(scenes), 64)])
        texts = torch.cat([encoder.encode_text(distinct[i:i + 256]).vectors for i in range(0, len(distinct), 256)])
    similarity = F.normalize(media, dim=-1) @ F.normalize(texts, dim=-1).t()
    ranked = similarity.argsort(dim=1, descending=True)
    top1 = ranked[:, 0]
    scores = {"n_scenes": len(scenes), "n_captions": len(distinct),
              "top1": float((top1 == truth).float().mean()),
              "top5": float((ranked[:, :5] == truth[:, None]).any(dim=1).float().mean())}
    # caption -> media: the nearest picture/sound of each distinct caption carries that caption
    nearest = similarity.argmax(dim=0)
    scores[f"caption_to_{'image' if kind == 'clip' else 'audio'}_top1"] = float(
        np.mean([captions[int(nearest[j])] == distinct[j] for j in range(len(distinct))]))
    hits = {a: [] for a in ATTRIBUTES}
    for s, j in zip(scenes, top1.tolist()):
        guess = owner[distinct[j]]
        for i, obj in enumerate(s.objects):
            other = guess.objects[i] if len(guess.objects) == len(s.objects) else None
            for a in ATTRIBUTES:
                hits[a].append(other is not None and getattr(other, a) == getattr(obj, a))
    scores.update({a: float(np.mean(v)) for a, v in hits.items()})
    return scores


# ----------------------------------------------------------------------------------------------
# the whole job
# ----------------------------------------------------------------------------------------------
def _load_training_scenes(path: str, kind: str):
    from ..synthav.dataset import load_dataset

    data = load_dataset(path)
    return data, [caption_for(s, kind) for s in data["scenes"]]


def _cached_inputs(cache: str | None, data_path: str, kind: str, sizes: dict, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The prepared inputs, read from `cache` when it was made from the same data file and sizes."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    stat = os.stat(data_path)
    key = json.dumps({"data": os.path.abspath(data_path), "bytes": stat.st_size, "mtime": int(stat.st_mtime), "kind": kind,
                      "sizes": sizes}, sort_keys=True)
    if cache and os.path.isfile(cache):
        with safe_open(cache, framework="pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return f.get_tensor("inputs")
    inputs = compute()
    if cache:
        tmp = cache + ".partial"
        save_file({"inputs": inputs.contiguous()}, tmp, metadata={"key": key})
        os.replace(tmp, cache)
    return inputs


def _load_folder(kind: str, folder: str):
    """(model, tokenizer, processor) of an encoder folder this module wrote, to continue training it."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel, CLIPImageProcessor, CLIPModel

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if kind == "clip":
        return CLIPModel.from_pretrained(folder, local_files_only=True), tokenizer, CLIPImageProcessor.from_pretrained(folder)
    return ClapModel.from_pretrained(folder, local_files_only=True), tokenizer, ClapFeatureExtractor.from_pretrained(folder)


def train_encoder(kind: str, data_path: str, out: str, args: ContrastiveArgs, eval_scenes: int = 512,
                  sizes: dict | None = None, log_path: str | None = None, inputs_cache: str | None = None,
                  init: str | None = None) -> dict:
    """Builds (or, with `init`, continues from that folder), trains, saves and scores one encoder;
    returns the summary written to the log. `inputs_cache`: a file keeping the prepared pictures /
    audio features between runs."""
    from ..encoders.pretrained import load_encoder
    from ..synthav import split as S
    from ..synthav.world import SAMPLE_RATE

    _check_kind(kind)
    log_path = log_path or os.path.abspath(out).rstrip("/") + ".log.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)

    def log(record: dict) -> None:
        print(json.dumps(record), flush=True)
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    start = time.time()
    data, captions = _load_training_scenes(data_path, kind)
    sizes = dict(CLIP_SIZES if kind == "clip" else CLAP_SIZES, **(sizes or {}))
    if init:
        model, tokenizer, processor = _load_folder(kind, init)
    else:
        tokenizer = train_caption_tokenizer(kind, captions, sizes["vocab_size"], sizes["max_text_tokens"])
        model, processor = (build_clip if kind == "clip" else build_clap)(tokenizer, sizes, seed=args.seed)
    # The untrained folder is loaded back through encoders/ so the inputs below are prepared by the
    # very objects (feature extractor, tokenizer, image size and normalisation) inference will use.
    scratch = tempfile.mkdtemp(prefix="contrastive-", dir=os.path.dirname(os.path.abspath(out)))
    try:
        write_encoder_folder(model, tokenizer, processor, os.path.join(scratch, "init"))
        encoder = load_encoder(os.path.join(scratch, "init"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log({"event": "start", "kind": kind, "data": data_path, "scenes": len(captions), "parameters": sum(p.numel() for p in model.parameters()),
         "sizes": sizes, "args": asdict(args), "threads": torch.get_num_threads(), "init": init})
    inputs = _cached_inputs(inputs_cache, data_path, kind, sizes, lambda: (
        clip_training_inputs(encoder, data["images"].float().permute(0, 2, 3, 1)) if kind == "clip"
        else clap_training_inputs(encoder, data["waves"], SAMPLE_RATE)))
    input_ids, attention_mask = text_training_inputs(encoder, captions)
    distinct = {c: i for i, c in enumerate(sorted(set(captions)))}
    group = torch.tensor([distinct[c] for c in captions])
    log({"event": "inputs", "shape": list(inputs.shape), "text_tokens": int(input_ids.shape[1]),
         "distinct_captions": len(distinct), "seconds": round(time.time() - start, 1)})
    del data
    model.requires_grad_(True)
    records = train_contrastive(kind, model, inputs, input_ids, attention_mask, group, args, log)
    write_encoder_folder(model, tokenizer, processor, out)
    trained = load_encoder(out)
    summary = {"event": "done", "kind": kind, "out": out, "train_seconds": round(time.time() - start, 1),
               "final_loss": records[-1]["loss"]}
    if eval_scenes:
        summary["heldout"] = retrieval_scores(trained, S.scenes("heldout", eval_scenes), kind)
        summary["unseen"] = retrieval_scores(trained, S.scenes("unseen", max(1, eval_scenes // 2)), kind)
    log(summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.training.contrastive_encoders",
                                     description="Train a small CLIP (image-caption) or CLAP (audio-caption) on SynthAV.")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--data", required=True, help="a SynthAV dataset file (synthav.dataset.make_dataset)")
    parser.add_argument("--out", required=True, help="the transformers folder to write")
    parser.add_argument("--steps", type=int, default=ContrastiveArgs.steps)
    parser.add_argument("--batch-size", type=int, default=ContrastiveArgs.batch_size)
    parser.add_argument("--lr", type=float, default=ContrastiveArgs.lr)
    parser.add_argument("--warmup-steps", type=int, default=ContrastiveArgs.warmup_steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", default=None, help="JSON overriding model sizes (see CLIP_SIZES / CLAP_SIZES)")
    parser.add_argument("--eval-scenes", type=int, default=512, help="held-out scenes for the retrieval scores (0: skip)")
    parser.add_argument("--eval-only", action="store_true", help="only score an existing --out folder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--inputs-cache", default=None, help="a file keeping the prepared inputs for later runs on the same data")
    parser.add_argument("--init", default=None, help="continue training this encoder folder (written by this module) instead of a new one")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval_only:
        from ..encoders.pretrained import load_encoder
        from ..synthav import split as S

        encoder = load_encoder(args.out)
        print(json.dumps({"heldout": retrieval_scores(encoder, S.scenes("heldout", args.eval_scenes), args.kind),
                          "unseen": retrieval_scores(encoder, S.scenes("unseen", max(1, args.eval_scenes // 2)), args.kind)}))
        return 0
    if not os.path.isfile(args.data):
        parser.error(f"--data {args.data} does not exist")
    train_args = ContrastiveArgs(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps, seed=args.seed)
    train_encoder(args.kind, args.data, args.out, train_args, args.eval_scenes, json.loads(args.sizes) if args.sizes else None,
                  inputs_cache=args.inputs_cache, init=args.init)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
