"""The eva-CLIP frame encoder at the released size (issue 18): an open_clip folder in the Hub layout of
timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k (open_clip's own EVA02-L-14-336 config, random
weights stored in float16 as the published file; a stand-in text tower) is loaded through the pack's
load_encoder and checked against timm's own eva02_large_patch14_clip_336 of the same weights on the
same pixels. Prints a markdown report; never asserts.

    python benchmarks/eva_clip_loading.py [--frames 2] [--threads 1] [--dir TMP]

Figures: load time and peak RSS of load_encoder (a fresh process), encode time per frame (CPU, fp32),
the largest difference to timm's forward, the feature shape.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

PACK_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OPEN_CLIP_CONFIG = {  # open_clip src/open_clip/model_configs/EVA02-L-14-336.json, as push_to_hf_hub wraps it
    "model_cfg": {"embed_dim": 768,
                  "vision_cfg": {"image_size": 336, "timm_model_name": "eva02_large_patch14_clip_336",
                                 "timm_model_pretrained": False, "timm_pool": "token", "timm_proj": None},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
                  "custom_text": True},
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}

WRITE = r"""
import json, sys, torch, timm
from safetensors.torch import save_file
folder, config = sys.argv[1], json.loads(sys.argv[2])
torch.manual_seed(0)
trunk = timm.create_model("eva02_large_patch14_clip_336", pretrained=False, num_classes=768, global_pool="token")
with torch.no_grad():
    trunk.head.weight.normal_(0, 0.02)  # timm initialises the head near zero
state = {f"visual.trunk.{k}": v.half().contiguous() for k, v in trunk.state_dict().items()}
state["text.token_embedding.weight"] = torch.randn(49408, 768).half()
state["logit_scale"] = torch.tensor(4.6052)
save_file(state, folder + "/open_clip_model.safetensors")
json.dump(config, open(folder + "/open_clip_config.json", "w"), indent=2)
"""

MEASURE = r"""
import json, resource, sys, time, torch
folder, frames, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
from comfyui_audiovisual.encoders.pretrained import load_encoder
from comfyui_audiovisual.encoders.eva_clip import open_clip_pixel_values
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); encoder = load_encoder(folder); load_s = time.perf_counter() - t
load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
images = torch.rand(frames, 360, 640, 3, generator=torch.Generator().manual_seed(1))
t = time.perf_counter(); features = encoder.encode_images(images).vectors; encode_s = (time.perf_counter() - t) / frames
import timm
from safetensors.torch import load_file
reference = timm.create_model("eva02_large_patch14_clip_336", pretrained=False, num_classes=768, global_pool="token").eval()
state = load_file(folder + "/open_clip_model.safetensors")
reference.load_state_dict({k[len("visual.trunk."):]: v.float() for k, v in state.items() if k.startswith("visual.trunk.")})
with torch.no_grad():
    expected = reference(open_clip_pixel_values(images, 336))
print(json.dumps({"load_s": load_s, "rss_base_mib": base / 1024, "rss_loaded_mib": load_rss / 1024, "encode_s_per_frame": encode_s,
                  "max_diff": float((features - expected).abs().max()), "max_abs": float(expected.abs().max()),
                  "shape": list(features.shape), "family": encoder.family, "timm": timm.__version__}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="eva-clip-bench-", dir=args.dir)
    folder = os.path.join(work, "eva02_large_patch14_clip_336.merged2b_s6b_b61k")
    os.makedirs(folder)
    env = dict(os.environ, PYTHONPATH=PACK_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(args.threads))
    try:
        subprocess.run([sys.executable, "-c", WRITE, folder, json.dumps(OPEN_CLIP_CONFIG)], check=True, env=env)
        size_mib = os.path.getsize(os.path.join(folder, "open_clip_model.safetensors")) / 2**20
        out = subprocess.run([sys.executable, "-c", MEASURE, folder, str(args.frames), str(args.threads)], check=True,
                             env=env, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"## eva-CLIP EVA02-L-14-336 at the released size (CPU, {args.threads} thread(s), timm {r['timm']})\n")
    print("| figure | value |\n|---|---|")
    print(f"| open_clip_model.safetensors (fp16, with a stand-in text tower) | {size_mib:.0f} MiB |")
    print(f"| load_encoder time | {r['load_s']:.1f} s |")
    print(f"| peak RSS: before / after load_encoder | {r['rss_base_mib']:.0f} / {r['rss_loaded_mib']:.0f} MiB |")
    print(f"| encode time per 640x360 frame (fp32) | {r['encode_s_per_frame']:.2f} s |")
    print(f"| features | {r['shape']}, family {r['family']} |")
    print(f"| max abs difference to timm's forward (max abs feature {r['max_abs']:.3g}) | {r['max_diff']:.2e} |")


if __name__ == "__main__":
    main()
