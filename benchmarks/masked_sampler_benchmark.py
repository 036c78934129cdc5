"""Masked sampler speed and memory: Visual Echoes image->audio with CFG on random models.

Measures sampler steps per second and the peak extra memory of a sampling run for the tiny and
the ViT-L-sized (paper) MaskedAVTransformer, at several batch sizes, with batched CFG (one forward
over [cond; uncond]) against the reference two-pass CFG. Prints a markdown report; never asserts.

    python benchmarks/masked_sampler_benchmark.py                       # CPU defaults (< ~3 min on 2 cores)
    python benchmarks/masked_sampler_benchmark.py --device cuda --dtype bf16 --large-batch-sizes 1,8 --large-steps 30

Defaults on CPU keep the run short: ViT-L runs 2 timed steps at batch 1 only (one ViT-L forward of
521 tokens costs seconds on 2 cores; batch 8 with CFG is ~16 such forwards per step). Peak memory:
on CUDA ``torch.cuda.max_memory_allocated`` above the weights; on CPU the peak resident set size
(sampled every 2 ms) above the RSS before the run (freed heap returned to the OS first), i.e.
activations and sampler buffers; allocator caching makes the CPU figure approximate.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from typing import List, Optional

import torch

from comfyui_audiovisual.networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig
from comfyui_audiovisual.samplers.masked_sampler import masked_sample
from comfyui_audiovisual.samplers.visual_echoes import build_visual_echoes_problem

CFG_MODES = ("batched", "two_pass")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Measurement:
    model: str
    parameters: int
    batch: int
    cfg_mode: str
    steps: int
    seconds: float
    peak_extra_mib: float

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds


class PeakRSS:
    """Peak resident set size of this process while active (Linux /proc), in bytes."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self.rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def release_free_heap() -> None:
    """Return freed heap memory to the OS (glibc) so the next RSS baseline is not inflated by
    buffers a previous run left cached; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_sampler(model, batch: int, steps: int, cfg_mode: str, seed: int) -> None:
    image = torch.randint(0, model.config.image_vocab_size, (batch, model.config.image_seq_len),
                          generator=torch.Generator().manual_seed(seed))
    problem = build_visual_echoes_problem(model, "image_to_audio", image_tokens=image, cfg=3.0)
    masked_sample(problem.model_fn, problem.tokens, problem.target, steps=steps, cfg=problem.cfg,
                  cfg_mode=cfg_mode, temperature=9.0, generator=torch.Generator().manual_seed(seed))


def warm_up(model, batch: int, steps: int, cfg_mode: str, device: torch.device) -> None:
    """A short untimed run: allocator, kernels, caches."""
    with torch.inference_mode():
        run_sampler(model, batch, steps, cfg_mode, seed=1)
    synchronize(device)


def measure(name: str, model, batch: int, steps: int, cfg_mode: str, device: torch.device) -> Measurement:
    """One timed sampling run of ``steps`` steps with its peak extra memory."""
    release_free_heap()
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            started = time.perf_counter()
            run_sampler(model, batch, steps, cfg_mode, seed=0)
            synchronize(device)
            seconds = time.perf_counter() - started
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            with PeakRSS() as rss:
                started = time.perf_counter()
                run_sampler(model, batch, steps, cfg_mode, seed=0)
                seconds = time.perf_counter() - started
            peak = rss.peak - rss.start
    return Measurement(name, model.num_parameters(), batch, cfg_mode, steps, seconds, peak / 2 ** 20)


def best_of(runs: List[Measurement]) -> Measurement:
    """Fastest run (least disturbed by other processes) with the largest peak memory seen."""
    fastest = min(runs, key=lambda r: r.seconds)
    return Measurement(fastest.model, fastest.parameters, fastest.batch, fastest.cfg_mode, fastest.steps,
                       fastest.seconds, max(r.peak_extra_mib for r in runs))


def build_model(name: str, device: torch.device, dtype: torch.dtype):
    config = MaskedAVTransformerConfig.tiny() if name == "tiny" else MaskedAVTransformerConfig.vit_large()
    torch.manual_seed(0)
    with torch.device("meta"):
        model = MaskedAVTransformer(config)
    model = model.to_empty(device=device)
    model.reset_parameters()
    return model.to(dtype).eval()


def format_table(rows: List[Measurement]) -> str:
    lines = [
        "| model | params | batch | CFG | timed steps | s/step | steps/s | sample-steps/s | two-pass / batched time | peak extra MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r.model, r.batch, r.cfg_mode): r for r in rows}
    for r in rows:
        other = by_key.get((r.model, r.batch, "two_pass"))
        ratio = f"{other.seconds_per_step / r.seconds_per_step:.2f}x" if r.cfg_mode == "batched" and other else ""
        lines.append(
            f"| {r.model} | {r.parameters / 1e6:.1f}M | {r.batch} | {r.cfg_mode} | {r.steps} | "
            f"{r.seconds_per_step:.3f} | {r.steps_per_second:.2f} | {r.steps_per_second * r.batch:.2f} | "
            f"{ratio} | {r.peak_extra_mib:.0f} |")
    # batch scaling: per-sample throughput at batch b over batch 1, same model and mode
    scaling = []
    for r in rows:
        single = by_key.get((r.model, 1, r.cfg_mode))
        if single and r.batch != 1:
            gain = (r.steps_per_second * r.batch) / single.steps_per_second
            scaling.append(f"- {r.model}, {r.cfg_mode}: batch {r.batch} gives {gain:.2f}x the sample-steps/s of batch 1")
    if scaling:
        lines += ["", "Batch scaling:"] + scaling
    return "\n".join(lines)


def parse_sizes(text: str) -> List[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--models", default="tiny,vit_large")
    parser.add_argument("--batch-sizes", default="1,8", help="tiny model batch sizes")
    parser.add_argument("--tiny-steps", type=int, default=30, help="timed sampler steps (paper: 30)")
    parser.add_argument("--large-batch-sizes", default=None, help="ViT-L batch sizes (default: 1 on CPU, 1,8 on CUDA)")
    parser.add_argument("--large-steps", type=int, default=None, help="ViT-L timed steps (default: 2 on CPU, 30 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (the fastest is reported)")
    parser.add_argument("--large-repeats", type=int, default=None, help="ViT-L timed runs (default: 1 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", default=None, help="also write the report to this markdown file")
    options = parser.parse_args(argv)

    device = torch.device(options.device)
    dtype = DTYPES[options.dtype]
    if options.threads:
        torch.set_num_threads(options.threads)
    on_cpu = device.type == "cpu"
    large_batches = parse_sizes(options.large_batch_sizes or ("1" if on_cpu else "1,8"))
    large_steps = options.large_steps or (2 if on_cpu else 30)
    plan = {"tiny": (parse_sizes(options.batch_sizes), options.tiny_steps),
            "vit_large": (large_batches, large_steps)}
    warmup = {"tiny": 2, "vit_large": 1}
    repeats = {"tiny": options.repeats, "vit_large": options.large_repeats or (1 if on_cpu else options.repeats)}
    models = [m.strip() for m in options.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in plan]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(plan)}")

    command = "python benchmarks/masked_sampler_benchmark.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    header = [
        "# Masked sampler benchmark (Visual Echoes image->audio, CFG 3, 265 audio + 256 image tokens)",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"- device: {device} ({device_name}), dtype {options.dtype}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, {os.cpu_count()} CPUs, load average at start "
        f"{os.getloadavg()[0]:.1f} (other processes share the CPUs: CPU figures are indicative)",
    ]
    for name in models:
        batches, steps = plan[name]
        header.append(f"- {name}: batch sizes {batches}, {steps} timed steps after a {warmup[name]}-step warm-up, "
                      f"batched and two-pass CFG interleaved, fastest of {repeats[name]} run(s)")
    if on_cpu and "vit_large" in models and options.large_batch_sizes is None:
        header.append("- ViT-L batch 8 skipped on CPU by default (about 16 ViT-L forwards per step; "
                      "pass --large-batch-sizes 1,8 to run it)")
    print("\n".join(header), flush=True)

    rows: List[Measurement] = []
    for name in models:
        started = time.perf_counter()
        model = build_model(name, device, dtype)
        print(f"built {name} ({model.num_parameters() / 1e6:.1f}M parameters) in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        batches, steps = plan[name]
        for batch in batches:
            runs = {mode: [] for mode in CFG_MODES}
            for cfg_mode in CFG_MODES:
                warm_up(model, batch, warmup[name], cfg_mode, device)
            for _ in range(repeats[name]):  # modes interleaved: both see the same background load
                for cfg_mode in CFG_MODES:
                    run = measure(name, model, batch, steps, cfg_mode, device)
                    runs[cfg_mode].append(run)
                    print(f"  {name} batch {batch} {cfg_mode}: {run.seconds_per_step:.3f} s/step",
                          file=sys.stderr, flush=True)
            rows += [best_of(runs[mode]) for mode in CFG_MODES]
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    table = format_table(rows)
    print("\n" + table)
    if options.output:
        with open(options.output, "w", encoding="utf-8") as handle:
            handle.write("\n".join(header) + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
