"""tools/gpu_visual_echoes_timing.py (issue 20, GPU prepared in advance) run on the CPU at a tiny size, so
that the script the next lent GPU runs cannot rot: it writes its results folder with every row."""

import json
import os
import subprocess
import sys

from conftest import PACK_DIR

SCRIPT = os.path.join(PACK_DIR, "tools", "gpu_visual_echoes_timing.py")


def test_the_gpu_timing_script_runs_tiny_on_the_cpu_and_writes_its_results(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--device", "cpu", "--size", "tiny", "--steps", "2",
                           "--batch-sizes", "1,2", "--precisions", "bf16,fp32", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert {(r["batch"], r["cfg_mode"], r["precision"]) for r in rows} == {
        (b, m, p) for b in (1, 2) for m in ("batched", "two_pass") for p in ("bf16", "fp32")}
    assert all(r["seconds_per_run"] > 0 and r["steps"] == 2 and r["peak_gib"] is None for r in rows)
    meta = results["meta"]
    assert meta["size"] == "tiny" and meta["audio_tokens"] == 265 and meta["image_tokens"] == 256
    assert meta["device_name"].startswith("CPU")
    table = (out / "results.md").read_text()
    assert table.count("| eager |") == 8 and "two-pass / batched" in table


def test_the_gpu_timing_script_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "r"), "--device", "cuda"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "torch sees no GPU" in done.stderr
    assert not (tmp_path / "r").exists()
