"""V2A-Mapper nodes: load a mapper, apply it to an embedding (e.g. CLIP image -> CLAP audio), and
train one on a small set of embedding pairs."""

import os
import re
from dataclasses import replace

import torch
from comfy_api.latest import io, ui

from ..loaders.mapper import MAPPER_KINDS, load_mapper, save_mapper
from ..training.mapper import MapperTrainingArgs, encode_each, folder_pairs, infer_space, new_mapper, read_pair, train_mapper
from . import socket_types as st
from .audio_adapter import resolve_data_folder
from .device import check_interrupt, on_compute_device
from .model_folders import list_models, resolve_model
from .payloads import Embedding

FRAME_MODES = ["each", "average"]


class LoadMapper(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadMapper",
            display_name="Load V2A Mapper",
            category=st.category("loaders"),
            description="Loads a V2A-Mapper (regression or diffusion; one .safetensors with its config) from models/audiovisual/mappers. "
                        "The file knows which embedding space it reads (e.g. CLIP image) and which it writes (e.g. CLAP audio).",
            inputs=[io.Combo.Input("mapper_name", options=list_models("av_mappers"),
                                   tooltip="The mapper file in models/audiovisual/mappers (written by Train V2A Mapper or `train mapper`).")],
            outputs=[st.Mapper.Output(display_name="mapper")],
        )

    @classmethod
    def execute(cls, mapper_name) -> io.NodeOutput:
        path = resolve_model("av_mappers", mapper_name, "Load V2A Mapper")
        try:
            return io.NodeOutput(load_mapper(path))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"Load V2A Mapper: {e}") from None


class ApplyMapper(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_ApplyMapper",
            display_name="Apply V2A Mapper",
            category=st.category("sample"),
            description="Translates an embedding into the mapper's target space (V2A-Mapper: CLIP image -> CLAP audio, to condition AudioLDM). "
                        "The input must be in the space the mapper was trained on. A diffusion mapper samples: the seed fixes the result.",
            inputs=[
                st.Mapper.Input("mapper", tooltip="From Load V2A Mapper or Train V2A Mapper."),
                st.Embedding.Input("embedding", tooltip="Vectors in the mapper's source space (e.g. from Encode Image with the same CLIP)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Diffusion mapper: seed of the starting noise; the same seed gives the same output. Ignored by a regression mapper."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Diffusion mapper: reverse diffusion steps (DDIM). Ignored by a regression mapper."),
                io.Float.Input("guidance_scale", default=1.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Diffusion mapper: classifier-free guidance; 1 = off. Higher follows the image more closely, with less variety."),
                io.Float.Input("eta", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Diffusion mapper: 0 = deterministic DDIM after the starting noise; 1 = fresh noise every step (more variety)."),
                io.Combo.Input("frames", options=FRAME_MODES, default="each",
                               tooltip="For per-frame (sequence) embeddings, e.g. video: 'each' maps every frame's vector; "
                                       "'average' maps the mean of the frames once (the paper's choice for video). Pooled inputs are unaffected."),
            ],
            outputs=[st.Embedding.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, mapper, embedding, seed, steps, guidance_scale=1.0, eta=0.0, frames="each") -> io.NodeOutput:
        node = "Apply V2A Mapper"
        if not isinstance(embedding, Embedding):
            raise ValueError(f"{node}: 'embedding' must come from an encoder node (AV_EMBEDDING), got {type(embedding).__name__}")
        source = mapper.source
        embedding.expect(node, source.family, source.dim, source.model or None, weights=source.weights or None)
        vectors = embedding.vectors.float()
        if embedding.is_sequence and frames == "average":
            vectors = vectors.mean(dim=1)
        shape = vectors.shape
        flat = vectors.reshape(-1, shape[-1])
        if flat.shape[0] == 0:
            raise ValueError(f"{node}: {embedding.describe()} holds no vectors")
        import comfy.utils

        diffusion = mapper.kind == "diffusion"
        progress = comfy.utils.ProgressBar(steps if diffusion else 1)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        try:
            with on_compute_device(mapper.network, half=False), torch.inference_mode():
                mapped = mapper.map(flat, steps=int(steps), generator=generator, eta=float(eta), guidance_scale=float(guidance_scale),
                                    callback=lambda i, total, _x: progress.update_absolute(i + 1, total),
                                    check_interrupt=check_interrupt)
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None
        mapped = mapped.float().cpu().reshape(*shape[:-1], mapper.target.dim)
        if not bool(torch.isfinite(mapped).all()):
            raise ValueError(f"{node}: the mapper produced NaN or infinite values")
        target = mapper.target
        modality = f"{target.modality} (mapped from {embedding.modality})" if target.modality else f"mapped from {embedding.modality}"
        return io.NodeOutput(Embedding(mapped, family=target.family, model=target.model, modality=modality,
                                       weights=target.weights))


def _mapper_path(file_name: str, overwrite: bool, node: str) -> str:
    import folder_paths

    name = file_name.strip()
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._+-]*", name) or ".." in name:
        raise ValueError(f"{node}: file_name {file_name!r} must be a plain file name (letters, digits, space, . _ + -), no folders")
    folder = folder_paths.get_folder_paths("av_mappers")[0]
    path = os.path.join(folder, name + ".safetensors")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{node}: {path} already exists; choose another file_name or turn on overwrite")
    return path


def _pooled(embedding, what: str, node: str) -> torch.Tensor:
    if not isinstance(embedding, Embedding):
        raise ValueError(f"{node}: '{what}' must come from an encoder node (AV_EMBEDDING), got {type(embedding).__name__}")
    vectors = embedding.vectors.float()
    if embedding.is_sequence:  # per-frame vectors: the paper averages video frames
        vectors = vectors.mean(dim=1)
    if vectors.dim() != 2 or vectors.shape[0] == 0:
        raise ValueError(f"{node}: '{what}' holds no vectors ({embedding.describe()})")
    if not bool(torch.isfinite(vectors).all()):
        raise ValueError(f"{node}: '{what}' ({embedding.describe()}) holds NaN or infinite values")
    return vectors.cpu()


class TrainMapper(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_TrainMapper",
            display_name="Train V2A Mapper",
            category=st.category("train"),
            description="Trains a V2A-Mapper on a small batch of paired embeddings (row i of source goes with row i of target), "
                        "writes models/audiovisual/mappers/<file_name>.safetensors and outputs the mapper. "
                        "A tenth of the pairs (at least one, when there are 10 or more) is held out and scored. "
                        "For large sets use `python -m comfyui_audiovisual train mapper`.",
            inputs=[
                st.Embedding.Input("source", tooltip="Source vectors, e.g. CLIP embeddings of the images (a batch; per-frame vectors are averaged)."),
                st.Embedding.Input("target", tooltip="Target vectors of the same clips in the same order, e.g. CLAP embeddings of their sounds."),
                io.Combo.Input("kind", options=list(MAPPER_KINDS), default="regression",
                               tooltip="regression: an MLP (deterministic, slightly better relevance); diffusion: a small transformer "
                                       "prior (better fidelity and variety, needs more steps)."),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Optimiser steps."),
                io.Float.Input("learning_rate", default=1e-3, min=1e-6, max=1e-1, step=1e-5, tooltip="AdamW peak learning rate (cosine decay to 10 %)."),
                io.Int.Input("batch_size", default=64, min=1, max=4096, tooltip="Pairs per step (at most the number of training pairs)."),
                io.Int.Input("width", default=256, min=64, max=4096, step=64,
                             tooltip="Network width: the MLP's hidden size, or the transformer's width (one attention head per 64)."),
                io.Int.Input("depth", default=3, min=1, max=24, tooltip="Residual MLP blocks, or transformer blocks."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seed of the initial weights, the held-out split and the batches."),
                io.String.Input("file_name", default="my_mapper", tooltip="Name of the file written to models/audiovisual/mappers (.safetensors is added)."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing file of that name."),
            ],
            outputs=[st.Mapper.Output(display_name="mapper"), io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, source, target, kind, steps, learning_rate, batch_size, width, depth, seed, file_name, overwrite=False) -> io.NodeOutput:
        node = "Train V2A Mapper"
        source_vectors, target_vectors = _pooled(source, "source", node), _pooled(target, "target", node)
        if source_vectors.shape[0] != target_vectors.shape[0]:
            raise ValueError(f"{node}: source has {source_vectors.shape[0]} vectors and target {target_vectors.shape[0]}; "
                             f"pairs need batches of equal length")
        if source_vectors.shape[0] < 2:
            raise ValueError(f"{node}: need at least 2 pairs, got {source_vectors.shape[0]}")
        if kind not in MAPPER_KINDS:
            raise ValueError(f"{node}: kind must be one of {', '.join(MAPPER_KINDS)}, got {kind!r}")
        path = _mapper_path(file_name, overwrite, node)
        count = source_vectors.shape[0]
        network = {"hidden_dim": width, "num_blocks": depth} if kind == "regression" else \
            {"width": width, "depth": depth, "num_heads": max(1, width // 64)}
        import comfy.utils

        progress = comfy.utils.ProgressBar(int(steps))

        def on_step(step, total):
            check_interrupt()
            progress.update_absolute(step, total)

        lines = []
        # the host runs nodes under inference mode: training needs ordinary tensors and autograd
        with torch.inference_mode(False), torch.enable_grad():
            source_vectors, target_vectors = source_vectors.clone(), target_vectors.clone()
            try:
                args = MapperTrainingArgs(kind=kind, steps=int(steps), batch_size=int(batch_size), lr=float(learning_rate),
                                          heldout_fraction=0.1 if count >= 10 else 0.0, seed=int(seed) % (2 ** 63),
                                          log_every=max(1, int(steps) // 10), network=network)
                # the spaces also record the encoders' weights fingerprints (what the mapper checks at use)
                source_space = replace(infer_space(source_vectors, source.family, source.model, source.modality), weights=source.weights)
                target_space = replace(infer_space(target_vectors, target.family, target.model, target.modality), weights=target.weights)
                mapper = new_mapper(kind, source_space, target_space, source_vectors, target_vectors, network, seed=args.seed)
                with on_compute_device(mapper.network, half=False) as (device, _dtype):
                    result = train_mapper(mapper, source_vectors, target_vectors, args, device=device, on_step=on_step, log=lines.append)
            except ValueError as e:
                raise ValueError(f"{node}: {e}") from None
        mapper.network.eval()
        mapper.name = os.path.splitext(os.path.basename(path))[0]
        extra = {"trainer": "mapper (node)", "steps": int(steps), "pairs": count, "heldout": result["heldout_after"] or {},
                 "heldout_untrained": result["heldout_before"] or {}}
        save_mapper(mapper, path, extra_metadata=extra)
        report = "\n".join([f"{mapper.describe()}: {count} pairs, {steps} steps", *lines, f"wrote {path}"])
        return io.NodeOutput(mapper, report, ui=ui.PreviewText(report))


class EncodeClipFolder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EncodeClipFolder",
            display_name="Encode Clip Folder",
            category=st.category("train"),
            description="Reads a folder of your clips (videos with sound: the middle frame and the sound; or pictures and "
                        "sounds with the same name, x.png + x.wav) and encodes each picture with the image encoder and each "
                        "sound with the audio encoder: the paired embeddings Train V2A Mapper learns from (row i of both is clip i).",
            inputs=[
                st.Encoder.Input("image_encoder", tooltip="The CLIP the mapper will read (from Load Encoder): the same one the "
                                                          "image -> audio workflow encodes pictures with."),
                st.Encoder.Input("audio_encoder", tooltip="The CLAP the mapper will write (from Load Encoder): the one your AudioLDM "
                                                          "was trained with (its folder's text encoder, or laion/clap-htsat-unfused)."),
                io.String.Input("folder", default="my_clips",
                                tooltip="The folder of clips; a relative path is read from the host's input folder (input/my_clips)."),
            ],
            outputs=[st.Embedding.Output(display_name="pictures"), st.Embedding.Output(display_name="sounds")],
        )

    @classmethod
    def execute(cls, image_encoder, audio_encoder, folder) -> io.NodeOutput:
        import comfy.utils

        node = "Encode Clip Folder"
        path = resolve_data_folder(folder, node)
        try:
            pairs = folder_pairs(path)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{node}: {e}") from None
        total = 3 * len(pairs)  # read, encode the pictures, encode the sounds
        progress = comfy.utils.ProgressBar(total)
        images, sounds = [], []
        for index, (picture_path, sound_path) in enumerate(pairs):
            check_interrupt()
            try:
                image, sound = read_pair(picture_path, sound_path)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"{node}: {e}") from None
            images.append(image)
            sounds.append(sound)
            progress.update_absolute(index + 1, total)

        def on_item(offset):
            def step(done, _count):
                check_interrupt()
                progress.update_absolute(offset + done, total)
            return step

        embeddings = []
        for encoder, modality, items, offset in ((image_encoder, "image", images, len(pairs)), (audio_encoder, "audio", sounds, 2 * len(pairs))):
            try:
                vectors, first = encode_each(encoder, modality, items, modality, on_item=on_item(offset))
            except ValueError as e:
                raise ValueError(f"{node}: the {modality} encoder: {e}") from None
            embeddings.append(Embedding(vectors=vectors, family=first.family, model=first.model, modality=first.modality,
                                        weights=getattr(first, "weights", "") or ""))
        return io.NodeOutput(*embeddings, ui=ui.PreviewText(f"{len(pairs)} clips from {path}"))


NODES = [LoadMapper, ApplyMapper, TrainMapper, EncodeClipFolder]
