"""Trains the embedded SynthAV default models end to end, with the pack's own training code:

  1. SynthAV training scenes -> images [M,3,64,64] and SpecVQGAN mels [M,80,176]
  2. image VQGAN (64x64 -> 8x8 tokens) and spectrogram VQGAN (80x176 -> 10x22 tokens), then a
     decoder-only refinement of each at a decaying learning rate (token ids unchanged)
  3. the dataset tokenized by both (audio grids read column-major, as the sampler reads them)
  4. the masked generative transformer over [audio | image] tokens
  5. the results copied to embedded_models/ with the metadata the nodes read (grids, sizes)

`python -m comfyui_audiovisual.training.synthav_defaults --work runs/synthav [--scenes N]
 [--vq-steps S] [--maskgen-steps S]`; each stage is skipped when its output exists (resumable).
Every command it runs is printed, and written to the model cards.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import time

import torch
from safetensors.torch import load_file, save_file

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EMBEDDED = os.path.join(PACK_DIR, "embedded_models")
IMAGE_VQ_ARGS = ["--ch", "32", "--ch-mult", "1,2,2,2", "--codebook-size", "256", "--embed-dim", "16", "--batch-size", "64", "--lr", "4e-4"]
SPEC_VQ_ARGS = ["--ch", "32", "--ch-mult", "1,2,2,2", "--codebook-size", "512", "--embed-dim", "16", "--batch-size", "64", "--lr", "4e-4"]
MASKGEN_CONFIG = {"dim": 192, "encoder_depth": 6, "decoder_depth": 2, "num_heads": 6, "mlp_ratio": 4.0, "dropout": 0.1}
DECODER_ARGS = ["--decoder-only", "--batch-size", "16", "--lr", "1e-4", "--lr-schedule", "cosine"]
MASKGEN_ARGS = ["--batch-size", "256", "--lr", "5e-4", "--checkpoint-every", "500", "--log-every", "100"]


def _stage(name: str, argv: list[str], log: list) -> None:
    """Runs `python -m comfyui_audiovisual <argv>` in this process and records the command."""
    from ..runner.cli import main as cli_main

    command = "python -m comfyui_audiovisual " + " ".join(shlex.quote(a) for a in argv)
    print(f"[synthav-defaults] {name}: {command}", flush=True)
    start = time.time()
    code = cli_main(argv)
    if code:
        raise SystemExit(f"{name} failed with exit code {code}")
    log.append({"stage": name, "command": command, "seconds": round(time.time() - start, 1)})


def build_training_arrays(work: str, n_scenes: int, workers: int = 1, device: str = "cpu") -> str:
    from ..audio.mel_frontend import waveform_to_mel
    from ..synthav.dataset import make_dataset

    out = os.path.join(work, "train_arrays.safetensors")
    if os.path.exists(out):
        return out
    raw = make_dataset("train", n_scenes, os.path.join(work, "train_scenes.safetensors"), workers=workers)
    data = load_file(raw)
    mels = torch.cat([waveform_to_mel(chunk.to(device, torch.float32)).cpu() for chunk in data["waves"].split(256)])
    save_file({"images": data["images"].float().contiguous(), "mels": mels.contiguous()}, out)
    return out


def tokenize(work: str, arrays: str, image_vq: str, spec_vq: str, device: str = "cpu") -> str:
    from ..loaders.vq_checkpoints import load_vq_model
    from ..samplers.visual_echoes import audio_grid_to_sequence, image_grid_to_sequence
    from ..vq.tokenizer import VQTokenizer

    out = os.path.join(work, "tokens.safetensors")
    if os.path.exists(out):
        return out
    data = load_file(arrays)
    image_tok = VQTokenizer(load_vq_model(image_vq)[0].to(device), "image")
    spec_tok = VQTokenizer(load_vq_model(spec_vq)[0].to(device), "audio")
    image_grids, audio_grids = [], []
    with torch.inference_mode():
        for images, mels in zip(data["images"].split(128), data["mels"].split(128)):
            image_grids.append(image_tok.encode(images.to(device) * 2 - 1).cpu())
            audio_grids.append(spec_tok.encode_mel(mels.to(device)).cpu())
    image_grid, audio_grid = torch.cat(image_grids), torch.cat(audio_grids)
    save_file({"image_tokens": image_grid_to_sequence(image_grid).contiguous(), "audio_tokens": audio_grid_to_sequence(audio_grid).contiguous()},
              out, metadata={"image_grid": json.dumps(list(image_grid.shape[1:])), "audio_grid": json.dumps(list(audio_grid.shape[1:]))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.training.synthav_defaults")
    parser.add_argument("--work", default=os.path.join(PACK_DIR, "runs", "synthav"))
    parser.add_argument("--scenes", type=int, default=12000)
    parser.add_argument("--vq-steps", type=int, default=3000)
    parser.add_argument("--decoder-steps", type=int, default=100,
                        help="decoder-only refinement of both tokenizers after training (token ids unchanged; 0: skip)")
    parser.add_argument("--maskgen-steps", type=int, default=6000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes rendering scenes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--install", action="store_true", help="copy the results into embedded_models/")
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    log: list = []
    start = time.time()
    arrays = build_training_arrays(args.work, args.scenes, args.workers, args.device)
    device = ["--device", args.device]
    image_vq = os.path.join(args.work, "image_vq.safetensors")
    spec_vq = os.path.join(args.work, "spec_vq.safetensors")
    if not os.path.exists(image_vq):
        _stage("image tokenizer", ["train", "vq", "--modality", "image", "--data", arrays, "--out", image_vq, "--steps", str(args.vq_steps), *IMAGE_VQ_ARGS, *device], log)
    if not os.path.exists(spec_vq):
        _stage("spectrogram tokenizer", ["train", "vq", "--modality", "audio", "--data", arrays, "--out", spec_vq, "--steps", str(args.vq_steps), *SPEC_VQ_ARGS, *device], log)
    refined = {}
    for name, modality, source in (("image", "image", image_vq), ("spectrogram", "audio", spec_vq)):
        refined[modality] = source.replace(".safetensors", "_decoder.safetensors") if args.decoder_steps > 0 else source
        if args.decoder_steps > 0 and not os.path.exists(refined[modality]):
            _stage(f"{name} decoder refinement", ["train", "vq", "--modality", modality, "--data", arrays, "--resume", source,
                                                  "--out", refined[modality], "--steps", str(args.decoder_steps),
                                                  *DECODER_ARGS, *device], log)
    tokens = tokenize(args.work, arrays, image_vq, spec_vq, args.device)
    maskgen_dir = os.path.join(args.work, "maskgen")
    token_meta = json.loads(json.dumps(_metadata(tokens)))
    audio_grid, image_grid = json.loads(token_meta["audio_grid"]), json.loads(token_meta["image_grid"])
    config = dict(MASKGEN_CONFIG, audio_seq_len=audio_grid[0] * audio_grid[1], image_seq_len=image_grid[0] * image_grid[1])
    if not os.path.exists(os.path.join(maskgen_dir, "model.safetensors")) or _trained_steps(maskgen_dir) < args.maskgen_steps:
        resume = ["--resume"] if os.path.exists(os.path.join(maskgen_dir, "model.safetensors")) else []
        _stage("masked transformer", ["train", "maskgen", "--data", tokens, "--out", maskgen_dir, "--steps", str(args.maskgen_steps),
                                      "--config", json.dumps(config), "--audio-vocab-size", _vocab(SPEC_VQ_ARGS), "--image-vocab-size", _vocab(IMAGE_VQ_ARGS),
                                      *MASKGEN_ARGS, *device, *resume], log)
    with open(os.path.join(args.work, "pipeline_log.json"), "a") as f:
        f.write(json.dumps({"stages": log, "total_seconds": round(time.time() - start, 1), "args": vars(args)}) + "\n")
    if args.install:
        install(args.work, audio_grid, image_grid, refined["image"], refined["audio"])
    return 0


def _vocab(vq_args: list[str]) -> str:
    return vq_args[vq_args.index("--codebook-size") + 1]


def _metadata(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def _trained_steps(maskgen_dir: str) -> int:
    meta = _metadata(os.path.join(maskgen_dir, "model.safetensors"))
    return int(meta.get("train_steps", meta.get("step", 0)))


def install(work: str, audio_grid, image_grid, image_vq: str | None = None, spec_vq: str | None = None) -> None:
    """Copies the trained files into embedded_models/ with the metadata the nodes read."""
    from ..audio.mel_frontend import SPECVQGAN_MEL
    from ..loaders.checkpoint_io import read_state_dict, write_safetensors_atomic
    from ..synthav.world import MEL_FRAMES, IMAGE_SIZE

    seconds_per_column = (MEL_FRAMES // audio_grid[1]) * SPECVQGAN_MEL.hop_samples / SPECVQGAN_MEL.sample_rate_hz
    targets = {
        "vq/synthav_image_vq.safetensors": (image_vq or os.path.join(work, "image_vq.safetensors"), {"image_size": str(IMAGE_SIZE)}),
        "vq/synthav_spec_vq.safetensors": (spec_vq or os.path.join(work, "spec_vq.safetensors"), {"mel_frames": str(MEL_FRAMES)}),
        "maskgen/synthav_maskgen.safetensors": (os.path.join(work, "maskgen", "model.safetensors"),
                                                {"audio_grid": json.dumps(audio_grid), "image_grid": json.dumps(image_grid),
                                                 "seconds_per_column": str(seconds_per_column)}),
    }
    for name, (source, extra) in targets.items():
        state, metadata = read_state_dict(source)
        target = os.path.join(EMBEDDED, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        write_safetensors_atomic({k: v.contiguous() for k, v in state.items()}, target, {**metadata, **extra})
        print(f"[synthav-defaults] installed {target} ({os.path.getsize(target) / 1e6:.1f} MB)")
    log = os.path.join(work, "pipeline_log.json")
    if os.path.exists(log):
        shutil.copyfile(log, os.path.join(EMBEDDED, "pipeline_log.json"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
