"""How much of the condition does the masked transformer use? One forward pass, argmax accuracy.

    .venv/bin/python benchmarks/maskgen_token_accuracy.py [--models embedded_models] [--n 64]

For n held-out SynthAV scenes (tokenized by the model folder's tokenizers) it prints the fraction of
audio tokens predicted exactly with every audio token masked, (a) given all image tokens and
(b) given nothing, and the same for image tokens given the audio or nothing
(`training.maskgen.condition_token_accuracy`, which the rebuild also writes). (a) well above (b)
means the transformer reads the picture. Figures, not a test.
"""

import argparse
import os
import sys

import torch

from comfyui_audiovisual.synthav.evaluate_cli import PACK_DIR, load_default_models
from comfyui_audiovisual.training.maskgen import condition_token_accuracy
from comfyui_audiovisual.training.synthav_defaults import MODEL_FILES, heldout_tokens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=os.path.join(PACK_DIR, "embedded_models"))
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args(argv)
    _, _, model = load_default_models(args.models)
    audio, image = heldout_tokens(os.path.join(args.models, MODEL_FILES["image_vq"]),
                                  os.path.join(args.models, MODEL_FILES["spec_vq"]), args.n)
    with torch.inference_mode():
        accuracy = condition_token_accuracy(model, audio, image)
    print(f"{args.n} held-out scenes, one forward pass, argmax")
    for key, value in accuracy.items():
        print(f"{key.replace('|', ' tokens | '):24s} {value:.3f}")
    print(f"distinct codes used: audio {audio.unique().numel()}/{model.config.audio_vocab_size}, "
          f"image {image.unique().numel()}/{model.config.image_vocab_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
