"""How much of the condition does the masked transformer use? One forward pass, argmax accuracy.

    .venv/bin/python benchmarks/maskgen_token_accuracy.py [--models embedded_models] [--n 64]

For n held-out SynthAV scenes (tokenized by the model folder's tokenizers) it prints the fraction of
audio tokens predicted exactly with every audio token masked, (a) given all image tokens and
(b) given nothing, and the fraction of image tokens predicted given all audio tokens. (a) well
above (b) means the transformer reads the picture. Figures, not a test.
"""

import argparse
import os
import sys

import numpy as np
import torch

from comfyui_audiovisual.audio.mel_frontend import waveform_to_mel
from comfyui_audiovisual.samplers.visual_echoes import audio_grid_to_sequence, image_grid_to_sequence
from comfyui_audiovisual.synthav import split as S
from comfyui_audiovisual.synthav.evaluate_cli import PACK_DIR, load_default_models
from comfyui_audiovisual.synthav.world import render_audio, render_image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=os.path.join(PACK_DIR, "embedded_models"))
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args(argv)
    image_tok, spec_tok, model = load_default_models(args.models)
    scenes = [S.split_scene("heldout", k) for k in range(args.n)]
    images = torch.tensor(np.stack([render_image(s) for s in scenes]))
    mels = waveform_to_mel(torch.tensor(np.stack([render_audio(s) for s in scenes])))
    with torch.inference_mode():
        image = image_grid_to_sequence(image_tok.encode_image(images))
        audio = audio_grid_to_sequence(spec_tok.encode_mel(mels))
        hidden_audio, shown_audio = torch.ones_like(audio, dtype=torch.bool), torch.zeros_like(audio, dtype=torch.bool)
        hidden_image, shown_image = torch.ones_like(image, dtype=torch.bool), torch.zeros_like(image, dtype=torch.bool)
        audio_given_image = model(audio, image, hidden_audio, shown_image)[0].argmax(-1)
        audio_given_nothing = model(audio, image, hidden_audio, hidden_image)[0].argmax(-1)
        image_given_audio = model(audio, image, shown_audio, hidden_image)[1].argmax(-1)
    print(f"{args.n} held-out scenes, one forward pass, argmax")
    print(f"audio tokens | image:   {(audio_given_image == audio).float().mean():.3f}")
    print(f"audio tokens | nothing: {(audio_given_nothing == audio).float().mean():.3f}")
    print(f"image tokens | audio:   {(image_given_audio == image).float().mean():.3f}")
    print(f"distinct codes used: audio {audio.unique().numel()}/{model.config.audio_vocab_size}, "
          f"image {image.unique().numel()}/{model.config.image_vocab_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
