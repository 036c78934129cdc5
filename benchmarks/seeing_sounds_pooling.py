"""SeeingSounds ablation on SynthAV: attention pooling against mean pooling, held-out MSE.

    .venv/bin/python benchmarks/seeing_sounds_pooling.py [--train 200] [--heldout 64] [--steps 400] [--seeds 0,1,2]
                                                         [--encoders DIR] [--output benchmarks/results/seeing_sounds_pooling.md]

Encoders: --encoders DIR with ast/, t5/ and clip_text/ transformers folders; without it tiny random
ones are built with tests/tiny_encoders.py (AST width 32 with the published 1214 tokens, T5 width 16,
CLIP text width 24). Train clips are SynthAV training scenes, held-out clips SynthAV held-out scenes
(new seeds); the targets are the frozen encoders' outputs for each scene's audio caption. Both
variants get the same data, steps, batch, learning rates and initial seed. The table also gives the
MSE of always answering the training mean target (an adapter that ignores the sound). Figures, not a test.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

from comfyui_audiovisual.encoders.pretrained import load_encoder
from comfyui_audiovisual.networks.audio_adapter import AudioAdapter
from comfyui_audiovisual.training import audio_adapter as training

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_encoder_folders() -> str:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    from tiny_encoders import write_tiny_ast, write_tiny_clip_text, write_tiny_t5

    folder = tempfile.mkdtemp(prefix="seeing-sounds-encoders-")
    write_tiny_ast(os.path.join(folder, "ast"))
    write_tiny_t5(os.path.join(folder, "t5"))
    write_tiny_clip_text(os.path.join(folder, "clip_text"))
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--hidden-dim", type=int, default=32)
    parser.add_argument("--text-tokens", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3, help="both branches")
    parser.add_argument("--encoders", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None)
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    folder = options.encoders or tiny_encoder_folders()
    encoders = [load_encoder(os.path.join(folder, name)) for name in ("ast", "t5", "clip_text")]
    started = time.perf_counter()
    clips = training.synthav_clips("train", options.train) + training.synthav_clips("heldout", options.heldout)
    features = training.encode_features(clips, *encoders, text_tokens=options.text_tokens)
    encode_s = time.perf_counter() - started
    train, heldout = features.subset(range(options.train)), features.subset(range(options.train, len(features)))
    baseline = training.mean_target_mse(train, heldout)
    args_common = dict(steps=options.steps, batch_size=options.batch_size, lr_text=options.lr, lr_pooled=options.lr, log_every=0)
    rows, finals = [], {"attention": [], "mean": []}
    for seed in [int(s) for s in options.seeds.split(",")]:
        for pooling in ("attention", "mean"):
            torch.manual_seed(seed)
            adapter = AudioAdapter(training.config_for(train, hidden_dim=options.hidden_dim, num_heads=4, pooling=pooling))
            t0 = time.perf_counter()
            result = training.train_adapter(adapter, train, heldout, training.AdapterTrainingArgs(seed=seed, **args_common), log=lambda line: None)
            seconds = time.perf_counter() - t0
            after = result["heldout_after"]
            finals[pooling].append(after["total"])
            rows.append(f"| {pooling} | {seed} | {result['train_after']['total']:.4f} | {result['heldout_before']['total']:.4f} | "
                        f"{after['total']:.4f} | {after['text']:.4f} | {after['pooled']:.4f} | {seconds:.1f} |")
    lines = [
        "# SeeingSounds pooling ablation on SynthAV (held-out MSE against frozen text encoders)",
        "",
        f"Command: `python benchmarks/seeing_sounds_pooling.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"- encoders: {'tiny random (tests/tiny_encoders.py)' if not options.encoders else options.encoders}; "
        f"audio {tuple(train.audio.shape[1:])}, T5 targets {tuple(train.text.shape[1:])}, CLIP pooled {tuple(train.pooled.shape[1:])}",
        f"- {options.train} SynthAV training scenes, {options.heldout} held-out scenes ({len(features.captions)} distinct captions); "
        f"encoding took {encode_s:.1f} s",
        f"- adapter hidden {options.hidden_dim}, 4 heads; {options.steps} steps, batch {options.batch_size}, AdamW lr {options.lr:g} "
        f"on both branches; torch {torch.__version__}, {platform.machine()}, {options.threads} thread(s)",
        f"- answering the training mean target (ignoring the sound): held-out MSE {baseline['total']:.4f} "
        f"(T5 {baseline['text']:.4f}, CLIP {baseline['pooled']:.4f})",
        "",
        "| pooling | seed | train MSE after | held-out MSE before | held-out MSE after | T5 part | CLIP part | seconds |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    for pooling, values in finals.items():
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        lines.append(f"- {pooling}: held-out MSE {statistics.mean(values):.4f} +- {spread:.4f} over {len(values)} seed(s), "
                     f"{100 * (1 - statistics.mean(values) / baseline['total']):+.1f} % below the mean-target answer")
    report = "\n".join(lines) + "\n"
    print(report)
    if options.output:
        with open(options.output, "w", encoding="utf-8") as handle:
            handle.write(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
