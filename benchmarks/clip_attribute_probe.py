"""Which attributes of an object does an image encoder's pooled vector keep? Linear and MLP probes.

    .venv/bin/python benchmarks/clip_attribute_probe.py [--encoder embedded_models/encoders/synthav_clip] [--train 1500] [--test 300]

Single-object SynthAV pictures (each object of a scene alone on its background,
``world.render_image(scene, visible=[i])``) go through ``encode_images``; a logistic regression per
attribute (colour, shape, size, column), and a one-hidden-layer MLP (256 wide), fitted on training
scenes, are scored on held-out scenes. VATT's default reads its frames through this vector: what
neither probe can read, the decoder cannot either (it reads non-linearly, so the MLP column is the
fairer bound). Figures, not a test.
"""

import argparse
import os
import sys

import numpy as np
import torch

from comfyui_audiovisual.encoders.pretrained import load_encoder
from comfyui_audiovisual.synthav.evaluate_cli import PACK_DIR
from comfyui_audiovisual.synthav.split import scenes
from comfyui_audiovisual.synthav.world import render_image

ATTRIBUTES = ("colour", "shape", "size", "column")


def features(encoder, split: str, n: int):
    pictures, labels = [], []
    for scene in scenes(split, n):
        for i, o in enumerate(scene.objects):
            pictures.append(render_image(scene, visible=[i]))
            labels.append([getattr(o, a) for a in ATTRIBUTES])
    images = torch.from_numpy(np.stack(pictures)).float()
    with torch.inference_mode():
        vectors = torch.cat([encoder.encode_images(images[i:i + 256]).vectors.float() for i in range(0, len(images), 256)])
    return vectors, torch.tensor(labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default=os.path.join(PACK_DIR, "embedded_models", "encoders", "synthav_clip"))
    parser.add_argument("--train", type=int, default=1500, help="training scenes")
    parser.add_argument("--test", type=int, default=300, help="held-out scenes")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    encoder = load_encoder(args.encoder)
    x_train, y_train = features(encoder, "train", args.train)
    x_test, y_test = features(encoder, "heldout", args.test)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    print(f"{os.path.basename(args.encoder)}: {len(x_train)} training / {len(x_test)} held-out single-object pictures")
    for j, name in enumerate(ATTRIBUTES):
        classes = int(max(y_train[:, j].max(), y_test[:, j].max())) + 1
        scores = []
        for probe, steps, lr in ((torch.nn.Linear(x_train.shape[1], classes), 500, 1e-2),
                                 (torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], 256), torch.nn.GELU(),
                                                      torch.nn.Linear(256, classes)), 800, 3e-3)):
            optimizer = torch.optim.Adam(probe.parameters(), lr, weight_decay=1e-4)
            for _ in range(steps):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(probe(x_train), y_train[:, j]).backward()
                optimizer.step()
            scores.append(float((probe(x_test).argmax(1) == y_test[:, j]).float().mean()))
        print(f"{name:7s} held-out accuracy: linear {scores[0]:.3f}, MLP {scores[1]:.3f} (chance {1 / classes:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
