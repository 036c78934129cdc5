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
import dataclasses
import json
import os
import shlex
import shutil
import sys
import time

import torch

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EMBEDDED = os.path.join(PACK_DIR, "embedded_models")
SPEC_VQ = os.path.join(EMBEDDED, "vq", "synthav_spec_vq512.safetensors")


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


def embedding_pairs(work: str, scenes_path: str, clip_dir: str, clap_dir: str, batch: int = 256, check: int = 16) -> str:
    """(CLIP image embedding, CLAP audio embedding) of every training scene, saved as a mapper
    `--pairs` file (training/mapper.save_pairs).

    The encoders' inputs were already prepared for their training (contrastive_encoders inputs
    cache, made by `clip_training_inputs` / `clap_training_inputs`, the encoders' own preprocessing):
    the embeddings are the trained models' forward passes on them. The first `check` scenes are
    also encoded through `encode_images` / `encode_audio` and must agree (the path the nodes run)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..encoders.pretrained import load_encoder
    from ..synthav.world import SAMPLE_RATE
    from .mapper import infer_space, save_pairs

    out = os.path.join(work, "pairs.safetensors")
    if os.path.exists(out):
        return out
    start = time.time()
    clip, clap = load_encoder(clip_dir), load_encoder(clap_dir)
    vectors = {}
    with torch.inference_mode():
        for kind, encoder in (("clip", clip), ("clap", clap)):
            with safe_open(os.path.join(work, "encoders", f"{kind}_inputs.safetensors"), framework="pt") as f:
                inputs = f.get_tensor("inputs")
            forward = (lambda x: encoder.module.get_image_features(pixel_values=x).pooler_output) if kind == "clip" else \
                (lambda x: encoder.module.get_audio_features(input_features=x).pooler_output)
            vectors[kind] = torch.cat([forward(inputs[i:i + batch]) for i in range(0, inputs.shape[0], batch)]).float()
            del inputs
        data = load_file(scenes_path)
        reference = {"clip": clip.encode_images(data["images"][:check].float().permute(0, 2, 3, 1)).vectors,
                     "clap": clap.encode_audio(data["waves"][:check].float().unsqueeze(1), SAMPLE_RATE).vectors}
    for kind in ("clip", "clap"):
        error = float((vectors[kind][:check] - reference[kind]).abs().max())
        if error > 1e-4:
            raise RuntimeError(f"embedding pairs: the cached {kind} inputs give embeddings {error:.2e} away from encode_*; "
                               "delete the inputs cache and rerun")
    source, target = vectors["clip"], vectors["clap"]
    # the spaces carry the encoders' weight fingerprints: a mapper trained on them accepts these weights under
    # any name and refuses other weights under the same name
    save_pairs(out, source, target, dataclasses.replace(infer_space(source, "clip", clip.model_name, "image"), weights=clip.fingerprint),
               dataclasses.replace(infer_space(target, "clap", clap.model_name, "audio"), weights=clap.fingerprint))
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


ENCODER_STEPS = {"clip": 800, "clap": 1200}
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


def continue_generator(work: str, source: str, out: str, steps: int, lr: float = 3e-4, batch_size: int = 32, seed: int = 1) -> str:
    """More training of the generator at `source` (train vatt's loop, `training.vatt.train_vatt`, on
    the same pairs file, a fresh warm-up and cosine schedule), written to `out`."""
    from ..loaders.vatt_checkpoints import load_vatt_decoder, save_vatt_decoder
    from .vatt import VATTTrainingArgs, load_pairs as load_generator_pairs, train_vatt

    start = time.time()
    model = load_vatt_decoder(source)
    args = VATTTrainingArgs(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=50, seed=seed)
    history = train_vatt(model, load_generator_pairs(os.path.join(work, "generator_pairs.safetensors")), args, "cpu")
    save_vatt_decoder(model, out, {"training": {"continued_from": os.path.basename(source), "steps": steps, "lr": lr,
                                                "batch_size": batch_size, "final_loss": history[-1]["loss"]}})
    _log(work, {"stage": "generator continued", "call": f"continue_generator({work!r}, {source!r}, {out!r}, {steps}, lr={lr}, "
                f"batch_size={batch_size}, seed={seed})", "seconds": round(time.time() - start, 1)})
    return out


def record_fingerprints(mapper_path: str, clip_dir: str, clap_dir: str) -> bool:
    """Writes the encoders' weight fingerprints into a mapper's source and target spaces (for mappers
    trained before the pairs carried them); the weights and the other metadata are kept. Returns
    whether the file changed. Refuses a mapper whose spaces are not these encoders' (name and width)."""
    from safetensors import safe_open

    from ..encoders.pretrained import load_encoder
    from ..loaders.mapper import load_mapper, save_mapper

    mapper = load_mapper(mapper_path)
    clip, clap = load_encoder(clip_dir), load_encoder(clap_dir)
    wanted = {"source": (mapper.source, clip), "target": (mapper.target, clap)}
    for side, (space, encoder) in wanted.items():
        if space.model != encoder.model_name:
            raise ValueError(f"{mapper_path}: the {side} space is '{space.model}', not the encoder '{encoder.model_name}'")
    if (mapper.source.weights, mapper.target.weights) == (clip.fingerprint, clap.fingerprint):
        return False
    with safe_open(mapper_path, framework="pt") as f:
        extra = {k: v for k, v in (f.metadata() or {}).items() if k not in ("config", "format")}
    mapper.source = dataclasses.replace(mapper.source, weights=clip.fingerprint)
    mapper.target = dataclasses.replace(mapper.target, weights=clap.fingerprint)
    save_mapper(mapper, mapper_path, extra_metadata=extra)
    return True


STAGES = ("scenes", "tokens", "encoders", "pairs", "mappers", "fingerprints", "generator", "install")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.training.synthav_v2a")
    parser.add_argument("--work", default=os.path.join(PACK_DIR, "runs", "v2a"))
    parser.add_argument("--scenes", type=int, default=12000)
    parser.add_argument("--generator-steps", type=int, default=2000)
    parser.add_argument("--generator-more-steps", type=int, default=0,
                        help="then continue the generator this many steps (continue_generator); the continued file is installed")
    parser.add_argument("--stages", default=",".join(STAGES[:-1]),
                        help=f"comma-separated stages to run, in order: {', '.join(STAGES)} (default: all but install); "
                             "a stage whose output exists is skipped")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    stages = [x.strip() for x in args.stages.split(",") if x.strip()]
    unknown = [x for x in stages if x not in STAGES]
    if unknown:
        parser.error(f"--stages: unknown {unknown}; expected some of {', '.join(STAGES)}")
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(args.threads)
    threads = ["--threads", str(args.threads)]
    scenes = os.path.join(args.work, "train_scenes.safetensors")
    tokens = os.path.join(args.work, "spec_tokens.safetensors")
    pairs = os.path.join(args.work, "pairs.safetensors")
    encoders = {kind: os.path.join(args.work, "encoders", NAMES[kind]) for kind in ("clip", "clap")}
    if "scenes" in stages:
        build_scenes(args.work, args.scenes)
    if "tokens" in stages:
        spectrogram_tokens(args.work, scenes)
    if "encoders" in stages:
        for kind in ("clip", "clap"):
            if not os.path.isfile(os.path.join(encoders[kind], "model.safetensors")):
                _stage(args.work, f"{kind} encoder", "training.contrastive_encoders",
                       ["--kind", kind, "--data", scenes, "--out", encoders[kind], "--steps", str(ENCODER_STEPS[kind]),
                        "--batch-size", "128", "--lr", "1e-3",
                        "--inputs-cache", os.path.join(args.work, "encoders", f"{kind}_inputs.safetensors"), *threads])
    if "pairs" in stages:
        embedding_pairs(args.work, scenes, encoders["clip"], encoders["clap"])
    if "mappers" in stages:
        for kind in ("regression", "diffusion"):
            out = os.path.join(args.work, "mappers", NAMES[kind])
            if not os.path.exists(out):
                os.makedirs(os.path.dirname(out), exist_ok=True)
                _stage(args.work, f"{kind} mapper", "training.mapper",
                       ["--pairs", pairs, "--kind", kind, "--out", out, *MAPPER_ARGS[kind], "--device", "cpu"])
    if "fingerprints" in stages:
        for kind in ("regression", "diffusion"):
            out = os.path.join(args.work, "mappers", NAMES[kind])
            if os.path.exists(out) and record_fingerprints(out, encoders["clip"], encoders["clap"]):
                _log(args.work, {"stage": "fingerprints", "call": f"record_fingerprints({out!r}, {encoders['clip']!r}, {encoders['clap']!r})"})
    if "generator" in stages:
        gen_pairs = generator_pairs(args.work, tokens, pairs)
        out = os.path.join(args.work, "generator", NAMES["generator"])
        if not os.path.exists(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            _stage(args.work, "generator", "training.vatt",
                   ["--pairs", gen_pairs, "--out", out, "--steps", str(args.generator_steps), "--size", json.dumps(GENERATOR_SIZE),
                    *GENERATOR_ARGS, *threads])
            _log(args.work, {"stage": "generator held-out tokens", **heldout_token_accuracy(out, tokens, pairs)})
        more = out.replace(".safetensors", f"_plus{args.generator_more_steps}.safetensors")
        if args.generator_more_steps and not os.path.exists(more):
            continue_generator(args.work, out, more, args.generator_more_steps)
            _log(args.work, {"stage": "continued generator held-out tokens", **heldout_token_accuracy(more, tokens, pairs)})
    if "install" in stages:
        for path in install(args.work):
            _log(args.work, {"stage": "install", "path": path})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
