"""The VATT Converter's hidden states (VATT-LLaMA): the condition the released VATT decoders read.

Facts from the official code (github.com/DragonLiu1995/video-to-audio-through-text):

* ``vt2a/modules/vt2a_mlm_alibi_uni_encodec.py`` ``V2TA.initialize_encoder``: a ``LlamaForCausalLM``
  (Vicuna-7B, fp16) wrapped by peft LoRA (r 16, alpha 32, targets ``q_proj`` and ``v_proj``, no bias),
  its ``lm_head`` replaced by Identity, frozen. The Lightning checkpoint therefore holds the whole
  converter under ``encoder.`` (base weights, LoRA, projector); the LLM's ``lm_head`` is absent.
* the patched ``LlamaModel.encode_all_states`` (third_party/hf-dev/.../modeling_llama.py): eva-CLIP
  frame features ``[B, 50, 768]`` (10 s at 5 frames/s) are average-pooled over time to 10
  (``adaptive_avg_pool1d``), projected by ``video_proj`` (Linear 768 -> hidden), put BEFORE the prompt's
  token embeddings; positions 0..L-1 over the whole sequence; causal attention with the padding mask;
  the output is the last layer's states after the final RMSNorm, for every position ``[B, 10 + T, H]``.
* ``vt2a_mlm_ff_generation.py``: the prompt is alpaca_short's ``"### Instruction:\\n{caption}\\n\\n###
  Response:\\n"`` tokenised by the Vicuna tokenizer (max 64 tokens, EOS appended, pad id 0, left
  padding); the decoder gets those states and the mask ``[1] * 10 + the prompt's mask``.

Key map (official checkpoint key -> here): ``encoder.base_model.model.model.video_proj.{weight,bias}`` ->
``VATTConverter.video_proj``; ``encoder.base_model.model.model.<module>.lora_{A,B}.default.weight`` ->
merged into the HF LlamaModel's ``<module>.weight`` as ``W + (alpha / r) * B @ A``; the base weights
(``encoder.base_model.model.model.<key>``) are read from the HF folder (``<key>`` of ``LlamaModel``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CONVERTER_PREFIX", "PROMPT_TEMPLATE", "VIDEO_FRAMES", "VIDEO_TOKENS", "LORA_SCALING", "VATTConverter",
           "read_converter_weights", "merge_lora", "load_vatt_converter"]

CONVERTER_PREFIX = "encoder.base_model.model.model."
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
VIDEO_FRAMES = 50  # 10 s of eva-CLIP features at 5 frames/s
VIDEO_TOKENS = 10
FEATURE_DIM = 768
LORA_SCALING = 32 / 16  # lora_alpha / r of V2TA.initialize_encoder
_LORA = re.compile(r"^(.*)\.lora_([AB])\.default\.weight$")


@dataclass
class ConverterWeights:
    video_proj_weight: torch.Tensor
    video_proj_bias: torch.Tensor
    lora: Dict[str, Tuple[torch.Tensor, torch.Tensor]]  # LlamaModel module name -> (A [r, in], B [out, r])


def read_converter_weights(path: str | os.PathLike) -> ConverterWeights:
    """The projector and the LoRA of an official VATT checkpoint (only those tensors are read; the
    base LLM beside them is not). ValueError names the file and the missing key."""
    from ..loaders.checkpoint_io import read_state_dict_subset

    name = os.path.basename(os.fspath(path))

    def select(keys):
        return [k for k in keys if k.startswith(CONVERTER_PREFIX) and (".lora_" in k or ".video_proj." in k)]

    state, _ = read_state_dict_subset(path, select)
    weight, bias = state.get(CONVERTER_PREFIX + "video_proj.weight"), state.get(CONVERTER_PREFIX + "video_proj.bias")
    if weight is None or bias is None:
        raise ValueError(f"{name}: no '{CONVERTER_PREFIX}video_proj.weight'/'.bias'; expected an official VATT-LLaMA "
                         f"checkpoint (the converter under 'encoder.')")
    parts: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if m := _LORA.match(key[len(CONVERTER_PREFIX):]):
            parts.setdefault(m.group(1), {})[m.group(2)] = value
    lora = {}
    for module, ab in parts.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{name}: LoRA of '{module}' lacks lora_{'B' if 'A' in ab else 'A'}")
        lora[module] = (ab["A"], ab["B"])
    return ConverterWeights(weight, bias, lora)


@torch.no_grad()
def merge_lora(llm: nn.Module, lora: Dict[str, Tuple[torch.Tensor, torch.Tensor]], scaling: float = LORA_SCALING,
               name: str = "checkpoint") -> None:
    """W <- W + scaling * B @ A for each LoRA'd linear of ``llm`` (an HF LlamaModel), computed in float32."""
    modules = dict(llm.named_modules())
    for module_name, (a, b) in lora.items():
        linear = modules.get(module_name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{name}: LoRA for '{module_name}', which the LLM does not have")
        delta = b.float() @ a.float()
        if tuple(delta.shape) != tuple(linear.weight.shape):
            raise ValueError(f"{name}: LoRA of '{module_name}' gives {tuple(delta.shape)}, the LLM's weight is "
                             f"{tuple(linear.weight.shape)}")
        linear.weight.copy_((linear.weight.float() + scaling * delta).to(linear.weight.dtype))


class VATTConverter(nn.Module):
    """An HF LlamaModel (LoRA merged) and the frame projector; ``forward`` gives the states VATT's decoder reads."""

    def __init__(self, llm: nn.Module, video_proj: nn.Linear):
        super().__init__()
        self.llm = llm
        self.video_proj = video_proj

    @property
    def hidden_size(self) -> int:
        return int(self.video_proj.out_features)

    def forward(self, frame_features: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """frame_features [B, 50, 768], input_ids [B, T] (mask [B, T]) -> (states [B, 10 + T, H], mask [B, 10 + T])."""
        if frame_features.dim() != 3 or frame_features.shape[1] != VIDEO_FRAMES or frame_features.shape[2] != self.video_proj.in_features:
            raise ValueError(f"VATT converter: expected frame features [batch, {VIDEO_FRAMES}, {self.video_proj.in_features}] "
                             f"(10 s of eva-CLIP features at 5 frames/s), got {tuple(frame_features.shape)}")
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=input_ids.device)
        dtype = self.video_proj.weight.dtype
        pooled = F.adaptive_avg_pool1d(frame_features.to(dtype).transpose(1, 2), VIDEO_TOKENS).transpose(1, 2)
        video = self.video_proj(pooled)
        text = self.llm.get_input_embeddings()(input_ids)
        embeds = torch.cat([video, text.to(video.dtype)], dim=1)
        mask = torch.cat([torch.ones(batch, VIDEO_TOKENS, dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)
        positions = torch.arange(VIDEO_TOKENS + length, device=embeds.device).unsqueeze(0).expand(batch, -1)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state, mask


def load_vatt_converter(checkpoint: str | os.PathLike, llm_folder: str | os.PathLike,
                        dtype: torch.dtype = torch.float32) -> VATTConverter:
    """The official checkpoint's projector + LoRA over the base LLM of an HF folder (config.json +
    safetensors; Vicuna-7B for VATT-LLaMA). ValueError / FileNotFoundError name the file or folder."""
    from transformers import AutoConfig, LlamaModel

    folder = os.fspath(llm_folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder}: no config.json; expected the converter LLM's transformers folder")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type != "llama":
        raise ValueError(f"{os.path.basename(folder)}: a {config.model_type!r} model; VATT-LLaMA's converter is a LLaMA (Vicuna)")
    weights = read_converter_weights(checkpoint)
    name = os.path.basename(os.fspath(checkpoint))
    try:
        llm = LlamaModel.from_pretrained(folder, local_files_only=True, use_safetensors=True, dtype=dtype)
    except (OSError, ValueError) as error:
        raise ValueError(f"{os.path.basename(folder)}: could not load the LLM ({str(error).splitlines()[0]})") from None
    if weights.video_proj_weight.shape != (config.hidden_size, FEATURE_DIM):
        raise ValueError(f"{name}: video_proj is {tuple(weights.video_proj_weight.shape)}, expected "
                         f"({config.hidden_size}, {FEATURE_DIM}) for this LLM")
    merge_lora(llm, weights.lora, LORA_SCALING, name)
    video_proj = nn.Linear(FEATURE_DIM, config.hidden_size).to(dtype)
    with torch.no_grad():
        video_proj.weight.copy_(weights.video_proj_weight.to(dtype))
        video_proj.bias.copy_(weights.video_proj_bias.to(dtype))
    return VATTConverter(llm.eval(), video_proj).eval()
