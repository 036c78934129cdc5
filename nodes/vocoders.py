"""Vocoder nodes: mel spectrogram -> AUDIO at the vocoder's own sample rate."""

import torch
from comfy_api.latest import io

from ..audio.mel_frontend import SPECVQGAN_MEL
from ..loaders.vocoders import load_vocoder, vocoder_entry_kind, vocoder_mel_bins, vocoder_mel_timing
from . import socket_types as st
from .audio_output import audio_preview_ui
from .device import check_interrupt
from .model_folders import list_models, resolve_model

GRIFFIN_LIM = "griffin-lim"


def vocoder_problem(name: str) -> str | None:
    """Why an entry of Load Vocoder cannot work, or None: not found, not a vocoder load_vocoder reads, or
    a vocoder for mels other than every AV_MEL (SpecVQGAN's 80 bins at 22050 Hz, hop 256: Tokens to Mel,
    Audio to Mel; Vocode Mel to Audio is the only node that takes a vocoder): another height, or another
    sample rate or hop (a 16 kHz HiFiGAN's sound would last 1.38x too long)."""
    if name == GRIFFIN_LIM:
        return None
    try:
        path = resolve_model("av_vocoders", name, "Load Vocoder")
    except FileNotFoundError as e:
        return str(e)
    if vocoder_entry_kind(path) is None:
        return (f"Load Vocoder: '{name}' is not a vocoder this node reads; expected a SpecVQGAN MelGAN checkpoint "
                f"(keys model.1.weight_g / weight_v) or a transformers HiFiGAN folder with config.json")
    bins = vocoder_mel_bins(path)
    if bins is not None and bins != SPECVQGAN_MEL.n_mels:
        return (f"Load Vocoder: '{name}' takes {bins}-bin mels, but Vocode Mel to Audio gets the pack's mels "
                f"({SPECVQGAN_MEL.n_mels} bins, SpecVQGAN's, from Tokens to Mel or Audio to Mel); choose a "
                f"{SPECVQGAN_MEL.n_mels}-mel vocoder or griffin-lim")
    timing = vocoder_mel_timing(path)
    mel = (SPECVQGAN_MEL.sample_rate_hz, SPECVQGAN_MEL.hop_samples)
    if timing is not None and timing != mel:
        return (f"Load Vocoder: '{name}' takes mels at {timing[0]} Hz (hop {timing[1]}), but Vocode Mel to Audio gets "
                f"the pack's mels ({mel[0]} Hz, hop {mel[1]}, SpecVQGAN's, from Tokens to Mel or Audio to Mel): its sound "
                f"would last {mel[0] * timing[1] / (timing[0] * mel[1]):.2f}x as long as the mel; choose a "
                f"{mel[0]} Hz hop-{mel[1]} vocoder or griffin-lim")
    return None


def list_vocoders() -> list[str]:
    """Griffin-Lim, then the entries of models/audiovisual/vocoders that load and can vocode the pack's
    mels (`vocoder_problem`): a HiFiGAN folder is listed as its folder, not its model.safetensors; other
    files, and vocoders for other mel heights (AudioLDM's 64-bin HiFiGAN) or rates (SpeechT5's 16 kHz
    HiFiGAN), are left out."""
    return [GRIFFIN_LIM] + [name for name in list_models("av_vocoders") if vocoder_problem(name) is None]


class LoadVocoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadVocoder",
            display_name="Load Vocoder",
            category=st.category("loaders"),
            description="Griffin-Lim (no weights), a SpecVQGAN MelGAN checkpoint, or a transformers HiFiGAN folder from models/audiovisual/vocoders.",
            inputs=[io.Combo.Input("vocoder_name", options=list_vocoders(), default=GRIFFIN_LIM,
                                   tooltip="griffin-lim needs no file; MelGAN (.pt/.ckpt/.safetensors) and HiFiGAN (folder with config.json) come from models/audiovisual/vocoders.")],
            outputs=[st.Vocoder.Output(display_name="vocoder")],
        )

    @classmethod
    def validate_inputs(cls, vocoder_name):
        """Refuses, before the run, an entry that cannot load or cannot vocode the pack's mels (a stale or
        hand-written name), naming both ends."""
        return vocoder_problem(vocoder_name) or True

    @classmethod
    def execute(cls, vocoder_name) -> io.NodeOutput:
        path = GRIFFIN_LIM if vocoder_name == GRIFFIN_LIM else resolve_model("av_vocoders", vocoder_name, "Load Vocoder")
        try:
            return io.NodeOutput(load_vocoder(path))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"Load Vocoder: {e}") from None


class MelToAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_MelToAudio",
            display_name="Vocode Mel to Audio",
            category=st.category("decode"),
            description="Turns a mel spectrogram into AUDIO with a vocoder, at the vocoder's own sample rate; the node plays it and shows its spectrogram.",
            inputs=[
                st.Vocoder.Input("vocoder", tooltip="From Load Vocoder."),
                st.Mel.Input("mel", tooltip="A mel spectrogram from Tokens to Mel or Audio to Mel."),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )

    @classmethod
    def execute(cls, vocoder, mel) -> io.NodeOutput:
        check_interrupt()
        try:
            with torch.inference_mode():
                waveform = vocoder(mel.mel01)
        except ValueError as e:
            raise ValueError(f"Vocode Mel to Audio: {e}") from None
        if not bool(torch.isfinite(waveform).all()):
            raise ValueError("Vocode Mel to Audio: the vocoder produced NaN or infinite samples")
        peak = waveform.abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
        waveform = (waveform / peak).float().cpu().unsqueeze(1)  # [B, 1, T], never clipping
        audio = {"waveform": waveform, "sample_rate": int(vocoder.sample_rate_hz)}
        return io.NodeOutput(audio, ui=audio_preview_ui(audio))


NODES = [LoadVocoder, MelToAudio]
