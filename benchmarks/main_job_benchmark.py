"""The main job's profile: image -> audio through the default template, headless, in the real host.

Prints (markdown) where the time of `python -m comfyui_audiovisual run workflows/image_to_audio.json`
goes: the cold command itself (a fresh process, as a user runs it), then inside one fresh process the
phases (interpreter, `import torch`, host boot with the pack, workflow checks and validation, each
node, saving), a warm run (the same template again in the same process), and the distance to the
machine's limit: the sampler's achieved FLOP/s against a plain matmul's on the same device in the
same run, as a ratio. Never asserts.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/main_job_benchmark.py                # report on stdout
    .venv/bin/python benchmarks/main_job_benchmark.py --output benchmarks/results/main_job_cpu.md

Phase times come from the host's own "executing" events (the executor announces each node as it
starts it), so a node's time is from its announcement to the next one's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(PACK, "workflows", "image_to_audio.json")


def _cold_cli(out_dir: str, repeats: int) -> list[float]:
    """Wall seconds of the README's command in a fresh process, `repeats` times."""
    command = [sys.executable, "-m", "comfyui_audiovisual", "run", TEMPLATE, "--out", out_dir]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=os.path.dirname(PACK), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def _child(out_dir: str, warm_runs: int) -> dict:
    """Runs in a fresh process: phases of a cold run, then warm runs, then the FLOP/s ratio."""
    stamps = {"process_start_to_main": time.time() - float(os.environ.get("AV_BENCH_SPAWNED_AT", "nan"))}
    t = time.perf_counter()
    import torch

    stamps["import_torch"] = time.perf_counter() - t
    sys.path.insert(0, os.path.dirname(PACK))
    t = time.perf_counter()
    from comfyui_audiovisual.runner import host as host_boot
    from comfyui_audiovisual.runner import run as run_module

    stamps["import_runner"] = time.perf_counter() - t
    t = time.perf_counter()
    host_boot.boot(cpu=True)
    stamps["host_boot"] = time.perf_counter() - t

    events: list[tuple[float, str]] = []

    class RecordingServer(run_module._QuietServer):
        # the executor announces nodes only to a client; it resets client_id from the prompt's extra data
        client_id = property(lambda self: "benchmark", lambda self, value: None)

        def send_sync(self, event, data=None, *args, **kwargs):
            if event == "executing" and isinstance(data, dict) and data.get("node") is not None:
                events.append((time.perf_counter(), str(data["node"])))

    run_module._QuietServer = RecordingServer
    prompt = run_module.to_api_prompt(TEMPLATE)
    classes = {node_id: node["class_type"] for node_id, node in prompt.items()}

    def one_run() -> dict:
        events.clear()
        start = time.perf_counter()
        run_module.run_workflow(TEMPLATE, out_dir=out_dir, cpu=True, progress=None)
        end = time.perf_counter()
        nodes = {}
        for (t0, node_id), (t1, _) in zip(events, events[1:] + [(end, "")]):
            nodes[f"{node_id} {classes.get(node_id, '?')}"] = t1 - t0
        before = events[0][0] - start if events else 0.0
        return {"wall": end - start, "before_first_node": before, "nodes": nodes}

    runs = [one_run() for _ in range(1 + warm_runs)]
    flops = _flops_ratio(torch)
    return {"stamps": stamps, "runs": runs, "flops": flops, "threads": torch.get_num_threads(), "torch": torch.__version__}


def _flops_ratio(torch) -> dict:
    """The template's sampler (seed, steps, cfg as shipped) timed alone, its FLOPs counted by torch's
    FlopCounterMode, against a plain fp32 matmul on the same device."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class FlopCounter(TorchDispatchMode):
        """torch's FLOP formulas (torch.utils.flop_counter) without FlopCounterMode's module tracker,
        whose hooks fail on a model run without gradients."""

        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    from comfyui_audiovisual.loaders.masked_transformer import load_masked_transformer
    from comfyui_audiovisual.samplers.visual_echoes import visual_echoes_sample
    from comfyui_audiovisual.workflows.graphs import MASKGEN, SAMPLER

    import folder_paths

    model = load_masked_transformer(folder_paths.get_full_path_or_raise("av_maskgen", MASKGEN))
    config = model.config
    image = torch.randint(0, config.image_vocab_size, (1, config.image_seq_len))

    def sample():  # no inference_mode: under it nn.Linear is not split into the matmuls the counter knows
        generator = torch.Generator().manual_seed(SAMPLER["seed"])
        if True:
            visual_echoes_sample(model, "image_to_audio", None, image, steps=SAMPLER["steps"], cfg=SAMPLER["cfg"],
                                 temperature=SAMPLER["temperature"], schedule=SAMPLER["schedule"], generator=generator)

    sample()  # warm-up
    best = min(_timed(sample) for _ in range(3))
    counter = FlopCounter()
    with counter:
        sample()
    sampler_flops = counter.total

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    matmul_best = min(_timed(lambda: a @ b) for _ in range(40))  # the best of many: other processes share the CPUs
    matmul_rate = 2 * 1024 ** 3 / matmul_best
    return {"sampler_seconds": best, "sampler_flops": sampler_flops, "sampler_rate": sampler_flops / best,
            "matmul_rate": matmul_rate, "ratio": sampler_flops / best / matmul_rate,
            "parameters": sum(p.numel() for p in model.parameters()),
            "sequence": config.audio_seq_len + config.image_seq_len}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _report(cold: list[float], child: dict, child_wall: float, command: str) -> str:
    stamps, runs, flops = child["stamps"], child["runs"], child["flops"]
    cold_run, warm = runs[0], runs[1:]
    lines = [
        "# Main job profile: image -> audio, default template, headless in the real host (CPU)",
        "",
        f"Command: `{command}`",
        "",
        f"- {platform.machine()}, {os.cpu_count()} CPUs, torch {child['torch']} with {child['threads']} thread(s), "
        f"load average at start {os.getloadavg()[0]:.1f} (other processes share the CPUs: figures are indicative)",
        f"- cold CLI (`python -m comfyui_audiovisual run workflows/image_to_audio.json --out DIR`, a fresh process each): "
        + ", ".join(f"{s:.2f} s" for s in cold) + (f" (best {min(cold):.2f} s)" if cold else ""),
        f"- warm (the same template again in the same process): "
        + ", ".join(f"{r['wall']:.2f} s" for r in warm) + (f" (best {min(r['wall'] for r in warm):.2f} s)" if warm else ""),
        "",
        "## Phases of a cold process (seconds)",
        "",
        "| phase | cold run | warm run (best) |",
        "|---|---|---|",
        f"| interpreter start (spawn to the script's first line) | {stamps['process_start_to_main']:.2f} | - |",
        f"| import torch | {stamps['import_torch']:.2f} | - |",
        f"| import the runner | {stamps['import_runner']:.2f} | - |",
        f"| host boot (host modules, the pack's nodes) | {stamps['host_boot']:.2f} | - |",
    ]
    best_warm = min(warm, key=lambda r: r["wall"]) if warm else None
    lines.append(f"| workflow read, checked, validated (before the first node) | {cold_run['before_first_node']:.2f} | "
                 f"{best_warm['before_first_node']:.2f} |" if best_warm else "| - | - |")
    for name, seconds in cold_run["nodes"].items():
        warm_seconds = best_warm["nodes"].get(name) if best_warm else None
        lines.append(f"| node {name} | {seconds:.3f} | {warm_seconds:.3f} |" if warm_seconds is not None else f"| node {name} | {seconds:.3f} | cached |")
    lines.append(f"| whole run_workflow call | {cold_run['wall']:.2f} | {best_warm['wall']:.2f} |" if best_warm else "")
    lines.append(f"| whole child process (fresh interpreter to the end of the first run) | {child_wall:.2f} | - |")
    lines += [
        "",
        "The last node's time includes moving the staged files into the output folder.",
        "",
        "## Distance to the machine's limit",
        "",
        f"- sampler alone (the template's settings, {flops['parameters'] / 1e6:.2f} M parameters, {flops['sequence']} tokens, "
        f"batched CFG): {flops['sampler_seconds']:.3f} s, {flops['sampler_flops'] / 1e9:.2f} GFLOP (torch's flop_counter formulas), "
        f"{flops['sampler_rate'] / 1e9:.2f} GFLOP/s",
        f"- plain fp32 matmul 1024 x 1024 x 1024 on the same device: {flops['matmul_rate'] / 1e9:.2f} GFLOP/s",
        f"- **ratio: the sampler reaches {flops['ratio']:.2f} of the matmul's FLOP/s**",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-repeats", type=int, default=2, help="fresh-process runs of the CLI command (default 2)")
    parser.add_argument("--warm-runs", type=int, default=3, help="runs after the first in the profiled process (default 3)")
    parser.add_argument("--output", help="also write the report to this markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        result = _child(options.child, options.warm_runs)
        print("AV_RESULT " + json.dumps(result))
        return 0
    command = "python benchmarks/main_job_benchmark.py" + (f" --output {shlex.quote(options.output)}" if options.output else "")
    with tempfile.TemporaryDirectory(prefix="av-main-job-") as out_dir:
        cold = _cold_cli(out_dir, options.cold_repeats)
        env = dict(os.environ, AV_BENCH_SPAWNED_AT=repr(time.time()))
        done = subprocess.run([sys.executable, __file__, "--child", out_dir, "--warm-runs", str(options.warm_runs)],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            return 1
    line = next(l for l in done.stdout.splitlines() if l.startswith("AV_RESULT "))
    child = json.loads(line[len("AV_RESULT "):])
    first_run_end = sum(child["stamps"][k] for k in ("process_start_to_main", "import_torch", "import_runner", "host_boot")) + child["runs"][0]["wall"]
    report = _report(cold, child, first_run_end, command)
    print(report)
    if options.output:
        with open(options.output, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
