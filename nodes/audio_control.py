"""SeeingSounds procedural control nodes: transform a clip (gain, pitch, mix) and say so in words;
compose those words with the class caption into the prompt that conditions generation."""

import torch
from comfy_api.latest import io

from ..audio.transforms import (MAX_GAIN_DB, MAX_SEMITONES, apply_gain, compose_prompt, join_caption, mix, modifiers_text, pitch_shift,
                               prompt_modifiers)
from . import socket_types as st
from .audio_input import audio_input
from .device import check_interrupt


class AudioTransform(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_AudioTransform",
            display_name="Audio Transform (with Prompt Modifiers)",
            category=st.category("control"),
            description="Changes a clip's loudness (gain in dB) and pitch (semitones, duration kept), optionally mixes in a "
                        "second clip, and writes the prompt modifiers those changes stand for: louder -> larger, higher -> "
                        "smaller and brighter, a mix -> 'X and Y' (6 dB or an octave per size step; rules in docs/seeing_sounds.md).",
            inputs=[
                io.Audio.Input("audio", tooltip="The clip to transform; empty, silent or NaN audio is refused."),
                io.Float.Input("gain_db", default=0.0, min=-MAX_GAIN_DB, max=MAX_GAIN_DB, step=0.5,
                               tooltip="Loudness change in dB (+6 dB doubles the amplitude). Louder reads as larger. Samples are not clipped."),
                io.Float.Input("semitones", default=0.0, min=-MAX_SEMITONES, max=MAX_SEMITONES, step=0.5,
                               tooltip="Pitch change in semitones (+12 = one octave up), duration kept (phase vocoder + resampling). "
                                       "Higher reads as smaller and brighter."),
                io.Audio.Input("audio_b", optional=True, tooltip="Optional second clip mixed in (summed at its own level, after the "
                                                                 "gain and pitch change of the first)."),
                io.String.Input("caption_b", default="", tooltip="The class caption of audio_b (e.g. 'a cat meowing'); needed when "
                                                                 "audio_b is connected, to write 'X and Y'."),
            ],
            outputs=[io.Audio.Output(display_name="audio"), io.String.Output(display_name="modifiers")],
        )

    @classmethod
    def execute(cls, audio, gain_db=0.0, semitones=0.0, audio_b=None, caption_b="") -> io.NodeOutput:
        node = "Audio Transform"
        waveform, rate = audio_input(audio, node, "audio")
        waveform_b, rate_b = audio_input(audio_b, node, "audio_b") if audio_b is not None else (None, None)
        check_interrupt()
        try:
            out = apply_gain(waveform, rate, gain_db)
            if semitones:
                out = pitch_shift(out, rate, semitones)
            mixed_with = None
            if audio_b is not None:
                if not str(caption_b).strip():
                    raise ValueError("caption_b: audio_b is connected, so its class caption is needed to write 'X and Y'")
                out = mix(out, rate, waveform_b, rate_b)
                mixed_with = caption_b
            phrases = prompt_modifiers(gain_db, semitones, mixed_with)
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"{node}: the transformed audio holds NaN or infinite samples")
        return io.NodeOutput({"waveform": out.contiguous(), "sample_rate": int(rate)}, modifiers_text(phrases))


class ComposePrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_ComposePrompt",
            display_name="Compose Prompt",
            category=st.category("control"),
            description="Class caption + prompt modifiers -> the text that conditions generation: 'X and Y' for mixes, then "
                        "', larger', ', much brighter', ... Feed it to the host's CLIP Text Encode (text input).",
            inputs=[
                io.String.Input("caption", default="a dog barking", tooltip="The class caption of the (first) sound."),
                io.String.Input("modifiers", default="", tooltip="From Audio Transform, or typed: phrases separated by ';' "
                                                                 "(phrases starting with 'and ' name mixed-in sounds)."),
                io.String.Input("suffix", default="", tooltip="Optional words appended at the end (e.g. ', a photo')."),
            ],
            outputs=[io.String.Output(display_name="prompt")],
        )

    @classmethod
    def execute(cls, caption="a dog barking", modifiers="", suffix="") -> io.NodeOutput:
        try:
            text = compose_prompt(caption, modifiers)
        except ValueError as e:
            raise ValueError(f"Compose Prompt: {e}") from None
        return io.NodeOutput(join_caption("", text, " ".join(str(suffix or "").split())))


NODES = [AudioTransform, ComposePrompt]
