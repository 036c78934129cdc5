"""`python -m comfyui_audiovisual evaluate --task video2audio --method vatt [--text none,caption,other_pitch]`

VATT on SynthAV videos through the plain code the nodes call: frames sampled at 5 per second
(``encoders.video_frames.sample_frames``), the embedded small CLIP (``encode_images``), the decoder
(``samplers.vatt.vatt_generate``: windows of its training clip length, pooled tokens, iterative
unmasking with classifier-free guidance), the embedded EnCodec (``decode``), resampled to 22050 Hz
for the analysers; captions through the text encoder the decoder was trained with
(``encode_text``). Scoring: ``synthav.video_evaluate``. ``--text captioner`` captions each video with a
video captioner folder (default: the embedded ``captioners/synthav_captioner``) through
``Captioner.caption`` at Caption Video's defaults (``synthav.caption_evaluate.caption_video``) and
also scores those captions against the scenes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import numpy as np
import torch

from ..workflows.graphs import VATT_SYNTHAV_SAMPLER

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
VATT_FILES = {"decoder": ("vatt", "synthav_vatt.safetensors"), "codec": ("codecs", "synthav_encodec_16khz"),
              "encoders": ("encoders",)}
# the shipped SynthAV VATT templates' sampling (cfg 3 and confidence noise 4.5 instead of the official
# release's 5 and 25.5, which cost the small default onsets, timbre and note counts; grid in
# benchmarks/results/synthav_quality.md)
VATT_DEFAULTS = {k: VATT_SYNTHAV_SAMPLER[k] for k in ("cfg", "steps", "temperature", "top_k")}


def load_vatt_models(models_dir: str, decoder_file: str | None = None, device: str = "cpu"):
    """(image encoder, text encoder or None, decoder, codec): the decoder, the codec it names and
    the encoders of the spaces it was trained in, all from ``models_dir`` (embedded_models layout)."""
    from ..audio.codec_tokenizer import load_codec
    from ..encoders.pretrained import load_encoder
    from ..loaders.vatt_checkpoints import load_vatt_decoder

    decoder = load_vatt_decoder(decoder_file or os.path.join(models_dir, *VATT_FILES["decoder"]), device=device)
    config = decoder.config
    codec = load_codec(os.path.join(models_dir, "codecs", config.codec), device=device)
    encoder = load_encoder(os.path.join(models_dir, *VATT_FILES["encoders"], config.video_model))
    encoder.module.to(device)
    text_encoder = None
    if config.text_dim:
        text_encoder = load_encoder(os.path.join(models_dir, *VATT_FILES["encoders"], config.text_model))
        text_encoder.module.to(device)
    decoder.set_codebooks(codec.codebook_latents(config.num_codebooks))
    return encoder, text_encoder, decoder, codec


def text_states(text_encoder, captions, text_tokens: int = 0) -> torch.Tensor:
    """Captions -> the decoder's text condition [B, L, D] (a pooled vector is a sequence of one; T5
    states padded to the decoder's ``text_tokens``, as Encode Text's t5_tokens)."""
    length = text_tokens if text_encoder.family == "t5" and text_tokens else None
    vectors = text_encoder.encode_text(list(captions), sequence_length=length).vectors.float()
    return vectors if vectors.dim() == 3 else vectors.unsqueeze(1)


def make_vatt_generate_fn(models, steps: int, cfg: float, temperature: float, top_k: int | None,
                          rate_hz: float | None = None, tokens: int | None = None):
    """generate(frames, fps, captions, seed) for ``evaluate_video2audio``."""
    from ..audio.prepare import prepare_waveform
    from ..encoders.video_frames import sample_frames
    from ..samplers.vatt import vatt_generate
    from .world import SAMPLE_RATE

    encoder, text_encoder, decoder, codec = models
    rate_hz = rate_hz or decoder.config.video_rate_hz
    tokens = tokens or decoder.config.video_tokens

    def generate(frames_list, fps, captions, seed):
        if captions is not None and text_encoder is None:
            raise ValueError("video2audio: captions given, but the decoder was trained without text")
        waves = []
        with torch.inference_mode():
            texts = text_states(text_encoder, captions, decoder.config.text_tokens) if captions is not None else None
            for b, frames in enumerate(frames_list):
                sampled, _ = sample_frames(torch.from_numpy(np.asarray(frames, dtype=np.float32)), fps, rate_hz)
                per_frame = encoder.encode_images(sampled).vectors.float()
                num_samples = codec.samples_for_duration(len(frames) / fps)
                generator = torch.Generator(device=decoder.device).manual_seed(int(seed) + b)
                codes = vatt_generate(decoder, per_frame.to(decoder.device), rate_hz, codec.frames_for_samples(num_samples),
                                      tokens=tokens, text=None if texts is None else texts[b:b + 1].to(decoder.device),
                                      steps=steps, cfg=cfg, top_k=top_k, temperature=temperature, generator=generator)
                wave = codec.decode(codec.tokens_for(codes.cpu(), num_samples))
                waves.append(prepare_waveform(wave, codec.sample_rate_hz, SAMPLE_RATE)[0].numpy())
        return waves

    return generate


def main(argv=None) -> int:
    from .video_evaluate import APPEAR_MODES, TEXT_MODES, evaluate_video2audio, format_video_table

    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual evaluate --task video2audio --method vatt")
    parser.add_argument("--task", choices=("video2audio",), default="video2audio")
    parser.add_argument("--method", choices=("vatt",), default="vatt")
    parser.add_argument("--n", type=int, default=64, help="held-out videos (and n/2 unseen-combination videos)")
    parser.add_argument("--text", default="none", help=f"comma-separated list of {', '.join(TEXT_MODES)} (one row each)")
    parser.add_argument("--appear", default="columns", help=f"comma-separated list of {', '.join(APPEAR_MODES)}")
    parser.add_argument("--pitch-shift", type=int, default=3, help="other_pitch: scale steps the caption's notes move")
    parser.add_argument("--fps", type=float, default=16.0)
    parser.add_argument("--duration-s", type=float, default=2.0)
    parser.add_argument("--cfg", type=float, default=VATT_DEFAULTS["cfg"])
    parser.add_argument("--steps", type=int, default=VATT_DEFAULTS["steps"])
    parser.add_argument("--temperature", type=float, default=VATT_DEFAULTS["temperature"])
    parser.add_argument("--top-k", type=int, default=VATT_DEFAULTS["top_k"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=os.path.join(PACK_DIR, "embedded_models"))
    parser.add_argument("--decoder", default=None, help="another decoder file (default: the embedded one)")
    parser.add_argument("--reinit", action="store_true", help="re-initialise the decoder's weights (a control: an untrained decoder)")
    parser.add_argument("--captioner", default=None,
                        help="--text captioner: the captioner folder (default: MODELS/captioners/synthav_captioner)")
    parser.add_argument("--caption-rate-hz", type=float, default=None,
                        help="--text captioner: frames per second shown to the captioner (default: Caption Video's, 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    texts = [t.strip() for t in args.text.split(",") if t.strip()]
    appears = [a.strip() for a in args.appear.split(",") if a.strip()]
    if not texts or any(t not in TEXT_MODES for t in texts) or not appears or any(a not in APPEAR_MODES for a in appears):
        parser.error(f"--text takes {', '.join(TEXT_MODES)}; --appear takes {', '.join(APPEAR_MODES)}")
    models = load_vatt_models(args.models, args.decoder, args.device)
    if args.reinit:
        from ..networks.vatt_decoder import VATTDecoder

        decoder = models[2]
        fresh = VATTDecoder(decoder.config).to(decoder.device)
        fresh.set_codebooks(decoder.codebook_latents)
        models = (models[0], models[1], fresh.eval(), models[3])
    if "none" not in texts and models[1] is None:
        parser.error("the decoder was trained without text: use --text none")
    generate = make_vatt_generate_fn(models, args.steps, args.cfg, args.temperature, args.top_k or None)
    caption_fn, caption_name, rate_hz = None, "", None
    if "captioner" in texts:
        from ..encoders.captioner import load_captioner
        from .caption_evaluate import CAPTION_RATE_HZ, caption_video

        captioner = load_captioner(args.captioner or os.path.join(args.models, "captioners", "synthav_captioner"))
        rate_hz = args.caption_rate_hz or CAPTION_RATE_HZ
        caption_fn = functools.partial(caption_video, captioner, rate_hz=rate_hz)  # (frames, fps) -> caption
        caption_name = f" ({captioner.name}, {rate_hz:g} frame/s)"
    runs = []
    for appear in appears:
        for text in texts:
            if text != "none" and models[1] is None:
                continue
            start = time.time()
            results = evaluate_video2audio(generate, n=args.n, fps=args.fps, duration_s=args.duration_s, text=text,
                                           pitch_shift=args.pitch_shift, appear=appear, seed=args.seed, caption_fn=caption_fn,
                                           caption_rate_hz=rate_hz)
            results.update({"method": "vatt", "cfg": args.cfg, "steps": args.steps, "temperature": args.temperature,
                            "top_k": args.top_k, "reinit": args.reinit, "seconds": round(time.time() - start, 1)})
            name = f"video2audio VATT{' (re-initialised)' if args.reinit else ''}, text {text}" + \
                   (f" (+{args.pitch_shift} steps)" if text == "other_pitch" else "") + \
                   (caption_name if text == "captioner" else "") + {"shuffled": ", appearance shuffled", "blank": ", blank video"}.get(appear, "")
            runs.append((name, results))
            print(f"{name}: done in {results['seconds']} s", file=sys.stderr, flush=True)
            if text == "captioner":
                print("captions: " + ", ".join(f"{k} {v:.3f}" for k, v in results["caption_scores"].items()
                                                if k.endswith(("_acc", "_rate"))), file=sys.stderr, flush=True)
    print(format_video_table(runs))
    if args.json:
        tmp = args.json + ".partial"
        with open(tmp, "w") as f:
            json.dump([{"name": n, **r} for n, r in runs], f, indent=1, default=float)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
