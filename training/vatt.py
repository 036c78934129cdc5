"""Training VATT's audio decoder: ``python -m comfyui_audiovisual train vatt``.

Objective (the official ``VT2AModel.forward``): for each row a mask ratio r is drawn from a
truncated Gaussian (official code: mean 0.55, std 0.25 on [0.5, 1]); every codec slot (codebook x
frame) is masked with probability r (at least one per row); the condition is zeroed for 10 % of
rows (what classifier-free guidance needs); cross-entropy with label smoothing 0.1 on the masked
slots only. Our models use the aligned logit layout (head k scores codebook k).

Data: a pairs file (safetensors) with
  ``codes``  [M, K, N] long  codec tokens of M clips (all the same length),
  ``video``  [M, Lv, D] float  video-feature tokens (e.g. VATT Video Features' output),
  ``text``   [M, Lt, Dt] float (optional) text states,
  ``codebook_latents`` [K, V, Dl] float  the codec's codebook tables (stored in the decoder),
and metadata ``codec``, ``sample_rate_hz``, ``frame_rate_hz``, ``video_family``, ``video_model``,
``video_rate_hz``, ``video_tokens``, ``text_family``, ``text_model``.
``--synthav N --encoder DIR --codec DIR`` renders N SynthAV videos (objects appearing as their
tones start) and writes such a file first, through the same encoder and codec code the nodes use.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from ..loaders.checkpoint_io import write_safetensors_atomic
from ..loaders.vatt_checkpoints import save_vatt_decoder
from ..networks.vatt_decoder import VATTDecoder, VATTDecoderConfig
from .schedules import warmup_cosine_lr

__all__ = ["VATTTrainingArgs", "sample_training_mask", "vatt_loss", "load_pairs", "make_synthav_pairs", "train_vatt", "main"]

@dataclass
class VATTTrainingArgs:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 100
    mask_ratio_mean: float = 0.55
    mask_ratio_std: float = 0.25
    mask_ratio_min: float = 0.5
    mask_ratio_max: float = 1.0
    condition_drop: float = 0.1
    text_drop: float = 0.0  # rows trained without their text (so the model also works without a caption)
    label_smoothing: float = 0.1
    seed: int = 0
    log_every: int = 50
    checkpoint_seconds: float = 540.0  # with a checkpoint folder: save at least this often (wall time)


def _truncated_normal(count: int, mean: float, std: float, low: float, high: float, generator) -> torch.Tensor:
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    a, b = normal.cdf(torch.tensor((low - mean) / std)), normal.cdf(torch.tensor((high - mean) / std))
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    return (mean + std * torch.special.ndtri(a + u * (b - a))).clamp(low, high)


def sample_training_mask(batch: int, codebooks: int, frames: int, args: VATTTrainingArgs,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Bool [B, K, N]: each slot masked with its row's ratio r ~ truncated N(mean, std) on [min, max];
    at least one masked slot per row."""
    ratios = _truncated_normal(batch, args.mask_ratio_mean, args.mask_ratio_std, args.mask_ratio_min, args.mask_ratio_max,
                               generator).float()
    masked = torch.rand(batch, codebooks, frames, generator=generator) < ratios[:, None, None]
    empty = ~masked.reshape(batch, -1).any(dim=1)
    if bool(empty.any()):
        pick = torch.randint(0, codebooks * frames, (batch,), generator=generator)
        flat = masked.reshape(batch, -1)
        flat[empty, pick[empty]] = True
        masked = flat.reshape(batch, codebooks, frames)
    return masked


def vatt_loss(model: VATTDecoder, codes: torch.Tensor, video: torch.Tensor, masked: torch.Tensor,
              drop: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None,
              label_smoothing: float = 0.1) -> torch.Tensor:
    """Mean cross-entropy over the masked slots of ``codes`` [B, K, N]."""
    logits = model(codes, masked, video, text, drop_condition=drop)  # [B, K, N, V]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), codes.reshape(-1), reduction="none",
                         label_smoothing=label_smoothing)
    weights = masked.reshape(-1).float()
    return (ce * weights).sum() / weights.sum().clamp(min=1)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def load_pairs(path) -> Dict[str, object]:
    """Read a pairs file (see the module doc); errors name the file and the key."""
    from ..loaders.checkpoint_io import read_state_dict

    path = Path(path)
    tensors, metadata = read_state_dict(path)
    for key in ("codes", "video", "codebook_latents"):
        if key not in tensors:
            raise ValueError(f"{path.name}: missing key '{key}' (found {sorted(tensors)})")
    codes, video, tables = tensors["codes"], tensors["video"], tensors["codebook_latents"]
    if codes.is_floating_point() or codes.dim() != 3:
        raise ValueError(f"{path.name}: 'codes' must be integer [clips, codebooks, frames], got {codes.dtype} {tuple(codes.shape)}")
    if video.dim() != 3 or video.shape[0] != codes.shape[0]:
        raise ValueError(f"{path.name}: 'video' must be [clips, tokens, width] with {codes.shape[0]} clips, got {tuple(video.shape)}")
    if tables.dim() != 3 or tables.shape[0] != codes.shape[1]:
        raise ValueError(f"{path.name}: 'codebook_latents' must be [{codes.shape[1]}, codes, width], got {tuple(tables.shape)}")
    if int(codes.min()) < 0 or int(codes.max()) >= tables.shape[1]:
        raise ValueError(f"{path.name}: code ids must lie in [0, {tables.shape[1] - 1}]")
    text = tensors.get("text")
    if text is not None and (text.dim() != 3 or text.shape[0] != codes.shape[0]):
        raise ValueError(f"{path.name}: 'text' must be [clips, tokens, width] with {codes.shape[0]} clips, got {tuple(text.shape)}")
    required = tensors.get("text_required")
    if required is not None and (text is None or tuple(required.shape) != (codes.shape[0],)):
        raise ValueError(f"{path.name}: 'text_required' must be one flag per clip [{codes.shape[0]}], beside a 'text'")
    return {"codes": codes.long(), "video": video.float(), "text": None if text is None else text.float(),
            "text_required": None if required is None else required.bool(),
            "codebook_latents": tables.float(), "metadata": metadata}


def repitched_scene(scene, rng):
    """The scene with every object's colour (= note) changed to another one, drawn by ``rng``."""
    import dataclasses

    from ..synthav.world import COLOURS

    objects = []
    for o in scene.objects:
        others = [c for c in range(len(COLOURS)) if c != o.colour]
        objects.append(dataclasses.replace(o, colour=int(others[int(rng.integers(len(others)))])))
    return dataclasses.replace(scene, objects=tuple(objects))


def make_synthav_pairs(count: int, encoder_dir: str, codec_dir: str, out_path, *, start: int = 0, fps: float = 16.0,
                       duration_s: float = 2.0, rate_hz: float = 5.0, tokens: int = 10, codebooks: int = 0,
                       device: str = "cpu", text_encoder_dir: Optional[str] = None, text_edit: float = 0.0, text_tokens: int = 32,
                       split: str = "train", seed: int = 0, batch: int = 32, log=print, reuse=None) -> Path:
    """Render ``count`` SynthAV videos (scenes start..start+count-1 of ``split``: the training split
    never shows the held-out seeds or (shape, colour) combinations), each object appearing as its
    tone starts (``synthav.world.make_video``), and write a pairs file: the frames at ``rate_hz``
    through the image encoder, pooled to ``tokens``; the sound through the codec (``codebooks``
    levels, 0 = all); with ``text_encoder_dir`` the sound's caption (``Scene.audio_caption``) through
    that encoder's ``encode_text``.

    ``text_edit``: the share of clips whose caption names other notes than the picture shows (every
    object's colour redrawn, ``repitched_scene``) and whose sound follows the caption; they are marked
    ``text_required`` (the trainer never shows them without their text). This teaches the decoder
    that a prompt overrides what the picture implies (text control). A T5 encoder's token states
    are padded to ``text_tokens`` (the Encode Text node's ``t5_tokens`` must then say the same).

    ``reuse``: a pairs file made by this function from the same scenes, encoder, codec and clip
    settings (without text): its video tokens, and the codes of clips whose sound is unchanged, are
    taken from it instead of being computed again (the result is the same file, faster)."""
    import numpy as np

    from ..audio.codec_tokenizer import load_codec
    from ..audio.prepare import prepare_waveform
    from ..encoders.pretrained import load_encoder
    from ..encoders.video_frames import sample_frames
    from ..samplers.vatt import pool_frame_features
    from ..synthav.split import scenes as split_scenes
    from ..synthav.world import make_video, render_audio

    if not 0.0 <= text_edit <= 1.0:
        raise ValueError(f"make_synthav_pairs: text_edit must be a share in [0, 1], got {text_edit!r}")
    if text_edit and not text_encoder_dir:
        raise ValueError("make_synthav_pairs: text_edit needs a text encoder")
    encoder = load_encoder(encoder_dir)
    encoder.check_modality("image")
    encoder.module.to(device)
    text_encoder = None
    if text_encoder_dir:
        text_encoder = load_encoder(text_encoder_dir)
        text_encoder.check_modality("text")
        text_encoder.module.to(device)
    codec = load_codec(codec_dir, device=device)
    codebooks = codebooks or codec.max_codebooks
    metadata = {"codec": codec.name, "sample_rate_hz": codec.sample_rate_hz, "frame_rate_hz": codec.frame_rate_hz,
                "video_family": encoder.family, "video_model": encoder.model_name, "video_rate_hz": rate_hz,
                "video_tokens": tokens, "text_family": "", "text_model": "", "clip_s": duration_s, "fps": fps,
                "source": f"synthav {split} scenes {start}..{start + count - 1}, {duration_s:g} s at {fps:g} fps",
                "text_edit": text_edit}
    cached = None
    if reuse is not None:
        cached = load_pairs(reuse)
        same = {k: str(metadata[k]) for k in ("codec", "video_model", "video_rate_hz", "video_tokens", "clip_s", "fps", "source")}
        found = {k: str(cached["metadata"].get(k)) for k in same}
        if same != found or cached["codes"].shape[1] != (codebooks or codec.max_codebooks):
            raise ValueError(f"make_synthav_pairs: {reuse} was made with other settings ({found}), expected {same}")
    rng = np.random.default_rng([seed, 7])
    video, waves, captions, edited = [], [], [], []
    started = time.time()
    for index, scene in enumerate(split_scenes(split, count, start)):
        clip = make_video(scene.seed, fps=fps, duration_s=duration_s, scene=scene)
        if cached is not None:
            video.append(cached["video"][index])
        else:
            frames, _ = sample_frames(torch.from_numpy(clip.frames), clip.fps, rate_hz)
            video.append(pool_frame_features(encoder.encode_images(frames).vectors.float().cpu(), tokens)[0])
        audio, sound_scene = clip.audio, scene
        is_edit = bool(text_encoder is not None and rng.random() < text_edit)
        if is_edit:
            sound_scene = repitched_scene(scene, rng)
            audio = render_audio(sound_scene, onsets_s=clip.appear_times, n_samples=len(clip.audio))
        waves.append(torch.from_numpy(audio))
        captions.append(sound_scene.audio_caption())
        edited.append(is_edit)
        if log and (index + 1) % 500 == 0:
            log(f"vatt: {index + 1}/{count} SynthAV videos encoded ({time.time() - started:.0f} s)")
    todo = [i for i in range(count) if cached is None or edited[i]]
    codes = torch.empty(0, dtype=torch.long) if cached is None else cached["codes"].clone()
    computed = []
    for i in range(0, len(todo), batch):
        rows = todo[i:i + batch]
        chunk = prepare_waveform(torch.stack([waves[r] for r in rows]).unsqueeze(1), clip.sample_rate, codec.sample_rate_hz)
        computed.append(codec.encode(chunk.unsqueeze(1).expand(-1, codec.channels, -1), codebooks).codes)
    if computed:
        computed = torch.cat(computed)
        if cached is None:
            codes = computed
        else:
            codes[torch.tensor(todo)] = computed
    tensors = {"codes": codes, "video": torch.stack(video), "codebook_latents": codec.codebook_latents(codebooks)}
    if text_encoder is not None:
        states = []
        with torch.inference_mode():
            for i in range(0, len(captions), 256):
                # token sequences (T5) are padded to text_tokens, as the Encode Text node's t5_tokens does
                length = text_tokens if text_encoder.family == "t5" else None
                states.append(text_encoder.encode_text(captions[i:i + 256], sequence_length=length).vectors.float().cpu())
        if any(x.dim() == 3 for x in states):  # token sequences: pad to the longest
            length = max(x.shape[1] for x in states)
            states = [torch.nn.functional.pad(x, (0, 0, 0, length - x.shape[1])) for x in states]
        text = torch.cat(states)
        tensors["text"] = text if text.dim() == 3 else text.unsqueeze(1)
        tensors["text_required"] = torch.tensor(edited, dtype=torch.uint8)
        metadata.update(text_family=text_encoder.family, text_model=text_encoder.model_name)
    out_path = Path(out_path)
    write_safetensors_atomic(tensors, out_path, {k: str(v) for k, v in metadata.items()})
    return out_path


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
def _lr(step: int, args: VATTTrainingArgs) -> float:
    return warmup_cosine_lr(step, args.lr, args.steps, args.warmup_steps, floor=0.1)


CHECKPOINT_DECODER, CHECKPOINT_STATE = "decoder.safetensors", "training_state.pt"


def save_training_checkpoint(folder: Path, model: VATTDecoder, optimizer: torch.optim.Optimizer,
                             generator: torch.Generator, step: int) -> None:
    """``folder``/decoder.safetensors and training_state.pt (step, optimizer, the data generator's
    state, so a resumed run draws the same batches as an uninterrupted one), each written atomically."""
    from ..loaders.checkpoint_io import torch_save_atomic

    folder.mkdir(parents=True, exist_ok=True)
    save_vatt_decoder(model, folder / CHECKPOINT_DECODER, {"training": {"checkpoint_step": step}})
    torch_save_atomic({"step": step, "optimizer": optimizer.state_dict(), "generator": generator.get_state()},
                      folder / CHECKPOINT_STATE)


def load_training_checkpoint(folder: Path, model: VATTDecoder, optimizer: torch.optim.Optimizer,
                             generator: torch.Generator) -> int:
    """Restore what :func:`save_training_checkpoint` wrote into ``model``, ``optimizer`` and
    ``generator``; returns the step it was saved at. Errors name the file and what was expected."""
    from ..loaders.vatt_checkpoints import load_vatt_decoder

    decoder_path, state_path = folder / CHECKPOINT_DECODER, folder / CHECKPOINT_STATE
    for path in (decoder_path, state_path):
        if not path.is_file():
            raise FileNotFoundError(f"train vatt: cannot resume, {path} not found")
    saved = load_vatt_decoder(decoder_path)
    if saved.config.to_dict() != model.config.to_dict():
        raise ValueError(f"train vatt: {decoder_path} has config {saved.config.to_dict()}, the run trains {model.config.to_dict()}")
    model.load_state_dict(saved.state_dict())
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        return int(state["step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"train vatt: {state_path} is not a VATT training state ({error})") from error


def train_vatt(model: VATTDecoder, pairs: Dict[str, object], args: VATTTrainingArgs,
               device: torch.device | str = "cpu", log=print, checkpoint_dir=None, resume: bool = False) -> list[dict]:
    """Train ``model`` in place on ``pairs`` (from :func:`load_pairs`); returns the log entries.

    ``checkpoint_dir``: save the decoder, optimizer and data order there at least every
    ``args.checkpoint_seconds`` and at the end; with ``resume`` continue from what it holds (the
    result equals an uninterrupted run's)."""
    device = torch.device(device)
    model.to(device).train()
    codes, video, text = pairs["codes"], pairs["video"], pairs["text"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                  betas=(0.9, 0.999), weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    count, history, started = codes.shape[0], [], time.time()
    checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    first = 1
    if resume:
        if checkpoint_dir is None:
            raise ValueError("train vatt: --resume needs a checkpoint folder (--checkpoint-dir)")
        first = load_training_checkpoint(checkpoint_dir, model, optimizer, generator) + 1
        log(f"vatt: resumed from {checkpoint_dir} at step {first - 1}")
    last_saved = time.time()
    required = pairs.get("text_required")
    free_rows = None
    if required is not None and bool(required.any()):
        free_rows = (~required).nonzero().flatten()
        if free_rows.numel() == 0:
            raise ValueError("train vatt: every clip needs its text (text_required), so none can train without it")
    for step in range(first, args.steps + 1):
        without_text = text is not None and bool(args.text_drop) and float(torch.rand(1, generator=generator)) < args.text_drop
        if without_text and free_rows is not None:  # rows whose sound follows their caption need it
            index = free_rows[torch.randint(0, free_rows.numel(), (args.batch_size,), generator=generator)]
        else:
            index = torch.randint(0, count, (args.batch_size,), generator=generator)
        batch_codes = codes[index]
        masked = sample_training_mask(*batch_codes.shape, args, generator)
        drop = torch.rand(args.batch_size, generator=generator) < args.condition_drop
        batch_text = None
        if text is not None and not without_text:
            batch_text = text[index].to(device)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, args)
        loss = vatt_loss(model, batch_codes.to(device), video[index].to(device), masked.to(device), drop.to(device),
                         batch_text, args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step == 1 or step % args.log_every == 0 or step == args.steps:
            entry = {"step": step, "loss": float(loss.detach()), "lr": _lr(step, args), "seconds": round(time.time() - started, 1)}
            history.append(entry)
            log(f"vatt: step {step}/{args.steps} loss {entry['loss']:.4f} lr {entry['lr']:.2e}")
        if checkpoint_dir is not None and (step == args.steps or time.time() - last_saved >= args.checkpoint_seconds):
            save_training_checkpoint(checkpoint_dir, model, optimizer, generator, step)
            last_saved = time.time()
    model.eval()
    return history


def config_for_pairs(pairs: Dict[str, object], **sizes) -> VATTDecoderConfig:
    """A decoder config that fits the pairs file (token space, condition widths and spaces)."""
    meta = pairs["metadata"]
    tables, text = pairs["codebook_latents"], pairs["text"]

    def value(key, default, kind=str):
        return kind(meta[key]) if key in meta and meta[key] != "" else default

    return VATTDecoderConfig(
        num_codebooks=int(tables.shape[0]), codebook_size=int(tables.shape[1]), latent_dim=int(tables.shape[2]),
        video_dim=int(pairs["video"].shape[-1]), text_dim=0 if text is None else int(text.shape[-1]),
        video_family=value("video_family", "clip"), video_model=value("video_model", ""),
        video_rate_hz=value("video_rate_hz", 5.0, float), video_tokens=value("video_tokens", int(pairs["video"].shape[1]), int),
        text_family=value("text_family", ""), text_model=value("text_model", ""), codec=value("codec", ""),
        sample_rate_hz=value("sample_rate_hz", 16000, lambda v: int(float(v))), frame_rate_hz=value("frame_rate_hz", 50.0, float),
        clip_s=value("clip_s", 0.0, float), text_tokens=0 if text is None else int(text.shape[1]), **sizes)


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual train vatt",
                                     description="Train a VATT audio decoder on (video features, codec tokens) pairs.")
    parser.add_argument("--pairs", help="pairs file (safetensors: codes, video, codebook_latents[, text])")
    parser.add_argument("--synthav", type=int, default=0, help="render this many SynthAV videos into --pairs first")
    parser.add_argument("--encoder", help="with --synthav: a CLIP transformers folder for the frames")
    parser.add_argument("--codec", help="with --synthav: a transformers EnCodec folder for the sound")
    parser.add_argument("--text-encoder", help="with --synthav: an encoder folder whose text side encodes each clip's caption "
                                               "(the decoder then takes text)")
    parser.add_argument("--text-edit", type=float, default=0.0,
                        help="with --synthav and --text-encoder: share of clips whose caption and sound name other notes than "
                             "the picture shows (teaches the prompt to override the picture)")
    parser.add_argument("--text-drop", type=float, default=None,
                        help="share of batches trained without their text (default 0.3 with text), so the decoder also works "
                             "without a prompt")
    parser.add_argument("--duration-s", type=float, default=2.0, help="with --synthav: clip length in seconds")
    parser.add_argument("--fps", type=float, default=16.0, help="with --synthav: frame rate of the rendered videos")
    parser.add_argument("--out", required=True, help="the decoder file to write (.safetensors)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--size", default="tiny", help="tiny | paper | inline JSON of VATTDecoderConfig size fields")
    parser.add_argument("--init", default=None, help="continue from this decoder file (its sizes; it must fit the pairs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", default=None,
                        help="save the decoder, optimizer and data order here at least every --checkpoint-seconds")
    parser.add_argument("--checkpoint-seconds", type=float, default=540.0)
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir (same pairs and settings)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    return parser


def _sizes(text: str) -> dict:
    if text == "tiny":
        return dict(dim=128, encoder_depth=2, decoder_depth=2, num_heads=4, head_dim=32)
    if text == "paper":
        return {}
    try:
        sizes = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--size: expected tiny, paper or a JSON object, got {text!r} ({e})") from None
    if not isinstance(sizes, dict):
        raise ValueError(f"--size: expected a JSON object, got {text!r}")
    return sizes


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = build_argument_parser().parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    out = Path(options.out)
    pairs_path = Path(options.pairs) if options.pairs else out.with_suffix(".pairs.safetensors")
    if options.synthav:
        if not (options.encoder and options.codec):
            raise ValueError("train vatt: --synthav needs --encoder (a CLIP folder) and --codec (an EnCodec folder)")
        make_synthav_pairs(options.synthav, options.encoder, options.codec, pairs_path, device=options.device,
                           text_encoder_dir=options.text_encoder, text_edit=options.text_edit, fps=options.fps,
                           duration_s=options.duration_s)
        print(f"vatt: wrote {options.synthav} SynthAV pairs to {pairs_path}")
    elif not options.pairs:
        raise ValueError("train vatt: give --pairs, or --synthav N with --encoder and --codec")
    pairs = load_pairs(pairs_path)
    torch.manual_seed(options.seed)
    if options.init:
        from ..loaders.vatt_checkpoints import load_vatt_decoder

        model = load_vatt_decoder(options.init)
        expected = config_for_pairs(pairs).to_dict()
        found = model.config.to_dict()
        keys = ("num_codebooks", "codebook_size", "latent_dim", "video_dim", "text_dim", "video_model", "text_model", "codec",
                "clip_s", "text_tokens")
        differ = {k: (found[k], expected[k]) for k in keys if found[k] != expected[k]}
        if differ:
            raise ValueError(f"train vatt: --init {options.init} does not fit the pairs: {differ} (decoder, pairs)")
        if not torch.equal(model.codebook_latents.float(), pairs["codebook_latents"]):
            raise ValueError(f"train vatt: --init {options.init} was trained with other codec tables than the pairs'")
    else:
        model = VATTDecoder(config_for_pairs(pairs, **_sizes(options.size)))
        model.set_codebooks(pairs["codebook_latents"])
    text_drop = options.text_drop if options.text_drop is not None else (0.3 if pairs["text"] is not None else 0.0)
    args = VATTTrainingArgs(steps=options.steps, batch_size=options.batch_size, lr=options.lr,
                            warmup_steps=min(options.warmup_steps, options.steps // 2), seed=options.seed, text_drop=text_drop,
                            checkpoint_seconds=options.checkpoint_seconds)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vatt: {n_params / 1e6:.2f}M parameters, {pairs['codes'].shape[0]} pairs of {tuple(pairs['codes'].shape[1:])} tokens")
    history = train_vatt(model, pairs, args, options.device, checkpoint_dir=options.checkpoint_dir, resume=options.resume)
    save_vatt_decoder(model.cpu(), out, {"training": {"steps": args.steps, "final_loss": history[-1]["loss"] if history else "",
                                                      "pairs": pairs_path.name, "text_drop": text_drop,
                                                      "init": os.path.basename(options.init) if options.init else "",
                                                      "source": pairs["metadata"].get("source", "")}})
    print(f"vatt: wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
