"""Export SynthAV scenes as one safetensors file for the training code.

    make_dataset("train", 4096, "runs/synthav_train.safetensors")
    python -m comfyui_audiovisual.synthav.dataset train 4096 runs/synthav_train.safetensors

Tensors:
  images   [M, 3, 64, 64]  in [0, 1] (float16 by default)
  waves    [M, 44800]      mono at 22050 Hz (float16 by default; |x| < 0.5)
  objects  [M, 2, 4] int16 (shape, colour, size, column) per object, left to right; -1 = absent
Metadata (strings): "config" (JSON: the world's tables, split, start, n, dtype), "scenes" (JSON
list of Scene.to_dict(), with both captions).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Sequence

from . import split as S
from .world import IMAGE_SIZE, N_SAMPLES, Scene, render_audio, render_image, world_config

_DTYPES = ("float16", "float32", "bfloat16")


def _render_scenes(split: str, indices: range):
    """(images [n, 64, 64, 3] float32, waves [n, N_SAMPLES] float32, scene dicts) for split scenes `indices`."""
    import numpy as np

    scenes = [S.split_scene(split, k) for k in indices]
    images = np.stack([render_image(scene) for scene in scenes])
    waves = np.stack([render_audio(scene) for scene in scenes])
    return images, waves, [scene.to_dict() for scene in scenes]


def make_dataset(split: str, n: int, out_path: str, start: int = 0, dtype: str = "float16", workers: int = 1) -> str:
    """Scenes start .. start+n-1 of `split` ("train", "heldout", "unseen") -> out_path; returns it.

    `workers` > 1 renders chunks of scenes in that many processes; the file is the same either way."""
    import torch
    from safetensors.torch import save_file

    if split not in S.SPLITS:
        raise ValueError(f"synthav.make_dataset: split {split!r} is not one of {list(S.SPLITS)}")
    n, start = int(n), int(start)
    if n < 1:
        raise ValueError(f"synthav.make_dataset: n must be >= 1, got {n}")
    if start < 0 or start + n > S.SPLIT_SIZE:
        raise ValueError(f"synthav.make_dataset: scenes {start}..{start + n - 1} are outside 0..{S.SPLIT_SIZE - 1}")
    if dtype not in _DTYPES:
        raise ValueError(f"synthav.make_dataset: dtype {dtype!r} is not one of {list(_DTYPES)}")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"synthav.make_dataset: {out_path}: folder {out_dir} does not exist")
    tdt = getattr(torch, dtype)
    images = torch.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=tdt)
    waves = torch.empty((n, N_SAMPLES), dtype=tdt)
    objects = torch.full((n, 2, 4), -1, dtype=torch.int16)
    chunk = 256
    chunks = [range(start + i, start + min(i + chunk, n)) for i in range(0, n, chunk)]
    if workers > 1 and len(chunks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the caller may hold torch threads; a worker that dies raises here instead of hanging
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn")) as pool:
            rendered = list(pool.map(_render_scenes, [split] * len(chunks), chunks))
    else:
        rendered = (_render_scenes(split, c) for c in chunks)
    scene_dicts = []
    for c, (chunk_images, chunk_waves, chunk_dicts) in zip(chunks, rendered):
        rows = slice(c.start - start, c.stop - start)
        images[rows] = torch.from_numpy(chunk_images).permute(0, 3, 1, 2).to(tdt)
        waves[rows] = torch.from_numpy(chunk_waves).to(tdt)
        scene_dicts.extend(chunk_dicts)
    for k, d in enumerate(scene_dicts):
        for j, o in enumerate(Scene.from_dict(d).objects):
            objects[k, j] = torch.tensor([o.shape, o.colour, o.size, o.column], dtype=torch.int16)
    config = dict(world_config(), split=split, start=start, n=n, dtype=dtype,
                  heldout_combos=[list(c) for c in S.HELDOUT_COMBO_NAMES])
    meta = {"config": json.dumps(config), "scenes": json.dumps(scene_dicts)}
    fd, tmp = tempfile.mkstemp(prefix=".synthav-", suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        save_file({"images": images, "waves": waves, "objects": objects}, tmp, metadata=meta)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path


def load_dataset(path: str) -> dict:
    """-> {"images", "waves", "objects" (torch tensors), "scenes" (list[Scene]), "config" (dict)}."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"synthav.load_dataset: {path} does not exist")
    out = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        for key in ("images", "waves", "objects"):
            if key not in f.keys():
                raise ValueError(f"{path}: key {key!r} is missing, expected a SynthAV dataset")
            out[key] = f.get_tensor(key)
    if "scenes" not in meta or "config" not in meta:
        raise ValueError(f"{path}: metadata 'scenes' / 'config' is missing, expected a SynthAV dataset")
    out["scenes"] = [Scene.from_dict(d) for d in json.loads(meta["scenes"])]
    out["config"] = json.loads(meta["config"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.synthav.dataset",
                                description="Write SynthAV scenes to a safetensors file.")
    p.add_argument("split", choices=S.SPLITS)
    p.add_argument("n", type=int)
    p.add_argument("out_path")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--dtype", choices=_DTYPES, default="float16")
    p.add_argument("--workers", type=int, default=1, help="processes rendering scenes")
    a = p.parse_args(argv)
    print(make_dataset(a.split, a.n, a.out_path, a.start, a.dtype, a.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
