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

* the caption (``v2cap/eval_v2a_caption.py``): the same LLM (with its ``lm_head``, Vicuna's own) generates it
  from the video tokens followed by the alpaca_short prompt of the instruction "Describe possible sounds
  that could match the video." (BOS, no EOS), sampled with temperature 0.1, top_p 0.95, top_k 500,
  repetition penalty 1.1, at most 400 new tokens, stopping at EOS; the patched ``generate`` puts the
  10 video tokens at positions 0..9 and the prompt after them (one causal sequence), and the caption is
  the decoded new tokens.

VATT-Gemma (``vt2a_mlm_alibi_uni_encodec_gemma.py``, ``vt2a_mlm_ff_generation_gemma.py``,
``v2cap/eval_v2a_caption_gemma.py``, the patched ``GemmaModel``): the same converter over Gemma-2B (2048 wide),
with three differences handled here through :data:`LAYOUTS`: peft wraps the ``GemmaModel`` itself, so the
converter's keys are under ``encoder.base_model.model.`` (one ``model.`` less); the prompt is the gemma template
``"<bos><start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model"`` (tokenised by the same call, so
the tokenizer's own BOS comes first), and the caption's instruction is "Imagine possible sounds for this video.";
Gemma multiplies its input embeddings by sqrt(hidden) - the patched model multiplies the whole sequence, video
tokens included, so the projected video tokens are scaled by the LLM's embedding scale here too (transformers 5
applies it inside the token embedding).

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

__all__ = ["CONVERTER_PREFIX", "PROMPT_TEMPLATE", "LAYOUTS", "ConverterLayout", "VIDEO_FRAMES", "VIDEO_TOKENS", "LORA_SCALING", "CAPTION_INSTRUCTION",
           "CAPTION_SAMPLING", "CONDITION_MAX_TOKENS", "VATTConverter", "read_converter_weights", "merge_lora",
           "load_vatt_converter", "clip_frames", "condition_ids"]

CONVERTER_PREFIX = "encoder.base_model.model.model."  # VATT-LLaMA (peft over LlamaForCausalLM)
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"  # alpaca_short (VATT-LLaMA)
VIDEO_FRAMES = 50  # 10 s of eva-CLIP features at 5 frames/s
VIDEO_TOKENS = 10
FEATURE_DIM = 768
LORA_SCALING = 32 / 16  # lora_alpha / r of V2TA.initialize_encoder
CONDITION_MAX_TOKENS = 64  # vt2a_mlm_ff_generation.tokenize: max_length of the caption prompt the decoder reads
CAPTION_INSTRUCTION = "Describe possible sounds that could match the video."  # eval_v2a_caption.instruction_templates[0]
CAPTION_SAMPLING = {"max_new_tokens": 400, "temperature": 0.1, "top_p": 0.95, "top_k": 500, "repetition_penalty": 1.1}


@dataclass(frozen=True)
class ConverterLayout:
    """What differs between the released converters: where their keys are, their prompt and caption instruction."""

    model_type: str  # the LLM folder's config.json model_type
    prefix: str
    prompt: str
    instruction: str
    name: str


LAYOUTS = {
    "llama": ConverterLayout("llama", CONVERTER_PREFIX, PROMPT_TEMPLATE, CAPTION_INSTRUCTION, "VATT-LLaMA (Vicuna-7B)"),
    "gemma": ConverterLayout("gemma", "encoder.base_model.model.",
                             "<bos><start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model",
                             "Imagine possible sounds for this video.", "VATT-Gemma (Gemma-2B)"),
}
_LORA = re.compile(r"^(.*)\.lora_([AB])\.default\.weight$")


@dataclass
class ConverterWeights:
    video_proj_weight: torch.Tensor
    video_proj_bias: torch.Tensor
    lora: Dict[str, Tuple[torch.Tensor, torch.Tensor]]  # LlamaModel module name -> (A [r, in], B [out, r])
    layout: ConverterLayout = LAYOUTS["llama"]


def read_converter_weights(path: str | os.PathLike) -> ConverterWeights:
    """The projector and the LoRA of an official VATT checkpoint (only those tensors are read; the base LLM
    beside them is not), and which release it is (:data:`LAYOUTS`, told by where ``video_proj`` is).
    ValueError names the file and the missing key."""
    from ..loaders.checkpoint_io import read_state_dict_subset

    name = os.path.basename(os.fspath(path))

    def select(keys):
        return [k for k in keys if k.startswith("encoder.base_model.model.") and (".lora_" in k or ".video_proj." in k)]

    state, _ = read_state_dict_subset(path, select)
    layout = next((l for l in LAYOUTS.values() if l.prefix + "video_proj.weight" in state), None)
    if layout is None:
        raise ValueError(f"{name}: no '{CONVERTER_PREFIX}video_proj.weight' (VATT-LLaMA) or "
                         f"'{LAYOUTS['gemma'].prefix}video_proj.weight' (VATT-Gemma); expected an official VATT checkpoint "
                         f"(the converter under 'encoder.')")
    prefix = layout.prefix
    weight, bias = state.get(prefix + "video_proj.weight"), state.get(prefix + "video_proj.bias")
    if bias is None:
        raise ValueError(f"{name}: no '{prefix}video_proj.bias' beside its weight")
    parts: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(prefix) or (layout is LAYOUTS["gemma"] and key.startswith(CONVERTER_PREFIX)):
            continue
        if m := _LORA.match(key[len(prefix):]):
            parts.setdefault(m.group(1), {})[m.group(2)] = value
    lora = {}
    for module, ab in parts.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{name}: LoRA of '{module}' lacks lora_{'B' if 'A' in ab else 'A'}")
        lora[module] = (ab["A"], ab["B"])
    return ConverterWeights(weight, bias, lora, layout)


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

    def __init__(self, llm: nn.Module, video_proj: nn.Linear, lm_head: Optional[nn.Linear] = None, tokenizer=None,
                 layout: ConverterLayout = LAYOUTS["llama"]):
        super().__init__()
        self.llm = llm
        self.video_proj = video_proj
        self.lm_head = lm_head  # the LLM folder's own (frozen in VATT); None: no captions, only states
        self.tokenizer = tokenizer
        self.layout = layout

    @property
    def hidden_size(self) -> int:
        return int(self.video_proj.out_features)

    def _embeds(self, frame_features: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[video tokens (pooled, projected); the prompt's token embeddings]: [B, 10 + T, H]."""
        if frame_features.dim() != 3 or frame_features.shape[1] != VIDEO_FRAMES or frame_features.shape[2] != self.video_proj.in_features:
            raise ValueError(f"VATT converter: expected frame features [batch, {VIDEO_FRAMES}, {self.video_proj.in_features}] "
                             f"(10 s of eva-CLIP features at 5 frames/s), got {tuple(frame_features.shape)}")
        dtype = self.video_proj.weight.dtype
        pooled = F.adaptive_avg_pool1d(frame_features.to(device=self.video_proj.weight.device, dtype=dtype).transpose(1, 2),
                                       VIDEO_TOKENS).transpose(1, 2)
        video = self.video_proj(pooled)
        embed = self.llm.get_input_embeddings()
        scale = getattr(embed, "embed_scale", None)  # Gemma: sqrt(hidden) on every input, the video tokens too
        if isinstance(scale, torch.Tensor):
            video = video * scale.to(device=video.device, dtype=video.dtype)
        text = embed(input_ids.to(video.device))
        return torch.cat([video, text.to(video.dtype)], dim=1)

    def forward(self, frame_features: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """frame_features [B, 50, 768], input_ids [B, T] (mask [B, T]) -> (states [B, 10 + T, H], mask [B, 10 + T])."""
        embeds = self._embeds(frame_features, input_ids)
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=embeds.device)
        attention_mask = attention_mask.to(embeds.device)
        mask = torch.cat([torch.ones(batch, VIDEO_TOKENS, dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)
        positions = torch.arange(VIDEO_TOKENS + length, device=embeds.device).unsqueeze(0).expand(batch, -1)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state, mask

    @torch.no_grad()
    def generate(self, frame_features: torch.Tensor, input_ids: torch.Tensor, eos_token_id: int, *,
                 max_new_tokens: int = CAPTION_SAMPLING["max_new_tokens"], temperature: float = CAPTION_SAMPLING["temperature"],
                 top_p: float = CAPTION_SAMPLING["top_p"], top_k: int = CAPTION_SAMPLING["top_k"],
                 repetition_penalty: float = CAPTION_SAMPLING["repetition_penalty"],
                 generator: Optional[torch.Generator] = None, progress=None) -> list:
        """The caption's new token ids (EOS excluded) for one video [1, 50, 768] and its prompt ids [1, T], as the
        official generate does: one causal sequence [video; prompt; new tokens] with a key-value cache; each token's
        logits go through HF's repetition penalty (over the prompt and the new tokens), then temperature, top-k and
        top-p, and are sampled (temperature 0: the most likely token). ``progress(done, total)`` is called per token
        (it may raise to interrupt)."""
        from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                            TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        if self.lm_head is None:
            raise ValueError("VATT converter: the LLM folder has no lm_head weights, so no caption can be written; type one")
        if input_ids.shape[0] != 1:
            raise ValueError("VATT converter: captions are written for one video at a time")
        processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(repetition_penalty)] if repetition_penalty != 1.0 else [])
        if temperature > 0:
            processors.append(TemperatureLogitsWarper(temperature))
            if top_k:
                processors.append(TopKLogitsWarper(int(top_k)))
            if top_p < 1.0:
                processors.append(TopPLogitsWarper(top_p))
        embeds = self._embeds(frame_features, input_ids)
        length = embeds.shape[1]
        device = embeds.device
        out = self.llm(inputs_embeds=embeds, position_ids=torch.arange(length, device=device).unsqueeze(0), use_cache=True)
        seen = input_ids.to(device)
        new = []
        for step in range(int(max_new_tokens)):
            scores = processors(seen, self.lm_head(out.last_hidden_state[:, -1]).float())
            if temperature > 0:
                token = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
            else:
                token = scores.argmax(dim=-1, keepdim=True)
            if progress is not None:
                progress(step + 1, int(max_new_tokens))
            if int(token) == eos_token_id:
                break
            new.append(int(token))
            seen = torch.cat([seen, token], dim=1)
            out = self.llm(input_ids=token, position_ids=torch.full((1, 1), length + step, device=device),
                           past_key_values=out.past_key_values, use_cache=True)
        return new

    def caption(self, frame_features: torch.Tensor, instruction: Optional[str] = None, *, generator=None, progress=None,
                **sampling) -> str:
        """The converter's audio caption of one video [1, 50, 768] (the official eval_v2a_caption prompt and sampling;
        ``instruction`` None: the release's own)."""
        tokenizer = self._require_tokenizer()
        prompt = self.layout.prompt.format(instruction=instruction or self.layout.instruction)
        ids = torch.tensor([tokenizer(prompt)["input_ids"]], dtype=torch.long)
        new = self.generate(frame_features, ids, tokenizer.eos_token_id, generator=generator, progress=progress,
                            **{**CAPTION_SAMPLING, **sampling})
        return tokenizer.decode(new, skip_special_tokens=True).strip()

    def condition(self, frame_features: torch.Tensor, caption: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """The decoder's condition for a caption: (states [1, 10 + T, H], mask [1, 10 + T]) of the official
        generation script (the caption as the alpaca_short instruction, at most 64 tokens, EOS appended)."""
        ids = condition_ids(self._require_tokenizer(), caption, self.layout.prompt)
        with torch.no_grad():
            return self(frame_features, ids)

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("VATT converter: no tokenizer (the LLM folder's tokenizer files)")
        return self.tokenizer


def condition_ids(tokenizer, caption: str, prompt: str = PROMPT_TEMPLATE) -> torch.Tensor:
    """vt2a_mlm_ff_generation.tokenize of the caption's prompt: BOS + tokens, truncated to 64, EOS appended when
    there is room. -> [1, T] long."""
    ids = list(tokenizer(prompt.format(instruction=caption), truncation=True, max_length=CONDITION_MAX_TOKENS)["input_ids"])
    if ids[-1] != tokenizer.eos_token_id and len(ids) < CONDITION_MAX_TOKENS:
        ids.append(tokenizer.eos_token_id)
    return torch.tensor([ids], dtype=torch.long)


def clip_frames(frame_vectors: torch.Tensor) -> torch.Tensor:
    """Per-frame features [N, 768] of a video at 5 frames/s -> the converter's [1, 50, 768]. The official clips are
    10 s (50 frames, taken as they are); a video of another length is stretched or squeezed over the 50 slots
    (linear interpolation in time when shorter, averaging when longer), the pack's choice."""
    if frame_vectors.dim() != 2 or frame_vectors.shape[0] < 1:
        raise ValueError(f"VATT converter: expected per-frame features [frames, width], got {tuple(frame_vectors.shape)}")
    x = frame_vectors.float().t().unsqueeze(0)  # [1, D, N]
    n = x.shape[-1]
    if n > VIDEO_FRAMES:
        x = F.adaptive_avg_pool1d(x, VIDEO_FRAMES)
    elif n < VIDEO_FRAMES:
        x = F.interpolate(x, size=VIDEO_FRAMES, mode="linear", align_corners=True) if n > 1 else x.expand(-1, -1, VIDEO_FRAMES)
    return x.transpose(1, 2).contiguous()


def _pickled_llm_files(folder: str) -> Optional[list]:
    """The pickled weight files of an LLM folder that has no safetensors weights (``pytorch_model.bin``, or the
    shards its ``pytorch_model.bin.index.json`` names, as 2023 Vicuna folders hold them); None otherwise."""
    import json

    names = os.listdir(folder)
    if any(n.endswith(".safetensors") for n in names):
        return None
    index = os.path.join(folder, "pytorch_model.bin.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f).get("weight_map", {}).values()))
        return [os.path.join(folder, shard) for shard in shards]
    single = os.path.join(folder, "pytorch_model.bin")
    return [single] if os.path.isfile(single) else None


def _causal_lm_from_pickles(config, files: list, dtype: torch.dtype, name: str):
    """The folder's causal LM from pickled weights read as data only (loaders.checkpoint_io: weights_only, mapped),
    never unpickling code. -> (model, the keys the files lack)."""
    from transformers import AutoModelForCausalLM

    from ..loaders.checkpoint_io import read_state_dict_subset

    state: Dict[str, torch.Tensor] = {}
    for path in files:
        part, _ = read_state_dict_subset(path, lambda keys: keys)
        state.update(part)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = set(model.state_dict())
    model.load_state_dict({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items() if k in expected},
                          strict=False, assign=True)
    rotary = model.model.rotary_emb  # its inv_freq is not stored (non-persistent): computed as from_pretrained does
    model.model.rotary_emb = type(rotary)(config=config)
    embed = model.model.embed_tokens
    if isinstance(getattr(embed, "embed_scale", None), torch.Tensor):  # Gemma's sqrt(hidden), also non-persistent
        embed.embed_scale = torch.tensor(float(embed.scalar_embed_scale))
    missing = expected - set(state)
    if "lm_head.weight" in missing:
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        else:
            model.lm_head.to_empty(device="cpu")
    return model.to(dtype), missing


def load_vatt_converter(checkpoint: str | os.PathLike, llm_folder: str | os.PathLike,
                        dtype: torch.dtype = torch.float32, with_tokenizer: bool = False) -> VATTConverter:
    """The official checkpoint's projector + LoRA over the base LLM of an HF folder (config.json + safetensors
    weights, or pickled ``pytorch_model*.bin`` read as data only; Vicuna-7B for VATT-LLaMA). ValueError /
    FileNotFoundError name the file or folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = os.fspath(llm_folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder}: no config.json; expected the converter LLM's transformers folder")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    weights = read_converter_weights(checkpoint)
    name = os.path.basename(os.fspath(checkpoint))
    if config.model_type != weights.layout.model_type:
        raise ValueError(f"{os.path.basename(folder)}: a {config.model_type!r} model; {name} is the converter of "
                         f"{weights.layout.name}, which needs a {weights.layout.model_type} folder")
    pickled = _pickled_llm_files(folder)
    try:
        if pickled:
            causal, missing = _causal_lm_from_pickles(config, pickled, dtype, os.path.basename(folder))
        else:
            causal, info = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                                dtype=dtype, output_loading_info=True)
            missing = set(info.get("missing_keys", ()))
    except FileNotFoundError as error:
        raise ValueError(f"{os.path.basename(folder)}: {error}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{os.path.basename(folder)}: could not load the LLM ({str(error).splitlines()[0]})") from None
    if any(not k.startswith("lm_head.") for k in missing):
        raise ValueError(f"{os.path.basename(folder)}: the LLM's weights lack {sorted(k for k in missing if not k.startswith('lm_head.'))[0]!r}")
    llm = causal.model
    lm_head = None if "lm_head.weight" in missing and not config.tie_word_embeddings else causal.lm_head
    tokenizer = None
    if with_tokenizer:
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"{os.path.basename(folder)}: no usable tokenizer (tokenizer.model / tokenizer.json): "
                             f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if weights.video_proj_weight.shape != (config.hidden_size, FEATURE_DIM):
        raise ValueError(f"{name}: video_proj is {tuple(weights.video_proj_weight.shape)}, expected "
                         f"({config.hidden_size}, {FEATURE_DIM}) for this LLM")
    merge_lora(llm, weights.lora, LORA_SCALING, name)
    video_proj = nn.Linear(FEATURE_DIM, config.hidden_size).to(dtype)
    with torch.no_grad():
        video_proj.weight.copy_(weights.video_proj_weight.to(dtype))
        video_proj.bias.copy_(weights.video_proj_bias.to(dtype))
    return VATTConverter(llm.eval(), video_proj, lm_head, tokenizer, weights.layout).eval()
