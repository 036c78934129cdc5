"""AudioLDM nodes (V2A-Mapper's generator): load a diffusers AudioLDM folder, encode text with its
own CLAP text encoder, and generate AUDIO from a (mapped) CLAP embedding."""

import json
import os

import torch
from comfy_api.latest import io

from ..loaders.audioldm import PIPELINE_CLASSES, load_audioldm
from ..samplers.audioldm_bridge import audioldm_generate
from . import socket_types as st
from .device import check_interrupt, on_compute_device
from .payloads import Embedding
from .video_input import video_duration_s

MAX_DURATION_S = 120.0  # the longest sound one generation makes (the latent grows with it)
FOLDER_KEYS = ("av_audioldm", "diffusers")  # the pack's folder first, then the host's models/diffusers


def _pipeline_class(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, "model_index.json"), encoding="utf-8") as handle:
            return json.load(handle).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


def audioldm_folders() -> dict[str, str]:
    """{name: path} of the diffusers pipeline folders offered by the loader: every folder with a
    model_index.json in models/audiovisual/audioldm, and the AudioLDM ones in models/diffusers."""
    import folder_paths

    found: dict[str, str] = {}
    for key in FOLDER_KEYS:
        if key not in folder_paths.folder_names_and_paths:
            continue
        for base in folder_paths.get_folder_paths(key):
            if not os.path.isdir(base):
                continue
            for entry in sorted(os.listdir(base)):
                path = os.path.join(base, entry)
                if entry in found or not os.path.isfile(os.path.join(path, "model_index.json")):
                    continue
                if key == "av_audioldm" or _pipeline_class(path) in PIPELINE_CLASSES:
                    found[entry] = path
    return found


class LoadAudioLDM(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadAudioLDM",
            display_name="Load AudioLDM",
            category=st.category("loaders"),
            description="Loads a diffusers AudioLDM folder (e.g. cvssp/audioldm-s-full-v2: model_index.json, unet/, vae/, vocoder/, "
                        "scheduler/, optionally text_encoder/ and tokenizer/) from models/audiovisual/audioldm or models/diffusers.",
            inputs=[io.Combo.Input("model_name", options=sorted(audioldm_folders()),
                                   tooltip="An AudioLDM pipeline folder in models/audiovisual/audioldm (or an AudioLDM folder in models/diffusers).")],
            outputs=[st.AudioLDM.Output(display_name="audioldm")],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        node = "Load AudioLDM"
        folders = audioldm_folders()
        if model_name not in folders:
            raise FileNotFoundError(f"{node}: AudioLDM folder '{model_name}' not found in models/audiovisual/audioldm or models/diffusers")
        try:
            return io.NodeOutput(load_audioldm(folders[model_name]))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{node}: {e}") from None


class AudioLDMEncodeText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_AudioLDMEncodeText",
            display_name="AudioLDM Encode Text",
            category=st.category("encode"),
            description="Encodes a text prompt with the AudioLDM folder's own CLAP text encoder into a CLAP embedding "
                        "(text -> audio without a separate encoder). Needs text_encoder/ and tokenizer/ in the folder.",
            inputs=[
                st.AudioLDM.Input("audioldm", tooltip="From Load AudioLDM."),
                io.String.Input("text", default="a dog barking in the rain", multiline=True, tooltip="What the sound should be."),
            ],
            outputs=[st.Embedding.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, audioldm, text) -> io.NodeOutput:
        node = "AudioLDM Encode Text"
        if not audioldm.has_text_encoder:
            raise ValueError(f"{node}: the AudioLDM folder '{audioldm.name}' has no text_encoder/ and tokenizer/; "
                             f"encode the text with Load Encoder (a CLAP model) and Encode Text instead")
        if not text.strip():
            raise ValueError(f"{node}: the text is empty (leave AudioLDM Generate's negative unconnected for the empty-text guidance)")
        check_interrupt()
        with on_compute_device(audioldm.text_encoder, half=False):
            vectors = audioldm.encode_text([text])
        return io.NodeOutput(Embedding(vectors=vectors, family="clap", model=audioldm.name, modality="text"))


def _check_is_embedding(value, name: str, node: str) -> None:
    """By shape, not class: the pack may be imported under two names (host loader and package)."""
    if not all(hasattr(value, attr) for attr in ("vectors", "family", "expect")):
        raise ValueError(f"{node}: '{name}' must be an AV_EMBEDDING (from an encoder, a mapper or AudioLDM Encode Text), "
                         f"got {type(value).__name__}")


def _pooled(embedding: Embedding) -> torch.Tensor:
    """[B, D] vectors; a sequence [B, T, D] (e.g. per-frame embeddings) is mean-pooled over T."""
    vectors = embedding.vectors
    return vectors.float().mean(dim=1) if embedding.is_sequence else vectors.float()


class AudioLDMGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_AudioLDMGenerate",
            display_name="AudioLDM Generate",
            category=st.category("sample"),
            description="Generates AUDIO at the vocoder's sample rate (16 kHz for the published AudioLDM) from a CLAP embedding: "
                        "a CLAP text embedding, or a CLIP image embedding mapped into CLAP space by a V2A mapper. One clip per embedding row.",
            inputs=[
                st.AudioLDM.Input("audioldm", tooltip="From Load AudioLDM."),
                st.Embedding.Input("embedding", tooltip="A CLAP embedding of the UNet's width (512 for the published models): from AudioLDM Encode Text, "
                                                        "a CLAP encoder, or a mapper. Per-frame sequences [batch, frames, width] are mean-pooled over frames; "
                                                        "every vector is L2-normalised as AudioLDM expects."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the starting noise (drawn on the CPU, so a seed gives the same sound on every device)."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Denoising steps of the folder's scheduler (DDIM for the published models). 50 is a good balance; "
                                     "diffusers' pipeline defaults to 10 (fast, rougher), the AudioLDM paper used 200."),
                io.Float.Input("guidance", default=2.5, min=0.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance scale (AudioLDM default 2.5). Higher follows the embedding more closely at some cost "
                                       "in quality; 1 or less turns guidance off (one UNet pass per step)."),
                io.Float.Input("duration_s", default=5.0, min=0.1, max=MAX_DURATION_S, step=0.1,
                               tooltip="Length of the audio in seconds, exact to the sample. The published models were trained on 10 s clips. "
                                       "Ignored when a video is connected."),
                st.Embedding.Input("negative", optional=True,
                                   tooltip="Optional CLAP embedding to steer away from (one row, or one per embedding row). Unconnected: the empty "
                                           "text's embedding when the folder has its text encoder (as AudioLDM does), zeros otherwise. Used only when guidance > 1."),
                io.Video.Input("video", optional=True,
                               tooltip="Optional: the video the sound is for; its length (frames / fps, at most 120 s) replaces duration_s."),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )

    @classmethod
    def execute(cls, audioldm, embedding, seed, steps, guidance, duration_s, negative=None, video=None) -> io.NodeOutput:
        import comfy.utils

        node = "AudioLDM Generate"
        dim = audioldm.clap_dim
        if video is not None:
            duration_s = video_duration_s(video, node)
            if duration_s > MAX_DURATION_S:
                raise ValueError(f"{node}: the video is {duration_s:.1f} s long; this node makes at most {MAX_DURATION_S:.0f} s "
                                 "(cut the video, or generate in parts)")
        _check_is_embedding(embedding, "embedding", node)
        embedding.expect(node, "clap", dim=dim)
        vectors = _pooled(embedding)
        negative_vectors = None
        if negative is not None:
            _check_is_embedding(negative, "negative", node)
            negative.expect(f"{node} (negative)", "clap", dim=dim)
            negative_vectors = _pooled(negative)
            if negative_vectors.shape[0] not in (1, vectors.shape[0]):
                raise ValueError(f"{node}: the negative has {negative_vectors.shape[0]} rows, expected 1 or {vectors.shape[0]} (one per embedding row)")
        progress = comfy.utils.ProgressBar(int(steps))

        def on_step(done, total):
            progress.update_absolute(done, total)
            check_interrupt()

        check_interrupt()
        try:
            with on_compute_device(audioldm, half=True):
                waveform, sample_rate = audioldm_generate(audioldm, vectors, negative_vectors, steps=steps, guidance=guidance,
                                                          duration_s=duration_s, seed=seed, callback=on_step)
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None
        peak = waveform.abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
        return io.NodeOutput({"waveform": waveform / peak, "sample_rate": int(sample_rate)})  # [B, 1, T], never clipping


NODES = [LoadAudioLDM, AudioLDMEncodeText, AudioLDMGenerate]
