"""GPU timing of Visual Echoes image -> 10 s audio at the paper's size (issue 20), prepared to run as is
the next time a GPU is lent:

    python tools/gpu_visual_echoes_timing.py --out runs/gpu_timing                     # ViT-L, cuda, bf16, batch 1 and 8
    python tools/gpu_visual_echoes_timing.py --out runs/gpu_timing --compile           # also torch.compile'd
    python tools/gpu_visual_echoes_timing.py --out DIR --device cpu --size tiny --steps 2 --batch-sizes 1,2   # the test's CPU run

What it times: the masked transformer's whole sampling of one clip per row (30 unmasking steps,
classifier-free guidance 3, temperature 9) for the image -> audio task, with 256 image tokens (16 x 16)
as the condition and 265 audio tokens generated (SpecVQGAN's 5 x 53 grid, 10 s at 22.05 kHz: see
docs of the Visual Echoes config, MaskedAVTransformerConfig.vit_large()). Random weights: speed and
memory do not depend on their values. Tokenizers and vocoder are not included (they run once per clip,
not once per step). For each batch size: batched CFG (one forward over [cond; uncond]) against two
passes, in bf16 autocast (or fp32), eager and, with --compile, torch.compile'd (--compile-mode
reduce-overhead uses CUDA graphs). Peak memory is torch.cuda.max_memory_allocated over the run,
weights included. Writes results.json and results.md into the folder given by --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time

import torch

from comfyui_audiovisual.networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig
from comfyui_audiovisual.samplers.masked_sampler import masked_sample
from comfyui_audiovisual.samplers.visual_echoes import build_visual_echoes_problem

SIZES = {"vit_large": MaskedAVTransformerConfig.vit_large, "tiny": MaskedAVTransformerConfig.tiny}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
CFG, TEMPERATURE = 3.0, 9.0


def build_model(size: str, device: torch.device) -> MaskedAVTransformer:
    torch.manual_seed(0)
    with torch.device("meta"):
        model = MaskedAVTransformer(SIZES[size]())
    model = model.to_empty(device=device)
    model.reset_parameters()
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_clips(forward, config: MaskedAVTransformerConfig, batch: int, steps: int, cfg_mode: str,
                 device: torch.device, precision: str, seed: int = 0) -> torch.Tensor:
    """One image -> audio sampling of `batch` clips; returns the audio tokens [batch, Na]."""
    image = torch.randint(0, config.image_vocab_size, (batch, config.image_seq_len),
                          generator=torch.Generator().manual_seed(seed)).to(device)
    problem = build_visual_echoes_problem(forward, "image_to_audio", image_tokens=image, cfg=CFG)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        tokens = masked_sample(problem.model_fn, problem.tokens, problem.target, steps=steps, cfg=problem.cfg,
                               cfg_mode=cfg_mode, temperature=TEMPERATURE,
                               generator=torch.Generator(device=device).manual_seed(seed))
    return problem.split(tokens)[0]


def timed_row(model, forward, batch: int, steps: int, cfg_mode: str, device: torch.device, precision: str,
              repeats: int, compiled: str) -> dict:
    config = model.config
    started = time.perf_counter()
    audio = sample_clips(forward, config, batch, steps, cfg_mode, device, precision, seed=1)  # warm-up (compiles)
    _sync(device)
    warm_up_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        audio = sample_clips(forward, config, batch, steps, cfg_mode, device, precision)
        _sync(device)
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    assert audio.shape == (batch, config.audio_seq_len)
    best = min(times)
    return {"batch": batch, "cfg_mode": cfg_mode, "precision": precision, "compiled": compiled, "steps": steps,
            "seconds_per_run": best, "seconds_per_clip": best / batch, "steps_per_second": steps / best,
            "first_run_seconds": warm_up_s, "all_runs_seconds": times, "peak_gib": peak}


def compiled_forward(model: MaskedAVTransformer, mode: str):
    """`model` whose forward is torch.compile'd; the sampler reads `.config` and calls it as the model."""
    model.forward = torch.compile(model.forward, mode=None if mode == "default" else mode, dynamic=False)
    return model


def report(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Visual Echoes image -> 10 s audio timing ({meta['size']}, {meta['parameters'] / 1e6:.1f} M parameters)", "",
             f"- device: {meta['device_name']}; torch {meta['torch']}; {meta['when']}",
             f"- command: `{meta['command']}`",
             f"- {meta['audio_tokens']} audio tokens generated from {meta['image_tokens']} image tokens, "
             f"{meta['steps']} steps, CFG {CFG}, temperature {TEMPERATURE}; best of {meta['repeats']} timed run(s) after one warm-up run", "",
             "| batch | CFG | precision | compiled | s per run | s per clip | steps/s | first run s | two-pass / batched | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["batch"], r["cfg_mode"], r["precision"], r["compiled"]): r for r in rows}
    for r in rows:
        other = by_key.get((r["batch"], "two_pass", r["precision"], r["compiled"]))
        ratio = f"{other['seconds_per_run'] / r['seconds_per_run']:.2f}x" if r["cfg_mode"] == "batched" and other else ""
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "n/a (CPU)"
        lines.append(f"| {r['batch']} | {r['cfg_mode']} | {r['precision']} | {r['compiled']} | {r['seconds_per_run']:.3f} | "
                     f"{r['seconds_per_clip']:.3f} | {r['steps_per_second']:.1f} | {r['first_run_seconds']:.2f} | {ratio} | {peak} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Time Visual Echoes image -> 10 s audio (ViT-L) on a GPU; write results to one folder.")
    parser.add_argument("--out", required=True, help="folder for results.json and results.md (made if missing)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="vit_large")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cfg-modes", default="batched,two_pass")
    parser.add_argument("--precisions", default="bf16", help="bf16 (autocast) and/or fp32, comma-separated")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd forward")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="default", help="reduce-overhead: CUDA graphs")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args(argv)
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU; pass --device cpu (for a tiny check: --size tiny)", file=sys.stderr)
        return 2
    os.makedirs(options.out, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(options.size, device)
    batches = [int(b) for b in options.batch_sizes.split(",")]
    modes = options.cfg_modes.split(",")
    precisions = options.precisions.split(",")
    rows = []
    variants = [("eager", model)]
    if options.compile:
        variants.append((f"torch.compile ({options.compile_mode})", None))
    for compiled, forward in variants:
        if forward is None:
            forward = compiled_forward(build_model(options.size, device), options.compile_mode)
        for precision in precisions:
            for batch in batches:
                for mode in modes:
                    row = timed_row(model, forward, batch, options.steps, mode, device, precision, options.repeats, compiled)
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "all_runs_seconds"}), flush=True)
    meta = {"size": options.size, "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)",
            "torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python tools/gpu_visual_echoes_timing.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "steps": options.steps, "repeats": options.repeats,
            "audio_tokens": model.config.audio_seq_len, "image_tokens": model.config.image_seq_len}
    with open(os.path.join(options.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(options.out, "results.md"), "w") as f:
        f.write(report(meta, rows))
    print(report(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
