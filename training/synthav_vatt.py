"""Trains the embedded VATT default on SynthAV videos, with the pack's own code:

  1. codec: the spectrogram codec folder over the Visual Echoes default's 128-code spectrogram VQ
     and Griffin-Lim (``audio.codec_tokenizer.write_spectrogram_codec``; see docs/vatt.md for why
     not an EnCodec)
  2. text encoder: a small T5 with random (seeded) weights and T5's own tokenizer (``write_caption_t5``)
  3. pairs: SynthAV training videos (objects appear as their notes start) through the embedded small
     CLIP (frames at 5 per second, 10 tokens), the codec, and the T5 for each clip's caption (32
     tokens); a share of clips get a caption naming other notes, their sound following it
     (``training.vatt.make_synthav_pairs``, split over ``--workers`` processes)
  4. decoder: ``train vatt`` on the pairs, checkpointing at least every 9 minutes into
     WORK/decoder_checkpoint; running the same command again resumes an interrupted run
  5. ``--install``: the decoder, the codec folder and the T5 copied into embedded_models/ (vatt/, codecs/, encoders/)

``python -m comfyui_audiovisual.training.synthav_vatt --work runs/vatt_cpu [--install]``: the
defaults are the CPU recipe of the shipped decoder (16000 videos, 9000 steps of batch 64; about 1 h 20
min on the project's 2-core CPU). The earlier recipe (3000 videos, 2500 + 3000 steps of batch 32 on the
512-code tokenizer) is ``--videos 3000 --steps 2500 --batch-size 32 --lr 5e-4 --continue-steps 3000``
with that tokenizer.
Each stage is skipped when its output exists; every command is printed and appended to
WORK/pipeline_log.jsonl, which the model card quotes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

import torch

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EMBEDDED = os.path.join(PACK_DIR, "embedded_models")
SPEC_VQ = os.path.join(EMBEDDED, "vq", "synthav_spec_vq.safetensors")  # the Visual Echoes default's 128-code tokenizer
CODEC_NAME = "synthav_spec_codec"
DECODER_NAME = "synthav_vatt.safetensors"
DECODER_SIZE = {"dim": 128, "encoder_depth": 2, "decoder_depth": 2, "num_heads": 4, "head_dim": 32, "dropout": 0.1}


T5_NAME = "synthav_caption_t5"
T5_SIZE = dict(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, relative_attention_num_buckets=8,
               relative_attention_max_distance=32)
TEXT_TOKENS = 32  # captions are padded to this many T5 tokens (two-object captions take at most 24)


def host_t5_tokenizer_dir() -> str:
    """The T5 tokenizer files the host ships (comfy/text_encoders/t5_tokenizer): the real T5 SentencePiece."""
    import importlib.util

    spec = importlib.util.find_spec("comfy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the T5 tokenizer is read from the host's copy (comfy/text_encoders/t5_tokenizer); "
                                "put the host on the Python path")
    return os.path.join(list(spec.submodule_search_locations)[0], "text_encoders", "t5_tokenizer")


def write_caption_t5(folder: str, tokenizer_dir: str, seed: int = 0) -> str:
    """A small T5 encoder for SynthAV captions: T5's own tokenizer and a 1-layer, 16-wide
    ``T5EncoderModel`` with seeded random weights, frozen. Its states tell the caption's words and
    their order apart; the VATT decoder learns what they mean. (The embedded CLAP's text side could
    not serve: captions differing only in their notes get embeddings with cosine 0.99, up to 1.00.)"""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.model_max_length = TEXT_TOKENS
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer) + 28, decoder_start_token_id=0, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, **T5_SIZE)  # 32128 rows, as the published T5s
    model = T5EncoderModel(config).eval()
    tmp = folder + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _log(work: str, record: dict) -> None:
    print(f"[synthav-vatt] {json.dumps(record)}", flush=True)
    with open(os.path.join(work, "pipeline_log.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pairs_part(kwargs: dict) -> str:
    """One worker's share of the pairs (spawned: one torch thread each)."""
    torch.set_num_threads(1)
    from . import vatt as vatt_training

    return str(vatt_training.make_synthav_pairs(**kwargs))


def make_pairs_parallel(count: int, workers: int, out: str, **kwargs) -> str:
    """``make_synthav_pairs`` over ``count`` videos in ``workers`` processes, each on consecutive
    scenes (worker i: its own caption-edit draw, seed i), concatenated in scene order into ``out``.
    With one worker this is ``make_synthav_pairs(count, ..., seed=0)``."""
    from ..loaders.checkpoint_io import read_state_dict, write_safetensors_atomic
    from . import vatt as vatt_training

    workers = max(1, min(int(workers), int(count)))
    if workers == 1:
        return str(vatt_training.make_synthav_pairs(count, out_path=out, seed=0, **kwargs))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    bounds = [round(count * i / workers) for i in range(workers + 1)]
    jobs = [dict(kwargs, count=bounds[i + 1] - bounds[i], start=bounds[i], seed=i, out_path=f"{os.path.splitext(out)[0]}.part{i}.safetensors") for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_pairs_part, jobs))
    loaded = [read_state_dict(part) for part in parts]
    tensors = {key: torch.cat([t[key] for t, _ in loaded]) for key in loaded[0][0] if key != "codebook_latents"}
    tensors["codebook_latents"] = loaded[0][0]["codebook_latents"]
    metadata = dict(loaded[0][1])
    first, last = loaded[0][1]["source"], loaded[-1][1]["source"]  # "synthav train scenes A..B, 2 s at 16 fps"
    metadata["source"] = first.split("..")[0] + ".." + last.split("..", 1)[1]
    write_safetensors_atomic(tensors, out, metadata)
    for part in parts:
        os.remove(part)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.training.synthav_vatt")
    parser.add_argument("--work", default=os.path.join(PACK_DIR, "runs", "vatt_cpu"))
    parser.add_argument("--clip", default=os.path.join(EMBEDDED, "encoders", "synthav_clip"), help="the image encoder folder")
    parser.add_argument("--t5", default=None, help="the caption encoder folder (default: WORK/synthav_t5, written first)")
    parser.add_argument("--no-text", action="store_true", help="a decoder without text")
    parser.add_argument("--reuse", default=None, help="a caption-free pairs file of the same videos (make_synthav_pairs reuse=)")
    parser.add_argument("--videos", type=int, default=16000)
    parser.add_argument("--text-edit", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=9000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--continue-steps", type=int, default=0,
                        help="then continue from the decoder for this many steps (train vatt --init; 0: no)")
    parser.add_argument("--continue-lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes that make the pairs (one thread each)")
    parser.add_argument("--stop-after", choices=("pairs",), default=None,
                        help="stop after this stage (a later run with the same --work goes on from it)")
    parser.add_argument("--install", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    from ..audio.codec_tokenizer import write_spectrogram_codec
    from . import vatt as vatt_training

    codec_dir = os.path.join(args.work, CODEC_NAME)
    if not os.path.isfile(os.path.join(codec_dir, "config.json")):
        write_spectrogram_codec(codec_dir, SPEC_VQ)
        _log(args.work, {"stage": "codec", "command": f"write_spectrogram_codec({codec_dir!r}, {SPEC_VQ!r})"})
    t5 = None
    if not args.no_text:
        t5 = args.t5 or os.path.join(args.work, T5_NAME)
        if not os.path.isfile(os.path.join(t5, "config.json")):
            write_caption_t5(t5, host_t5_tokenizer_dir())
            _log(args.work, {"stage": "t5", "command": f"write_caption_t5({t5!r}, host_t5_tokenizer_dir())", "size": T5_SIZE})
    pairs = os.path.join(args.work, "pairs.safetensors")
    if not os.path.exists(pairs):
        start = time.time()
        if args.reuse and args.workers > 1:
            raise SystemExit("synthav_vatt: --reuse reads one pairs file of the same videos; give --workers 1 with it")
        options = dict(encoder_dir=args.clip, codec_dir=codec_dir, duration_s=2.0, fps=16.0, text_encoder_dir=t5,
                       text_edit=args.text_edit if t5 else 0.0, text_tokens=TEXT_TOKENS, reuse=args.reuse)
        make_pairs_parallel(args.videos, args.workers, pairs, **options)
        _log(args.work, {"stage": "pairs", "videos": args.videos, "workers": args.workers, "clip": args.clip, "text_encoder": t5,
                         "text_edit": args.text_edit if t5 else 0.0, "reuse": args.reuse, "seconds": round(time.time() - start, 1)})
    if args.stop_after == "pairs":
        return 0
    out = os.path.join(args.work, DECODER_NAME)
    if not os.path.exists(out):
        checkpoints = os.path.join(args.work, "decoder_checkpoint")
        argv_train = ["--pairs", pairs, "--out", out, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                      "--lr", str(args.lr), "--size", json.dumps(DECODER_SIZE), "--threads", str(args.threads),
                      "--checkpoint-dir", checkpoints]
        if os.path.isfile(os.path.join(checkpoints, "training_state.pt")):
            argv_train.append("--resume")  # an interrupted run of this command: go on from its checkpoint
        start = time.time()
        code = vatt_training.main(argv_train)
        if code:
            raise SystemExit(f"train vatt failed with exit code {code}")
        _log(args.work, {"stage": "decoder", "command": "python -m comfyui_audiovisual train vatt " + " ".join(argv_train),
                         "seconds": round(time.time() - start, 1)})
    if args.continue_steps:
        first, out = out, os.path.join(args.work, "synthav_vatt_continued.safetensors")
        if not os.path.exists(out):
            argv_more = ["--pairs", pairs, "--init", first, "--out", out, "--steps", str(args.continue_steps), "--batch-size",
                         str(args.batch_size), "--lr", str(args.continue_lr), "--warmup-steps", "100", "--seed", "1",
                         "--threads", str(args.threads)]
            start = time.time()
            code = vatt_training.main(argv_more)
            if code:
                raise SystemExit(f"train vatt failed with exit code {code}")
            _log(args.work, {"stage": "decoder (continued)", "command": "python -m comfyui_audiovisual train vatt " + " ".join(argv_more),
                             "seconds": round(time.time() - start, 1)})
    if args.install:
        target = os.path.join(EMBEDDED, "vatt", DECODER_NAME)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(out, target + ".partial")
        os.replace(target + ".partial", target)
        codec_target = os.path.join(EMBEDDED, "codecs", CODEC_NAME)
        write_spectrogram_codec(codec_target, SPEC_VQ)
        encoders = {"clip": sha256(os.path.join(args.clip, "model.safetensors"))}
        if t5:
            t5_target = os.path.join(EMBEDDED, "encoders", T5_NAME)
            shutil.rmtree(t5_target + ".partial", ignore_errors=True)
            shutil.copytree(t5, t5_target + ".partial")
            shutil.rmtree(t5_target, ignore_errors=True)
            os.replace(t5_target + ".partial", t5_target)
            encoders["t5"] = sha256(os.path.join(t5_target, "model.safetensors"))
        _log(args.work, {"stage": "install", "decoder": target, "codec": codec_target, "encoder_sha256": encoders})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
