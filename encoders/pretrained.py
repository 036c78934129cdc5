"""Pretrained encoders read from transformers folders (config.json + weights + tokenizer /
preprocessor files, as `save_pretrained` writes them and as published on the Hub).

`load_encoder(folder)` reads config.json's `model_type` and returns a `PretrainedEncoder`:

| model_type | class loaded | family | modalities | outputs |
|---|---|---|---|---|
| clip | CLIPModel | clip | image, text | projected image_embeds / text_embeds [B, D] |
| clip_vision_model | CLIPVisionModelWithProjection | clip | image | image_embeds [B, D] |
| clip_text_model | CLIPTextModel(WithProjection) | clip_text | text | pooled [B, D] (see CLIPTextEncoder) |
| clap | ClapModel | clap | audio, text | projected, L2-normalised [B, 512] |
| audio-spectrogram-transformer | ASTModel | ast | audio | last_hidden_state [B, 1214, 768] |
| t5 | T5EncoderModel | t5 | text | last_hidden_state [B, L, d_model] |
| (open_clip folder, no config.json) | timm Eva (encoders/eva_clip.py) | eva_clip | image | encode_image [B, D] |

Every encode method returns a `nodes.payloads.Embedding` on the CPU in float32, computed on the
device and dtype the module is on (move `encoder.module` for GPU use). No host imports here.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np
import torch

from ..audio.prepare import prepare_waveform
from ..loaders.checkpoint_io import read_folder_config
from ..nodes.payloads import Embedding
from .preprocessing import CLIP_MEAN, CLIP_STD, check_images, clip_pixel_values, refuse_silent_rows, window_starts

SUPPORTED_MODEL_TYPES = ("clip", "clip_vision_model", "clip_text_model", "clap", "audio-spectrogram-transformer", "t5")
LONG_AUDIO = ("mean", "first", "all")
"""How audio longer than the encoder's window is encoded (see `PretrainedEncoder.encode_audio`)."""

IMAGE_BATCH = 32  # images per forward pass (bounds memory for long videos)
AUDIO_BATCH = 8  # audio windows per forward pass

Progress = Callable[[int, int], None]
"""progress(done, total): called after each forward pass of a long encode (e.g. to report progress
and to raise when the user interrupts)."""

FAMILY_NAMES = {"clip": "CLIP", "clap": "CLAP", "ast": "AST", "t5": "T5", "clip_text": "CLIP text", "eva_clip": "eva-CLIP"}

# The tensors (by name suffix) whose values identify an encoder's space: for CLIP the image side only,
# so a full CLIP folder and a vision-only file of the same weights agree.
IDENTITY_TENSORS = {
    "clip": ("visual_projection.weight", "embeddings.patch_embedding.weight"),
    "clip_text": ("embeddings.token_embedding.weight", "final_layer_norm.weight"),
    "t5": ("shared.weight", "final_layer_norm.weight"),
}
FINGERPRINT_SAMPLES = 65536


def weights_fingerprint(module: torch.nn.Module, family: str) -> str:
    """A short hex fingerprint of an encoder's weights: the family, and the shapes and float16-rounded
    values (an even sample of at most FINGERPRINT_SAMPLES) of its identity tensors (IDENTITY_TENSORS;
    otherwise its first and last float tensors by name). fp32, fp16 and float16-stored copies of the
    same weights give the same fingerprint, whatever the folder or file is called; quantised copies
    (fp8, bf16) give another."""
    import hashlib

    state = module.state_dict()
    floats = sorted(name for name, tensor in state.items() if tensor.is_floating_point())
    names = [next((n for n in floats if n == suffix or n.endswith("." + suffix)), None) for suffix in IDENTITY_TENSORS.get(family, ())]
    if not names or None in names:
        names = [floats[0], floats[-1]] if floats else []
    digest = hashlib.sha256(family.encode())
    for name in names:
        values = state[name].detach().flatten()
        values = values[:: max(1, values.numel() // FINGERPRINT_SAMPLES)].to(device="cpu", dtype=torch.float16)
        digest.update(repr(tuple(state[name].shape)).encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


def read_config(folder: str) -> dict:
    return read_folder_config(folder, "encoder", f"a transformers model folder ({', '.join(SUPPORTED_MODEL_TYPES)}) "
                                                 "or an open_clip eva-CLIP folder (open_clip_config.json, open_clip_model.safetensors)")


def load_encoder(path: str) -> "PretrainedEncoder":
    """Loads the encoder in transformers folder `path` (dispatching on config.json's model_type), or in an
    open_clip folder without config.json (open_clip_config.json / open_clip_model.safetensors: an eva-CLIP
    image tower, encoders/eva_clip.py).

    Raises FileNotFoundError (no folder, no config.json, no weights) or ValueError (a model_type
    that is not an encoder this pack reads, weights that do not fit the config).
    """
    folder = os.path.abspath(path)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        from .eva_clip import EVACLIPEncoder, is_open_clip_folder

        if os.path.isdir(folder) and is_open_clip_folder(folder):
            return EVACLIPEncoder(folder)
    config = read_config(folder)
    model_type = config.get("model_type")
    encoder_class = _ENCODERS.get(model_type)
    if encoder_class is None:
        kind = f"model_type '{model_type}'" if model_type else "no model_type"
        raise ValueError(f"'{folder}' holds {kind} in config.json; supported encoder kinds: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)} (CLIP, CLAP, AST, T5 transformers folders)")
    return encoder_class(folder, config)


def _from_pretrained(model_class, folder: str, **kwargs):
    """`model_class.from_pretrained` that refuses folders whose weights miss keys the model needs."""
    try:
        # safetensors first; a legacy pytorch_model.bin only through torch.load(weights_only=True)
        model, info = model_class.from_pretrained(folder, local_files_only=True, output_loading_info=True,
                                                  weights_only=True, **kwargs)
    except OSError as e:
        raise FileNotFoundError(f"'{folder}': no loadable {model_class.__name__} weights ({str(e).splitlines()[0]})") from None
    except (ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"'{folder}': cannot load as {model_class.__name__} ({str(e).splitlines()[0]})") from None
    missing = list(info.get("missing_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        shown = ", ".join(str(k) for k in (missing + mismatched)[:5])
        more = f" and {len(missing) + len(mismatched) - 5} more" if len(missing) + len(mismatched) > 5 else ""
        raise ValueError(f"'{folder}': the weights do not fit {model_class.__name__} (missing or mismatched: {shown}{more}); "
                         "is this folder another kind of model?")
    return model.eval().requires_grad_(False)


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer.model", "vocab.txt")


def has_tokenizer_files(folder: str) -> bool:
    """Whether `folder` holds one of TOKENIZER_FILES (without them transformers 5 builds an empty
    tokenizer that maps every word to <unk>)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES)


def tokenizer_folder(folder: str) -> str | None:
    """Where the tokenizer of a model folder is: the folder itself when it holds tokenizer files, else
    the sibling a diffusers pipeline keeps it in (`text_encoder` -> `tokenizer`, `text_encoder_2` ->
    `tokenizer_2`, ...), else None."""
    if has_tokenizer_files(folder):
        return folder
    parent, name = os.path.split(os.path.normpath(folder))
    if name.startswith("text_encoder"):
        sibling = os.path.join(parent, "tokenizer" + name[len("text_encoder"):])
        if os.path.isdir(sibling) and has_tokenizer_files(sibling):
            return sibling
    return None


SENTENCEPIECE_FILES = ("spiece.model", "tokenizer.model")


def _missing_sentencepiece_packages(folder: str) -> list[str]:
    """The Python packages transformers needs to read the folder's sentencepiece model (when it has
    no tokenizer.json) that are not installed: sentencepiece, protobuf."""
    import importlib.util

    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return []
    if not any(os.path.isfile(os.path.join(folder, name)) for name in SENTENCEPIECE_FILES):
        return []
    needed = {"sentencepiece": "sentencepiece", "protobuf": "google.protobuf"}
    missing = []
    for package, module in needed.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    return missing


def load_tokenizer(folder: str):
    """(tokenizer, None), or (None, why) when the folder (or its diffusers sibling, `tokenizer_folder`)
    has no tokenizer files or they do not load; `why` names a missing package (sentencepiece, protobuf)
    when that is the cause."""
    from transformers import AutoTokenizer

    where = tokenizer_folder(folder)
    if where is None:
        return None, "it has no tokenizer files (nor a sibling tokenizer folder, as diffusers pipelines keep them)"
    missing = _missing_sentencepiece_packages(where)
    if missing:
        return None, (f"reading '{os.path.join(where, 'spiece.model')}' needs the Python package(s) {' and '.join(missing)} "
                      f"(pip install {' '.join(missing)})")
    try:
        return AutoTokenizer.from_pretrained(where, local_files_only=True), None
    except (OSError, ValueError, TypeError, KeyError, ImportError) as error:
        return None, f"its tokenizer files in '{where}' do not load ({' '.join(str(error).split())[:200]})"


def _load_tokenizer(folder: str):
    """The folder's tokenizer (or its diffusers sibling's), or None when there is none or it does not load."""
    return load_tokenizer(folder)[0]


def _read_json(folder: str, name: str) -> dict | None:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({e})") from None
    return data if isinstance(data, dict) else None


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"text: expected a non-empty list of strings, got {texts!r}")
    return list(texts)


class PretrainedEncoder:
    """One loaded encoder. Subclasses fill in the modalities they have."""

    family: str = ""
    modalities: tuple[str, ...] = ()
    sample_rate_hz: int | None = None
    window_s: float | None = None

    def __init__(self, folder: str, config: dict):
        self.path = folder
        self.model_name = os.path.basename(os.path.normpath(folder))
        self.model_type = config.get("model_type")
        self.config = config
        self.module: torch.nn.Module | None = None

    # ---- description and checks -------------------------------------------------------------
    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family, self.family.upper())

    def describe(self) -> str:
        return f"'{self.model_name}' ({self.family_name} encoder; encodes {', '.join(self.modalities)})"

    def check_modality(self, modality: str) -> None:
        """Raises ValueError when this encoder cannot encode `modality` ("image", "audio", "text")."""
        if modality not in self.modalities:
            article = "an" if self.family_name[0].upper() in "AEIOU" else "a"
            raise ValueError(f"'{self.model_name}' is {article} {self.family_name} encoder; it encodes "
                             f"{', '.join(self.modalities)}, not {modality}{self._missing_hint(modality)}")

    def _missing_hint(self, modality: str) -> str:
        return ""

    def __repr__(self) -> str:
        return f"PretrainedEncoder({self.describe()}, {self.path})"

    # ---- helpers --------------------------------------------------------------------------------
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        param = next(self.module.parameters())
        return param.device, param.dtype

    def _encode_image_batches(self, images: torch.Tensor, encode_batch, progress: Progress | None = None) -> Embedding:
        """IMAGE [B, H, W, C] -> Embedding [B, D]: checked (`check_images`), then `encode_batch(images [b, H, W, 3],
        device, dtype) -> [b, D]` on IMAGE_BATCH images at a time, `progress(done, total)` after each."""
        self.check_modality("image")
        images = check_images(images)
        device, dtype = self._device_dtype()
        outputs = []
        for start in range(0, images.shape[0], IMAGE_BATCH):
            outputs.append(encode_batch(images[start:start + IMAGE_BATCH], device, dtype))
            if progress is not None:
                progress(min(start + IMAGE_BATCH, images.shape[0]), images.shape[0])
        return self._embedding(torch.cat(outputs), "image")

    def _embedding(self, vectors: torch.Tensor, modality: str) -> Embedding:
        vectors = vectors.detach().to(device="cpu", dtype=torch.float32)
        if not bool(torch.isfinite(vectors).all()):
            raise ValueError(f"'{self.model_name}' produced NaN or infinite {modality} embeddings")
        return Embedding(vectors=vectors, family=self.family, model=self.model_name, modality=modality, weights=self.fingerprint)

    @property
    def fingerprint(self) -> str:
        """`weights_fingerprint` of this encoder's weights (computed once)."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = weights_fingerprint(self.module, self.family)
        return self._fingerprint

    # ---- the interface ---------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor, progress: Progress | None = None) -> Embedding:
        """IMAGE [B, H, W, 3] in 0..1 -> Embedding [B, D]. `progress(done, total)` is called after each batch."""
        self.check_modality("image")
        raise NotImplementedError

    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, long_audio: str = "mean",
                     progress: Progress | None = None) -> Embedding:
        """AUDIO waveform [B, C, T] at `sample_rate` -> Embedding. `progress(done, total)` after each batch of windows."""
        self.check_modality("audio")
        raise NotImplementedError

    def encode_text(self, texts: list[str], sequence_length: int | None = None) -> Embedding:
        """A list of strings -> Embedding."""
        self.check_modality("text")
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------
class CLIPEncoder(PretrainedEncoder):
    """CLIPModel (image and text) or CLIPVisionModelWithProjection (image) folders: the CLIP joint
    space. Image and text vectors are the projected `image_embeds` / `text_embeds`, not normalised."""

    family = "clip"

    def __init__(self, folder: str, config: dict):
        super().__init__(folder, config)
        from transformers import CLIPModel, CLIPVisionModelWithProjection

        if self.model_type == "clip":
            self.module = _from_pretrained(CLIPModel, folder)
            vision_config = self.module.config.vision_config
            self.tokenizer, self.tokenizer_problem = load_tokenizer(folder)
            self.modalities = ("image", "text") if self.tokenizer is not None else ("image",)
        else:
            self.module = _from_pretrained(CLIPVisionModelWithProjection, folder)
            vision_config = self.module.config
            self.tokenizer = None
            self.modalities = ("image",)
        self.image_size = int(vision_config.image_size)
        preprocessor = _read_json(folder, "preprocessor_config.json") or {}
        self.image_mean = tuple(preprocessor.get("image_mean", CLIP_MEAN))
        self.image_std = tuple(preprocessor.get("image_std", CLIP_STD))

    def _missing_hint(self, modality: str) -> str:
        if modality == "text" and self.model_type == "clip":
            return f" (no tokenizer: {self.tokenizer_problem})"
        if modality == "text":
            return " (a vision-only CLIP folder)"
        return ""

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor, progress: Progress | None = None) -> Embedding:
        def encode_batch(batch, device, dtype):
            pixels = clip_pixel_values(batch, self.image_size, self.image_mean, self.image_std).to(device=device, dtype=dtype)
            if self.model_type == "clip":
                return self.module.get_image_features(pixel_values=pixels).pooler_output
            return self.module(pixel_values=pixels).image_embeds

        return self._encode_image_batches(images, encode_batch, progress)

    @torch.inference_mode()
    def encode_text(self, texts: list[str], sequence_length: int | None = None) -> Embedding:
        self.check_modality("text")
        texts = _check_texts(texts)
        device, _ = self._device_dtype()
        max_length = min(int(self.tokenizer.model_max_length), int(self.module.config.text_config.max_position_embeddings))
        tokens = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        features = self.module.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                 attention_mask=tokens["attention_mask"].to(device))
        return self._embedding(features.pooler_output, "text")


class CLIPTextEncoder(PretrainedEncoder):
    """A CLIP text tower used as a text encoder (family "clip_text", e.g. FLUX's or SD3's CLIP).

    The pooled vector follows the class the folder was saved from (config.json `architectures`):
    CLIPTextModel -> `pooler_output` (hidden size; what FLUX takes as its pooled vector),
    CLIPTextModelWithProjection -> `text_embeds` (projection size; what SD3 takes). Prompts are padded
    to 77 tokens (the model's positions).
    """

    family = "clip_text"
    modalities = ("text",)

    def __init__(self, folder: str, config: dict):
        super().__init__(folder, config)
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        self.projected = "CLIPTextModelWithProjection" in (config.get("architectures") or [])
        self.module = _from_pretrained(CLIPTextModelWithProjection if self.projected else CLIPTextModel, folder)
        self.tokenizer, problem = load_tokenizer(folder)
        if self.tokenizer is None:
            raise FileNotFoundError(f"'{folder}': a CLIP text encoder folder needs its tokenizer files "
                                    f"(vocab.json, merges.txt, tokenizer_config.json); {problem}")

    @torch.inference_mode()
    def encode_text(self, texts: list[str], sequence_length: int | None = None) -> Embedding:
        self.check_modality("text")
        texts = _check_texts(texts)
        device, _ = self._device_dtype()
        max_length = min(int(self.tokenizer.model_max_length), int(self.module.config.max_position_embeddings))
        tokens = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        out = self.module(input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device))
        return self._embedding(out.text_embeds if self.projected else out.pooler_output, "text")


class T5TextEncoder(PretrainedEncoder):
    """T5EncoderModel folders (e.g. FLUX's T5-XXL): the token sequence `last_hidden_state` [B, L, d].

    Like diffusers' FLUX pipeline, the encoder runs without an attention mask over prompts padded
    with the pad token: to `sequence_length` tokens when given (FLUX: 256 schnell, 512 dev), else to
    the longest prompt of the batch (at most the tokenizer's model_max_length).
    """

    family = "t5"
    modalities = ("text",)

    def __init__(self, folder: str, config: dict):
        super().__init__(folder, config)
        from transformers import T5EncoderModel

        self.module = _from_pretrained(T5EncoderModel, folder)
        self.tokenizer, problem = load_tokenizer(folder)
        if self.tokenizer is None:
            raise FileNotFoundError(f"'{folder}': a T5 encoder folder needs its tokenizer files "
                                    f"(spiece.model or tokenizer.json, tokenizer_config.json); {problem}")

    @torch.inference_mode()
    def encode_text(self, texts: list[str], sequence_length: int | None = None) -> Embedding:
        self.check_modality("text")
        texts = _check_texts(texts)
        device, _ = self._device_dtype()
        if sequence_length is not None:
            if int(sequence_length) != sequence_length or sequence_length < 1:
                raise ValueError(f"sequence_length must be a whole number >= 1, got {sequence_length!r}")
            tokens = self.tokenizer(texts, padding="max_length", max_length=int(sequence_length), truncation=True, return_tensors="pt")
        else:
            max_length = int(min(self.tokenizer.model_max_length, 4096))
            tokens = self.tokenizer(texts, padding="longest", max_length=max_length, truncation=True, return_tensors="pt")
        out = self.module(input_ids=tokens["input_ids"].to(device))
        return self._embedding(out.last_hidden_state, "text")


# ---------------------------------------------------------------------------------------------------
class _WindowedAudioEncoder(PretrainedEncoder):
    """Shared audio path: prepare_waveform (validate, downmix, resample), refuse silent clips, cut
    into the encoder's windows (`preprocessing.window_starts`), encode windows in batches, combine.

    Audio longer than one window (`long_audio`):
      "mean"  - every window is encoded and the results averaged (the default: the whole clip counts);
      "first" - only the first window is encoded (the rest is ignored);
      "all"   - every window is kept: pooled encoders give a sequence [B, windows, D], sequence
                encoders concatenate their token sequences [B, windows * tokens, D].
    """

    window_samples: int = 0
    feature_extractor = None

    def _windows(self, waveform: torch.Tensor, sample_rate: int, long_audio: str) -> tuple[list[np.ndarray], int, int]:
        if long_audio not in LONG_AUDIO:
            raise ValueError(f"long_audio: expected one of {', '.join(LONG_AUDIO)}, got {long_audio!r}")
        mono = prepare_waveform(waveform, sample_rate, self.sample_rate_hz, what="audio", allow_silent=False)
        refuse_silent_rows(mono, "audio")
        starts = window_starts(mono.shape[-1], self.window_samples)
        if long_audio == "first":
            starts = starts[:1]
        clips = [mono[b, s:s + self.window_samples].numpy().astype(np.float32)
                 for b in range(mono.shape[0]) for s in starts]
        return clips, mono.shape[0], len(starts)

    def _encode_clips(self, clips: list[np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, long_audio: str = "mean",
                     progress: Progress | None = None) -> Embedding:
        self.check_modality("audio")
        clips, batch, n_windows = self._windows(waveform, sample_rate, long_audio)
        parts = []
        for start in range(0, len(clips), AUDIO_BATCH):
            parts.append(self._encode_clips(clips[start:start + AUDIO_BATCH]))
            if progress is not None:
                progress(min(start + AUDIO_BATCH, len(clips)), len(clips))
        encoded = torch.cat(parts)
        encoded = encoded.float().reshape(batch, n_windows, *encoded.shape[1:])
        return self._embedding(self._combine(encoded, long_audio), "audio")

    def _combine(self, encoded: torch.Tensor, long_audio: str) -> torch.Tensor:
        raise NotImplementedError


class CLAPEncoder(_WindowedAudioEncoder):
    """ClapModel folders: audio and text in the CLAP space, projected and L2-normalised [B, 512].

    Audio goes through the folder's ClapFeatureExtractor (48 kHz, 64 mels, 10 s windows for the
    published models); windows are never longer than the extractor's max length, so its random
    cropping never happens and the result is deterministic. Short clips are padded the extractor's
    way ("repeatpad": repeated, then zero-padded). A mean over windows is L2-normalised again.
    """

    family = "clap"

    def __init__(self, folder: str, config: dict):
        super().__init__(folder, config)
        from transformers import ClapFeatureExtractor, ClapModel

        self.module = _from_pretrained(ClapModel, folder)
        if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            self.feature_extractor = ClapFeatureExtractor.from_pretrained(folder, local_files_only=True)
        else:
            self.feature_extractor = ClapFeatureExtractor()  # the published models' defaults
        self.sample_rate_hz = int(self.feature_extractor.sampling_rate)
        self.window_samples = int(self.feature_extractor.nb_max_samples)
        self.window_s = self.window_samples / self.sample_rate_hz
        # An unfused model (e.g. laion/clap-htsat-unfused) takes one mel per clip: "rand_trunc" mode,
        # whose random crop never happens here because windows are at most nb_max_samples long.
        fused = bool(getattr(self.module.config.audio_config, "enable_fusion", False))
        self.truncation = self.feature_extractor.truncation if fused else "rand_trunc"
        self.tokenizer, self.tokenizer_problem = load_tokenizer(folder)
        self.modalities = ("audio", "text") if self.tokenizer is not None else ("audio",)

    def _missing_hint(self, modality: str) -> str:
        return f" (no tokenizer: {self.tokenizer_problem})" if modality == "text" else ""

    def _encode_clips(self, clips: list[np.ndarray]) -> torch.Tensor:
        device, dtype = self._device_dtype()
        features = self.feature_extractor(clips, sampling_rate=self.sample_rate_hz, truncation=self.truncation, return_tensors="pt")
        is_longer = features.get("is_longer")
        out = self.module.get_audio_features(
            input_features=features["input_features"].to(device=device, dtype=dtype),
            is_longer=is_longer.to(device) if is_longer is not None else None)
        return out.pooler_output

    def _combine(self, encoded: torch.Tensor, long_audio: str) -> torch.Tensor:
        if long_audio == "all":
            return encoded
        return torch.nn.functional.normalize(encoded.mean(dim=1), dim=-1)

    @torch.inference_mode()
    def encode_text(self, texts: list[str], sequence_length: int | None = None) -> Embedding:
        self.check_modality("text")
        texts = _check_texts(texts)
        device, _ = self._device_dtype()
        max_length = min(int(self.tokenizer.model_max_length), int(self.module.config.text_config.max_position_embeddings) - 2)
        tokens = self.tokenizer(texts, padding=True, max_length=max_length, truncation=True, return_tensors="pt")
        out = self.module.get_text_features(input_ids=tokens["input_ids"].to(device),
                                            attention_mask=tokens["attention_mask"].to(device))
        return self._embedding(out.pooler_output, "text")


class ASTEncoder(_WindowedAudioEncoder):
    """ASTModel folders (also ASTForAudioClassification ones, e.g. MIT/ast-finetuned-audioset-10-10-0.4593):
    the token sequence `last_hidden_state` [B, tokens, hidden] (1214 x 768 for the published size).

    Audio goes through the folder's ASTFeatureExtractor: 16 kHz, 128-bin Kaldi fbank (25 ms window,
    10 ms hop), padded or cropped to `max_length` frames (1024), normalised with mean -4.2677393 and
    std 4.5689974. One window is the samples that give exactly `max_length` frames (10.255 s at the
    published settings); longer audio is windowed as `_WindowedAudioEncoder` says. The "mean"
    default averages the windows' token sequences position by position, so the output keeps the
    published (B, 1214, 768) shape whatever the clip's length.
    """

    family = "ast"
    modalities = ("audio",)

    def __init__(self, folder: str, config: dict):
        super().__init__(folder, config)
        from transformers import ASTFeatureExtractor, ASTModel

        self.module = _from_pretrained(ASTModel, folder)
        if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            self.feature_extractor = ASTFeatureExtractor.from_pretrained(folder, local_files_only=True)
        else:
            self.feature_extractor = ASTFeatureExtractor()  # the published models' defaults
        max_length = int(self.feature_extractor.max_length)
        if max_length != int(self.module.config.max_length):
            raise ValueError(f"'{folder}': preprocessor_config.json max_length {max_length} differs from config.json "
                             f"max_length {self.module.config.max_length}")
        self.sample_rate_hz = int(self.feature_extractor.sampling_rate)
        hop, window = self.sample_rate_hz // 100, self.sample_rate_hz * 25 // 1000  # Kaldi fbank: 10 ms hop, 25 ms window
        self.window_samples = (max_length - 1) * hop + window
        self.window_s = self.window_samples / self.sample_rate_hz

    def _encode_clips(self, clips: list[np.ndarray]) -> torch.Tensor:
        device, dtype = self._device_dtype()
        features = self.feature_extractor(clips, sampling_rate=self.sample_rate_hz, return_tensors="pt")
        out = self.module(input_values=features["input_values"].to(device=device, dtype=dtype))
        return out.last_hidden_state

    def _combine(self, encoded: torch.Tensor, long_audio: str) -> torch.Tensor:
        if long_audio == "all":
            return encoded.flatten(1, 2)
        return encoded.mean(dim=1)


_ENCODERS = {
    "clip": CLIPEncoder,
    "clip_vision_model": CLIPEncoder,
    "clip_text_model": CLIPTextEncoder,
    "clap": CLAPEncoder,
    "audio-spectrogram-transformer": ASTEncoder,
    "t5": T5TextEncoder,
}
