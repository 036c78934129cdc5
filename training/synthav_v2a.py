"""Trains the embedded V2A-Mapper defaults end to end on SynthAV, with the pack's own training code:

  1. SynthAV training scenes 0..N-1 (pictures, sounds, captions)
  2. a small CLIP (image <-> caption) and a small CLAP (audio <-> caption), contrastively
     (`training/contrastive_encoders.py`)
  3. the training sounds' spectrogram tokens (the embedded SynthAV spectrogram VQ, 10 x 22 grid)
     and the pairs (CLIP image embedding, CLAP audio embedding) of every scene, both through the
     code the nodes run (`encoders.load_encoder(...).encode_images / encode_audio`)
  4. the mappers CLIP image -> CLAP audio, regression and diffusion (`train mapper --pairs`)
  5. the generator: a masked transformer over the spectrogram tokens conditioned on the CLAP
     audio embedding (`training/embedding_to_audio.py`)
  6. `--install`: the results copied into embedded_models/ (encoders/, mappers/, embedding_audio/)

`python -m comfyui_audiovisual.training.synthav_v2a --work runs/v2a [--scenes N] [--install]`.
Each stage is skipped when its output exists (resumable); every command it runs is printed and
appended to WORK/pipeline_log.jsonl, which the model cards quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time

import torch

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EMBEDDED = os.path.join(PACK_DIR, "embedded_models")
SPEC_VQ = os.path.join(EMBEDDED, "vq", "synthav_spec_vq.safetensors")


def _log(work: str, record: dict) -> None:
    print(f"[synthav-v2a] {json.dumps(record)}", flush=True)
    with open(os.path.join(work, "pipeline_log.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def _stage(work: str, name: str, module: str, argv: list[str]) -> None:
    """Runs `python -m comfyui_audiovisual.<module> <argv>` in this process and logs the command."""
    import importlib

    command = f"python -m comfyui_audiovisual.{module} " + " ".join(shlex.quote(a) for a in argv)
    print(f"[synthav-v2a] {name}: {command}", flush=True)
    start = time.time()
    package = __package__.rsplit(".", 1)[0]
    code = importlib.import_module(f"{package}.{module}").main(argv)
    if code:
        raise SystemExit(f"{name} failed with exit code {code}")
    _log(work, {"stage": name, "command": command, "seconds": round(time.time() - start, 1)})


def build_scenes(work: str, n_scenes: int, workers: int = 1) -> str:
    from ..synthav.dataset import make_dataset

    out = os.path.join(work, "train_scenes.safetensors")
    if not os.path.exists(out):
        start = time.time()
        make_dataset("train", n_scenes, out, workers=workers)
        _log(work, {"stage": "scenes", "command": f"make_dataset('train', {n_scenes}, {out!r})", "seconds": round(time.time() - start, 1)})
    return out


def spectrogram_tokens(work: str, scenes_path: str, spec_vq: str = SPEC_VQ, batch: int = 64) -> str:
    """The training sounds as spectrogram token sequences [M, rows * columns] (column-major, as the
    masked sampler reads audio grids), with the grid in the metadata."""
    from safetensors.torch import load_file, save_file

    from ..audio.mel_frontend import waveform_to_mel
    from ..loaders.vq_checkpoints import load_vq_model
    from ..samplers.visual_echoes import audio_grid_to_sequence
    from ..vq.tokenizer import VQTokenizer

    out = os.path.join(work, "spec_tokens.safetensors")
    if os.path.exists(out):
        return out
    start = time.time()
    waves = load_file(scenes_path)["waves"]
    tokenizer = VQTokenizer(load_vq_model(spec_vq)[0].eval(), "audio")
    grids = []
    with torch.inference_mode():
        for chunk in waves.split(batch):
            grids.append(tokenizer.encode_mel(waveform_to_mel(chunk.float()), mode="pad"))
    grid = torch.cat(grids)
    save_file({"audio_tokens": audio_grid_to_sequence(grid).contiguous()}, out + ".partial",
              metadata={"audio_grid": json.dumps(list(grid.shape[1:])), "codebook_size": str(tokenizer.codebook_size),
                        "spec_vq": os.path.basename(spec_vq)})
    os.replace(out + ".partial", out)
    _log(work, {"stage": "spectrogram tokens", "grid": list(grid.shape), "seconds": round(time.time() - start, 1)})
    return out


def embedding_pairs(work: str, scenes_path: str, clip_dir: str, clap_dir: str, batch: int = 64) -> str:
    """(CLIP image embedding, CLAP audio embedding) of every training scene through the encoders'
    own encode_images / encode_audio, saved as a mapper `--pairs` file (training/mapper.save_pairs)."""
    from safetensors.torch import load_file

    from ..encoders.pretrained import load_encoder
    from ..synthav.world import SAMPLE_RATE
    from .mapper import infer_space, save_pairs

    out = os.path.join(work, "pairs.safetensors")
    if os.path.exists(out):
        return out
    start = time.time()
    data = load_file(scenes_path)
    clip, clap = load_encoder(clip_dir), load_encoder(clap_dir)
    images, audio = [], []
    with torch.inference_mode():
        for i in range(0, data["images"].shape[0], batch):
            images.append(clip.encode_images(data["images"][i:i + batch].float().permute(0, 2, 3, 1)).vectors)
            audio.append(clap.encode_audio(data["waves"][i:i + batch].float().unsqueeze(1), SAMPLE_RATE).vectors)
    source, target = torch.cat(images), torch.cat(audio)
    save_pairs(out, source, target, infer_space(source, "clip", clip.model_name, "image"),
               infer_space(target, "clap", clap.model_name, "audio"))
    _log(work, {"stage": "embedding pairs", "source": list(source.shape), "target": list(target.shape),
                "seconds": round(time.time() - start, 1)})
    return out


def generator_pairs(work: str, tokens_path: str, pairs_path: str, spec_vq: str = SPEC_VQ, heldout: int = 256) -> str:
    """The generator's training file in `train vatt`'s pairs format: codes [M, 1, rows * columns]
    (the spectrogram tokens), video [M, 1, D] (the CLAP audio embedding of the same clip, a
    condition sequence of length 1), codebook_latents [1, V, width] (the VQ's code vectors). The
    last `heldout` scenes are left out (for `heldout_token_accuracy`)."""
    from safetensors import safe_open

    from ..loaders.checkpoint_io import write_safetensors_atomic
    from ..loaders.vq_checkpoints import load_vq_model
    from ..synthav.world import HOP, MEL_FRAMES, SAMPLE_RATE
    from .mapper import load_pairs

    out = os.path.join(work, "generator_pairs.safetensors")
    if os.path.exists(out):
        return out
    with safe_open(tokens_path, framework="pt") as f:
        codes, meta = f.get_tensor("audio_tokens").long(), f.metadata()
    rows, columns = json.loads(meta["audio_grid"])
    _, target, _, space = load_pairs(pairs_path)
    keep = codes.shape[0] - heldout
    vq, _ = load_vq_model(spec_vq)
    seconds_per_column = (MEL_FRAMES // columns) * HOP / SAMPLE_RATE
    metadata = {"codec": os.path.basename(spec_vq), "sample_rate_hz": str(SAMPLE_RATE), "frame_rate_hz": str(rows / seconds_per_column),
                "video_family": space.family, "video_model": space.model, "video_rate_hz": "1.0", "video_tokens": "1",
                "text_family": "", "text_model": "", "audio_grid": json.dumps([rows, columns]),
                "source": f"{os.path.basename(tokens_path)} + {os.path.basename(pairs_path)} rows 0..{keep - 1}"}
    write_safetensors_atomic({"codes": codes[:keep].unsqueeze(1).contiguous(), "video": target[:keep].float().unsqueeze(1).contiguous(),
                              "codebook_latents": vq.quantize.embedding.weight.detach().float().unsqueeze(0).contiguous()}, out, metadata)
    return out


@torch.no_grad()
def heldout_token_accuracy(generator_path: str, tokens_path: str, pairs_path: str, heldout: int = 256) -> dict:
    """How much the generator reads its condition: on the `heldout` scenes it never trained on,
    the share of tokens its one-step prediction (every token masked) gets right given the CLAP
    embedding, and given a zeroed condition."""
    from safetensors import safe_open

    from ..loaders.vatt_checkpoints import load_vatt_decoder
    from .mapper import load_pairs

    model = load_vatt_decoder(generator_path)
    with safe_open(tokens_path, framework="pt") as f:
        codes = f.get_tensor("audio_tokens").long()[-heldout:]
    condition = load_pairs(pairs_path)[1][-heldout:].float()
    hits = {"conditional": 0, "unconditional": 0}
    for i in range(0, codes.shape[0], 64):
        tokens, vectors = codes[i:i + 64].unsqueeze(1), condition[i:i + 64].unsqueeze(1)
        for name, drop in (("conditional", False), ("unconditional", True)):
            logits = model(tokens, torch.ones_like(tokens, dtype=torch.bool), vectors,
                           drop_condition=torch.full((tokens.shape[0],), drop))
            hits[name] += int((logits.argmax(-1) == tokens).sum())
    return {f"token_acc_{k}": round(v / codes.numel(), 4) for k, v in hits.items()}


ENCODER_STEPS = {"clip": 800, "clap": 800}
MAPPER_ARGS = {
    "regression": ["--hidden-dim", "256", "--blocks", "2", "--steps", "3000", "--batch-size", "256", "--lr", "1e-3"],
    "diffusion": ["--width", "128", "--depth", "3", "--heads", "4", "--steps", "3000", "--batch-size", "256", "--lr", "5e-4"],
}
GENERATOR_SIZE = {"dim": 96, "encoder_depth": 1, "decoder_depth": 2, "num_heads": 3, "head_dim": 32, "ff_mult": 4, "dropout": 0.0}
GENERATOR_ARGS = ["--batch-size", "32", "--lr", "5e-4", "--warmup-steps", "100"]
NAMES = {"clip": "synthav_clip", "clap": "synthav_clap", "regression": "synthav_clip_to_clap.safetensors",
         "diffusion": "synthav_clip_to_clap_diffusion.safetensors", "generator": "synthav_clap_to_spec_tokens.safetensors"}


def install(work: str) -> list[str]:
    """Copies the trained files into embedded_models/ (encoders/, mappers/, vatt/)."""
    from ..loaders.checkpoint_io import read_state_dict, write_safetensors_atomic

    written = []
    for kind in ("clip", "clap"):
        source, target = os.path.join(work, "encoders", NAMES[kind]), os.path.join(EMBEDDED, "encoders", NAMES[kind])
        tmp = target + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        written.append(target)
    for kind in ("regression", "diffusion"):
        source = os.path.join(work, "mappers", NAMES[kind])
        if os.path.exists(source):
            target = os.path.join(EMBEDDED, "mappers", NAMES[kind])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target + ".partial")
            os.replace(target + ".partial", target)
            written.append(target)
    from safetensors import safe_open

    from ..synthav.world import HOP, MEL_FRAMES, SAMPLE_RATE

    state, metadata = read_state_dict(os.path.join(work, "generator", NAMES["generator"]))
    with safe_open(os.path.join(work, "spec_tokens.safetensors"), framework="pt") as f:
        rows, columns = json.loads(f.metadata()["audio_grid"])
    extra = {"audio_grid": json.dumps([rows, columns]), "seconds_per_column": str((MEL_FRAMES // columns) * HOP / SAMPLE_RATE),
             "spec_vq": os.path.basename(SPEC_VQ), "generator": "spectrogram tokens from one CLAP embedding (training/synthav_v2a.py)"}
    target = os.path.join(EMBEDDED, "vatt", NAMES["generator"])
    write_safetensors_atomic(state, target, {**metadata, **extra})
    written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.training.synthav_v2a")
    parser.add_argument("--work", default=os.path.join(PACK_DIR, "runs", "v2a"))
    parser.add_argument("--scenes", type=int, default=12000)
    parser.add_argument("--generator-steps", type=int, default=2000)
    parser.add_argument("--stop-after", choices=["scenes", "tokens", "encoders", "pairs", "mappers", "generator"], default=None)
    parser.add_argument("--install", action="store_true", help="copy the results into embedded_models/")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(args.threads)
    threads = ["--threads", str(args.threads)]
    scenes = build_scenes(args.work, args.scenes)
    if args.stop_after == "scenes":
        return 0
    tokens = spectrogram_tokens(args.work, scenes)
    if args.stop_after == "tokens":
        return 0
    encoders = {}
    for kind in ("clip", "clap"):
        encoders[kind] = os.path.join(args.work, "encoders", NAMES[kind])
        if not os.path.isfile(os.path.join(encoders[kind], "model.safetensors")):
            _stage(args.work, f"{kind} encoder", "training.contrastive_encoders",
                   ["--kind", kind, "--data", scenes, "--out", encoders[kind], "--steps", str(ENCODER_STEPS[kind]), "--batch-size", "128",
                    "--lr", "1e-3", "--inputs-cache", os.path.join(args.work, "encoders", f"{kind}_inputs.safetensors"), *threads])
    if args.stop_after == "encoders":
        return 0
    pairs = embedding_pairs(args.work, scenes, encoders["clip"], encoders["clap"])
    if args.stop_after == "pairs":
        return 0
    for kind in ("regression", "diffusion"):
        out = os.path.join(args.work, "mappers", NAMES[kind])
        if not os.path.exists(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            _stage(args.work, f"{kind} mapper", "training.mapper",
                   ["--pairs", pairs, "--kind", kind, "--out", out, *MAPPER_ARGS[kind], "--device", "cpu"])
    if args.stop_after == "mappers":
        return 0
    gen_pairs = generator_pairs(args.work, tokens, pairs)
    out = os.path.join(args.work, "generator", NAMES["generator"])
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        _stage(args.work, "generator", "training.vatt",
               ["--pairs", gen_pairs, "--out", out, "--steps", str(args.generator_steps), "--size", json.dumps(GENERATOR_SIZE),
                *GENERATOR_ARGS, *threads])
        _log(args.work, {"stage": "generator held-out tokens", **heldout_token_accuracy(out, tokens, pairs)})
    if args.install:
        for path in install(args.work):
            _log(args.work, {"stage": "install", "path": path})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
