"""Trains the embedded SeeingSounds defaults on SynthAV, with the pack's own code:

  1. ``text``: a tiny T5EncoderModel and a tiny CLIPTextModel, random and frozen (never trained: the
     adapter regresses onto whatever they output), saved as transformers folders with the host's
     own T5 and CLIP tokenizers (the ones ComfyUI's FLUX text encoders use)
  2. ``ast``: a tiny ASTModel (128 mel bins, patch 16, strides 10, a 256-frame window = 2.575 s,
     sized to SynthAV's 2.03 s clips: 302 tokens) trained on SynthAV training scenes as an
     attribute classifier: for each of the 4 onset slots, which timbre, pitch and loudness sounds
     there (or none). The classifier head (12 learned queries attending over the tokens) is thrown
     away; the tokens keep what the sound is. Its input is what the encoder node feeds it: the
     pack's `prepare_waveform` to 16 kHz mono, then the folder's ASTFeatureExtractor.
  3. ``adapter``: `python -m comfyui_audiovisual train adapter --synthav N ...` against those three
     encoders (attention pooling, the shipped adapter), then the same data with `--pooling mean`
     (the paper's ablation); with `--compare-untrained-ast` also on the AST's untrained initial
     weights (same size), to see what the classifier training adds.
  4. ``--install``: the encoder folders and the adapter copied into embedded_models/
     (encoders/synthav_ast, encoders/synthav_t5, encoders/synthav_clip_text,
     adapters/synthav_audio_adapter.safetensors).

`python -m comfyui_audiovisual.training.synthav_seeing_sounds --work runs/seeing_sounds [--install]`.
Each stage is skipped when its output exists (resumable); every stage's command, time and figures
are printed and appended to WORK/pipeline_log.jsonl, which the model cards quote. Plain torch and
transformers; the host is never imported (only its tokenizer files are read).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EMBEDDED = os.path.join(PACK_DIR, "embedded_models")

AST_NAME, T5_NAME, CLIP_TEXT_NAME = "synthav_ast", "synthav_t5", "synthav_clip_text"
ADAPTER_FILE = "synthav_audio_adapter.safetensors"

AST_SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "max_length": 256}
T5_SIZES = {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2}
CLIP_TEXT_SIZES = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
ADAPTER_ARGS = {"text_tokens": 32, "hidden_dim": 64, "heads": 4, "steps": 1200, "batch_size": 32, "lr": 3e-3}

SLOTS = 4  # SynthAV onset slots (image columns)
ATTRIBUTES = (("timbre", 4), ("pitch", 8), ("loudness", 3))  # classes; one more means "nothing in this slot"


def _log(work: str, record: dict) -> None:
    print(f"[seeing-sounds] {json.dumps(record)}", flush=True)
    with open(os.path.join(work, "pipeline_log.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _host_dir(host_dir: str | None) -> str:
    if host_dir:
        return host_dir
    from ..runner.host_location import find_host_dir

    return find_host_dir()


# ---------------------------------------------------------------------------------------------
# 1. frozen random text encoders with the host's tokenizers


def write_t5(folder: str, host_dir: str | None = None, seed: int = 0) -> str:
    """T5EncoderModel at T5_SIZES with the host's T5 tokenizer (ComfyUI's FLUX/SD3 T5 tokenizer)."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(_host_dir(host_dir), "comfy", "text_encoders", "t5_tokenizer"))
    torch.manual_seed(seed)
    config = T5Config(vocab_size=32128, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      decoder_start_token_id=0, **T5_SIZES)
    T5EncoderModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_clip_text(folder: str, host_dir: str | None = None, seed: int = 0) -> str:
    """CLIPTextModel at CLIP_TEXT_SIZES with the host's CLIP tokenizer (openai/clip-vit-large-patch14's),
    kept as its slow files vocab.json + merges.txt only (the 3.5 MB tokenizer.json is rebuilt from them)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    source = os.path.join(_host_dir(host_dir), "comfy", "sd1_tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(source)
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, projection_dim=CLIP_TEXT_SIZES["hidden_size"],
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, **CLIP_TEXT_SIZES)
    CLIPTextModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(source, name), os.path.join(folder, name))
    full = os.path.join(folder, "tokenizer.json")
    if os.path.exists(full):
        os.remove(full)
    probe = ["a loud sine tone at C4, early, and a soft square tone at G4, very late"]
    if CLIPTokenizer.from_pretrained(folder)(probe)["input_ids"] != tokenizer(probe)["input_ids"]:
        raise RuntimeError(f"{folder}: the CLIP tokenizer rebuilt from vocab.json + merges.txt tokenizes differently")
    return folder


# ---------------------------------------------------------------------------------------------
# 2. the AST, trained as a SynthAV attribute classifier


def build_ast(seed: int = 0):
    """(ASTModel, ASTFeatureExtractor) at AST_SIZES with the published input geometry but a 256-frame window."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(seed)
    sizes = dict(AST_SIZES)
    config = ASTConfig(patch_size=16, frequency_stride=10, time_stride=10, num_mel_bins=128, **sizes)
    return ASTModel(config), ASTFeatureExtractor(max_length=sizes["max_length"])


def ast_inputs(waveforms: Sequence[np.ndarray], sample_rate: int, feature_extractor) -> torch.Tensor:
    """What the encoder node feeds the AST for clips that fit one window: prepare_waveform to the
    extractor's rate, mono, then the extractor (fbank, pad/crop, normalisation). [N, frames, mels], float16."""
    from ..audio.prepare import prepare_waveform

    rate = int(feature_extractor.sampling_rate)
    out = []
    for start in range(0, len(waveforms), 64):
        chunk = [prepare_waveform(torch.as_tensor(w, dtype=torch.float32).reshape(1, 1, -1), sample_rate, rate, what="audio",
                                  allow_silent=False)[0].numpy().astype(np.float32) for w in waveforms[start:start + 64]]
        out.append(feature_extractor(chunk, sampling_rate=rate, return_tensors="pt")["input_values"].to(torch.float16))
    return torch.cat(out)


def scene_labels(scenes) -> torch.Tensor:
    """[N, SLOTS, 3] class indices: per onset slot (timbre, pitch, loudness) of the object there, or
    the extra "nothing" class of each attribute."""
    labels = torch.tensor([n for _, n in ATTRIBUTES]).repeat(len(scenes), SLOTS, 1)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            labels[i, obj.column] = torch.tensor([obj.timbre, obj.pitch, obj.loudness])
    return labels


class AttributeHead(nn.Module):
    """12 learned queries (slot x attribute) attend over the AST tokens; one linear classifier each."""

    def __init__(self, width: int, heads: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(SLOTS * len(ATTRIBUTES), width) * 0.02)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.classifiers = nn.ModuleList(nn.Linear(width, n + 1) for _ in range(SLOTS) for _, n in ATTRIBUTES)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        pooled, _ = self.attention(queries, tokens, tokens, need_weights=False)
        pooled = self.norm(pooled + queries)
        return [classifier(pooled[:, i]) for i, classifier in enumerate(self.classifiers)]


def _logits_loss(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    flat = labels.reshape(labels.shape[0], -1)
    return sum(nn.functional.cross_entropy(l, flat[:, i]) for i, l in enumerate(logits)) / len(logits)


@torch.no_grad()
def attribute_accuracy(model, head, inputs: torch.Tensor, labels: torch.Tensor, batch: int = 32) -> dict:
    """Accuracy per attribute over the slots that hold an object, and of the slot's occupancy."""
    model.eval(), head.eval()
    predictions = []
    for start in range(0, len(inputs), batch):
        tokens = model(input_values=inputs[start:start + batch].float()).last_hidden_state
        predictions.append(torch.stack([l.argmax(-1) for l in head(tokens)], dim=1))
    predicted = torch.cat(predictions).reshape(labels.shape)
    occupied = labels[..., 0] < ATTRIBUTES[0][1]
    result = {name: float((predicted[..., a] == labels[..., a])[occupied].float().mean()) for a, (name, _) in enumerate(ATTRIBUTES)}
    result["occupancy"] = float(((predicted[..., 0] < ATTRIBUTES[0][1]) == occupied).float().mean())
    result["all_correct_scenes"] = float((predicted == labels).reshape(len(labels), -1).all(dim=1).float().mean())
    return result


def train_ast_classifier(model, head, inputs: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int = 16, lr: float = 2e-3,
                         seed: int = 0, log: Callable[[str], None] = print, log_every: int = 50) -> list:
    """AdamW, linear warm-up over 5 % of the steps then cosine decay; returns [(step, loss)]."""
    params = list(model.parameters()) + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps))))
    generator = torch.Generator().manual_seed(seed)
    history, started = [], time.perf_counter()
    model.train(), head.train()
    for step in range(1, steps + 1):
        indices = torch.randint(0, len(inputs), (batch_size,), generator=generator)
        loss = _logits_loss(head(model(input_values=inputs[indices].float()).last_hidden_state), labels[indices])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            history.append((step, round(float(loss.detach()), 4)))
            log(f"ast: step {step}/{steps} loss {float(loss.detach()):.4f} ({step / (time.perf_counter() - started):.2f} steps/s)")
    model.eval(), head.eval()
    return history


def _render(split: str, count: int):
    from ..synthav.split import split_scene
    from ..synthav.world import SAMPLE_RATE, render_audio

    scenes = [split_scene(split, i) for i in range(count)]
    return scenes, [render_audio(s) for s in scenes], SAMPLE_RATE


def stage_ast(work: str, scenes: int, steps: int, eval_scenes: int, seed: int) -> tuple[str, str]:
    """Trains the AST classifier; writes WORK/encoders/synthav_ast (trained) and
    WORK/encoders_random/synthav_ast (the same initial weights, untrained, for the comparison)."""
    trained = os.path.join(work, "encoders", AST_NAME)
    untrained = os.path.join(work, "encoders_random", AST_NAME)
    if os.path.isfile(os.path.join(trained, "model.safetensors")):
        return trained, untrained
    started = time.time()
    model, extractor = build_ast(seed)
    model.save_pretrained(untrained)
    extractor.save_pretrained(untrained)
    train_scenes, train_audio, rate = _render("train", scenes)
    held_scenes, held_audio, _ = _render("heldout", eval_scenes)
    x_train, x_held = ast_inputs(train_audio, rate, extractor), ast_inputs(held_audio, rate, extractor)
    y_train, y_held = scene_labels(train_scenes), scene_labels(held_scenes)
    data_s = time.time() - started
    torch.manual_seed(seed + 1)
    head = AttributeHead(AST_SIZES["hidden_size"])
    chance = attribute_accuracy(model, head, x_held, y_held)
    t0 = time.time()
    history = train_ast_classifier(model, head, x_train, y_train, steps, seed=seed)
    train_s = time.time() - t0
    accuracy = attribute_accuracy(model, head, x_held, y_held)
    train_accuracy = attribute_accuracy(model, head, x_train[:eval_scenes], y_train[:eval_scenes])
    model.save_pretrained(trained)
    extractor.save_pretrained(trained)
    _log(work, {"stage": "ast", "command": f"stage_ast(work={work!r}, scenes={scenes}, steps={steps}, eval_scenes={eval_scenes}, seed={seed})",
                "sizes": AST_SIZES, "parameters": sum(p.numel() for p in model.parameters()), "batch_size": 16, "lr": 2e-3,
                "data_seconds": round(data_s, 1), "train_seconds": round(train_s, 1), "loss_history": history,
                "heldout_accuracy_before": chance, "heldout_accuracy": accuracy, "train_accuracy": train_accuracy,
                "torch_threads": torch.get_num_threads()})
    return trained, untrained


# ---------------------------------------------------------------------------------------------
# 3. adapters (the shipped one, the mean-pooling ablation, the untrained-AST comparison)


def adapter_argv(ast: str, t5: str, clip_text: str, out: str, scenes: int, heldout: int, pooling: str = "attention",
                 features_cache: str | None = None, seed: int = 0, steps: int | None = None) -> list[str]:
    a = dict(ADAPTER_ARGS, steps=steps or ADAPTER_ARGS["steps"])
    argv = ["--audio-encoder", ast, "--t5", t5, "--clip-text", clip_text, "--synthav", str(scenes), "--heldout", str(heldout),
            "--out", out, "--text-tokens", str(a["text_tokens"]), "--hidden-dim", str(a["hidden_dim"]), "--heads", str(a["heads"]),
            "--pooling", pooling, "--steps", str(a["steps"]), "--batch-size", str(a["batch_size"]), "--lr-text", str(a["lr"]),
            "--lr-pooled", str(a["lr"]), "--log-every", "250", "--seed", str(seed), "--device", "cpu"]
    if features_cache:
        argv += ["--features-cache", features_cache]
    return argv


def stage_adapter(work: str, name: str, argv: list[str]) -> dict:
    """Runs `train adapter` in this process (the CLI's own main) and logs its command and figures."""
    from ..loaders.audio_adapter import read_adapter_metadata
    from . import audio_adapter

    out = argv[argv.index("--out") + 1]
    if not os.path.isfile(out):
        command = "python -m comfyui_audiovisual train adapter " + " ".join(shlex.quote(a) for a in argv)
        print(f"[seeing-sounds] {name}: {command}", flush=True)
        started = time.time()
        code = audio_adapter.main(argv)
        if code:
            raise SystemExit(f"{name} failed with exit code {code}")
        meta = read_adapter_metadata(out)
        record = {"stage": name, "command": command, "seconds": round(time.time() - started, 1)}
        record.update({k: json.loads(meta[k]) for k in ("heldout_mse_before", "heldout_mse_after", "heldout_mse_of_the_mean_target", "train_mse")})
        _log(work, record)
    meta = read_adapter_metadata(out)
    return {k: json.loads(meta[k]) for k in ("heldout_mse_after", "heldout_mse_of_the_mean_target")}


def install(work: str, target: str = EMBEDDED) -> list[str]:
    """Copies the encoder folders and the adapter into `target` (temporary name, then rename)."""
    written = []
    for name in (AST_NAME, T5_NAME, CLIP_TEXT_NAME):
        source, destination = os.path.join(work, "encoders", name), os.path.join(target, "encoders", name)
        partial = destination + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        shutil.rmtree(destination, ignore_errors=True)
        os.replace(partial, destination)
        written.append(destination)
    os.makedirs(os.path.join(target, "adapters"), exist_ok=True)
    destination = os.path.join(target, "adapters", ADAPTER_FILE)
    shutil.copyfile(os.path.join(work, ADAPTER_FILE), destination + ".partial")
    os.replace(destination + ".partial", destination)
    written.append(destination)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.training.synthav_seeing_sounds", description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/seeing_sounds", help="working folder (resumable)")
    parser.add_argument("--ast-scenes", type=int, default=2000, help="SynthAV training scenes for the AST classifier")
    parser.add_argument("--ast-steps", type=int, default=600)
    parser.add_argument("--adapter-scenes", type=int, default=2000, help="train adapter --synthav N")
    parser.add_argument("--adapter-steps", type=int, default=ADAPTER_ARGS["steps"])
    parser.add_argument("--heldout", type=int, default=128, help="SynthAV held-out scenes for every evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--host-dir", default=None, help="ComfyUI folder whose tokenizers are copied (default: the installed host)")
    parser.add_argument("--skip-comparisons", action="store_true", help="only the shipped adapter (no mean-pooling run)")
    parser.add_argument("--compare-untrained-ast", action="store_true",
                        help="also train an adapter on the AST's initial (untrained) weights, for comparison")
    parser.add_argument("--install", action="store_true", help="copy the results into embedded_models/")
    options = parser.parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    work = os.path.abspath(options.work)
    os.makedirs(work, exist_ok=True)
    _log(work, {"stage": "start", "argv": list(argv if argv is not None else sys.argv[1:]), "torch": torch.__version__,
                "machine": platform.machine(), "cpus": os.cpu_count(), "threads": torch.get_num_threads()})
    encoders = os.path.join(work, "encoders")
    t5, clip_text = os.path.join(encoders, T5_NAME), os.path.join(encoders, CLIP_TEXT_NAME)
    if not os.path.isfile(os.path.join(t5, "model.safetensors")):
        write_t5(t5, options.host_dir, options.seed)
    if not os.path.isfile(os.path.join(clip_text, "model.safetensors")):
        write_clip_text(clip_text, options.host_dir, options.seed)
    ast, random_ast = stage_ast(work, options.ast_scenes, options.ast_steps, options.heldout, options.seed)
    cache = os.path.join(work, "adapter_features.safetensors")
    n, held = options.adapter_scenes, options.heldout
    results = {"attention": stage_adapter(work, "adapter", adapter_argv(ast, t5, clip_text, os.path.join(work, ADAPTER_FILE), n, held,
                                                                       features_cache=cache, seed=options.seed, steps=options.adapter_steps))}
    if not options.skip_comparisons:
        results["mean"] = stage_adapter(work, "adapter_mean_pooling", adapter_argv(ast, t5, clip_text, os.path.join(work, "mean_pooling.safetensors"),
                                                                                 n, held, "mean", cache, options.seed, options.adapter_steps))
    if options.compare_untrained_ast:
        results["untrained_ast"] = stage_adapter(work, "adapter_untrained_ast", adapter_argv(
            random_ast, t5, clip_text, os.path.join(work, "untrained_ast.safetensors"), n, held,
            features_cache=os.path.join(work, "adapter_features_untrained_ast.safetensors"), seed=options.seed, steps=options.adapter_steps))
    for name, figures in results.items():
        print(f"[seeing-sounds] {name}: held-out MSE {figures['heldout_mse_after']['total']:.4f} "
              f"(answering the mean target: {figures['heldout_mse_of_the_mean_target']['total']:.4f})", flush=True)
    if options.install:
        for path in install(work):
            print(f"[seeing-sounds] installed {path}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
