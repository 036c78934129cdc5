"""Tokenizer ceilings: what survives a round trip through the SynthAV tokenizers.

Held-out scenes go picture -> image tokens -> picture and sound -> mel -> spectrogram tokens -> mel
-> Griffin-Lim -> sound, and the independent analysers score the result against the scene, exactly
as `evaluate` scores generated output. No generator can score above these figures on the
attributes it has to pass through the tokens, so they are the ceilings of the quality table. Code
usage on the same scenes says how large the codebooks need to be: `codes_used` of the codebook, and
the perplexity (exp of the entropy of the code histogram), the number of equally likely codes the
data behaves like.

    python -m comfyui_audiovisual.synthav.tokenizer_ceilings [--models embedded_models] [--n 48]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

from . import split as S
from .evaluate import score_audio, score_images
from .world import MEL_FRAMES, render_audio, render_image


def _usage(tokens: torch.Tensor, codebook_size: int) -> dict:
    counts = torch.bincount(tokens.reshape(-1).cpu(), minlength=codebook_size).double()
    p = counts[counts > 0] / counts.sum()
    return {"codebook_size": int(codebook_size), "codes_used": int((counts > 0).sum()),
            "perplexity": round(float(torch.exp(-(p * p.log()).sum())), 1)}


def tokenizer_ceilings(image_vq_path: str, spec_vq_path: str, n: int = 48, device: str = "cpu") -> dict:
    """Round-trip scores of both tokenizers on `n` held-out scenes, with code usage."""
    from ..audio.mel_frontend import waveform_to_mel
    from ..loaders.vocoders import load_vocoder
    from ..loaders.vq_checkpoints import load_vq_model
    from ..vq.tokenizer import VQTokenizer

    scenes = [S.split_scene("heldout", k) for k in range(n)]
    image_tok = VQTokenizer(load_vq_model(image_vq_path)[0].to(device), "image")
    spec_tok = VQTokenizer(load_vq_model(spec_vq_path)[0].to(device), "audio")
    vocoder = load_vocoder("griffin-lim")
    images = torch.tensor(np.stack([render_image(s) for s in scenes]), device=device)
    waves = torch.tensor(np.stack([render_audio(s) for s in scenes]), device=device)
    with torch.inference_mode():
        image_tokens = image_tok.encode_image(images)
        images_back = image_tok.decode_image(image_tokens).float().cpu().numpy()
        mel = waveform_to_mel(waves)
        audio_tokens = spec_tok.encode_mel(mel)
        mel_back = spec_tok.decode_mel(audio_tokens).clamp(0, 1)
        waves_back = vocoder(mel_back.float().cpu()).numpy()
    audio = score_audio(scenes, waves_back)
    image = score_images(scenes, images_back)
    keep = lambda scores: {k: round(float(v), 4) for k, v in scores.items() if k.endswith("_acc")}  # noqa: E731
    return {"n": n, "audio": keep(audio), "image": keep(image),
            "audio_grid": list(audio_tokens.shape[1:]), "image_grid": list(image_tokens.shape[1:]),
            "audio_codes": _usage(audio_tokens, spec_tok.codebook_size),
            "image_codes": _usage(image_tokens, image_tok.codebook_size),
            "mel_frames": MEL_FRAMES}


def lowest(ceilings: dict) -> float:
    """The lowest per-attribute round-trip accuracy of both tokenizers (count included)."""
    values = [v for part in ("audio", "image") for k, v in ceilings[part].items() if k != "all_acc"]
    return min(values) if values else math.nan


def main(argv=None) -> int:
    pack = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual.synthav.tokenizer_ceilings", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=os.path.join(pack, "embedded_models"), help="folder with vq/synthav_image_vq and vq/synthav_spec_vq")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    result = tokenizer_ceilings(os.path.join(args.models, "vq", "synthav_image_vq.safetensors"),
                                os.path.join(args.models, "vq", "synthav_spec_vq.safetensors"), args.n)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
