"""Trains the embedded SynthAV video captioner: a tiny ``BlipForConditionalGeneration`` that writes
the VATT default's caption template from the contact sheet Caption Video (audio) shows a model.

``python -m comfyui_audiovisual.training.synthav_captioner --out FOLDER [--work runs/captioner] [--scenes 10000]
[--steps 5500] [--threads 2] [--score 48]``  (the embedded one: embedded_models/captioners/synthav_captioner.md)

  1. data: SynthAV training scenes (``synthav.split.training_scene``: no held-out seed, none of the four
     held-out (shape, colour) combinations) as videos at 16 fps (``world.make_video``: the background,
     then each object from the frame its note starts on), 2, 3 or 4 s long, a third of them enlarged
     4x (256 px, as the pack's example video); the frames Caption Video takes at its defaults (``synthav.caption_evaluate.caption_frames``;
     the shipped captioner was trained when they were 1 per second, at most 8; they are now 2 per second, at most 4), as its one contact sheet
     (``encoders.captioner.contact_sheet``), through the folder's own BLIP image processor (96 x 96).
     Target: the scene's ``Scene.audio_caption()``. The caption follows a prompt the model must
     continue from, as ``Captioner.caption`` gives BLIP one: Caption Video's default instruction,
     nothing, or a random run of its words (the words outside the vocabulary are [UNK]).
  2. model: BLIP, 96-px images in 8-px patches, vision 96 wide x 3 layers, text decoder 96 wide x 2
     layers, a WordPiece vocabulary of the template's words written here (case kept: "A4").
     Cross-entropy on the caption's tokens and its end ([SEP]); AdamW, warm-up then cosine.
  3. FOLDER: ``save_pretrained`` (config.json, model.safetensors, generation_config.json) and the
     processor's files, written under a temporary name beside FOLDER and renamed, so
     ``encoders.captioner.load_captioner`` reads it like any BLIP captioner folder.

``--score N`` (after training, or with ``--score-only FOLDER``) captions N held-out + N/2
unseen-combination videos through ``Captioner.caption`` at Caption Video's defaults and prints
per-attribute accuracies (``synthav.caption_evaluate``); ``--score-duration-s``, ``--score-rate-hz`` and
``--score-upscale`` change the videos' length, the frames per second shown and the frames' size.
The data file and a checkpoint (every 250 steps) live in WORK, so an interrupted run continues where
it stopped (with the same arguments); every command is appended to WORK/log.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EMBEDDED_FOLDER = os.path.join(PACK_DIR, "embedded_models", "captioners", "synthav_captioner")

IMAGE_SIZE = 96
SIZE = {"image_size": IMAGE_SIZE, "patch_size": 8, "vision_width": 96, "vision_layers": 3, "text_width": 96, "text_layers": 2,
        "heads": 4, "max_positions": 128}
FPS = 16.0
DURATIONS_S = (2.0, 3.0, 4.0)
DURATION_WEIGHTS = (0.6, 0.15, 0.25)
UPSCALES = (1, 4)  # frames as rendered (64 px) or 4x nearest (256 px, as the pack's example video)
UPSCALE_WEIGHTS = (0.65, 0.35)
PROMPT_WEIGHTS = {"instruction": 0.45, "empty": 0.35, "random": 0.2}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
CHECKPOINT_EVERY = 250


def template_words() -> list[str]:
    """Every word of the SynthAV audio-caption template (world tables), in a fixed order."""
    from ..synthav.world import LOUDNESS, NOTE_NAMES, ONSET_WORDS, TIMBRES

    words = ["a", "tone", "at", "and", ","] + list(LOUDNESS) + list(TIMBRES) + list(NOTE_NAMES)
    for phrase in ONSET_WORDS:
        words += [w for w in phrase.split() if w not in words]
    return words


def make_tokenizer():
    """A BERT WordPiece tokenizer over the template's words (BLIP's tokenizer class), case kept."""
    from transformers import BertTokenizer

    vocab = SPECIAL + template_words()
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=False, bos_token="[DEC]",
                         model_max_length=SIZE["max_positions"], clean_up_tokenization_spaces=True)


def make_processor(tokenizer=None):
    from transformers import BlipImageProcessor, BlipProcessor

    return BlipProcessor(image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                         tokenizer=tokenizer or make_tokenizer())


def make_model(tokenizer, seed: int = 0):
    from transformers import BlipConfig, BlipForConditionalGeneration

    s = SIZE
    config = BlipConfig(
        vision_config=dict(hidden_size=s["vision_width"], intermediate_size=4 * s["vision_width"],
                           num_hidden_layers=s["vision_layers"], num_attention_heads=s["heads"], image_size=s["image_size"],
                           patch_size=s["patch_size"]),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=s["text_width"], intermediate_size=4 * s["text_width"],
                         num_hidden_layers=s["text_layers"], num_attention_heads=s["heads"], encoder_hidden_size=s["vision_width"],
                         max_position_embeddings=s["max_positions"], bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
                         eos_token_id=tokenizer.sep_token_id),
        projection_dim=32, image_text_hidden_size=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    generation = model.generation_config
    generation.bos_token_id, generation.eos_token_id = tokenizer.bos_token_id, tokenizer.sep_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    return model


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def sheet_pixels(frames, fps: float, image_processor, upscale: int = 1) -> torch.Tensor:
    """The pixel values [3, S, S] Captioner.caption gives a BLIP model for this video at Caption
    Video's defaults (the frames it takes, one contact sheet, the folder's image processor);
    `upscale`: the frames enlarged that many times (nearest) first."""
    from ..encoders.captioner import grid_image
    from ..synthav.caption_evaluate import caption_frames, enlarge_frames

    shown = enlarge_frames(caption_frames(frames, fps), upscale)
    return image_processor(images=grid_image(shown), return_tensors="pt")["pixel_values"][0]


def make_data(path: str, scenes: int, image_processor, seed: int = 0, log=print) -> None:
    """Renders training scenes 0..scenes-1 (durations and upscaling drawn with `seed`) to `path`
    (safetensors: pixels float16 [N, 3, S, S], duration_s [N], upscale [N]; the captions as JSON in
    the metadata)."""
    from ..loaders.checkpoint_io import write_safetensors_atomic
    from ..synthav.split import training_scene
    from ..synthav.world import make_video

    rng = np.random.default_rng([seed, 7])
    durations = rng.choice(DURATIONS_S, size=scenes, p=DURATION_WEIGHTS)
    upscales = rng.choice(UPSCALES, size=scenes, p=UPSCALE_WEIGHTS)
    pixels = torch.empty(scenes, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float16)
    captions = []
    start = time.time()
    for i in range(scenes):
        scene = training_scene(i)
        video = make_video(scene.seed, fps=FPS, duration_s=float(durations[i]), scene=scene)
        pixels[i] = sheet_pixels(video.frames, video.fps, image_processor, int(upscales[i])).half()
        captions.append(scene.audio_caption())
        if (i + 1) % 1000 == 0:
            log({"stage": "data", "done": i + 1, "of": scenes, "seconds": round(time.time() - start, 1)})
    write_safetensors_atomic({"pixels": pixels, "duration_s": torch.from_numpy(durations.astype(np.float32)),
                              "upscale": torch.from_numpy(upscales.astype(np.int64))}, path,
                             {"captions": json.dumps(captions), "scenes": str(scenes), "seed": str(seed),
                              "image_size": str(IMAGE_SIZE), "fps": str(FPS)})


def prompt_words() -> list[str]:
    from ..encoders.captioner import DEFAULT_INSTRUCTION, GRID_CONTEXT

    return (GRID_CONTEXT.format(n=2) + DEFAULT_INSTRUCTION + " the sound of").split()


def draw_prompt(rng: np.random.Generator) -> str:
    """The text Caption Video may hand BLIP before the caption: its default instruction, nothing, or
    1-40 random words of its instruction and grid context."""
    from ..encoders.captioner import DEFAULT_INSTRUCTION

    kinds = list(PROMPT_WEIGHTS)
    kind = kinds[int(rng.choice(len(kinds), p=list(PROMPT_WEIGHTS.values())))]
    if kind == "instruction":
        return DEFAULT_INSTRUCTION
    if kind == "empty":
        return ""
    words = prompt_words()
    return " ".join(words[int(j)] for j in rng.integers(0, len(words), size=int(rng.integers(1, 41))))


def encode_batch(tokenizer, prompts: list[str], captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels): [DEC] prompt caption [SEP], right-padded; labels are the
    caption's tokens and [SEP] (-100 elsewhere), as BLIP's generate continues the prompt after [DEC]."""
    rows, targets = [], []
    for prompt, caption in zip(prompts, captions):
        given = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        wanted = tokenizer(caption, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
        rows.append([tokenizer.bos_token_id] + given + wanted)
        targets.append([-100] * (1 + len(given)) + wanted)
    length = max(len(r) for r in rows)
    if length > SIZE["max_positions"]:
        raise ValueError(f"a training sequence has {length} tokens, more than the model's {SIZE['max_positions']} positions")
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for b, (r, t) in enumerate(zip(rows, targets)):
        ids[b, :len(r)] = torch.tensor(r)
        mask[b, :len(r)] = 1
        labels[b, :len(t)] = torch.tensor(t)
    return ids, mask, labels


def caption_loss(model, pixels, ids, mask, labels) -> torch.Tensor:
    logits = model(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


# ----------------------------------------------------------------------------------------------
# monitoring: greedy captions of held-out videos in one batch (the default instruction as prompt)
# ----------------------------------------------------------------------------------------------
def quick_heldout_scores(model, tokenizer, image_processor, cases, instruction: str) -> dict:
    from ..synthav.caption_evaluate import score_captions

    pixels = torch.stack([sheet_pixels(c.frames, c.fps, image_processor) for c in cases])
    prompt = tokenizer(instruction, return_tensors="pt")["input_ids"].repeat(len(cases), 1)
    model.eval()
    with torch.inference_mode():
        out = model.generate(pixel_values=pixels, input_ids=prompt, max_new_tokens=40, do_sample=False, num_beams=1)
    model.train()
    given = prompt.shape[1] - 1  # generate replaced [CLS] by [DEC] and dropped the final [SEP]
    captions = [" ".join(tokenizer.decode(row[given:], skip_special_tokens=True).split()) for row in out]
    return score_captions(cases, captions)


# ----------------------------------------------------------------------------------------------
# checkpoints (safetensors: weights, AdamW moments; the step in the metadata)
# ----------------------------------------------------------------------------------------------
def save_checkpoint(path: str, model, optimizer, step: int, rng_state: dict) -> None:
    """Written through a temporary file and renamed; BLIP's output layer, tied to the word embeddings,
    is stored twice (write_safetensors_atomic copies tensors sharing memory)."""
    from ..loaders.checkpoint_io import write_safetensors_atomic

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state:
                tensors[f"adam.exp_avg.{names[id(p)]}"] = state["exp_avg"]
                tensors[f"adam.exp_avg_sq.{names[id(p)]}"] = state["exp_avg_sq"]
    write_safetensors_atomic(tensors, path, {"step": str(step), "adam_step": str(_adam_step(optimizer)),
                                             "rng": json.dumps(rng_state)})


def _adam_step(optimizer) -> int:
    for state in optimizer.state.values():
        return int(state["step"])
    return 0


def load_checkpoint(path: str, model, optimizer) -> tuple[int, dict]:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    adam_step = int(meta["adam_step"])
    for n, p in model.named_parameters():
        if f"adam.exp_avg.{n}" in tensors:
            optimizer.state[p] = {"step": torch.tensor(float(adam_step)), "exp_avg": tensors[f"adam.exp_avg.{n}"],
                                  "exp_avg_sq": tensors[f"adam.exp_avg_sq.{n}"]}
    return int(meta["step"]), json.loads(meta["rng"])


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


# ----------------------------------------------------------------------------------------------
def save_folder(model, processor, folder: str) -> str:
    """save_pretrained (safetensors), the tokenizer and the processor, written beside `folder` under a
    temporary name and renamed (contrastive_encoders.write_encoder_folder)."""
    from .contrastive_encoders import write_encoder_folder

    return write_encoder_folder(model, processor.tokenizer, processor, folder)


def train(args, log) -> None:
    from safetensors import safe_open

    from ..encoders.captioner import DEFAULT_INSTRUCTION
    from ..synthav.video_evaluate import video_cases

    processor = make_processor()
    tokenizer, image_processor = processor.tokenizer, processor.image_processor
    data_path = os.path.join(args.work, f"data_{args.scenes}.safetensors")
    if not os.path.exists(data_path):
        start = time.time()
        make_data(data_path, args.scenes, image_processor, seed=args.seed, log=log)
        log({"stage": "data", "file": data_path, "scenes": args.scenes, "seconds": round(time.time() - start, 1)})
    with safe_open(data_path, "pt") as f:
        pixels = f.get_tensor("pixels")
        captions = json.loads(f.metadata()["captions"])

    model = make_model(tokenizer, seed=args.seed)
    log({"stage": "model", "parameters": sum(p.numel() for p in model.parameters()), "size": SIZE})
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98))
    checkpoint = os.path.join(args.work, "checkpoint.safetensors")
    step, rng = 0, np.random.default_rng([args.seed, 11])
    if os.path.exists(checkpoint):
        step, state = load_checkpoint(checkpoint, model, optimizer)
        rng.bit_generator.state = state
        log({"stage": "resume", "step": step})
    monitor = video_cases("heldout", args.monitor, start=10_000, fps=FPS, duration_s=2.0) if args.monitor else []
    model.train()
    start, losses = time.time(), []
    while step < args.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        rows = rng.integers(0, len(captions), size=args.batch_size)
        ids, mask, labels = encode_batch(tokenizer, [draw_prompt(rng) for _ in rows], [captions[int(r)] for r in rows])
        loss = caption_loss(model, pixels[torch.from_numpy(rows)].float(), ids, mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % args.log_every == 0 or step == args.steps:
            record = {"stage": "train", "step": step, "loss": round(float(np.mean(losses)), 4),
                      "lr": round(optimizer.param_groups[0]["lr"], 6), "seconds": round(time.time() - start, 1)}
            losses = []
            if monitor and (step % args.monitor_every == 0 or step == args.steps):
                scores = quick_heldout_scores(model, tokenizer, image_processor, monitor, DEFAULT_INSTRUCTION)
                record["monitor"] = {k: round(scores[k], 3) for k in ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc",
                                                                       "visible_all_acc", "parse_rate", "exact_rate")}
            log(record)
        if step % CHECKPOINT_EVERY == 0 or step == args.steps:
            save_checkpoint(checkpoint, model, optimizer, step, rng.bit_generator.state)
    model.eval()
    save_folder(model, processor, args.out)
    log({"stage": "saved", "folder": args.out, "steps": step, "seconds_this_run": round(time.time() - start, 1)})


def score(folder: str, n: int, log, rate_hz: float | None = None, duration_s: float = 2.0, upscale: int = 1) -> dict:
    from ..encoders.captioner import load_captioner
    from ..synthav.caption_evaluate import CAPTION_RATE_HZ, evaluate_captioner, format_caption_table

    captioner = load_captioner(folder)
    start = time.time()
    results = evaluate_captioner(captioner, n=n, rate_hz=rate_hz or CAPTION_RATE_HZ, duration_s=duration_s, upscale=upscale)
    name = f"{os.path.basename(folder.rstrip(os.sep))}, {n} + {n // 2} videos of {duration_s:g} s, {results['rate_hz']:g} frame/s" + \
           (f", frames enlarged {upscale}x" if upscale > 1 else "")
    print(format_caption_table([(name, results)]))
    log({"stage": "score", "folder": folder, "n": n, "rate_hz": results["rate_hz"], "duration_s": duration_s, "upscale": upscale,
         "seconds": round(time.time() - start, 1),
         **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items() if not k.endswith("captions")}})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.training.synthav_captioner",
                                     description="Train the embedded SynthAV video captioner (a tiny BLIP) and score it.")
    parser.add_argument("--out", default=None, help="the captioner folder to write (a transformers BLIP folder)")
    parser.add_argument("--work", default=os.path.join(PACK_DIR, "runs", "captioner"), help="data, checkpoint and log")
    parser.add_argument("--scenes", type=int, default=10000, help="SynthAV training scenes 0..N-1")
    parser.add_argument("--steps", type=int, default=5500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--monitor", type=int, default=64, help="held-out videos (scenes 10000..) captioned while training")
    parser.add_argument("--monitor-every", type=int, default=500)
    parser.add_argument("--score", type=int, default=0, help="then caption N held-out + N/2 unseen videos and score them")
    parser.add_argument("--score-rate-hz", type=float, default=None, help="frames per second for --score (default: the node's, caption_evaluate.CAPTION_RATE_HZ)")
    parser.add_argument("--score-duration-s", type=float, default=2.0, help="length of the --score videos (16 fps)")
    parser.add_argument("--score-upscale", type=int, default=1, help="enlarge the --score videos' frames this many times (nearest)")
    parser.add_argument("--score-only", default=None, help="score this captioner folder, train nothing")
    args = parser.parse_args(argv)
    if not args.out and not args.score_only:
        parser.error("--out FOLDER is required (or --score-only FOLDER)")
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)

    def log(record: dict) -> None:
        print(f"[synthav-captioner] {json.dumps(record)}", flush=True)
        with open(os.path.join(args.work, "log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    log({"stage": "command", "command": "python -m comfyui_audiovisual.training.synthav_captioner " + " ".join(argv or sys.argv[1:]),
         "threads": args.threads})
    if args.score_only:
        score(args.score_only, args.score or 48, log, args.score_rate_hz, args.score_duration_s, args.score_upscale)
        return 0
    train(args, log)
    if args.score:
        score(args.out, args.score, log, args.score_rate_hz, args.score_duration_s, args.score_upscale)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
