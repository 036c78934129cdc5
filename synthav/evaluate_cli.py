"""`python -m comfyui_audiovisual evaluate --task image2audio|audio2image [--n N] [--cfg S] [--steps T] [--json FILE]`

Generates for N held-out SynthAV scenes with the same plain code the nodes call (tokenizers,
Visual Echoes sampler, Griffin-Lim vocoder) on the embedded default models (or `--models DIR`),
scores with the independent analysers after checking them on the ground truth, prints a table
and optionally writes JSON.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def load_default_models(models_dir: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    from ..loaders.masked_transformer import load_masked_transformer
    from ..loaders.vq_checkpoints import load_vq_model
    from ..vq.tokenizer import VQTokenizer

    image_tok = VQTokenizer(load_vq_model(os.path.join(models_dir, "vq", "synthav_image_vq.safetensors"))[0].to(device), "image")
    spec_tok = VQTokenizer(load_vq_model(os.path.join(models_dir, "vq", "synthav_spec_vq.safetensors"))[0].to(device), "audio")
    model = load_masked_transformer(os.path.join(models_dir, "maskgen", "synthav_maskgen.safetensors")).to(device, dtype)
    return image_tok, spec_tok, model


def make_generate_fn(task: str, models, steps: int, cfg: float, temperature: float, device: str = "cpu"):
    """generate(inputs, seed) for `evaluate`; `models` = load_default_models(...)."""
    from ..audio.mel_frontend import waveform_to_mel
    from ..loaders.vocoders import load_vocoder
    from ..samplers.visual_echoes import (audio_grid_to_sequence, audio_sequence_to_grid, image_grid_to_sequence,
                                          image_sequence_to_grid, visual_echoes_sample)

    image_tok, spec_tok, model = models
    vocoder = load_vocoder("griffin-lim")
    image_grid = None

    def generate(inputs, seed=0):
        nonlocal image_grid
        generator = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode():
            if task == "image2audio":
                grid = image_tok.encode_image(torch.as_tensor(np.asarray(inputs), dtype=torch.float32))
                audio, _ = visual_echoes_sample(model, "image_to_audio", image_tokens=image_grid_to_sequence(grid), steps=steps,
                                                cfg=cfg, temperature=temperature, generator=generator)
                rows = spec_tok.grid_shape(80, 176)[0]
                mel = spec_tok.decode_mel(audio_sequence_to_grid(audio, rows))
                return vocoder(mel.clamp(0, 1)).numpy()
            mel = waveform_to_mel(torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device))
            grid = spec_tok.encode_mel(mel, mode="pad")
            _, image = visual_echoes_sample(model, "audio_to_image", audio_tokens=audio_grid_to_sequence(grid), steps=steps,
                                            cfg=cfg, temperature=temperature, generator=generator)
            side = int(round(image.shape[1] ** 0.5))
            return image_tok.decode_image(image_sequence_to_grid(image, side, side)).numpy()

    return generate


def main(argv=None) -> int:
    from .evaluate import evaluate, format_table

    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual evaluate")
    parser.add_argument("--task", choices=("image2audio", "audio2image"), required=True)
    parser.add_argument("--method", choices=("visual_echoes",), default="visual_echoes")
    parser.add_argument("--n", type=int, default=64, help="held-out scenes (and n/2 unseen-combination scenes)")
    parser.add_argument("--cfg", default="3", help="guidance scale; a comma-separated list runs each (a grid with --steps)")
    parser.add_argument("--steps", default="30", help="sampler steps; a comma-separated list runs each")
    parser.add_argument("--temperature", type=float, default=9.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=os.path.join(PACK_DIR, "embedded_models"), help="folder with vq/ and maskgen/ (default: the embedded SynthAV models)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="the transformer's precision (the nodes use fp16 on a GPU)")
    parser.add_argument("--device", default="cpu", help="where the models run: cpu | cuda (the scores do not depend on it beyond float rounding)")
    args = parser.parse_args(argv)
    try:
        cfgs = [float(v) for v in args.cfg.split(",")]
        step_counts = [int(v) for v in args.steps.split(",")]
    except ValueError:
        parser.error(f"--cfg and --steps take numbers or comma-separated lists, got {args.cfg!r} and {args.steps!r}")
    if any(c < 0 for c in cfgs) or any(t < 1 for t in step_counts) or args.n < 1:
        parser.error("--cfg must be >= 0, --steps and --n >= 1")
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    models = load_default_models(args.models, args.device, dtype)
    runs = []
    for cfg in cfgs:
        for steps in step_counts:
            start = time.time()
            generate = make_generate_fn(args.task, models, steps, cfg, args.temperature, args.device)
            results = evaluate(args.task, generate, n=args.n, batch_size=args.batch_size, seed=args.seed)
            results.update({"cfg": cfg, "steps": steps, "temperature": args.temperature, "method": args.method,
                            "device": args.device, "dtype": args.dtype, "seconds": round(time.time() - start, 1)})
            runs.append(results)
            print(f"cfg {cfg:g}, steps {steps}: done in {results['seconds']} s", file=sys.stderr, flush=True)
    if len(runs) == 1:
        print(format_table(runs[0]))
    else:
        print(format_table([(f"{args.task} cfg {r['cfg']:g}, {r['steps']} steps", r) for r in runs]))
    if args.json:
        tmp = args.json + ".partial"
        with open(tmp, "w") as f:
            json.dump(runs[0] if len(runs) == 1 else runs, f, indent=1, default=float)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
