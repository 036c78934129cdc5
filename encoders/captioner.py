"""Audio captions from video frames with a vision-language model read from a transformers folder
(as `save_pretrained` writes it and as published on the Hub: config.json, *.safetensors, the
processor's and tokenizer's files). VATT's captioning stage, with a model the user brings.

`load_captioner(folder)` reads every model that transformers 5 loads through
`AutoModelForImageTextToText` (config.json's `model_type` must be one of its; the list is
transformers' own):

| route | models (examples) | the instruction is | the frames go in as |
|---|---|---|---|
| chat (the processor has a chat template) | LLaVA, LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL, SmolVLM, Idefics3, Gemma 3, InternVL, ... | a user turn | images in the user turn |
| captioning (no chat template) | BLIP, BLIP-2, GIT, PaliGemma, vision-encoder-decoder | the text the caption starts from (BLIP, GIT), or the prompt (BLIP-2, PaliGemma); ignored by a processor that takes no text | one image |

How the sampled frames become images (`layout`):
- ``grid`` (default): one contact sheet, frames in time order left to right, top to bottom, at most
  `GRID_MAX_SIDE` pixels on its long side. Every model takes one image, so this works everywhere.
  A chat model is told what it sees (`GRID_CONTEXT`, before the instruction).
- ``frames``: one image per frame (for multi-image models: Qwen2-VL, SmolVLM, Idefics3,
  LLaVA-OneVision, ...). A chat model is told they are frames in time order (`FRAMES_CONTEXT`).
  Captioning models take one image and refuse it.
- ``middle``: the middle sampled frame alone.

Safety: weights are read from safetensors only (`use_safetensors=True`, pickled `.bin` weights are
refused) and no code from the folder is run (no `trust_remote_code`). Generation runs on the
device and dtype the model is on (the caller moves `captioner.model`); the model stays on the CPU
otherwise. No host imports here.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from typing import Callable

import torch

from ..loaders.checkpoint_io import read_folder_config
from .pretrained import TOKENIZER_FILES, _from_pretrained, _load_tokenizer, has_tokenizer_files

LAYOUTS = ("grid", "frames", "middle")
GRID_MAX_SIDE = 1024  # pixels on the long side of the contact sheet (the processor resizes it anyway)
GRID_GAP = 2  # black pixels between the cells of the contact sheet
GRID_CONTEXT = ("The image shows {n} frames of a video in time order, from left to right and top to bottom. ")
FRAMES_CONTEXT = "The images are {n} frames of a video in time order. "
DEFAULT_INSTRUCTION = ("Describe in one short sentence the sounds this video makes: what makes each sound, how it "
                       "sounds, and when it happens. Answer with the audio caption only.")

Progress = Callable[[int, int], None]
"""progress(done, total): called after every generated token (e.g. to show progress and to raise
when the user interrupts)."""

EXPECTED = ("a transformers vision-language model folder that writes text from images (image-text-to-text: "
            "LLaVA, Qwen2-VL, SmolVLM, Idefics3, PaliGemma, ...; or an image captioner: BLIP, BLIP-2, GIT), with "
            "config.json, .safetensors weights and its processor and tokenizer files")


@functools.cache
def captioner_model_types() -> tuple[str, ...]:
    """The config.json model_types transformers loads with AutoModelForImageTextToText (read once)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return tuple(sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES))


def _read_model_type(folder: str) -> str | None:
    model_type = read_folder_config(folder, "captioner", EXPECTED).get("model_type")
    return model_type if isinstance(model_type, str) else None


def is_captioner_folder(folder: str) -> bool:
    """Whether `folder`'s config.json names a model type a captioner can be loaded from (cheap: reads the config)."""
    try:
        return _read_model_type(folder) in captioner_model_types()
    except (ValueError, FileNotFoundError):
        return False


def load_captioner(path: str) -> "Captioner":
    """Loads the vision-language model in transformers folder `path` (on the CPU, in its saved dtype).

    Raises FileNotFoundError (no such folder, no config.json) or ValueError (a model that does not
    write text from images, no safetensors weights, no processor or tokenizer, weights that do not
    fit the config), each naming the folder and what was expected.
    """
    folder = os.path.abspath(path)
    model_type = _read_model_type(folder)
    if model_type not in captioner_model_types():
        kind = f"model_type '{model_type}'" if model_type else "no model_type"
        raise ValueError(f"'{folder}' holds {kind} in config.json, which does not write text from images; expected {EXPECTED}")
    if not glob.glob(os.path.join(folder, "*.safetensors")):
        pickled = [n for n in os.listdir(folder) if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        why = f" (pickled weights such as '{pickled[0]}' are not loaded)" if pickled else ""
        raise ValueError(f"'{folder}' has no .safetensors weights{why}; expected {EXPECTED}")
    image_processor, tokenizer, processor = _load_processor(folder)

    from transformers import AutoModelForImageTextToText

    model = _from_pretrained(AutoModelForImageTextToText, folder, use_safetensors=True, dtype="auto")
    return Captioner(model, processor, image_processor, tokenizer, folder, model_type)


def _load_processor(folder: str):
    """(image processor, tokenizer, processor or None). The processor is None for folders whose
    AutoProcessor is an image processor alone (vision-encoder-decoder): they take no text."""
    from transformers import AutoProcessor

    if not has_tokenizer_files(folder):
        raise ValueError(f"'{folder}' has no tokenizer files ({', '.join(TOKENIZER_FILES)}); expected {EXPECTED}")
    if not any(os.path.isfile(os.path.join(folder, name)) for name in ("processor_config.json", "preprocessor_config.json")):
        raise ValueError(f"'{folder}' has no image processor (processor_config.json or preprocessor_config.json); "
                         f"expected {EXPECTED}")
    try:
        loaded = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"'{folder}': cannot load its processor ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         f"expected {EXPECTED}") from None
    image_processor = getattr(loaded, "image_processor", None)
    tokenizer = getattr(loaded, "tokenizer", None)
    processor = loaded if image_processor is not None and tokenizer is not None else None
    if image_processor is None and hasattr(loaded, "preprocess") and not hasattr(loaded, "decode"):
        image_processor = loaded  # an image processor alone (vision-encoder-decoder)
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(folder)
    if tokenizer is None:
        raise ValueError(f"'{folder}': cannot load its tokenizer; expected {EXPECTED}")
    if image_processor is None:
        raise ValueError(f"'{folder}': its processor ({type(loaded).__name__}) does not process images; expected {EXPECTED}")
    return image_processor, tokenizer, processor


def _check_frames(frames) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[0] == 0:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames: expected images [count >= 1, height, width, channels] with values 0..1, got {shape}")
    if frames.shape[-1] not in (1, 3, 4) or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames: expected 1, 3 or 4 channels last [count, height, width, channels], got {tuple(frames.shape)}")
    frames = frames.detach().float().cpu()
    if not torch.isfinite(frames).all():
        raise ValueError("frames: the images contain NaN or infinite values")
    if frames.shape[-1] == 1:
        frames = frames.expand(-1, -1, -1, 3)
    return frames[..., :3].clamp(0.0, 1.0)


def contact_sheet(frames: torch.Tensor, max_side: int = GRID_MAX_SIDE, gap: int = GRID_GAP) -> torch.Tensor:
    """Frames [n, H, W, 3] -> one image [H', W', 3]: a grid of ceil(sqrt(n)) columns, in time order
    left to right then top to bottom, cells scaled down so the long side is at most `max_side`."""
    n, height, width, _ = frames.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    cells = frames
    scale = min(1.0, (max_side - gap * (columns - 1)) / (columns * width), (max_side - gap * (rows - 1)) / (rows * height))
    cell_h, cell_w = max(1, int(height * scale)), max(1, int(width * scale))
    if (cell_h, cell_w) != (height, width):
        cells = torch.nn.functional.interpolate(cells.permute(0, 3, 1, 2), size=(cell_h, cell_w), mode="bilinear",
                                                antialias=True, align_corners=False).permute(0, 2, 3, 1).clamp(0.0, 1.0)
    sheet = torch.zeros(rows * cell_h + gap * (rows - 1), columns * cell_w + gap * (columns - 1), 3)
    for i in range(n):
        r, c = divmod(i, columns)
        top, left = r * (cell_h + gap), c * (cell_w + gap)
        sheet[top:top + cell_h, left:left + cell_w] = cells[i]
    return sheet


def _to_pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray((image.numpy() * 255.0 + 0.5).astype("uint8"))


def grid_image(frames: torch.Tensor):
    """Frames [n, H, W, 3] (0..1, time order) -> the PIL image the ``grid`` layout gives the model:
    their `contact_sheet`."""
    return _to_pil(contact_sheet(frames))


def _progress_criteria(progress: Progress, total: int):
    """A transformers StoppingCriteria that never stops generation: it reports progress (which may
    raise, e.g. when the user interrupts) after every generated token."""
    from transformers import StoppingCriteria

    class EveryToken(StoppingCriteria):
        def __init__(self):
            self.done = 0

        def __call__(self, input_ids, scores, **kwargs):
            self.done += 1
            progress(min(self.done, total), total)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return EveryToken()


class Captioner:
    """A loaded vision-language model that writes one caption for a video's frames."""

    def __init__(self, model, processor, image_processor, tokenizer, folder: str, model_type: str):
        self.model = model
        self.processor = processor  # None: the folder's processor takes images only
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.folder = folder
        self.name = os.path.basename(folder.rstrip(os.sep))
        self.model_type = model_type
        template = getattr(processor, "chat_template", None) if processor is not None else None
        self.chat = bool(template)

    def __repr__(self) -> str:
        return f"Captioner({self.name!r}, {self.model_type}, {'chat' if self.chat else 'captioning'})"

    @property
    def takes_text(self) -> bool:
        return self.processor is not None

    def caption(self, frames: torch.Tensor, instruction: str = DEFAULT_INSTRUCTION, max_new_tokens: int = 60, seed: int = 0,
                temperature: float = 0.0, layout: str = "grid", progress: Progress | None = None) -> str:
        """One caption for `frames` [n, H, W, C] (values 0..1, in time order).

        `instruction`: the request to a chat model; the start of the caption (or the prompt) for a
        captioning model (see the module docstring). `temperature` 0 = greedy decoding, otherwise
        sampling at that temperature, seeded by `seed` (the global RNG is left as it was). Returns
        the generated text without the prompt and special tokens, stripped of surrounding spaces.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
        if not isinstance(instruction, str):
            raise ValueError(f"instruction: expected text, got {type(instruction).__name__}")
        if isinstance(max_new_tokens, bool) or int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected a whole number >= 1, got {max_new_tokens!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
        frames = _check_frames(frames)
        images = self._images(frames, layout)
        inputs = self._inputs(images, frames.shape[0], layout, instruction.strip())
        parameter = next(self.model.parameters())
        inputs = {k: (v.to(parameter.device, dtype=parameter.dtype) if v.is_floating_point() else v.to(parameter.device))
                  if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

        options = dict(max_new_tokens=int(max_new_tokens), num_beams=1, do_sample=temperature > 0)
        if temperature > 0:
            options["temperature"] = float(temperature)
        else:  # greedy: the folder's sampling settings do not apply
            options.update(temperature=None, top_p=None, top_k=None)
        if progress is not None:
            from transformers import StoppingCriteriaList

            options["stopping_criteria"] = StoppingCriteriaList([_progress_criteria(progress, int(max_new_tokens))])
        devices = [parameter.device] if parameter.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(int(seed))
            try:
                output = self.model.generate(**inputs, **options)
            except torch.OutOfMemoryError:
                raise
            except (ValueError, RuntimeError, TypeError, IndexError) as e:
                raise ValueError(f"'{self.name}' could not generate from {len(images)} image(s) "
                                 f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                                 + ("; try layout 'grid' (one image)" if len(images) > 1 else "")) from None
        sequence = output.sequences if hasattr(output, "sequences") else output
        return self._decode(sequence[0].cpu(), inputs.get("input_ids"))

    # ------------------------------------------------------------------------------------------
    def _images(self, frames: torch.Tensor, layout: str) -> list:
        if layout == "middle":
            return [_to_pil(frames[(frames.shape[0] - 1) // 2])]
        if layout == "frames":
            if not self.chat and frames.shape[0] > 1:
                raise ValueError(f"'{self.name}' ({self.model_type}) is a captioning model and takes one image; "
                                 "use layout 'grid' or 'middle'")
            return [_to_pil(frame) for frame in frames]
        return [grid_image(frames)]

    def _inputs(self, images: list, num_frames: int, layout: str, instruction: str) -> dict:
        try:
            if self.chat:
                context = ""
                if num_frames > 1 and layout == "grid":
                    context = GRID_CONTEXT.format(n=num_frames)
                elif num_frames > 1 and layout == "frames":
                    context = FRAMES_CONTEXT.format(n=num_frames)
                content = [{"type": "image", "image": image} for image in images]
                content.append({"type": "text", "text": context + instruction})
                messages = [{"role": "user", "content": content}]
                return dict(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                               return_dict=True, return_tensors="pt"))
            if self.processor is not None and instruction:
                return dict(self.processor(images=images[0], text=instruction, return_tensors="pt"))
            if self.processor is not None:
                return dict(self.processor(images=images[0], return_tensors="pt"))
            return dict(self.image_processor(images=images[0], return_tensors="pt"))
        except torch.OutOfMemoryError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
            raise ValueError(f"'{self.name}': its processor refused {len(images)} image(s) and the instruction "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    def _decode(self, sequence: torch.Tensor, input_ids: torch.Tensor | None) -> str:
        """The generated text: the prompt removed (a decoder-only model returns it in front of the new
        tokens; BLIP and GIT return the caption's given start), special tokens dropped."""
        prompt = input_ids[0].cpu() if input_ids is not None else None
        removed = prompt is None
        if not removed and sequence.shape[0] >= prompt.shape[0] and torch.equal(sequence[:prompt.shape[0]], prompt):
            sequence, removed = sequence[prompt.shape[0]:], True
        if not removed:  # the prompt again, with other special tokens around it (BLIP: [DEC] for [CLS], no [SEP])
            special = set(getattr(self.tokenizer, "all_special_ids", None) or [])
            words = [t for t in sequence.tolist() if t not in special]
            given = [t for t in prompt.tolist() if t not in special]
            if words[:len(given)] == given:
                sequence, removed = torch.tensor(words[len(given):], dtype=torch.long), True
        text = " ".join(self.tokenizer.decode(sequence, skip_special_tokens=True).split())
        if not removed:  # the prompt as text (tokens that decode alike but differ)
            given_text = " ".join(self.tokenizer.decode(prompt, skip_special_tokens=True).split())
            if text.lower().startswith(given_text.lower()):
                text = text[len(given_text):].strip()
        return text
