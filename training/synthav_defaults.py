"""Trains the embedded Visual Echoes SynthAV default end to end, with the pack's own training code:

  1. SynthAV training scenes -> images [M,3,64,64] and SpecVQGAN mels [M,80,176]
  2. image VQGAN (64x64 -> 16x16 tokens, edge-weighted L1) and spectrogram VQGAN (80x176 -> 10x22
     tokens); dead-code restarts only in the first 30 % of the steps, then the codes nobody uses
     are pruned, so each codebook is as large as the world needs; then a decoder-only refinement
     of each at a decaying learning rate (token ids unchanged)
  3. tokenizer ceilings: held-out round trips scored by the SynthAV analysers (tokenizer_ceilings.json)
  4. the dataset tokenized by both (audio grids read column-major, as the sampler reads them)
  5. the masked generative transformer over [audio | image] tokens, trained mostly in the modes the
     sampler runs (one modality shown, the other masked at a cosine ratio, the condition hidden
     10 % of the time for guidance) plus MAGE joint masking for co-generation
  6. held-out token accuracy with and without the condition (maskgen_token_accuracy.json), and
     optionally `evaluate` of both tasks (evaluate_*.json)
  7. the models staged in WORK/models/ with the metadata the nodes read; --install copies them to
     embedded_models/

    python -m comfyui_audiovisual.training.synthav_defaults --work runs/synthav [--install]

Two sizes of the recipe (--recipe): "cpu" (the default on a CPU) is sized for a from-scratch rebuild in
at most 4 hours on 2 cores (token groups, a narrow transformer, small tokenizers trained side by
side); "gpu" (the default on CUDA) made the shipped weights.

Each stage is skipped when its output exists, and the transformer checkpoints at least every
9 minutes and resumes, so an interrupted rebuild continues where it stopped. On a GPU,
`tools/gpu_synthav_visual_echoes.sh` runs the same recipe in bf16 with large batches in one
time-boxed call (--deadline-seconds sizes the transformer's steps from a measured step rate).
Every command it runs is printed and logged (pipeline_log.json), and written to the model cards.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file, save_file

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EMBEDDED = os.path.join(PACK_DIR, "embedded_models")
IMAGE_VQ_ARGS = ["--ch", "32", "--ch-mult", "1,2,2", "--codebook-size", "256", "--embed-dim", "16", "--lr", "4e-4",
                 "--restart-until", "0.3", "--edge-weight", "1.0", "--prune-below", "1e-5"]
SPEC_VQ_ARGS = ["--ch", "32", "--ch-mult", "1,2,2,2", "--codebook-size", "128", "--embed-dim", "16", "--lr", "4e-4",
                "--restart-until", "0.3", "--prune-below", "1e-5"]
MASKGEN_CONFIG = {"dim": 192, "encoder_depth": 6, "decoder_depth": 2, "num_heads": 6, "mlp_ratio": 4.0, "dropout": 0.0}
MASKGEN_ARGS = ["--lr", "1e-3", "--mask-modes", "audio|image=0.45,image|audio=0.35,mage=0.2", "--uncond-prob", "0.1",
                "--drop-fraction", "0", "--label-smoothing", "0.1", "--checkpoint-every", "500", "--checkpoint-seconds", "540",
                "--log-every", "50"]
DECODER_ARGS = ["--decoder-only", "--lr", "1e-4", "--lr-schedule", "cosine"]
# Two sizes of the one recipe. "cpu" made the shipped weights (2026-12-06, a from-scratch rebuild on
# the project's 2-core CPU in about 2 hours): token groups (a spectrogram column of 10 tokens and a
# 4-token strip of an image row are one position each: 86), a narrower transformer, and tokenizers
# small enough to train side by side on one thread each. "gpu" made the previous default (2026-12-04,
# a lent H200): a transformer with one position per token (476), a spectrogram tokenizer 4x wider
# and an image tokenizer without the chroma weight (benchmarks/results/synthav_quality.md has the
# figures of both).
CPU_IMAGE_VQ_ARGS = [*IMAGE_VQ_ARGS, "--chroma-weight", "8"]  # the objects' pixels outweigh the grey background
CPU_SPEC_VQ_ARGS = ["--ch", "8", "--ch-mult", "1,2,4,8", "--codebook-size", "128", "--embed-dim", "16", "--lr", "1e-3",
                    "--lr-schedule", "cosine", "--restart-until", "0.3", "--prune-below", "1e-5"]
CPU_MASKGEN_CONFIG = {"dim": 128, "encoder_depth": 4, "decoder_depth": 1, "num_heads": 4, "mlp_ratio": 4.0, "dropout": 0.0,
                      "audio_group": 10, "image_group": 4}
RECIPES = {
    "gpu": {"image_vq_args": IMAGE_VQ_ARGS, "spec_vq_args": SPEC_VQ_ARGS, "maskgen_config": MASKGEN_CONFIG,
            "maskgen_args": MASKGEN_ARGS, "scenes": 24000, "vq_steps": 2000, "vq_batch": 64, "decoder_steps": 300,
            "decoder_batch": 32, "maskgen_steps": 3000, "maskgen_batch": 256, "parallel_tokenizers": False},
    "cpu": {"image_vq_args": CPU_IMAGE_VQ_ARGS, "spec_vq_args": CPU_SPEC_VQ_ARGS, "maskgen_config": CPU_MASKGEN_CONFIG,
            "maskgen_args": [*MASKGEN_ARGS, "--position-init", "sincos"], "scenes": 12000,
            "vq_steps": {"image": 850, "audio": 1000}, "vq_batch": {"image": 16, "audio": 32}, "decoder_steps": 250,
            "decoder_batch": 32, "maskgen_steps": 8000, "maskgen_batch": 64, "parallel_tokenizers": True},
}
MODEL_FILES = {"image_vq": "vq/synthav_image_vq.safetensors", "spec_vq": "vq/synthav_spec_vq.safetensors",
               "maskgen": "maskgen/synthav_maskgen.safetensors"}


def _command(argv: list[str]) -> str:
    return "python -m comfyui_audiovisual " + " ".join(shlex.quote(a) for a in argv)


def _stage(name: str, argv: list[str], log: list) -> None:
    """Runs `python -m comfyui_audiovisual <argv>` in this process and records the command."""
    from ..runner.cli import main as cli_main

    print(f"[synthav-defaults] {name}: {_command(argv)}", flush=True)
    start = time.time()
    code = cli_main(argv)
    if code:
        raise SystemExit(f"{name} failed with exit code {code}")
    log.append({"stage": name, "command": _command(argv), "seconds": round(time.time() - start, 1)})


def _stages_in_parallel(stages: list[tuple[str, list[str]]], log: list, split_threads: bool = False) -> None:
    """Runs independent stages as concurrent processes (each `python -m comfyui_audiovisual ...`).
    split_threads: each process gets its share of this process's torch threads (OMP_NUM_THREADS),
    so CPU stages side by side do not oversubscribe the cores."""
    started, running = time.time(), []
    env = dict(os.environ)
    if split_threads:
        env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // len(stages)))
    for name, argv in stages:
        print(f"[synthav-defaults] {name} (in parallel): {_command(argv)}", flush=True)
        running.append((name, argv, subprocess.Popen([sys.executable, "-m", "comfyui_audiovisual", *argv], env=env)))
    failed = [name for name, _, process in running if process.wait() != 0]
    if failed:
        raise SystemExit(f"{', '.join(failed)} failed")
    for name, argv, _ in running:
        log.append({"stage": name, "command": _command(argv), "seconds": round(time.time() - started, 1), "parallel": True})


def build_training_arrays(work: str, n_scenes: int, workers: int = 1, device: str = "cpu") -> str:
    from ..audio.mel_frontend import waveform_to_mel
    from ..synthav.dataset import make_dataset

    out = os.path.join(work, "train_arrays.safetensors")
    if os.path.exists(out):
        return out
    raw = make_dataset("train", n_scenes, os.path.join(work, "train_scenes.safetensors"), workers=workers)
    data = load_file(raw)
    mels = torch.cat([waveform_to_mel(chunk.to(device, torch.float32)).cpu() for chunk in data["waves"].split(256)])
    save_file({"images": data["images"].float().contiguous(), "mels": mels.contiguous()}, out + ".tmp")
    os.replace(out + ".tmp", out)
    os.remove(raw)
    return out


def _tokenizers(image_vq: str, spec_vq: str, device: str):
    from ..loaders.vq_checkpoints import load_vq_model
    from ..vq.tokenizer import VQTokenizer

    return (VQTokenizer(load_vq_model(image_vq)[0].to(device), "image"),
            VQTokenizer(load_vq_model(spec_vq)[0].to(device), "audio"))


def tokenize_arrays(images: torch.Tensor, mels: torch.Tensor, image_tok, spec_tok, device: str = "cpu"):
    """(audio sequences [M, Na], image sequences [M, Ni], audio grid shape, image grid shape)."""
    from ..samplers.visual_echoes import audio_grid_to_sequence, image_grid_to_sequence

    image_grids, audio_grids = [], []
    with torch.inference_mode():
        for image_chunk, mel_chunk in zip(images.split(256), mels.split(256)):
            image_grids.append(image_tok.encode(image_chunk.to(device, torch.float32) * 2 - 1).cpu())
            audio_grids.append(spec_tok.encode_mel(mel_chunk.to(device, torch.float32)).cpu())
    image_grid, audio_grid = torch.cat(image_grids), torch.cat(audio_grids)
    return (audio_grid_to_sequence(audio_grid).contiguous(), image_grid_to_sequence(image_grid).contiguous(),
            list(audio_grid.shape[1:]), list(image_grid.shape[1:]))


def tokenize(work: str, arrays: str, image_vq: str, spec_vq: str, device: str = "cpu") -> str:
    out = os.path.join(work, "tokens.safetensors")
    if os.path.exists(out):
        return out
    data = load_file(arrays)
    image_tok, spec_tok = _tokenizers(image_vq, spec_vq, device)
    audio, image, audio_grid, image_grid = tokenize_arrays(data["images"], data["mels"], image_tok, spec_tok, device)
    save_file({"image_tokens": image, "audio_tokens": audio}, out + ".tmp",
              metadata={"image_grid": json.dumps(image_grid), "audio_grid": json.dumps(audio_grid),
                        "image_vocab_size": str(image_tok.codebook_size), "audio_vocab_size": str(spec_tok.codebook_size)})
    os.replace(out + ".tmp", out)
    return out


def heldout_tokens(image_vq: str, spec_vq: str, n: int, device: str = "cpu"):
    """Token sequences of the first `n` held-out scenes: (audio [n, Na], image [n, Ni])."""
    import numpy as np

    from ..audio.mel_frontend import waveform_to_mel
    from ..synthav import split as S
    from ..synthav.world import render_audio, render_image

    scenes = [S.split_scene("heldout", k) for k in range(n)]
    images = torch.tensor(np.stack([render_image(s) for s in scenes])).permute(0, 3, 1, 2)
    mels = waveform_to_mel(torch.tensor(np.stack([render_audio(s) for s in scenes])))
    audio, image, _, _ = tokenize_arrays(images, mels, *_tokenizers(image_vq, spec_vq, device), device)
    return audio, image


def _measure_steps_per_second(config: dict, tokens: str, batch_size: int, precision: str, device: str,
                              maskgen_args: list[str] = MASKGEN_ARGS, steps: int = 12) -> float:
    """Steps per second of the transformer recipe at `batch_size` on `device` (a throwaway model)."""
    from ..networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig
    from .maskgen import MaskGenTrainingArgs, load_token_dataset, maskgen_loss, sample_training_masks

    audio, image, metadata = load_token_dataset(tokens)
    model_config = MaskedAVTransformerConfig.from_dict(dict(config, audio_vocab_size=int(metadata["audio_vocab_size"]),
                                                            image_vocab_size=int(metadata["image_vocab_size"])))
    model = MaskedAVTransformer(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    args = MaskGenTrainingArgs(mask_modes=maskgen_args[maskgen_args.index("--mask-modes") + 1], drop_fraction=0.0)
    use_bf16 = precision == "bf16" and str(device).startswith("cuda")
    timings = []
    for step in range(steps):
        start = time.perf_counter()
        index = torch.randint(0, audio.shape[0], (batch_size,))
        masks = sample_training_masks(batch_size, audio.shape[1], image.shape[1], args)
        tensors = [t.to(device) for t in (audio[index], image[index], *masks)]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = maskgen_loss(model, *tensors)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.detach().item()
        timings.append(time.perf_counter() - start)
    del model, optimizer
    settled = timings[len(timings) // 3:]
    return len(settled) / sum(settled)


def install(work: str, audio_grid, image_grid, image_vq: str, spec_vq: str, target: str = EMBEDDED) -> None:
    """Writes the three models into `target` (vq/, maskgen/) with the metadata the nodes read."""
    from ..audio.mel_frontend import SPECVQGAN_MEL
    from ..loaders.checkpoint_io import read_state_dict, write_safetensors_atomic
    from ..synthav.world import IMAGE_SIZE, MEL_FRAMES

    seconds_per_column = (MEL_FRAMES // audio_grid[1]) * SPECVQGAN_MEL.hop_samples / SPECVQGAN_MEL.sample_rate_hz
    sources = {
        "image_vq": (image_vq, {"image_size": str(IMAGE_SIZE)}),
        "spec_vq": (spec_vq, {"mel_frames": str(MEL_FRAMES)}),
        "maskgen": (os.path.join(work, "maskgen", "model.safetensors"),
                    {"audio_grid": json.dumps(audio_grid), "image_grid": json.dumps(image_grid),
                     "seconds_per_column": str(seconds_per_column)}),
    }
    for key, (source, extra) in sources.items():
        state, metadata = read_state_dict(source)
        path = os.path.join(target, MODEL_FILES[key])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_safetensors_atomic({k: v.contiguous() for k, v in state.items()}, path, {**metadata, **extra})
        print(f"[synthav-defaults] wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.training.synthav_defaults",
                                     description="Rebuild the Visual Echoes SynthAV default from scratch (resumable).")
    parser.add_argument("--work", default=os.path.join(PACK_DIR, "runs", "synthav"))
    parser.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                        help="cpu: sized for a 4-hour rebuild on 2 CPU cores (token groups, small tokenizers); "
                             "gpu: the recipe of the shipped weights (default: cpu on a CPU, gpu on CUDA). "
                             "The size options below default to the recipe's")
    parser.add_argument("--scenes", type=int, default=None)
    parser.add_argument("--vq-steps", type=int, default=None)
    parser.add_argument("--vq-batch", type=int, default=None)
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="decoder-only refinement of both tokenizers after training (token ids unchanged; 0: skip)")
    parser.add_argument("--decoder-batch", type=int, default=None)
    parser.add_argument("--maskgen-steps", type=int, default=None)
    parser.add_argument("--maskgen-batch", type=int, default=None)
    parser.add_argument("--deadline-seconds", type=float, default=None,
                        help="size the transformer's steps from its measured step rate so the whole run ends by then "
                             "(overrides --maskgen-steps; leaves --reserve-seconds for the evaluation)")
    parser.add_argument("--reserve-seconds", type=float, default=90.0)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="the transformer's (bf16: autocast on CUDA)")
    parser.add_argument("--parallel-tokenizers", action=argparse.BooleanOptionalAction, default=None,
                        help="train the two tokenizers as concurrent processes (on a CPU, the threads are split between them)")
    parser.add_argument("--evaluate", type=int, default=0, help="also run `evaluate` of both tasks on this many held-out scenes")
    parser.add_argument("--ceiling-scenes", type=int, default=48, help="held-out scenes for the tokenizer ceilings (0: skip)")
    parser.add_argument("--accuracy-scenes", type=int, default=256, help="held-out scenes for the token accuracy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes rendering scenes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--install", action="store_true", help="copy the results into embedded_models/")
    args = parser.parse_args(argv)
    args.recipe = args.recipe or ("cpu" if args.device == "cpu" else "gpu")
    recipe = RECIPES[args.recipe]
    for name, value in recipe.items():
        if getattr(args, name, "absent") is None:
            setattr(args, name, value)
    started = time.time()
    os.makedirs(args.work, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    log: list = []
    device = ["--device", args.device]
    arrays = build_training_arrays(args.work, args.scenes, args.workers, args.device)
    log.append({"stage": "training arrays", "scenes": args.scenes, "seconds": round(time.time() - started, 1)})

    image_vq = os.path.join(args.work, "image_vq.safetensors")
    spec_vq = os.path.join(args.work, "spec_vq.safetensors")
    tokenizer_stages = [(name, ["train", "vq", "--modality", modality, "--data", arrays, "--out", path,
                                "--steps", str(_per_modality(args.vq_steps, modality)),
                                "--batch-size", str(_per_modality(args.vq_batch, modality)), *vq_args, *device])
                        for name, modality, path, vq_args in (("image tokenizer", "image", image_vq, recipe["image_vq_args"]),
                                                              ("spectrogram tokenizer", "audio", spec_vq, recipe["spec_vq_args"]))
                        if not os.path.exists(path)]
    refined = {"image": image_vq, "audio": spec_vq}
    decoder_stages = []
    if args.decoder_steps > 0:
        for name, modality, source in (("image", "image", image_vq), ("spectrogram", "audio", spec_vq)):
            refined[modality] = source.replace(".safetensors", "_decoder.safetensors")
            if not os.path.exists(refined[modality]):
                decoder_stages.append((f"{name} decoder refinement",
                                       ["train", "vq", "--modality", modality, "--data", arrays, "--resume", source,
                                        "--out", refined[modality], "--steps", str(args.decoder_steps),
                                        "--batch-size", str(args.decoder_batch), *DECODER_ARGS, *device]))
    for stages in (tokenizer_stages, decoder_stages):
        if args.parallel_tokenizers and len(stages) > 1:
            _stages_in_parallel(stages, log, split_threads=args.device == "cpu")
        else:
            for name, stage_argv in stages:
                _stage(name, stage_argv, log)

    from ..synthav.tokenizer_ceilings import tokenizer_ceilings

    ceilings_path = os.path.join(args.work, "tokenizer_ceilings.json")
    if not os.path.exists(ceilings_path) and args.ceiling_scenes > 0:
        stage_start = time.time()
        ceilings = tokenizer_ceilings(refined["image"], refined["audio"], args.ceiling_scenes, args.device)
        with open(ceilings_path, "w") as handle:
            json.dump(ceilings, handle, indent=1)
        print(f"[synthav-defaults] tokenizer ceilings: {json.dumps(ceilings)}", flush=True)
        log.append({"stage": "tokenizer ceilings", "seconds": round(time.time() - stage_start, 1)})

    tokens = tokenize(args.work, arrays, image_vq, spec_vq, args.device)
    token_meta = _metadata(tokens)
    audio_grid, image_grid = json.loads(token_meta["audio_grid"]), json.loads(token_meta["image_grid"])
    config = dict(recipe["maskgen_config"], audio_seq_len=audio_grid[0] * audio_grid[1], image_seq_len=image_grid[0] * image_grid[1])
    maskgen_dir = os.path.join(args.work, "maskgen")
    have_model = os.path.exists(os.path.join(maskgen_dir, "model.safetensors"))
    steps = args.maskgen_steps
    if args.deadline_seconds and not have_model:
        rate = _measure_steps_per_second(config, tokens, args.maskgen_batch, args.precision, args.device,
                                         recipe["maskgen_args"])
        budget = args.deadline_seconds - (time.time() - started) - args.reserve_seconds
        steps = max(50, int(rate * budget))
        print(f"[synthav-defaults] transformer: {rate:.2f} steps/s at batch {args.maskgen_batch}, "
              f"{budget:.0f} s left -> {steps} steps", flush=True)
        log.append({"stage": "step-rate probe", "steps_per_s": round(rate, 3), "budget_s": round(budget, 1), "steps": steps})
    if not have_model or _trained_steps(maskgen_dir) < steps:
        resume = ["--resume"] if have_model else []
        warmup = str(min(300, max(1, steps // 20)))
        _stage("masked transformer", ["train", "maskgen", "--data", tokens, "--out", maskgen_dir, "--steps", str(steps),
                                      "--config", json.dumps(config), "--batch-size", str(args.maskgen_batch),
                                      "--warmup-steps", warmup, "--precision", args.precision,
                                      *recipe["maskgen_args"], *device, *resume], log)

    models_dir = os.path.join(args.work, "models")
    install(args.work, audio_grid, image_grid, refined["image"], refined["audio"], target=models_dir)
    accuracy_path = os.path.join(args.work, "maskgen_token_accuracy.json")
    if not os.path.exists(accuracy_path):
        from ..loaders.masked_transformer import load_masked_transformer
        from .maskgen import condition_token_accuracy

        audio, image = heldout_tokens(refined["image"], refined["audio"], args.accuracy_scenes, args.device)
        model = load_masked_transformer(os.path.join(models_dir, MODEL_FILES["maskgen"])).to(args.device)
        accuracy = condition_token_accuracy(model, audio, image)
        with open(accuracy_path, "w") as handle:
            json.dump({"heldout_scenes": args.accuracy_scenes, **accuracy}, handle, indent=1)
        print(f"[synthav-defaults] held-out token accuracy: {json.dumps(accuracy)}", flush=True)
    for task in ("image2audio", "audio2image") if args.evaluate > 0 else ():
        out = os.path.join(args.work, f"evaluate_{task}.json")
        if not os.path.exists(out):
            _stage(f"evaluate {task}", ["evaluate", "--task", task, "--n", str(args.evaluate), "--models", models_dir,
                                        "--device", args.device, "--json", out], log)
    with open(os.path.join(args.work, "pipeline_log.json"), "a") as handle:
        handle.write(json.dumps({"stages": log, "total_seconds": round(time.time() - started, 1), "args": vars(args)}) + "\n")
    if args.install:
        install(args.work, audio_grid, image_grid, refined["image"], refined["audio"])
        shutil.copyfile(os.path.join(args.work, "pipeline_log.json"), os.path.join(EMBEDDED, "pipeline_log.json"))
    return 0


def _per_modality(value, modality: str) -> int:
    """A recipe's size for one tokenizer: one number for both, or {"image": .., "audio": ..}."""
    return int(value[modality]) if isinstance(value, dict) else int(value)


def _metadata(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return dict(handle.metadata() or {})


def _trained_steps(maskgen_dir: str) -> int:
    meta = _metadata(os.path.join(maskgen_dir, "model.safetensors"))
    return int(meta.get("train_steps", meta.get("step", 0)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
