"""VATT-LLaMA's converter states (issue 18): an official-layout checkpoint (projector + LoRA under
'encoder.base_model.model.model.') over a tiny HF LLaMA folder give the states of the official
encode_all_states, written out here from its equations (pool 50 -> 10, project, prepend, LLaMA with
RoPE, causal attention, SwiGLU, final RMSNorm; LoRA W + 2 * B A on q_proj and v_proj)."""

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_audiovisual.encoders.vatt_converter import CONVERTER_PREFIX, load_vatt_converter

H, LAYERS, HEADS, FF, VOCAB, R = 32, 2, 4, 48, 64, 16


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    from transformers import LlamaConfig, LlamaModel

    base = tmp_path_factory.mktemp("converter")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=H, intermediate_size=FF, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=128)
    llm = LlamaModel(config)
    with torch.no_grad():
        for p in llm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    llm.save_pretrained(str(base / "vicuna"))
    g = torch.Generator().manual_seed(1)
    state = {f"{CONVERTER_PREFIX}{k}": v.clone() for k, v in llm.state_dict().items()}  # the frozen base beside it
    for layer in range(LAYERS):
        for proj in ("q_proj", "v_proj"):
            m = f"{CONVERTER_PREFIX}layers.{layer}.self_attn.{proj}"
            state[f"{m}.lora_A.default.weight"] = torch.randn(R, H, generator=g) * 0.1
            state[f"{m}.lora_B.default.weight"] = torch.randn(H, R, generator=g) * 0.1
    state[f"{CONVERTER_PREFIX}video_proj.weight"] = torch.randn(H, 768, generator=g) * 0.05
    state[f"{CONVERTER_PREFIX}video_proj.bias"] = torch.randn(H, generator=g) * 0.05
    state["audio_token_decoder.classifier.0.weight"] = torch.zeros(8, 8)
    torch.save({"state_dict": state, "epoch": 1}, base / "vatt_llama.ckpt")
    return base, state


def _weights_and_lora_linear(state, p):
    """(w, lin) over an official checkpoint's converter keys under prefix p: a float64 weight, and a Linear with
    its q/v LoRA merged as peft does (W + alpha / r * B @ A, alpha / r = 2)."""
    def w(key):
        return state[p + key].double()

    def lin(x, module):
        weight = w(module + ".weight")
        if p + module + ".lora_A.default.weight" in state:
            weight = weight + 2.0 * w(module + ".lora_B.default.weight") @ w(module + ".lora_A.default.weight")
        return x @ weight.T

    return w, lin


def reference_states(state, features, ids):
    """encode_all_states of the official patched LlamaModel, from its equations."""
    p = CONVERTER_PREFIX

    w, lin = _weights_and_lora_linear(state, p)

    def rms(x, key):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w(key)

    pooled = F.adaptive_avg_pool1d(features.double().transpose(1, 2), 10).transpose(1, 2)
    video = pooled @ w("video_proj.weight").T + w("video_proj.bias")
    x = torch.cat([video, w("embed_tokens.weight")[ids]], dim=1)
    b, n, _ = x.shape
    d = H // HEADS
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(t):
        half = torch.cat([-t[..., d // 2:], t[..., : d // 2]], -1)
        return t * cos + half * sin

    causal = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(LAYERS):
        h = rms(x, f"layers.{i}.input_layernorm.weight")
        q, k, v = (lin(h, f"layers.{i}.self_attn.{n_}_proj").reshape(b, n, HEADS, d).transpose(1, 2) for n_ in "qkv")
        a = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(d) + causal, -1) @ v
        x = x + lin(a.transpose(1, 2).reshape(b, n, H), f"layers.{i}.self_attn.o_proj")
        h = rms(x, f"layers.{i}.post_attention_layernorm.weight")
        x = x + lin(F.silu(lin(h, f"layers.{i}.mlp.gate_proj")) * lin(h, f"layers.{i}.mlp.up_proj"), f"layers.{i}.mlp.down_proj")
    return rms(x, "norm.weight")


def test_converter_states_match_the_official_equations(official):
    base, state = official
    converter = load_vatt_converter(base / "vatt_llama.ckpt", base / "vicuna")
    g = torch.Generator().manual_seed(2)
    features = torch.randn(2, 50, 768, generator=g)
    ids = torch.randint(1, VOCAB, (2, 7), generator=g)
    with torch.no_grad():
        states, mask = converter(features, ids)
    expected = reference_states(state, features, ids)
    assert states.shape == (2, 17, H) and mask.shape == (2, 17) and bool(mask.all())
    assert torch.allclose(states.double(), expected, atol=1e-5), float((states.double() - expected).abs().max())


def test_converter_refusals_name_the_file(official, tmp_path):
    base, state = official
    with pytest.raises(ValueError, match=r"frame features \[batch, 50, 768\]"):
        load_vatt_converter(base / "vatt_llama.ckpt", base / "vicuna")(torch.zeros(1, 40, 768), torch.ones(1, 3, dtype=torch.long))
    partial = {k: v for k, v in state.items() if "video_proj" not in k}
    torch.save({"state_dict": partial}, tmp_path / "no_proj.ckpt")
    with pytest.raises(ValueError, match="no_proj.ckpt: no 'encoder.base_model.model.model.video_proj.weight'"):
        load_vatt_converter(tmp_path / "no_proj.ckpt", base / "vicuna")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vatt_converter(base / "vatt_llama.ckpt", tmp_path)


# ----------------------------------------------------------------------------------------------
# the caption (eval_v2a_caption.py) and the decoder's condition (vt2a_mlm_ff_generation.py)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny Vicuna folder (LlamaForCausalLM + tokenizer) and an official VATT-LLaMA checkpoint over it."""
    from tiny_vatt import write_official_vatt_llama

    base = tmp_path_factory.mktemp("release")
    llm, state = write_official_vatt_llama(str(base / "models"), str(base / "vicuna"))
    converter = load_vatt_converter(base / "models" / "audiovisual" / "vatt" / "vatt_llama.ckpt", base / "vicuna", with_tokenizer=True)
    return converter, llm, state


def reference_greedy(state, lm_head, features, ids, steps, penalty, eos):
    """Greedy decoding over the reference states, HF's repetition penalty over every token seen so far."""
    seen, new = ids.clone(), []
    for _ in range(steps):
        logits = reference_states(state, features, seen)[0, -1] @ lm_head.double().T
        for t in set(seen[0].tolist()):
            logits[t] = logits[t] * penalty if logits[t] < 0 else logits[t] / penalty
        token = int(logits.argmax())
        if token == eos:
            break
        new.append(token)
        seen = torch.cat([seen, torch.tensor([[token]])], dim=1)
    return new


def test_the_caption_is_the_official_decoding_of_video_then_prompt(release):
    from comfyui_audiovisual.encoders.vatt_converter import CAPTION_INSTRUCTION, PROMPT_TEMPLATE

    converter, llm, state = release
    tokenizer = converter.tokenizer
    features = torch.randn(1, 50, 768, generator=torch.Generator().manual_seed(3))
    ids = torch.tensor([tokenizer(PROMPT_TEMPLATE.format(instruction=CAPTION_INSTRUCTION))["input_ids"]])
    assert ids[0, 0] == tokenizer.bos_token_id and ids[0, -1] != tokenizer.eos_token_id  # BOS, no EOS: generation continues
    greedy = converter.generate(features, ids, tokenizer.eos_token_id, max_new_tokens=12, temperature=0.0, repetition_penalty=1.1)
    expected = reference_greedy(state, llm.lm_head.weight.detach(), features, ids, 12, 1.1, tokenizer.eos_token_id)
    assert greedy == expected and len(greedy) > 3  # the cached steps sit at the positions after the video and the prompt
    # sampling among the single most likely token is greedy whatever the temperature; a seed repeats a caption
    top1 = converter.generate(features, ids, tokenizer.eos_token_id, max_new_tokens=12, temperature=0.7, top_k=1, repetition_penalty=1.1,
                              generator=torch.Generator().manual_seed(0))
    assert top1 == greedy
    first, again = (converter.caption(features, generator=torch.Generator().manual_seed(5), max_new_tokens=20) for _ in range(2))
    assert first == again and first == tokenizer.decode(tokenizer(first, add_special_tokens=False)["input_ids"]).strip()


def test_the_condition_is_the_states_of_video_and_caption_prompt(release):
    from comfyui_audiovisual.encoders.vatt_converter import CONDITION_MAX_TOKENS, PROMPT_TEMPLATE, condition_ids

    converter, _llm, state = release
    tokenizer = converter.tokenizer
    features = torch.randn(1, 50, 768, generator=torch.Generator().manual_seed(4))
    states, mask = converter.condition(features, "a dog barking in the park")
    ids = condition_ids(tokenizer, "a dog barking in the park")
    assert ids[0, 0] == tokenizer.bos_token_id and ids[0, -1] == tokenizer.eos_token_id
    assert ids[0, 1:-1].tolist() == tokenizer(PROMPT_TEMPLATE.format(instruction="a dog barking in the park"),
                                              add_special_tokens=False)["input_ids"]
    assert states.shape == (1, 10 + ids.shape[1], H) and bool(mask.all())
    assert torch.allclose(states.double(), reference_states(state, features, ids), atol=1e-5)
    long_ids = condition_ids(tokenizer, "rain falling on a tin roof " * 40)
    assert long_ids.shape[1] == CONDITION_MAX_TOKENS and long_ids[0, -1] != tokenizer.eos_token_id  # truncated: no room for EOS


def test_clip_frames_takes_ten_seconds_as_they_are_and_stretches_other_lengths():
    from comfyui_audiovisual.encoders.vatt_converter import clip_frames

    frames = torch.randn(50, 768)
    assert torch.equal(clip_frames(frames)[0], frames)
    short = torch.randn(10, 768)
    stretched = clip_frames(short)[0]
    assert stretched.shape == (50, 768) and torch.allclose(stretched[0], short[0]) and torch.allclose(stretched[-1], short[-1])
    long = torch.randn(100, 768)
    assert torch.allclose(clip_frames(long)[0], long.reshape(50, 2, 768).mean(1), atol=1e-6)
    assert torch.equal(clip_frames(short[:1])[0], short[:1].expand(50, -1))


def test_a_vicuna_folder_of_pickled_shards_loads_as_data_the_same_converter(release, tmp_path):
    """2023 Vicuna folders hold pytorch_model-0000x-of-0000y.bin + an index: read as data (weights_only, mapped),
    they give the same states and the same caption as the safetensors folder; a shard that pickles code is refused."""
    import json
    import os
    import shutil

    converter, llm, _state = release
    checkpoint = tmp_path / "vatt_llama.ckpt"
    folder = tmp_path / "vicuna_bin"
    folder.mkdir()
    sd = {k: v.detach().clone() for k, v in llm.state_dict().items()}
    keys = sorted(sd)
    shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2], "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
    for shard, names in shards.items():
        torch.save({k: sd[k] for k in names}, folder / shard)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: shard for shard, names in shards.items() for k in names}}))
    llm.config.save_pretrained(str(folder))
    converter.tokenizer.save_pretrained(str(folder))
    from tiny_vatt import converter_state

    torch.save({"state_dict": converter_state(llm, 1)}, checkpoint)  # the release fixture's converter weights (seed 1)
    from_bin = load_vatt_converter(checkpoint, folder, with_tokenizer=True)
    features = torch.randn(1, 50, 768, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(from_bin.condition(features, "rain")[0], converter.condition(features, "rain")[0])
    assert from_bin.caption(features, max_new_tokens=10, temperature=0.0) == converter.caption(features, max_new_tokens=10, temperature=0.0)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"model.norm.weight": Payload()}, folder / "pytorch_model-00002-of-00002.bin")
    with pytest.raises(ValueError, match=r"vicuna_bin: could not load the LLM \(pytorch_model-00002-of-00002\.bin: not a plain "
                                         r"weights checkpoint.*builtins\.print"):
        load_vatt_converter(checkpoint, folder)
    shutil.rmtree(folder)


# ----------------------------------------------------------------------------------------------
# VATT-Gemma: the same code path over a Gemma folder (keys one 'model.' up, gemma prompt, scaled inputs)
# ----------------------------------------------------------------------------------------------
def reference_gemma_states(state, features, ids, heads=4, kv_heads=1, head_dim=8):
    """encode_all_states of the official patched GemmaModel, from its equations: the whole input sequence (video
    tokens too) times sqrt(hidden), RMSNorm x (1 + w), one shared key/value head, GELU (tanh) gated MLP."""
    from tiny_vatt import GEMMA_PREFIX

    p = GEMMA_PREFIX

    w, lin = _weights_and_lora_linear(state, p)

    def rms(x, key):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + w(key))

    pooled = F.adaptive_avg_pool1d(features.double().transpose(1, 2), 10).transpose(1, 2)
    video = pooled @ w("video_proj.weight").T + w("video_proj.bias")
    x = torch.cat([video, w("embed_tokens.weight")[ids]], dim=1) * math.sqrt(H)
    b, n, _ = x.shape
    d = head_dim
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(t):
        return t * cos + torch.cat([-t[..., d // 2:], t[..., : d // 2]], -1) * sin

    causal = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(LAYERS):
        h = rms(x, f"layers.{i}.input_layernorm.weight")
        q = lin(h, f"layers.{i}.self_attn.q_proj").reshape(b, n, heads, d).transpose(1, 2)
        k, v = (lin(h, f"layers.{i}.self_attn.{m}_proj").reshape(b, n, kv_heads, d).transpose(1, 2)
                .repeat_interleave(heads // kv_heads, dim=1) for m in "kv")
        a = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(d) + causal, -1) @ v
        x = x + lin(a.transpose(1, 2).reshape(b, n, heads * d), f"layers.{i}.self_attn.o_proj")
        h = rms(x, f"layers.{i}.post_attention_layernorm.weight")
        gate = F.gelu(lin(h, f"layers.{i}.mlp.gate_proj"), approximate="tanh")
        x = x + lin(gate * lin(h, f"layers.{i}.mlp.up_proj"), f"layers.{i}.mlp.down_proj")
    return rms(x, "norm.weight")


@pytest.fixture(scope="module")
def gemma_release(tmp_path_factory):
    from tiny_vatt import write_official_vatt_llama

    base = tmp_path_factory.mktemp("gemma-release")
    llm, state = write_official_vatt_llama(str(base / "models"), str(base / "gemma_2b"), "vatt_gemma.ckpt", gemma=True)
    converter = load_vatt_converter(base / "models" / "audiovisual" / "vatt" / "vatt_gemma.ckpt", base / "gemma_2b",
                                    with_tokenizer=True)
    return base, converter, llm, state


def test_vatt_gemma_states_and_caption_follow_the_official_equations(gemma_release):
    from comfyui_audiovisual.encoders.vatt_converter import LAYOUTS, condition_ids

    base, converter, llm, state = gemma_release
    tokenizer = converter.tokenizer
    assert converter.layout is LAYOUTS["gemma"] and converter.hidden_size == H
    features = torch.randn(1, 50, 768, generator=torch.Generator().manual_seed(8))
    states, mask = converter.condition(features, "a dog barking in the park")
    ids = condition_ids(tokenizer, "a dog barking in the park", LAYOUTS["gemma"].prompt)
    assert ids.shape[1] > 10 and states.shape == (1, 10 + ids.shape[1], H) and bool(mask.all())
    assert torch.allclose(states.double(), reference_gemma_states(state, features, ids), atol=1e-5), \
        float((states.double() - reference_gemma_states(state, features, ids)).abs().max())

    prompt_ids = torch.tensor([tokenizer(LAYOUTS["gemma"].prompt.format(instruction=LAYOUTS["gemma"].instruction))["input_ids"]])
    greedy = converter.generate(features, prompt_ids, tokenizer.eos_token_id, max_new_tokens=10, temperature=0.0,
                                repetition_penalty=1.1)
    seen, expected = prompt_ids.clone(), []
    for _ in range(10):  # tied lm_head: Gemma's (unscaled) token embeddings
        logits = reference_gemma_states(state, features, seen)[0, -1] @ llm.model.embed_tokens.weight.detach().double().T
        for t in set(seen[0].tolist()):
            logits[t] = logits[t] * 1.1 if logits[t] < 0 else logits[t] / 1.1
        token = int(logits.argmax())
        if token == tokenizer.eos_token_id:
            break
        expected.append(token)
        seen = torch.cat([seen, torch.tensor([[token]])], dim=1)
    assert greedy == expected and len(greedy) > 3


def test_a_converter_and_an_llm_of_another_release_are_refused_by_name(gemma_release, release, tmp_path):
    base, *_ = gemma_release
    llama_checkpoint = tmp_path / "vatt_llama.ckpt"
    from tiny_vatt import converter_state

    torch.save({"state_dict": converter_state(release[1], 1)}, llama_checkpoint)
    with pytest.raises(ValueError, match=r"gemma_2b: a 'gemma' model; vatt_llama\.ckpt is the converter of VATT-LLaMA \(Vicuna-7B\), "
                                         r"which needs a llama folder"):
        load_vatt_converter(llama_checkpoint, base / "gemma_2b")
