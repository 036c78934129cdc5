"""Peak RAM of loading an official VATT decoder stored beside a ~2 GB frozen LLM (issue 18). Prints a
markdown report; never asserts.

    python benchmarks/vatt_decoder_loading.py [--llm-gb 2] [--dir TMP]

A checkpoint in the official layout (a Lightning ``state_dict`` with the audio decoder under
``audio_token_decoder.*``: 512 wide, 4 + 4 layers, 4 x 2048 heads, 2048-wide condition; and
``encoder.*``, the frozen LLM: fp16 tensors totalling ``--llm-gb``) is written as ``.ckpt`` and as
``.safetensors`` into a temporary folder (removed afterwards). Each measurement runs in a fresh
process and reports that process's peak resident memory (``ru_maxrss``):

* *baseline*: python + torch + the pack imported, nothing loaded;
* *load_vatt_decoder*: the pack's loader (safetensors key by key; the pickle through ``mmap``);
* *whole file*: ``read_state_dict`` of the same file (what the loader did before: every tensor in RAM).

The figure to read: load_vatt_decoder minus baseline, against the decoder's own size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

PACK_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")

WRITE = r"""
import sys, torch
from safetensors.torch import save_file
folder, llm_gb, tests = sys.argv[1], float(sys.argv[2]), sys.argv[3]
sys.path.insert(0, tests)
from tiny_vatt import official_vatt_state_dict  # the tests' builder of the official layout, at the released size
state = official_vatt_state_dict(0, dim=512, heads=8, encoder_layers=4, decoder_layers=4, codebooks=4, vocab=2048, latent=128,
                                 video_dim=2048, scale=0.02)
decoder_bytes = sum(v.numel() * v.element_size() for v in state.values())
per = 64 * 1024 * 1024  # fp16 elements per LLM tensor: 128 MiB
n = max(1, round(llm_gb * 1024**3 / (per * 2)))
for i in range(n):
    state[f"encoder.base_model.model.model.layers.{i}.mlp.up_proj.weight"] = torch.full((per // 4096, 4096), 0.01, dtype=torch.float16)
llm_bytes = n * per * 2
torch.save({"state_dict": state, "epoch": 3, "global_step": 1000}, f"{folder}/vatt_official.ckpt")
save_file(state, f"{folder}/vatt_official.safetensors")
print(decoder_bytes, llm_bytes)
"""

MEASURE = r"""
import resource, sys, torch
from comfyui_audiovisual.loaders.vatt_checkpoints import load_vatt_decoder
from comfyui_audiovisual.loaders.checkpoint_io import read_state_dict
mode, path = sys.argv[1], sys.argv[2]
if mode == "loader":
    model = load_vatt_decoder(path)
    assert model.config.logit_layout == "vatt_official"
elif mode == "whole":
    state, _ = read_state_dict(path)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def run(code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": PACK_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-gb", type=float, default=2.0, help="size of the frozen LLM submodule, GiB (fp16)")
    parser.add_argument("--dir", default=None, help="where to write the temporary checkpoints")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="vatt-loading-", dir=args.dir)
    mib = 1024 * 1024
    try:
        decoder_bytes, llm_bytes = map(int, run(WRITE, folder, str(args.llm_gb), TESTS_DIR).split())
        rows = []
        baseline = int(run(MEASURE, "baseline", ""))
        for name in ("vatt_official.ckpt", "vatt_official.safetensors"):
            path = os.path.join(folder, name)
            size = os.path.getsize(path)
            loader = int(run(MEASURE, "loader", path))
            whole = int(run(MEASURE, "whole", path))
            rows.append((name, size, loader, whole))
        print(f"# Loading an official VATT decoder beside a {llm_bytes / 1024**3:.2f} GiB LLM\n")
        print(f"decoder tensors: {decoder_bytes / mib:.0f} MiB (fp32); LLM tensors: {llm_bytes / mib:.0f} MiB (fp16); "
              f"baseline process (python + torch + pack): {baseline / mib:.0f} MiB peak RSS\n")
        print("| file | size, MiB | load_vatt_decoder: peak RSS, MiB (over baseline) | whole file read: peak RSS, MiB (over baseline) |")
        print("|---|---|---|---|")
        for name, size, loader, whole in rows:
            print(f"| {name} | {size / mib:.0f} | {loader / mib:.0f} (+{(loader - baseline) / mib:.0f}) "
                  f"| {whole / mib:.0f} (+{(whole - baseline) / mib:.0f}) |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
