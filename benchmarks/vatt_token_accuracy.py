"""How much of its condition does the VATT decoder use? One forward pass, argmax accuracy.

    .venv/bin/python benchmarks/vatt_token_accuracy.py [--decoder FILE] [--codec DIR] [--n 64]

For n held-out SynthAV videos (2 s at 16 fps, the pairs the trainer makes: `make_synthav_pairs` on
the held-out split, through the decoder's own CLIP, codec and T5) it prints the fraction of codec
tokens predicted exactly with every token masked, given the video and the clip's caption, the video
alone, and nothing (the condition zeroed, as classifier-free guidance's unconditional pass). The
first two well above the third means the decoder reads its condition. Figures, not a test; works on
a training checkpoint (decoder_checkpoint/decoder.safetensors) while the run goes on.
"""

import argparse
import os
import sys
import tempfile

import torch

from comfyui_audiovisual.synthav.evaluate_cli import PACK_DIR


def main(argv=None) -> int:
    from comfyui_audiovisual.loaders.vatt_checkpoints import load_vatt_decoder
    from comfyui_audiovisual.training.vatt import load_pairs, make_synthav_pairs

    embedded = os.path.join(PACK_DIR, "embedded_models")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decoder", default=os.path.join(embedded, "vatt", "synthav_vatt.safetensors"))
    parser.add_argument("--codec", default=None, help="the decoder's codec folder (default: embedded codecs/<its codec>)")
    parser.add_argument("--encoders", default=os.path.join(embedded, "encoders"))
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args(argv)
    decoder = load_vatt_decoder(args.decoder)
    config = decoder.config
    codec = args.codec or os.path.join(embedded, "codecs", config.codec)
    text_dir = os.path.join(args.encoders, config.text_model) if config.text_dim else None
    with tempfile.TemporaryDirectory() as tmp:
        path = make_synthav_pairs(args.n, os.path.join(args.encoders, config.video_model), codec, os.path.join(tmp, "p.safetensors"),
                                  split="heldout", duration_s=config.clip_s or 2.0, text_encoder_dir=text_dir,
                                  text_tokens=config.text_tokens or 32, log=None)
        pairs = load_pairs(path)
    if not torch.equal(pairs["codebook_latents"], decoder.codebook_latents.float()):
        raise SystemExit(f"{args.decoder}: trained on other codec tables than {codec}'s; give its --codec")
    codes, video, text = pairs["codes"], pairs["video"], pairs["text"]
    masked = torch.ones_like(codes, dtype=torch.bool)
    rows = {"video + caption": (video, text, None), "video only": (video, None, None),
            "nothing": (video, None, torch.ones(codes.shape[0], dtype=torch.bool))}
    if text is None:
        rows.pop("video + caption")
    print(f"{args.n} held-out videos, {tuple(codes.shape[1:])} tokens of {config.codebook_size} codes, one forward pass, argmax")
    with torch.inference_mode():
        for name, (v, t, drop) in rows.items():
            logits = decoder(codes, masked, v, t, drop_condition=drop)
            print(f"{name:16s} {float((logits.argmax(-1) == codes).float().mean()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
