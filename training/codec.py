"""Training a small EnCodec (transformers ``EncodecModel``) for reconstruction: the embedded SynthAV codec.

``python -m comfyui_audiovisual train codec --synthav 2000 --out runs/codec/synthav_encodec_16khz --steps 3000``

No EnCodec weights can be downloaded on the machines this pack is built on, and a random EnCodec
decodes noise, so the VATT path's embedded default brings its own codec: the transformers class
itself (so ``audio.codec_tokenizer.load_codec`` and the Load Codec node read it like a published
one), at VATT's token layout (16 kHz mono, hop 320 = 50 frames/s, 4 residual codebooks) but with
small channels and codebooks of 256, trained on SynthAV sounds.

Objective (EnCodec's, without the adversarial part): the encoder's output is quantized by a residual
VQ whose codebooks are learned as in EnCodec/SoundStream (k-means-style initialisation from the
first batch, exponential moving averages of the assigned vectors, decay 0.99, codes unused for a
while replaced by random vectors of the batch), with a straight-through gradient and a commitment
loss; the decoder's waveform is compared to the input by an L1 on samples, a multi-resolution STFT
loss (spectral convergence and L1 on floored log magnitudes, windows 128..2048: the long windows resolve the 20 Hz gaps
between neighbouring SynthAV notes) and an L1 on log-mel spectrograms at several scales.
The learned codebooks are written into the model's own buffers (``quantizer.layers[i].codebook.embed``),
so the saved folder is an ordinary transformers EnCodec.

Data: ``--synthav N`` renders the sounds of SynthAV training scenes 0..N-1 (``synthav.split``: the
held-out seeds and (shape, colour) combinations never appear), resampled to 16 kHz by
``audio.prepare.prepare_waveform``; training reads random segments of them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from .schedules import warmup_cosine_lr

__all__ = ["CODEC_SIZES", "CodecTrainingArgs", "build_codec", "synthav_waves", "RVQTrainer", "reconstruction_loss",
           "train_codec", "round_trip_scores", "main"]

# The embedded codec: VATT's layout (vatt_16khz: 16 kHz, ratios 8,5,4,2) with small channels and
# 4 codebooks of 256 (1.6 kbps: 4 x 8 bits x 50 frames/s).
CODEC_SIZES = dict(num_filters=8, hidden_size=64, num_lstm_layers=1, codebook_size=256, num_codebooks=4)


@dataclass
class CodecTrainingArgs:
    steps: int = 3000
    batch_size: int = 8
    segment_s: float = 0.64
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.1
    commitment: float = 1.0
    time_l1: float = 0.1
    stft_windows: Sequence[int] = field(default_factory=lambda: (2048, 1024, 512, 256, 128))
    mel_windows: Sequence[int] = field(default_factory=lambda: (1024, 256))
    seed: int = 0
    log_every: int = 50


def build_codec(sizes: Optional[dict] = None, seed: int = 0):
    """A fresh ``EncodecModel`` of the vatt_16khz layout at ``sizes`` (default ``CODEC_SIZES``)."""
    from transformers import EncodecModel

    from ..audio.codec_tokenizer import encodec_config

    sizes = {**CODEC_SIZES, **(sizes or {})}
    codebooks = int(sizes.pop("num_codebooks"))
    config = encodec_config("vatt_16khz", **sizes)
    # transformers derives the number of codebooks from the top bandwidth: codebooks x bits x frames/s
    config.target_bandwidths = [codebooks * math.log2(config.codebook_size) * config.frame_rate / 1000]
    torch.manual_seed(seed)
    model = EncodecModel(config)
    if len(model.quantizer.layers) != codebooks:
        raise ValueError(f"codec: {codebooks} codebooks asked for, the config gives {len(model.quantizer.layers)}")
    return model


def synthav_waves(count: int, sample_rate: int, start: int = 0, split: str = "train") -> torch.Tensor:
    """The sounds of SynthAV scenes start..start+count-1 of ``split`` at ``sample_rate``: float32 [count, T]."""
    from ..audio.prepare import prepare_waveform
    from ..synthav.split import scenes
    from ..synthav.world import SAMPLE_RATE, render_audio

    waves = torch.from_numpy(__import__("numpy").stack([render_audio(s) for s in scenes(split, count, start)]))
    return prepare_waveform(waves.unsqueeze(1), SAMPLE_RATE, sample_rate)


# ----------------------------------------------------------------------------------------------
# residual VQ training (the transformers class only encodes and decodes)
# ----------------------------------------------------------------------------------------------
class RVQTrainer:
    """Trains the codebooks of a transformers ``EncodecResidualVectorQuantizer`` in place, EnCodec style."""

    def __init__(self, quantizer, decay: float = 0.99, dead_code_threshold: float = 0.1, eps: float = 1e-5):
        self.layers = [layer.codebook for layer in quantizer.layers]
        self.decay, self.threshold, self.eps = decay, dead_code_threshold, eps
        self.initialised = False

    @torch.no_grad()
    def _init(self, residual_rows: list[torch.Tensor], generator) -> None:
        for book, rows in zip(self.layers, residual_rows):
            pick = torch.randint(0, rows.shape[0], (book.embed.shape[0],), generator=generator)
            book.embed.copy_(rows[pick])
            book.embed_avg.copy_(rows[pick])
            book.cluster_size.fill_(1.0)
        self.initialised = True

    def __call__(self, z: torch.Tensor, generator: Optional[torch.Generator] = None, update: bool = True):
        """z [B, D, T] -> (quantized with a straight-through gradient [B, D, T], commitment loss, codes [K, B, T])."""
        b, d, t = z.shape
        if not self.initialised:
            with torch.no_grad():  # a first pass that seeds each level's codebook from its own residuals
                residual, rows = z.detach().permute(0, 2, 1).reshape(-1, d), []
                for book in self.layers:
                    rows.append(residual.clone())
                    pick = torch.randint(0, residual.shape[0], (book.embed.shape[0],), generator=generator)
                    residual = residual - residual[pick][torch.cdist(residual, residual[pick]).argmin(1)]
                self._init(rows, generator)
        residual = z
        quantized_out = torch.zeros_like(z)
        commitment = z.new_zeros(())
        codes = []
        for book in self.layers:
            x = residual.permute(0, 2, 1).reshape(-1, d)
            embed = book.embed
            distance = x.detach().pow(2).sum(1, keepdim=True) - 2 * x.detach() @ embed.t() + embed.pow(2).sum(1)[None]
            index = distance.argmin(1)
            q = F.embedding(index, embed)
            commitment = commitment + F.mse_loss(x, q.detach())
            if update:
                self._ema(book, x.detach(), index, generator)
            q_st = x + (q - x).detach()
            q_st = q_st.reshape(b, t, d).permute(0, 2, 1)
            residual = residual - q_st
            quantized_out = quantized_out + q_st
            codes.append(index.reshape(b, t))
        return quantized_out, commitment, torch.stack(codes)

    @torch.no_grad()
    def _ema(self, book, x: torch.Tensor, index: torch.Tensor, generator) -> None:
        onehot = F.one_hot(index, book.embed.shape[0]).to(x.dtype)
        book.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        book.embed_avg.mul_(self.decay).add_(onehot.t() @ x, alpha=1 - self.decay)
        n = book.cluster_size.sum()
        smoothed = (book.cluster_size + self.eps) / (n + book.cluster_size.shape[0] * self.eps) * n
        book.embed.copy_(book.embed_avg / smoothed[:, None])
        dead = book.cluster_size < self.threshold
        if bool(dead.any()):
            pick = torch.randint(0, x.shape[0], (int(dead.sum()),), generator=generator)
            book.embed[dead] = x[pick]
            book.embed_avg[dead] = x[pick]
            book.cluster_size[dead] = self.threshold


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------
_MEL_CACHE: dict = {}
LOG_FLOOR = 1e-2  # magnitude units: about 60 dB under a loud note's spectral peak


def _mel_filters(n_fft: int, sample_rate: int, n_mels: int = 64) -> torch.Tensor:
    key = (n_fft, sample_rate, n_mels)
    if key not in _MEL_CACHE:
        import torchaudio.functional as AF

        _MEL_CACHE[key] = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney")
    return _MEL_CACHE[key]


def _magnitude(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=window, center=True, return_complex=True)
    return spec.abs().clamp(min=1e-7)  # [B, F, frames]


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, sample_rate: int, args: CodecTrainingArgs) -> dict:
    """Terms of the reconstruction objective for waveforms [B, 1, T] (see the module doc)."""
    y, x = output[:, 0], target[:, 0]
    terms = {"time_l1": F.l1_loss(y, x)}
    stft = y.new_zeros(())
    for n_fft in args.stft_windows:
        my, mx = _magnitude(y, n_fft), _magnitude(x, n_fft)
        # spectral convergence over the whole batch (a silent segment does not divide by ~0) and L1 on
        # log magnitudes floored at LOG_FLOOR (silence between notes is exact zeros in SynthAV)
        convergence = torch.linalg.vector_norm(my - mx) / torch.linalg.vector_norm(mx).clamp(min=1e-3)
        stft = stft + convergence + F.l1_loss(torch.log(my + LOG_FLOOR), torch.log(mx + LOG_FLOOR))
    terms["stft"] = stft / len(args.stft_windows)
    mel = y.new_zeros(())
    for n_fft in args.mel_windows:
        fb = _mel_filters(n_fft, sample_rate).to(y)
        my = _magnitude(y, n_fft).transpose(1, 2) @ fb
        mx = _magnitude(x, n_fft).transpose(1, 2) @ fb
        mel = mel + F.l1_loss(torch.log(my + LOG_FLOOR), torch.log(mx + LOG_FLOOR))
    terms["mel"] = mel / max(1, len(args.mel_windows))
    return terms


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
def _lr(step: int, args: CodecTrainingArgs) -> float:
    return warmup_cosine_lr(step, args.lr, args.steps, args.warmup_steps, floor=0.05)


def _segments(waves: torch.Tensor, batch: int, length: int, generator) -> torch.Tensor:
    rows = torch.randint(0, waves.shape[0], (batch,), generator=generator)
    starts = torch.randint(0, waves.shape[1] - length + 1, (batch,), generator=generator)
    return torch.stack([waves[r, s:s + length] for r, s in zip(rows.tolist(), starts.tolist())]).unsqueeze(1)


def train_codec(model, waves: torch.Tensor, args: CodecTrainingArgs, log: Callable[[dict], None] = print,
                save: Optional[Callable[[int], None]] = None, save_every: int = 0,
                start_step: int = 1, rvq: Optional[RVQTrainer] = None) -> list[dict]:
    """Trains ``model`` (an EncodecModel) in place on ``waves`` [M, T] at the model's rate."""
    sample_rate = int(model.config.sampling_rate)
    hop = int(math.prod(model.config.upsampling_ratios))
    length = max(hop, int(round(args.segment_s * sample_rate / hop)) * hop)
    if waves.shape[1] < length:
        raise ValueError(f"codec training: clips of {waves.shape[1]} samples are shorter than a {length}-sample segment")
    generator = torch.Generator().manual_seed(args.seed + start_step)
    rvq = rvq or RVQTrainer(model.quantizer, args.ema_decay, args.dead_code_threshold)
    if start_step > 1:
        rvq.initialised = True
    parameters = list(model.encoder.parameters()) + list(model.decoder.parameters())
    optimizer = torch.optim.Adam(parameters, lr=args.lr, betas=(0.5, 0.9))
    model.train()
    history, started, running = [], time.time(), {}
    for step in range(start_step, args.steps + 1):
        x = _segments(waves, args.batch_size, length, generator)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, args)
        z = model.encoder(x)
        q, commitment, _ = rvq(z, generator)
        y = model.decoder(q)[..., :length]
        terms = reconstruction_loss(y, x, sample_rate, args)
        loss = args.time_l1 * terms["time_l1"] + terms["stft"] + terms["mel"] + args.commitment * commitment
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        for k, v in {"loss": loss, "commitment": commitment, **terms}.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        count = step - (history[-1]["step"] if history else start_step - 1)
        if step % args.log_every == 0 or step == args.steps:
            used = [int((book.cluster_size > args.dead_code_threshold).sum()) for book in rvq.layers]
            entry = {"step": step, **{k: round(v / count, 4) for k, v in running.items()}, "lr": round(_lr(step, args), 6),
                     "codes_in_use": used, "seconds": round(time.time() - started, 1)}
            history.append(entry)
            running = {}
            log(entry)
        if save is not None and save_every and step % save_every == 0 and step < args.steps:
            save(step)
    model.eval()
    return history


@torch.no_grad()
def round_trip_scores(codec_dir: str, count: int = 48, start: int = 0, split: str = "heldout", batch: int = 8) -> dict:
    """SynthAV scenes through the saved codec (``load_codec``: encode -> tokens -> decode), resampled
    back to 22050 Hz, scored by the analysers (``synthav.evaluate.score_audio``)."""
    from ..audio.codec_tokenizer import load_codec
    from ..audio.prepare import prepare_waveform
    from ..synthav.evaluate import score_audio
    from ..synthav.split import scenes as split_scenes
    from ..synthav.world import SAMPLE_RATE

    codec = load_codec(codec_dir)
    chosen = split_scenes(split, count, start)
    waves = synthav_waves(count, codec.sample_rate_hz, start, split)
    out = []
    for i in range(0, count, batch):
        tokens = codec.encode(waves[i:i + batch].unsqueeze(1))
        out.append(codec.decode(tokens)[:, 0])
    decoded = prepare_waveform(torch.cat(out).unsqueeze(1), codec.sample_rate_hz, SAMPLE_RATE)
    scores = score_audio(chosen, decoded.numpy())
    return {k: scores[k] for k in ("pitch_acc", "timbre_acc", "loudness_acc", "onset_acc", "all_acc", "count_acc",
                                   "onset_err_ms", "pitch_err_cents", "loudness_err_db") if k in scores}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual train codec",
                                     description="Train a small 16 kHz EnCodec (transformers folder) on SynthAV sounds.")
    parser.add_argument("--synthav", type=int, default=2000, help="SynthAV training scenes whose sounds are the data")
    parser.add_argument("--out", required=True, help="the transformers EnCodec folder to write")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--segment-s", type=float, default=0.64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sizes", default="{}", help="JSON overrides of CODEC_SIZES (EncodecConfig fields)")
    parser.add_argument("--resume", action="store_true", help="continue from the folder at --out (its step is in training.json)")
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--eval-scenes", type=int, default=48, help="held-out scenes scored after training (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    options = parser.parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    from ..audio.codec_tokenizer import load_codec, save_codec

    sizes = json.loads(options.sizes)
    args = CodecTrainingArgs(steps=options.steps, batch_size=options.batch_size, segment_s=options.segment_s, lr=options.lr,
                             seed=options.seed)
    start_step, previous = 1, []
    if options.resume and os.path.isfile(os.path.join(options.out, "training.json")):
        model = load_codec(options.out).model
        with open(os.path.join(options.out, "training.json")) as f:
            previous = json.load(f).get("history", [])
        start_step = (previous[-1]["step"] + 1) if previous else 1
        print(f"codec: resuming at step {start_step}", flush=True)
    else:
        model = build_codec(sizes, options.seed)
    started = time.time()
    waves = synthav_waves(options.synthav, int(model.config.sampling_rate))
    print(f"codec: {options.synthav} SynthAV sounds at {model.config.sampling_rate} Hz in {time.time() - started:.0f} s; "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f}M parameters", flush=True)
    history = list(previous)

    def write(step: int) -> None:
        model.eval()
        save_codec(model, options.out)
        record = {"command": "python -m comfyui_audiovisual train codec " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "args": {**asdict(args), "stft_windows": list(args.stft_windows), "mel_windows": list(args.mel_windows)},
                  "data": f"SynthAV training scenes 0..{options.synthav - 1}", "step": step, "history": history}
        with open(os.path.join(options.out, "training.json") + ".partial", "w") as f:
            json.dump(record, f, indent=1)
        os.replace(os.path.join(options.out, "training.json") + ".partial", os.path.join(options.out, "training.json"))
        model.train()

    def log(entry: dict) -> None:
        history.append(entry)
        print(f"codec: {json.dumps(entry)}", flush=True)

    train_codec(model, waves, args, log=lambda e: log(e), save=write, save_every=options.save_every, start_step=start_step)
    # history holds the entries through `log`; train_codec's own list is the same entries
    write(args.steps)
    if options.eval_scenes:
        scores = round_trip_scores(options.out, options.eval_scenes)
        print(f"codec: held-out round trip {json.dumps(scores)}", flush=True)
        with open(os.path.join(options.out, "training.json")) as f:
            record = json.load(f)
        record["heldout_round_trip"] = scores
        with open(os.path.join(options.out, "training.json"), "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
