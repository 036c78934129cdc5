"""A diffusers AudioLDM folder (e.g. cvssp/audioldm-s-full-v2) -> `AudioLDM`: UNet, VAE, vocoder,
scheduler, and optionally its own CLAP text encoder and tokenizer.

Published layout (what `load_audioldm` reads):

    model_index.json            "_class_name": "AudioLDMPipeline"
    unet/        config.json + diffusion_pytorch_model.safetensors   UNet2DConditionModel, class_embed_type "simple_projection"
    vae/         config.json + diffusion_pytorch_model.safetensors   AutoencoderKL, 1 channel (mel spectrogram)
    vocoder/     config.json + model.safetensors                     SpeechT5HifiGan (64 mels, 16 kHz, hop 160)
    scheduler/   scheduler_config.json                               DDIMScheduler (any diffusers scheduler class)
    text_encoder/ config.json + model.safetensors                    ClapTextModelWithProjection (optional)
    tokenizer/   vocab.json, merges.txt, tokenizer_config.json       RobertaTokenizer (optional)

Weights are read from safetensors; a component that only has a pickle (`*.bin`) is read through
`checkpoint_io.read_state_dict` (torch.load with weights_only=True, nothing else constructed).
The conditioning is one L2-normalised CLAP vector per clip (width `clap_dim`, 512 for the
published checkpoints); it enters the UNet as `class_labels`.
"""

from __future__ import annotations

import json
import math
import os

import torch

from .checkpoint_io import read_state_dict

PIPELINE_CLASSES = ("AudioLDMPipeline",)
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
TRANSFORMERS_WEIGHTS = ("model", "pytorch_model")


class AudioLDM(torch.nn.Module):
    """The parts of an AudioLDM pipeline the pack uses. A torch Module, so that the host's device
    handling moves every network at once; the scheduler and tokenizer are plain attributes."""

    def __init__(self, unet, vae, vocoder, scheduler, text_encoder=None, tokenizer=None, name: str = "", folder: str = ""):
        super().__init__()
        self.unet = unet.eval()
        self.vae = vae.eval()
        self.vocoder = vocoder.eval()
        self.text_encoder = text_encoder.eval() if text_encoder is not None else None
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.name = name
        self.folder = folder
        self._unconditional: torch.Tensor | None = None

    @property
    def clap_dim(self) -> int:
        """Width of the CLAP embedding the UNet takes (projection_class_embeddings_input_dim)."""
        return int(self.unet.config.projection_class_embeddings_input_dim)

    @property
    def sample_rate_hz(self) -> int:
        return int(self.vocoder.config.sampling_rate)

    @property
    def hop_samples(self) -> int:
        return int(math.prod(self.vocoder.config.upsample_rates))

    @property
    def n_mels(self) -> int:
        return int(self.vocoder.config.model_in_dim)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def has_text_encoder(self) -> bool:
        return self.text_encoder is not None and self.tokenizer is not None

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """CLAP text embeddings [len(texts), clap_dim], L2-normalised, float32 on the CPU, computed as
        AudioLDMPipeline does (padding to the tokenizer's max length, `text_embeds`)."""
        if not self.has_text_encoder:
            raise ValueError(f"{self.name}: this AudioLDM folder has no text_encoder/ and tokenizer/, so it cannot encode text")
        encoder_device = next(self.text_encoder.parameters()).device
        inputs = self.tokenizer(list(texts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        output = self.text_encoder(inputs.input_ids.to(encoder_device), attention_mask=inputs.attention_mask.to(encoder_device))
        return torch.nn.functional.normalize(output.text_embeds.float(), dim=-1).cpu()

    def unconditional_embedding(self) -> torch.Tensor:
        """The guidance's unconditional vector [1, clap_dim]: the embedding of the empty text, as
        AudioLDM (and diffusers' pipeline) use, when the folder has its text encoder; zeros otherwise."""
        if self._unconditional is None:
            self._unconditional = self.encode_text([""]) if self.has_text_encoder else torch.zeros(1, self.clap_dim)
        return self._unconditional


def _read_json(path: str, source: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: not valid JSON ({error})") from error


def _describe_other_folder(folder: str) -> str:
    """A hint at what a folder without model_index.json holds."""
    config = os.path.join(folder, "config.json")
    if os.path.isfile(config):
        try:
            model_type = _read_json(config, "config.json").get("model_type")
        except ValueError:
            model_type = None
        if model_type:
            return f" (it holds a transformers '{model_type}' model: config.json)"
        return " (it holds a single model's config.json, not a pipeline)"
    return ""


def _check_pipeline_folder(folder: str, name: str) -> dict:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such AudioLDM folder")
    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        raise ValueError(f"{name}: not a diffusers AudioLDM folder: model_index.json is missing{_describe_other_folder(folder)}; "
                         f"expected the layout of cvssp/audioldm-s-full-v2 (model_index.json, unet/, vae/, vocoder/, scheduler/)")
    index = _read_json(index_path, f"{name}/model_index.json")
    class_name = index.get("_class_name")
    if class_name not in PIPELINE_CLASSES:
        hint = " (AudioLDM 2 conditions on GPT-2/T5 states, not on one CLAP vector, and is not supported)" if class_name == "AudioLDM2Pipeline" else ""
        raise ValueError(f"{name}/model_index.json: _class_name is {class_name!r}, expected 'AudioLDMPipeline'{hint}; "
                         f"an AudioLDM folder has unet/, vae/, vocoder/ and scheduler/")
    for part, what in (("unet", "UNet2DConditionModel"), ("vae", "AutoencoderKL"), ("vocoder", "SpeechT5HifiGan"), ("scheduler", "scheduler")):
        config_name = "scheduler_config.json" if part == "scheduler" else "config.json"
        if not os.path.isfile(os.path.join(folder, part, config_name)):
            raise FileNotFoundError(f"{name}: missing {part}/{config_name} (the {what} of the AudioLDM pipeline)")
    return index


def _weight_file(component_dir: str, stems: tuple[str, ...], source: str) -> tuple[str, bool]:
    """(path, is_safetensors): a safetensors file (or sharded index) first, else a pickle."""
    for stem in stems:
        for candidate in (f"{stem}.safetensors", f"{stem}.safetensors.index.json"):
            if os.path.isfile(os.path.join(component_dir, candidate)):
                return os.path.join(component_dir, candidate), True
    for stem in stems:
        for ext in (".bin", ".ckpt", ".pt", ".pth"):
            if os.path.isfile(os.path.join(component_dir, stem + ext)):
                return os.path.join(component_dir, stem + ext), False
    raise FileNotFoundError(f"{source}: no weights: expected {stems[0]}.safetensors")


def _check_loading(info: dict | None, source: str) -> None:
    problems = [(kind, key) for kind in ("missing_keys", "mismatched_keys") for key in (info or {}).get(kind) or ()]
    if problems:
        kind, key = problems[0]
        key = key[0] if isinstance(key, tuple) else key
        what = "missing key" if kind == "missing_keys" else "key with the wrong shape"
        raise ValueError(f"{source}: {what} {key!r} in the weights ({len(problems)} problem(s) in all)")


def _load_state_dict_into(model: torch.nn.Module, state_dict: dict, source: str) -> torch.nn.Module:
    if hasattr(model, "_fix_state_dict_keys_on_load"):  # diffusers: old attention key names (query/key/value/proj_attn)
        model._fix_state_dict_keys_on_load(state_dict)
    expected = model.state_dict()
    for key, tensor in state_dict.items():
        if key in expected and expected[key].shape != tensor.shape:
            raise ValueError(f"{source}: key {key!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")
    missing = [key for key in expected if key not in state_dict]
    if missing:
        raise ValueError(f"{source}: missing key {missing[0]!r} in the weights ({len(missing)} missing in all)")
    model.load_state_dict(state_dict, strict=False)
    return model


def _load_diffusers_model(cls, folder: str, part: str, name: str):
    component_dir = os.path.join(folder, part)
    source = f"{name}/{part}"
    path, safe = _weight_file(component_dir, (DIFFUSERS_WEIGHTS,), source)
    if safe:
        try:
            model, info = cls.from_pretrained(component_dir, local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False,
                                              output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as error:
            raise ValueError(f"{source}: could not load the {cls.__name__} ({str(error).splitlines()[0]})") from error
        _check_loading(info, source)
        return model
    state_dict, _ = read_state_dict(path)
    try:
        model = cls.from_config(cls.load_config(component_dir))
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{source}/config.json: not a {cls.__name__} config ({error})") from error
    return _load_state_dict_into(model, state_dict, f"{source}/{os.path.basename(path)}")


def _load_transformers_model(cls, config_cls, folder: str, part: str, name: str, model_types: tuple[str, ...]):
    component_dir = os.path.join(folder, part)
    source = f"{name}/{part}"
    model_type = _read_json(os.path.join(component_dir, "config.json"), f"{source}/config.json").get("model_type")
    if model_type not in model_types:
        raise ValueError(f"{source}/config.json: model_type is {model_type!r}, expected {model_types[0]!r} ({cls.__name__})")
    path, safe = _weight_file(component_dir, TRANSFORMERS_WEIGHTS, source)
    if safe:
        try:
            model, info = cls.from_pretrained(component_dir, local_files_only=True, use_safetensors=True, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as error:
            raise ValueError(f"{source}: could not load the {cls.__name__} ({str(error).splitlines()[0]})") from error
        _check_loading(info, source)
        return model
    state_dict, _ = read_state_dict(path)
    model = cls(config_cls.from_pretrained(component_dir, local_files_only=True))
    return _load_state_dict_into(model, state_dict, f"{source}/{os.path.basename(path)}")


def _load_scheduler(folder: str, name: str):
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    source = f"{name}/scheduler/scheduler_config.json"
    config = _read_json(os.path.join(folder, "scheduler", "scheduler_config.json"), source)
    class_name = config.get("_class_name")
    cls = getattr(diffusers, str(class_name), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"{source}: _class_name is {class_name!r}, expected a diffusers scheduler such as 'DDIMScheduler'")
    return cls.from_config(config)


def _listed(index: dict, part: str) -> bool:
    entry = index.get(part)
    return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None


def _load_text_parts(folder: str, name: str, index: dict):
    """(text_encoder, tokenizer), or (None, None) when the folder has none. A present but broken one is an error."""
    encoder_dir, tokenizer_dir = os.path.join(folder, "text_encoder"), os.path.join(folder, "tokenizer")
    has_encoder = os.path.isfile(os.path.join(encoder_dir, "config.json"))
    has_tokenizer = os.path.isdir(tokenizer_dir) and any(
        os.path.isfile(os.path.join(tokenizer_dir, f)) for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json"))
    if not has_encoder and not has_tokenizer:
        if _listed(index, "text_encoder"):
            raise FileNotFoundError(f"{name}: model_index.json lists a text_encoder but text_encoder/config.json is missing "
                                    f"(remove the entry, or copy the folder completely)")
        return None, None
    if has_encoder != has_tokenizer:
        missing = "tokenizer/ (vocab.json, merges.txt)" if has_encoder else "text_encoder/ (config.json, model.safetensors)"
        raise FileNotFoundError(f"{name}: the text encoder needs both text_encoder/ and tokenizer/; missing {missing}")
    from transformers import AutoTokenizer, ClapTextConfig, ClapTextModelWithProjection

    encoder = _load_transformers_model(ClapTextModelWithProjection, ClapTextConfig, folder, "text_encoder", name, ("clap_text_model",))
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{name}/tokenizer: could not load the tokenizer ({str(error).splitlines()[0]})") from error
    return encoder, tokenizer


def load_audioldm(folder: str | os.PathLike) -> AudioLDM:
    """Loads a diffusers AudioLDM folder (see the module doc for the layout).

    Raises:
        FileNotFoundError: the folder, or a required part of it, does not exist (the message names it).
        ValueError: the folder is another kind of model (a CLIP folder, a Stable Diffusion pipeline,
            AudioLDM 2, ...), a weight file is unreadable or does not fit its config.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    folder = os.fspath(folder)
    name = os.path.basename(os.path.normpath(folder))
    index = _check_pipeline_folder(folder, name)
    unet = _load_diffusers_model(UNet2DConditionModel, folder, "unet", name)
    if unet.config.class_embed_type != "simple_projection" or not unet.config.projection_class_embeddings_input_dim:
        raise ValueError(f"{name}/unet/config.json: class_embed_type is {unet.config.class_embed_type!r}, expected 'simple_projection' "
                         f"with projection_class_embeddings_input_dim (the CLAP width): not an AudioLDM UNet")
    vae = _load_diffusers_model(AutoencoderKL, folder, "vae", name)
    if vae.config.in_channels != 1:
        raise ValueError(f"{name}/vae/config.json: in_channels is {vae.config.in_channels}, expected 1 (a mel spectrogram VAE)")
    if vae.config.latent_channels != unet.config.in_channels:
        raise ValueError(f"{name}: the VAE has {vae.config.latent_channels} latent channels, the UNet takes {unet.config.in_channels}")
    vocoder = _load_transformers_model(SpeechT5HifiGan, SpeechT5HifiGanConfig, folder, "vocoder", name, ("speecht5_hifigan", "hifigan"))
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    if vocoder.config.model_in_dim % scale:
        raise ValueError(f"{name}/vocoder/config.json: model_in_dim {vocoder.config.model_in_dim} mel bins is not divisible by "
                         f"the VAE's downsampling factor {scale}")
    scheduler = _load_scheduler(folder, name)
    text_encoder, tokenizer = _load_text_parts(folder, name, index)
    if text_encoder is not None and text_encoder.config.projection_dim != unet.config.projection_class_embeddings_input_dim:
        raise ValueError(f"{name}: the text encoder gives {text_encoder.config.projection_dim}-d embeddings, "
                         f"the UNet takes {unet.config.projection_class_embeddings_input_dim}-d")
    return AudioLDM(unet, vae, vocoder, scheduler, text_encoder, tokenizer, name=name, folder=folder)
