"""`python -m comfyui_audiovisual evaluate --task image2audio|audio2image [--method visual_echoes,v2a] [--n N] [--cfg S] [--steps T] [--json FILE]`

Generates for N held-out SynthAV scenes with the same plain code the nodes call on the embedded
default models (or `--models DIR`), scores with the independent analysers after checking them on
the ground truth, prints a table and optionally writes JSON.

Methods (a comma-separated list runs each on the same scenes and prints one table):
  visual_echoes  image tokens -> the masked AV transformer -> spectrogram tokens (tokenizers, Visual
                 Echoes sampler, Griffin-Lim); both tasks.
  v2a            V2A-Mapper, image2audio only: the picture through the small CLIP, the mapper
                 (`--mapper regression|diffusion`) into the small CLAP's space, the spectrogram-token
                 generator conditioned on that embedding, the spectrogram VQ and Griffin-Lim
                 (encoders/, loaders/mapper.py, samplers/embedding_to_audio.py).
`--cfg`, `--steps`, `--temperature` default to each method's own defaults.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from ..samplers.visual_echoes import TEMPERATURE

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def load_default_models(models_dir: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    from ..loaders.masked_transformer import load_masked_transformer
    from ..loaders.vq_checkpoints import load_vq_model
    from ..vq.tokenizer import VQTokenizer

    image_tok = VQTokenizer(load_vq_model(os.path.join(models_dir, "vq", "synthav_image_vq.safetensors"))[0].to(device), "image")
    spec_tok = VQTokenizer(load_vq_model(os.path.join(models_dir, "vq", "synthav_spec_vq.safetensors"))[0].to(device), "audio")
    model = load_masked_transformer(os.path.join(models_dir, "maskgen", "synthav_maskgen.safetensors")).to(device, dtype)
    return image_tok, spec_tok, model


def make_generate_fn(task: str, models, steps: int, cfg: float, temperature: float, device: str = "cpu"):
    """generate(inputs, seed) for `evaluate`; `models` = load_default_models(...)."""
    from ..audio.mel_frontend import waveform_to_mel
    from ..loaders.vocoders import load_vocoder
    from ..samplers.visual_echoes import (audio_grid_to_sequence, audio_sequence_to_grid, image_grid_to_sequence,
                                          image_sequence_to_grid, visual_echoes_sample)

    image_tok, spec_tok, model = models
    vocoder = load_vocoder("griffin-lim")
    image_grid = None

    def generate(inputs, seed=0):
        nonlocal image_grid
        generator = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode():
            if task == "image2audio":
                grid = image_tok.encode_image(torch.as_tensor(np.asarray(inputs), dtype=torch.float32))
                audio, _ = visual_echoes_sample(model, "image_to_audio", image_tokens=image_grid_to_sequence(grid), steps=steps,
                                                cfg=cfg, temperature=temperature, generator=generator)
                rows = spec_tok.grid_shape(80, 176)[0]
                mel = spec_tok.decode_mel(audio_sequence_to_grid(audio, rows))
                return vocoder(mel.clamp(0, 1)).numpy()
            mel = waveform_to_mel(torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device))
            grid = spec_tok.encode_mel(mel, mode="pad")
            _, image = visual_echoes_sample(model, "audio_to_image", audio_tokens=audio_grid_to_sequence(grid), steps=steps,
                                            cfg=cfg, temperature=temperature, generator=generator)
            side = int(round(image.shape[1] ** 0.5))
            return image_tok.decode_image(image_sequence_to_grid(image, side, side)).numpy()

    return generate


METHODS = ("visual_echoes", "v2a")
METHOD_DEFAULTS = {"visual_echoes": {"cfg": "3", "steps": "30", "temperature": TEMPERATURE},
                   "v2a": {"cfg": "3", "steps": "16", "temperature": 4.5}}
V2A_FILES = {"clip": ("encoders", "synthav_clip"), "regression": ("mappers", "synthav_clip_to_clap.safetensors"),
             "diffusion": ("mappers", "synthav_clip_to_clap_diffusion.safetensors"),
             "generator": ("vatt", "synthav_clap_to_spec_tokens.safetensors"),
             "spec_vq": ("vq", "synthav_spec_vq512.safetensors")}  # the generator's token space (512 codes)


def load_v2a_models(models_dir: str, mapper_kind: str = "regression", device: str = "cpu"):
    """(clip encoder, mapper, generator, spectrogram tokenizer) of the embedded V2A defaults."""
    from ..encoders.pretrained import load_encoder
    from ..loaders.mapper import load_mapper
    from ..loaders.vatt_checkpoints import load_vatt_decoder
    from ..loaders.vq_checkpoints import load_vq_model
    from ..vq.tokenizer import VQTokenizer

    clip = load_encoder(os.path.join(models_dir, *V2A_FILES["clip"]))
    clip.module.to(device)
    mapper = load_mapper(os.path.join(models_dir, *V2A_FILES[mapper_kind]), device=device)
    generator = load_vatt_decoder(os.path.join(models_dir, *V2A_FILES["generator"]), device=device)
    spec_tok = VQTokenizer(load_vq_model(os.path.join(models_dir, *V2A_FILES["spec_vq"]))[0].to(device), "audio")
    return clip, mapper, generator, spec_tok


def make_v2a_generate_fn(models, steps: int, cfg: float, temperature: float, mapper_steps: int = 25):
    """generate(images, seed) for `evaluate` (image2audio): CLIP -> mapper -> generator -> spectrogram VQ -> Griffin-Lim."""
    from ..loaders.vocoders import load_vocoder
    from ..samplers.embedding_to_audio import embedding_to_audio_grid
    from ..synthav.world import MEL_FRAMES

    clip, mapper, generator, spec_tok = models
    vocoder = load_vocoder("griffin-lim")
    rows, columns = spec_tok.grid_shape(80, MEL_FRAMES)
    device = generator.device

    def generate(inputs, seed=0):
        rng = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode():
            images = clip.encode_images(torch.as_tensor(np.asarray(inputs), dtype=torch.float32)).vectors
            mapped = mapper.map(images.to(device), steps=mapper_steps, generator=rng)
            grid = embedding_to_audio_grid(generator, mapped.float(), rows, columns, steps=steps, cfg=cfg,
                                           temperature=temperature, generator=rng)
            mel = spec_tok.decode_mel(grid)
            return vocoder(mel.clamp(0, 1)).numpy()

    return generate


CONDITIONS = ("real", "blank", "shuffled")


def with_condition(generate, condition: str):
    """`generate` fed an ablated condition: "real" (the scene's own input), "blank" (a black picture
    or silence: the condition removed) or "shuffled" (another held-out scene's input: the wrong-scene
    control; rolled by one inside the batch, or the previous batch's first input for a batch of one).
    Scores stay against the true scenes, so an ablation that still scores above chance shows that
    the attribute does not come from the condition."""
    if condition not in CONDITIONS:
        raise ValueError(f"evaluate: condition must be one of {CONDITIONS}, got {condition!r}")
    if condition == "real":
        return generate
    previous = []

    def ablated(inputs, seed=0):
        inputs = np.asarray(inputs)
        if condition == "blank":
            fed = np.zeros_like(inputs)
        elif len(inputs) > 1:
            fed = np.roll(inputs, 1, axis=0)
        else:
            fed = previous[-1][None] if previous else np.zeros_like(inputs)
        previous[:] = [inputs[0]]
        return generate(fed, seed=seed)

    return ablated


def _pairs_main(args) -> int:
    """`evaluate --task co_generation | inpaint_audio` (Visual Echoes at its defaults unless given)."""
    from .evaluate_pairs import evaluate_cogeneration, evaluate_inpainting

    defaults = METHOD_DEFAULTS["visual_echoes"]
    cfg, steps = float(args.cfg or defaults["cfg"]), int(args.steps or defaults["steps"])
    temperature = defaults["temperature"] if args.temperature is None else args.temperature
    models = load_default_models(args.models, args.device)
    start = time.time()
    run = evaluate_cogeneration if args.task == "co_generation" else evaluate_inpainting
    result = run(models, n=args.n, steps=steps, cfg=cfg, temperature=temperature, seed=args.seed, batch_size=args.batch_size)
    result.update({"cfg": cfg, "steps": steps, "temperature": temperature, "seconds": round(time.time() - start, 1)})
    print(json.dumps(result, indent=1, default=float))
    if args.json:
        with open(args.json + ".partial", "w") as handle:
            json.dump(result, handle, indent=1, default=float)
        os.replace(args.json + ".partial", args.json)
    return 0


def _task_of(argv) -> str | None:
    for i, a in enumerate(argv):
        if a == "--task" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--task="):
            return a.split("=", 1)[1]
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _task_of(argv) == "video2audio":  # VATT on SynthAV videos (onset sync, caption control): evaluate_vatt.py
        from .evaluate_vatt import main as video2audio_main

        return video2audio_main(argv)
    from .evaluate import evaluate, format_table

    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual evaluate")
    parser.add_argument("--task", choices=("image2audio", "audio2image", "co_generation", "inpaint_audio"), required=True,
                        help="co_generation / inpaint_audio: Visual Echoes pairs, scored by synthav/evaluate_pairs.py")
    parser.add_argument("--method", default="visual_echoes",
                        help=f"one of {', '.join(METHODS)}, or a comma-separated list (one table, the same scenes)")
    parser.add_argument("--mapper", choices=("regression", "diffusion"), default="regression", help="v2a: which embedded mapper")
    parser.add_argument("--n", type=int, default=64, help="held-out scenes (and n/2 unseen-combination scenes)")
    parser.add_argument("--cfg", default=None, help="guidance scale; a comma-separated list runs each (a grid with --steps); "
                                                     "default: the method's (3)")
    parser.add_argument("--steps", default=None, help="sampler steps; a comma-separated list runs each; default: the method's (30 / 16)")
    parser.add_argument("--temperature", type=float, default=None, help="confidence noise; default: the method's (2 / 4.5)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=os.path.join(PACK_DIR, "embedded_models"), help="folder with vq/ and maskgen/ (default: the embedded SynthAV models)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="the transformer's precision (the nodes use fp16 on a GPU)")
    parser.add_argument("--device", default="cpu", help="where the models run: cpu | cuda (the scores do not depend on it beyond float rounding)")
    parser.add_argument("--condition", default="real",
                        help="real | blank | shuffled, or a comma-separated list: ablations of the input (blank: black picture / "
                             "silence; shuffled: another scene's input, the wrong-scene control); ablations skip the unseen "
                             "scenes and the diversity figure")
    args = parser.parse_args(argv)
    conditions = [c.strip() for c in args.condition.split(",") if c.strip()]
    if not conditions or any(c not in CONDITIONS for c in conditions):
        parser.error(f"--condition takes {', '.join(CONDITIONS)} or a comma-separated list of them, got {args.condition!r}")
    if args.task in ("co_generation", "inpaint_audio"):
        return _pairs_main(args)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        parser.error(f"--method takes {', '.join(METHODS)} or a comma-separated list of them, got {args.method!r}")
    if "v2a" in methods and args.task != "image2audio":
        parser.error("--method v2a generates audio from a picture: use --task image2audio")
    grids = {}
    for method in methods:
        defaults = METHOD_DEFAULTS[method]
        try:
            cfgs = [float(v) for v in (args.cfg or defaults["cfg"]).split(",")]
            step_counts = [int(v) for v in (args.steps or defaults["steps"]).split(",")]
        except ValueError:
            parser.error(f"--cfg and --steps take numbers or comma-separated lists, got {args.cfg!r} and {args.steps!r}")
        if any(c < 0 for c in cfgs) or any(t < 1 for t in step_counts) or args.n < 1:
            parser.error("--cfg must be >= 0, --steps and --n >= 1")
        grids[method] = (cfgs, step_counts, defaults["temperature"] if args.temperature is None else args.temperature)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    runs = []
    for method in methods:
        cfgs, step_counts, temperature = grids[method]
        if method == "v2a":
            models = load_v2a_models(args.models, args.mapper, args.device)
        else:
            models = load_default_models(args.models, args.device, dtype)
        for cfg, steps, condition in ((c, t, k) for c in cfgs for t in step_counts for k in conditions):
            start = time.time()
            if method == "v2a":
                generate = make_v2a_generate_fn(models, steps, cfg, temperature)
            else:
                generate = make_generate_fn(args.task, models, steps, cfg, temperature, args.device)
            ablation = condition != "real"
            results = evaluate(args.task, with_condition(generate, condition), n=args.n, batch_size=args.batch_size,
                               seed=args.seed, **({"n_unseen": 0, "diversity_n": 0} if ablation else {}))
            results.update({"cfg": cfg, "steps": steps, "temperature": temperature, "method": method, "condition": condition,
                            "device": args.device, "dtype": args.dtype, "seconds": round(time.time() - start, 1)})
            if method == "v2a":
                results["mapper"] = args.mapper
            runs.append(results)
            print(f"{method} cfg {cfg:g}, steps {steps}, condition {condition}: done in {results['seconds']} s",
                  file=sys.stderr, flush=True)
    if len(runs) == 1:
        print(format_table(runs[0]))
    else:
        def name(r):
            label = "Visual Echoes" if r["method"] == "visual_echoes" else f"V2A-Mapper ({r['mapper']})"
            ablation = "" if r["condition"] == "real" else f", {r['condition']} condition"
            return f"{args.task} {label} cfg {r['cfg']:g}, {r['steps']} steps{ablation}"
        print(format_table([(name(r), r) for r in runs]))
    if args.json:
        tmp = args.json + ".partial"
        with open(tmp, "w") as f:
            json.dump(runs[0] if len(runs) == 1 else runs, f, indent=1, default=float)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
