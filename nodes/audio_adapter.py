"""SeeingSounds nodes: load an audio adapter, turn an AST embedding into the host's own CONDITIONING
(FLUX, SD3, SDXL) for the stock KSampler, and train a small adapter inside the editor."""

import os
import re

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io

from ..loaders.audio_adapter import load_audio_adapter
from ..networks.audio_adapter import AudioAdapter
from ..samplers.host_conditioning import COMBINE_MODES, TARGETS, build_conditioning
from . import socket_types as st
from .device import HostProgress, check_interrupt, on_compute_device
from .model_folders import FOLDERS, list_models, resolve_model


class LoadAudioAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadAudioAdapter",
            display_name="Load Audio Adapter",
            category=st.category("loaders"),
            description="Loads a SeeingSounds audio adapter (one .safetensors with its config) from models/audiovisual/adapters: "
                        "it maps an AST token sequence to T5-like tokens and a CLIP pooled vector.",
            inputs=[io.Combo.Input("adapter_name", options=list_models("av_adapters"),
                                   tooltip="The adapter file in models/audiovisual/adapters (synthav_* ships with the pack).")],
            outputs=[st.AudioAdapter.Output(display_name="adapter")],
        )

    @classmethod
    def execute(cls, adapter_name) -> io.NodeOutput:
        path = resolve_model("av_adapters", adapter_name, "Load Audio Adapter")
        try:
            return io.NodeOutput(load_audio_adapter(path))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"Load Audio Adapter: {e}") from None


def _check_adapter(adapter, node: str) -> AudioAdapter:
    if not (isinstance(adapter, torch.nn.Module) and hasattr(adapter, "text_branch") and hasattr(adapter, "config")):
        raise ValueError(f"{node}: connect an adapter from Load Audio Adapter or Train Audio Adapter")
    return adapter


class AudioToConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_AudioToConditioning",
            display_name="Audio to Conditioning",
            category=st.category("encode"),
            description="Runs an audio adapter on an AST embedding and writes the host's own CONDITIONING for FLUX "
                        "(T5 tokens + pooled_output + guidance), SD3 or SDXL, ready for the stock KSampler. Optionally "
                        "combined with a text CONDITIONING from the host's text encoder (concatenated or blended).",
            inputs=[
                st.AudioAdapter.Input("adapter", tooltip="From Load Audio Adapter or Train Audio Adapter."),
                st.Embedding.Input("audio_embedding", tooltip="An AST token sequence from Encode Audio (AST encoder), one row per clip."),
                io.Combo.Input("target", options=list(TARGETS), default="FLUX",
                               tooltip="The host model the conditioning is for. FLUX and SD3 need a FLUX-width adapter (T5 4096 + "
                                       "CLIP-L 768; SD3's CLIP token part and CLIP-G pooled part are zero-filled as the host does "
                                       "without those encoders); SDXL needs an adapter trained to SDXL widths (2048 + 1280). "
                                       "'FLUX (adapter widths)' writes FLUX's layout at the adapter's own widths, for an adapter "
                                       "trained against other text encoders (such as the embedded SynthAV one) and a FLUX model "
                                       "built for those widths."),
                io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1,
                               tooltip="FLUX's distilled guidance (as FluxGuidance sets it); ignored for SD3 and SDXL."),
                io.Conditioning.Input("text_conditioning", optional=True,
                                      tooltip="Optional: a prompt encoded by the host's own text encoder (CLIP Text Encode with the "
                                              "model's text encoders), e.g. the composed caption from Compose Prompt."),
                io.Combo.Input("combine", options=list(COMBINE_MODES), default="concat",
                               tooltip="With text: concat = text tokens then audio tokens (pooled vectors blended by weight); "
                                       "blend = (1 - weight) x text + weight x audio, token by token (audio cut or zero-padded "
                                       "to the text's length) and for the pooled vector."),
                io.Float.Input("weight", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="The audio's share when combining with text: 0 = text only, 1 = audio only "
                                       "(tokens in blend mode, pooled vector in both modes)."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, adapter, audio_embedding, target="FLUX", guidance=3.5, text_conditioning=None, combine="concat", weight=0.5) -> io.NodeOutput:
        node = "Audio to Conditioning"
        adapter = _check_adapter(adapter, node)
        if not hasattr(audio_embedding, "expect"):
            raise ValueError(f"{node}: connect an AST embedding from Encode Audio")
        config = adapter.config
        audio_embedding.expect(node, "ast", dim=config.audio_dim, model=config.audio_encoder or None, sequence=True)
        check_interrupt()
        try:
            with torch.inference_mode(), on_compute_device(adapter, half=False) as (device, dtype):
                output = adapter(audio_embedding.vectors.to(device=device, dtype=dtype))
            conditioning = build_conditioning(output, target, guidance, text_conditioning, combine, weight)
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None
        return io.NodeOutput(conditioning)


def _adapter_output_path(name: str, node: str) -> str:
    stem = name.strip()
    if stem.endswith(".safetensors"):
        stem = stem[: -len(".safetensors")]
    if not stem or not re.fullmatch(r"[A-Za-z0-9_.\- ]+", stem) or stem.startswith("."):
        raise ValueError(f"{node}: adapter_name '{name}' must be a plain file name (letters, digits, _ - . and spaces)")
    folder = os.path.join(folder_paths.models_dir, "audiovisual", FOLDERS["av_adapters"])
    return os.path.join(folder, stem + ".safetensors")


def resolve_data_folder(path: str, node: str) -> str:
    """A folder of training data: absolute, or relative to the host's input folder, then to the current folder."""
    path = path.strip()
    candidates = [path] if os.path.isabs(path) else [os.path.join(folder_paths.get_input_directory(), path), os.path.abspath(path)]
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"{node}: data folder '{path}' not found (relative paths are read from the host's input folder)")


class TrainAudioAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_TrainAudioAdapter",
            display_name="Train Audio Adapter",
            category=st.category("train"),
            description="Trains a small SeeingSounds adapter: AST tokens of each clip -> the frozen T5 states and CLIP pooled "
                        "vector of its class caption (MSE, one AdamW per branch). For small sets; use "
                        "'python -m comfyui_audiovisual train adapter' (torchrun-capable) for large ones. Writes "
                        "models/audiovisual/adapters/<adapter_name>.safetensors.",
            inputs=[
                st.Encoder.Input("audio_encoder", tooltip="An AST encoder from Load Encoder."),
                st.Encoder.Input("t5_encoder", tooltip="A T5 encoder from Load Encoder (FLUX: T5-XXL)."),
                st.Encoder.Input("clip_text_encoder", tooltip="A CLIP text encoder from Load Encoder (FLUX: CLIP-L)."),
                io.Combo.Input("data", options=["synthav", "folder"], default="synthav",
                               tooltip="synthav = procedural SynthAV scenes with their audio captions; folder = labelled clips "
                                       "(captions.csv, or one sub-folder per class)."),
                io.String.Input("folder", default="", tooltip="For data=folder: the folder of labelled clips (relative paths are read "
                                                              "from the host's input folder)."),
                io.Int.Input("clips", default=128, min=2, max=100000, tooltip="For data=synthav: training scenes to generate."),
                io.Int.Input("heldout_clips", default=32, min=0, max=10000,
                             tooltip="Clips kept out of training to measure the held-out MSE (synthav: held-out scenes)."),
                io.Int.Input("text_tokens", default=256, min=1, max=4096, tooltip="T5 tokens the adapter makes (FLUX: 256)."),
                io.Int.Input("hidden_dim", default=256, min=8, max=4096, tooltip="Width of the adapter's MLPs and pooling."),
                io.Combo.Input("pooling", options=["attention", "mean"], default="attention",
                               tooltip="attention = learnable queries attend over the audio tokens (paper); mean = the ablation."),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Optimiser steps."),
                io.Int.Input("batch_size", default=16, min=1, max=1024, tooltip="Clips per step."),
                io.Float.Input("lr_text", default=1e-5, min=1e-9, max=1.0, step=1e-6, round=False,
                               tooltip="AdamW rate of the T5 branch (paper: 1e-5; tiny encoders need ~1e-3)."),
                io.Float.Input("lr_pooled", default=1e-7, min=1e-10, max=1.0, step=1e-8, round=False,
                               tooltip="AdamW rate of the CLIP branch (paper: 1e-7; tiny encoders need ~1e-3)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, tooltip="Seed of the initial weights and the batches."),
                io.String.Input("adapter_name", default="my_audio_adapter", tooltip="File name for models/audiovisual/adapters."),
            ],
            outputs=[st.AudioAdapter.Output(display_name="adapter"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, audio_encoder, t5_encoder, clip_text_encoder, data="synthav", folder="", clips=128, heldout_clips=32,
                text_tokens=256, hidden_dim=256, pooling="attention", steps=500, batch_size=16, lr_text=1e-5, lr_pooled=1e-7,
                seed=0, adapter_name="my_audio_adapter") -> io.NodeOutput:
        node = "Train Audio Adapter"
        out_path = _adapter_output_path(adapter_name, node)
        with torch.inference_mode(False), torch.enable_grad():  # the host runs nodes under inference mode
            adapter, report = cls._train(node, out_path, audio_encoder, t5_encoder, clip_text_encoder, data, folder, clips, heldout_clips,
                                         text_tokens, hidden_dim, pooling, steps, batch_size, lr_text, lr_pooled, seed)
        return io.NodeOutput(adapter, report)

    @classmethod
    def _train(cls, node, out_path, audio_encoder, t5_encoder, clip_text_encoder, data, folder, clips, heldout_clips, text_tokens, hidden_dim,
               pooling, steps, batch_size, lr_text, lr_pooled, seed):
        from ..training import audio_adapter as training

        try:
            if data == "synthav":
                train_clips = training.synthav_clips("train", clips)
                held_clips = training.synthav_clips("heldout", heldout_clips) if heldout_clips else []
            else:
                all_clips = training.folder_clips(resolve_data_folder(folder, node))
                if heldout_clips >= len(all_clips):
                    raise ValueError(f"heldout_clips {heldout_clips} leaves no training clips (the folder has {len(all_clips)})")
                order = torch.randperm(len(all_clips), generator=torch.Generator().manual_seed(seed)).tolist()
                held_clips = [all_clips[i] for i in order[:heldout_clips]]
                train_clips = [all_clips[i] for i in order[heldout_clips:]]
            for what, encoder, family in (("audio_encoder", audio_encoder, "ast"), ("t5_encoder", t5_encoder, "t5"),
                                          ("clip_text_encoder", clip_text_encoder, "clip_text")):
                if getattr(encoder, "family", None) != family:
                    got = encoder.describe() if hasattr(encoder, "describe") else type(encoder).__name__
                    raise ValueError(f"{what}: expected a {family.upper().replace('_', ' ')} encoder from Load Encoder, got {got}")
            with on_compute_device(audio_encoder.module, half=True), on_compute_device(t5_encoder.module, half=False), \
                    on_compute_device(clip_text_encoder.module, half=True):
                features = training.encode_features(train_clips + held_clips, audio_encoder, t5_encoder, clip_text_encoder,
                                                    text_tokens=text_tokens, progress=HostProgress(), check_interrupt=check_interrupt)
            train = features.subset(range(len(train_clips)))
            heldout = features.subset(range(len(train_clips), len(features))) if held_clips else None
            heads = next(h for h in (8, 4, 2, 1) if hidden_dim % h == 0)
            torch.manual_seed(seed)
            adapter = AudioAdapter(training.config_for(train, hidden_dim=hidden_dim, num_heads=heads, pooling=pooling))
            args = training.AdapterTrainingArgs(steps=steps, batch_size=batch_size, lr_text=lr_text, lr_pooled=lr_pooled, log_every=0, seed=seed)
            lines = []
            source = f"synthav:{clips}" if data == "synthav" else f"folder:{os.path.basename(os.path.normpath(folder))}"
            try:
                result = training.train_adapter(adapter, train, heldout, args, out_path, device=mm.get_torch_device(),
                                                extra_metadata={"data": source}, log=lines.append, progress=HostProgress(),
                                                check_interrupt=check_interrupt)
            finally:
                adapter.to(mm.unet_offload_device())
                mm.soft_empty_cache()
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{node}: {e}") from None
        report = "\n".join(lines)
        if result.get("heldout_after"):
            report += f"\nheld-out MSE {result['heldout_before']['total']:.5f} -> {result['heldout_after']['total']:.5f}"
        return adapter.eval().requires_grad_(False), report


NODES = [LoadAudioAdapter, AudioToConditioning, TrainAudioAdapter]
