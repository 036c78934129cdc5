"""Visual Echoes nodes: load the masked generative transformer; sample (image->audio, audio->image,
co-generation) and inpaint with iterative unmasking and classifier-free guidance."""

import math
import sys
import time
from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..loaders.masked_transformer import load_masked_transformer
from ..samplers.embedding_to_audio import columns_for_duration
from ..networks.masked_transformer import MaskedAVTransformer
from ..samplers.vatt import default_overlap, window_starts
from ..samplers.visual_echoes import (
    SPECVQGAN_GRID_ROWS,
    TEMPERATURE,
    audio_columns_for_seconds,
    audio_grid_to_sequence,
    audio_sequence_to_grid,
    audio_time_range_mask,
    image_to_audio_windows,
    image_grid_to_sequence,
    image_sequence_to_grid,
    visual_echoes_sample,
)
from . import socket_types as st
from .device import check_interrupt, on_compute_device
from .model_folders import list_models, load_once, resolve_model
from .payloads import TokenGrid
from .tokenizers import check_token_decoders, hidden_graph, read_file_metadata

TASKS = ["image_to_audio", "audio_to_image", "co_generate"]


@dataclass
class LoadedMaskedTransformer:
    """The transformer with the token grids it was trained on: audio (rows, columns), image (h, w)."""

    model: MaskedAVTransformer
    audio_grid: tuple[int, int]
    image_grid: tuple[int, int]
    seconds_per_column: float


def _grids_for(model: MaskedAVTransformer, metadata: dict) -> tuple[tuple[int, int], tuple[int, int], float]:
    import json

    config = model.config
    audio_grid = tuple(json.loads(metadata["audio_grid"])) if "audio_grid" in metadata else (SPECVQGAN_GRID_ROWS, config.audio_seq_len // SPECVQGAN_GRID_ROWS)
    side = int(math.isqrt(config.image_seq_len))
    image_grid = tuple(json.loads(metadata["image_grid"])) if "image_grid" in metadata else (side, config.image_seq_len // side)
    seconds = float(metadata.get("seconds_per_column", 16 * 256 / 22050))
    return audio_grid, image_grid, seconds


class LoadMaskedTransformer(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_LoadMaskedTransformer",
            display_name="Load Masked AV Transformer",
            category=st.category("loaders"),
            description="Loads a Visual Echoes masked generative transformer (safetensors with its config) from models/audiovisual/maskgen.",
            inputs=[io.Combo.Input("model_name", options=list_models("av_maskgen"), tooltip="The transformer file in models/audiovisual/maskgen (synthav_* ships with the pack).")],
            outputs=[st.MaskedTransformer.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        path = resolve_model("av_maskgen", model_name, "Load Masked AV Transformer")
        try:
            loaded = load_once("masked_transformer", path, _load_transformer)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"Load Masked AV Transformer: {e}") from None
        return io.NodeOutput(loaded)


def _load_transformer(path: str) -> LoadedMaskedTransformer:
    model = load_masked_transformer(path)
    audio_grid, image_grid, seconds = _grids_for(model, read_file_metadata(path))
    return LoadedMaskedTransformer(model, audio_grid, image_grid, seconds)


def _sequence_of(tokens: TokenGrid | None, modality: str, loaded: LoadedMaskedTransformer, node: str) -> torch.Tensor | None:
    if tokens is None:
        return None
    tokens.expect(modality, node)
    config = loaded.model.config
    vocab = config.audio_vocab_size if modality == "audio" else config.image_vocab_size
    expected = loaded.audio_grid if modality == "audio" else loaded.image_grid
    if tokens.codebook_size != vocab:
        raise ValueError(f"{node}: the {modality} tokens use {tokens.codebook_size} codes, the transformer expects {vocab}")
    if tokens.grid_shape != tuple(expected):
        raise ValueError(f"{node}: the {modality} tokens form a {tokens.grid_shape[0]}x{tokens.grid_shape[1]} grid, "
                         f"the transformer was trained on {expected[0]}x{expected[1]}")
    grid = tokens.indices
    return audio_grid_to_sequence(grid) if modality == "audio" else image_grid_to_sequence(grid)


def _run_sampler(loaded: LoadedMaskedTransformer, task: str, audio_seq, image_seq, *, seed: int, steps: int, cfg: float,
                 temperature: float, schedule: str, batch_size: int, audio_mask=None, image_mask=None, preview_tokenizer=None,
                 audio_columns: int | None = None):
    """One call of the sampler; with ``audio_columns`` (image_to_audio only) the audio is made in windows of the
    model's grid, each continuing the previous one (samplers.visual_echoes.image_to_audio_windows)."""
    import comfy.utils

    rows, window = loaded.audio_grid
    windows = 1 if audio_columns is None else len(window_starts(audio_columns, window, default_overlap(window)))
    progress = comfy.utils.ProgressBar(steps * windows)
    last_preview = [-math.inf]
    with on_compute_device(loaded.model, half=True) as (device, dtype):
        def to_device(x):
            return None if x is None else x.to(device)

        def on_step(step, total, audio, image):
            picture = None
            due = step + 1 == total or time.monotonic() - last_preview[0] >= PREVIEW_INTERVAL_S
            if preview_tokenizer is not None and due and editor_is_watching():
                picture = _preview(preview_tokenizer, loaded, audio, image)
                last_preview[0] = time.monotonic()
            progress.update_absolute(step + 1, total, picture)

        generator = torch.Generator(device=device).manual_seed(int(seed))
        if audio_columns is None:
            audio, image = visual_echoes_sample(
                loaded.model, task, to_device(audio_seq), to_device(image_seq), audio_mask=to_device(audio_mask), image_mask=to_device(image_mask),
                batch_size=batch_size, steps=steps, schedule=schedule, temperature=temperature, cfg=cfg, generator=generator,
                callback=on_step, check_interrupt=check_interrupt)
        else:
            audio, image = image_to_audio_windows(
                loaded.model, to_device(image_seq), audio_columns, rows=rows, batch_size=batch_size, steps=steps, schedule=schedule,
                temperature=temperature, cfg=cfg, generator=generator, callback=on_step, check_interrupt=check_interrupt)
    audio_grid = audio_sequence_to_grid(audio.cpu(), loaded.audio_grid[0])
    image_grid = image_sequence_to_grid(image.cpu(), *loaded.image_grid)
    config = loaded.model.config
    return TokenGrid(audio_grid, "audio", config.audio_vocab_size), TokenGrid(image_grid, "image", config.image_vocab_size)


def _check_decoders(node_class, loaded: LoadedMaskedTransformer, node: str) -> None:
    """Tokens to Mel / Tokens to Image fed by this sampler must decode its tokens (nodes.tokenizers.check_token_decoders)."""
    config = loaded.model.config
    check_token_decoders(*hidden_graph(node_class), node,
                         {0: ("audio", config.audio_vocab_size), 1: ("image", config.image_vocab_size)},
                         ("model", "AV_LoadMaskedTransformer", "transformer"))


def _check_preview(tokenizer, loaded: LoadedMaskedTransformer, node: str) -> None:
    """The live-preview tokenizer must decode the transformer's tokens of its modality (checked before sampling:
    a wrong one would fail at the first preview, mid-run, and only while the editor is open)."""
    if tokenizer is None:
        return
    modality, size = getattr(tokenizer, "modality", None), getattr(tokenizer, "codebook_size", None)
    vocab = {"audio": loaded.model.config.audio_vocab_size, "image": loaded.model.config.image_vocab_size}.get(modality)
    if vocab is None:
        raise ValueError(f"{node}: 'preview' must be a tokenizer from Load VQ Tokenizer, got {type(tokenizer).__name__}")
    if size != vocab:
        raise ValueError(f"{node}: the 'preview' tokenizer has {size} codes, but the transformer makes {modality} tokens of "
                         f"{vocab} codes; connect the {modality} tokenizer the transformer was trained with")


PREVIEW_INTERVAL_S = 0.25
"""A live preview is decoded at most this often (and after the last step): a decode costs about as
much as a sampler step of the shipped model, so decoding after every step doubled the node's time."""


def editor_is_watching() -> bool:
    """True when a preview can be seen: the host's server runs (PromptServer.instance) with at least one
    client connected. Headless runs (the runner, scripts) and a server nobody has open decode none."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    return bool(getattr(instance, "sockets", None))


def _preview(tokenizer, loaded: LoadedMaskedTransformer, audio_seq, image_seq):
    """The partly unmasked output decoded by the connected tokenizer, as the host's preview tuple."""
    if tokenizer is None:
        return None
    from PIL import Image

    from ..audio.mel_frontend import mel_to_picture

    with torch.inference_mode():
        if tokenizer.modality == "audio":
            grid = audio_sequence_to_grid(audio_seq[:1].to(tokenizer.device), loaded.audio_grid[0])
            picture = mel_to_picture(tokenizer.decode_mel(grid))
        else:
            grid = image_sequence_to_grid(image_seq[:1].to(tokenizer.device), *loaded.image_grid)
            picture = tokenizer.decode_image(grid)
    array = (picture[0].clamp(0, 1) * 255).byte().numpy()
    return ("JPEG", Image.fromarray(array), 512)


SAMPLER_INPUTS = [
    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True, tooltip="Seed of every random draw: the same seed gives the same output."),
    io.Int.Input("steps", default=30, min=1, max=256, tooltip="Unmasking steps (paper: 30). Each step runs the transformer once, twice with guidance."),
    io.Float.Input("cfg", default=3.0, min=0.0, max=20.0, step=0.1, tooltip="Classifier-free guidance scale (paper: 3). 1 turns guidance off; the unconditional pass masks the condition fully."),
    io.Float.Input("temperature", default=TEMPERATURE, min=0.0, max=50.0, step=0.1, tooltip="Confidence noise, annealed to 0 over the steps: higher explores more (more varied, less faithful). 2 scores best on the embedded SynthAV models; the paper used 9."),
    io.Combo.Input("schedule", options=["cosine", "linear"], default="cosine", tooltip="How many tokens stay masked after each step: cosine (MaskGIT, paper) or linear."),
]


class VisualEchoesSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_VisualEchoesSampler",
            display_name="Visual Echoes Sampler",
            category=st.category("sample"),
            description="Generates tokens by iterative unmasking (Visual Echoes): image -> audio, audio -> image, or both together. "
                        "Connect a tokenizer to 'preview' to watch the output form on the node.",
            inputs=[
                st.MaskedTransformer.Input("model", tooltip="The masked transformer from Load Masked AV Transformer."),
                io.Combo.Input("task", options=TASKS, default="image_to_audio", tooltip="image_to_audio needs image_tokens, audio_to_image needs audio_tokens, co_generate needs neither."),
                *SAMPLER_INPUTS,
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Outputs to generate (a condition of batch 1 is shared by all)."),
                io.Float.Input("duration_s", default=0.0, min=0.0, max=600.0, step=0.01, optional=True,
                               tooltip="image_to_audio only: length of the sound in seconds; 0 = the model's own window (about 2 s). "
                                       "Longer sound is made in windows of the model's length, each continuing the last quarter of the "
                                       "previous one with the same picture, and covers at least this long (whole token columns; "
                                       "cut it exactly with Fit Audio to Duration). Must be 0 for the other tasks."),
                st.Tokens.Input("image_tokens", optional=True, tooltip="The picture's tokens (condition for image_to_audio)."),
                st.Tokens.Input("audio_tokens", optional=True, tooltip="The sound's tokens (condition for audio_to_image)."),
                st.VQTokenizer.Input("preview", optional=True, tooltip="Optional: the tokenizer of the generated modality, to show a live preview on the node while the editor is open (decoded at most every 0.25 s; headless runs decode none)."),
            ],
            outputs=[st.Tokens.Output("audio_tokens_out", display_name="audio_tokens"), st.Tokens.Output("image_tokens_out", display_name="image_tokens")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, task, seed, steps, cfg, temperature, schedule, batch_size=1, duration_s=0.0, image_tokens=None, audio_tokens=None,
                preview=None) -> io.NodeOutput:
        node = "Visual Echoes Sampler"
        _check_decoders(cls, model, node)
        _check_preview(preview, model, node)
        audio_columns = _columns_for(duration_s, task, model, node)
        needs = {"image_to_audio": ("image", image_tokens), "audio_to_image": ("audio", audio_tokens)}
        if task in needs and needs[task][1] is None:
            raise ValueError(f"{node}: task {task} needs {needs[task][0]}_tokens connected")
        audio_seq = _sequence_of(audio_tokens, "audio", model, node) if task == "audio_to_image" else None
        image_seq = _sequence_of(image_tokens, "image", model, node) if task == "image_to_audio" else None
        condition = audio_seq if audio_seq is not None else image_seq
        rows = batch_size if condition is None or condition.shape[0] == 1 else condition.shape[0]
        return io.NodeOutput(*_run_sampler(model, task, audio_seq, image_seq, seed=seed, steps=steps, cfg=cfg, temperature=temperature,
                                           schedule=schedule, batch_size=rows, preview_tokenizer=preview, audio_columns=audio_columns))


def _columns_for(duration_s, task: str, loaded: LoadedMaskedTransformer, node: str) -> int | None:
    """Audio token columns for ``duration_s`` (None for 0: the model's own window, one plain call)."""
    window_s = loaded.audio_grid[1] * loaded.seconds_per_column
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"{node}: duration_s must be a number of seconds >= 0 (0 = the model's own {window_s:.2f} s), got {duration_s!r}")
    if duration_s == 0:
        return None
    if task != "image_to_audio":
        raise ValueError(f"{node}: duration_s ({duration_s} s) applies to image_to_audio only; {task} makes the model's own "
                         f"{window_s:.2f} s, set duration_s to 0")
    return columns_for_duration(float(duration_s), loaded.seconds_per_column)


class VisualEchoesInpaint(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_VisualEchoesInpaint",
            display_name="Visual Echoes Inpaint",
            category=st.category("sample"),
            description="Regenerates part of the audio (a time range) or of the image (a MASK region), keeping the rest, "
                        "guided by the other modality when it is connected.",
            inputs=[
                st.MaskedTransformer.Input("model", tooltip="The masked transformer from Load Masked AV Transformer."),
                io.Combo.Input("target", options=["audio", "image"], default="audio", tooltip="Which modality to inpaint."),
                *SAMPLER_INPUTS,
                io.Float.Input("start_s", default=0.5, min=0.0, max=600.0, step=0.01, tooltip="Audio target: start of the time range to regenerate, in seconds."),
                io.Float.Input("end_s", default=1.5, min=0.0, max=600.0, step=0.01, tooltip="Audio target: end of the time range to regenerate, in seconds."),
                st.Tokens.Input("audio_tokens", optional=True, tooltip="The sound's tokens (required when inpainting audio; the guide when inpainting the image)."),
                st.Tokens.Input("image_tokens", optional=True, tooltip="The picture's tokens (required when inpainting the image; the guide when inpainting audio)."),
                io.Mask.Input("mask", optional=True, tooltip="Image target: white = regenerate. Resized to the token grid."),
            ],
            outputs=[st.Tokens.Output("audio_tokens_out", display_name="audio_tokens"), st.Tokens.Output("image_tokens_out", display_name="image_tokens")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, target, seed, steps, cfg, temperature, schedule, start_s, end_s, audio_tokens=None, image_tokens=None, mask=None) -> io.NodeOutput:
        node = "Visual Echoes Inpaint"
        _check_decoders(cls, model, node)
        audio_seq = _sequence_of(audio_tokens, "audio", model, node)
        image_seq = _sequence_of(image_tokens, "image", model, node)
        audio_mask = image_mask = None
        if target == "audio":
            if audio_seq is None:
                raise ValueError(f"{node}: inpainting audio needs audio_tokens connected")
            rows, columns = model.audio_grid
            try:
                start, end = audio_columns_for_seconds(start_s, end_s, columns, model.seconds_per_column)
            except ValueError as e:
                raise ValueError(f"{node}: {e}") from None
            if end <= start:
                raise ValueError(f"{node}: the range {start_s}-{end_s} s covers no audio token (the clip is {columns * model.seconds_per_column:.2f} s)")
            audio_mask = audio_time_range_mask(rows, columns, start, end)
        else:
            if image_seq is None or mask is None:
                raise ValueError(f"{node}: inpainting the image needs image_tokens and a mask connected")
            grid = torch.nn.functional.interpolate(mask.reshape(-1, 1, *mask.shape[-2:])[:1].float(), size=tuple(model.image_grid), mode="area")[0, 0]
            image_mask = image_grid_to_sequence((grid > 0.5).unsqueeze(0))[0]
            if not bool(image_mask.any()):
                raise ValueError(f"{node}: the mask covers no image token")
        task = "inpaint_audio" if target == "audio" else "inpaint_image"
        rows = max(x.shape[0] for x in (audio_seq, image_seq) if x is not None)
        return io.NodeOutput(*_run_sampler(model, task, audio_seq, image_seq, seed=seed, steps=steps, cfg=cfg, temperature=temperature,
                                           schedule=schedule, batch_size=rows, audio_mask=audio_mask, image_mask=image_mask))


NODES = [LoadMaskedTransformer, VisualEchoesSampler, VisualEchoesInpaint]
