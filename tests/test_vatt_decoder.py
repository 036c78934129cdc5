"""VATT audio decoder: the network, our file format, the official-layout key map (checked against
an independent re-implementation of the official forward pass on a tiny random checkpoint written
with the official key names), and the multi-codebook sampling invariants."""

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_audiovisual.loaders.vatt_checkpoints import load_vatt_decoder, official_to_ours, save_vatt_decoder
from comfyui_audiovisual.networks.vatt_decoder import VATTDecoder, VATTDecoderConfig
from comfyui_audiovisual.samplers.masked_sampler import reveal_schedule
from comfyui_audiovisual.samplers.vatt import vatt_model_fn, vatt_sample
from tiny_vatt import OFFICIAL_PREFIX as P
from tiny_vatt import mae_sincos, official_vatt_state_dict

K, V, LATENT, DIM, HEADS, VIDEO_DIM = 4, 32, 8, 32, 2, 12


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def tiny_decoder(seed=0, **overrides) -> VATTDecoder:
    torch.manual_seed(seed)
    config = VATTDecoderConfig.tiny(codebook_size=V, latent_dim=LATENT, dim=DIM, num_heads=HEADS, head_dim=16,
                                    video_dim=VIDEO_DIM, encoder_depth=2, decoder_depth=1, **overrides)
    model = VATTDecoder(config).eval()
    model.set_codebooks(torch.randn(K, V, LATENT))
    return model


def grid(batch, frames, seed=0):
    return torch.randint(0, V, (batch, K, frames), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------
def test_logits_cover_every_codebook_and_frame():
    model = tiny_decoder()
    tokens, masked = grid(2, 9), torch.rand(2, K, 9, generator=torch.Generator().manual_seed(1)) < 0.5
    logits = model(tokens, masked, torch.randn(2, 5, VIDEO_DIM))
    assert logits.shape == (2, K, 9, V) and bool(torch.isfinite(logits).all())


def test_masked_slots_ignore_their_ids_and_unmasked_ids_matter():
    model = tiny_decoder()
    video = torch.randn(1, 5, VIDEO_DIM)
    tokens = grid(1, 6)
    masked = torch.zeros(1, K, 6, dtype=torch.bool)
    masked[0, 1, 2] = True
    other = tokens.clone()
    other[0, 1, 2] = (tokens[0, 1, 2] + 1) % V
    assert torch.equal(model(tokens, masked, video), model(other, masked, video))
    other[0, 3, 4] = (tokens[0, 3, 4] + 1) % V
    assert not torch.allclose(model(tokens, masked, video), model(other, masked, video))


def test_unconditional_rows_zero_the_whole_condition():
    model = tiny_decoder(text_dim=6)
    tokens, masked = grid(1, 5), torch.ones(1, K, 5, dtype=torch.bool)
    video_a, video_b = torch.randn(1, 4, VIDEO_DIM), torch.randn(1, 4, VIDEO_DIM)
    text_a, text_b = torch.randn(1, 3, 6), torch.randn(1, 3, 6)
    drop, keep = torch.tensor([True]), torch.tensor([False])
    uncond_a = model(tokens, masked, video_a, text_a, drop_condition=drop)
    assert torch.allclose(uncond_a, model(tokens, masked, video_b, text_b, drop_condition=drop))
    assert not torch.allclose(uncond_a, model(tokens, masked, video_a, text_a, drop_condition=keep))
    assert not torch.allclose(model(tokens, masked, video_a, text_a), model(tokens, masked, video_a, text_b))
    with pytest.raises(ValueError, match="trained without text"):
        tiny_decoder()(tokens, masked, video_a, text_a)


def test_official_logit_layout_is_the_frame_major_reading_of_codebook_major_heads():
    aligned = tiny_decoder()
    official = tiny_decoder(logit_layout="vatt_official")
    official.load_state_dict(aligned.state_dict())
    tokens, masked, video = grid(2, 7), torch.rand(2, K, 7) < 0.3, torch.randn(2, 3, VIDEO_DIM)
    heads = aligned(tokens, masked, video)  # head k at frame t
    mapped = official(tokens, masked, video)
    N = 7
    for k in range(K):
        for t in range(N):
            j = k * N + t
            assert torch.equal(mapped[:, j % K, j // K], heads[:, k, t])


# ----------------------------------------------------------------------------------------------
# our file format
# ----------------------------------------------------------------------------------------------
def test_save_and_load_give_the_same_model(tmp_path):
    model = tiny_decoder(text_dim=6, video_model="tiny-clip", codec="tiny_codec")
    path = save_vatt_decoder(model, tmp_path / "decoder.safetensors")
    loaded = load_vatt_decoder(path)
    assert loaded.config == model.config and loaded.has_codebooks and not loaded.training
    tokens, masked, video, text = grid(1, 6), torch.rand(1, K, 6) < 0.5, torch.randn(1, 4, VIDEO_DIM), torch.randn(1, 2, 6)
    assert torch.equal(loaded(tokens, masked, video, text), model(tokens, masked, video, text))


def test_bad_files_name_the_file_and_the_key(tmp_path):
    from safetensors.torch import save_file

    from comfyui_audiovisual.loaders.checkpoint_io import write_safetensors_atomic

    with pytest.raises(FileNotFoundError, match="not found"):
        load_vatt_decoder(tmp_path / "missing.safetensors")
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors: neither a VATT decoder"):
        load_vatt_decoder(tmp_path / "other.safetensors")
    model = tiny_decoder()
    state = dict(model.state_dict())
    meta = {"config": '{"_class_name": "VATTDecoder", ' + save_meta(model)[1:]}
    del state["heads.1.weight"]
    write_safetensors_atomic(state, tmp_path / "cut.safetensors", meta)
    with pytest.raises(ValueError, match="cut.safetensors: missing key 'heads.1.weight'"):
        load_vatt_decoder(tmp_path / "cut.safetensors")
    state = dict(model.state_dict())
    state["latent_proj.weight"] = torch.zeros(DIM, LATENT + 1)
    write_safetensors_atomic(state, tmp_path / "shape.safetensors", meta)
    with pytest.raises(ValueError, match=r"key 'latent_proj.weight' has shape \(32, 9\), expected \(32, 8\)"):
        load_vatt_decoder(tmp_path / "shape.safetensors")
    write_safetensors_atomic(model.state_dict(), tmp_path / "kind.safetensors", {"config": '{"_class_name": "MaskedAVTransformer"}'})
    with pytest.raises(ValueError, match="expected a 'VATTDecoder'"):
        load_vatt_decoder(tmp_path / "kind.safetensors")


def save_meta(model):
    import json

    return json.dumps(model.config.to_dict())


# ----------------------------------------------------------------------------------------------
# the official layout
# ----------------------------------------------------------------------------------------------
ENC, DEC = 2, 1


def official_state_dict(seed=0, video_dim=VIDEO_DIM, pos_len=64):
    return official_vatt_state_dict(seed, dim=DIM, heads=HEADS, encoder_layers=ENC, decoder_layers=DEC, codebooks=K, vocab=V,
                                    latent=LATENT, video_dim=video_dim, pos_len=pos_len)


def official_forward(state, codes, masked, video, codebooks):
    """The official VT2AModel forward, re-written from the paper's code with plain tensor maths:
    returns logits flattened as the official code does, 'b k t d -> b (k t) d'."""
    sd = {k[len(P):]: v for k, v in state.items() if k.startswith(P)}
    b, _, n = codes.shape
    v = video @ sd["img_linear.weight"].T + sd["img_linear.bias"]
    lv = v.shape[1]
    latent = 0
    for k in range(K):
        table = torch.cat([codebooks[k], sd["embedding.special.MASK"][k:k + 1]])
        ids = torch.where(masked[:, k], torch.full_like(codes[:, k], V), codes[:, k])
        latent = latent + F.embedding(ids, table)
    a = latent @ sd["embedding.out_proj.weight"].T + sd["embedding.out_proj.bias"]
    pos = sd["pos_embed"][0]
    x = torch.cat([v + pos[:lv] + sd["modality_v"], a + pos[lv:lv + n] + sd["modality_a"]], dim=1)
    length = lv + n
    slopes = torch.tensor([2 ** (-8 * (h + 1) / HEADS) for h in range(HEADS)])
    idx = torch.arange(length)
    bias = -(idx[None, :] - idx[:, None]).abs().float()[None] * slopes[:, None, None]

    def ln(h, prefix):
        return F.layer_norm(h, (DIM,), sd[prefix + ".weight"], sd[prefix + ".bias"])

    def attention(h, prefix):
        def split(t):
            return t.view(b, length, HEADS, 64).transpose(1, 2)

        q, kk, vv = (split(h @ sd[f"{prefix}.{p}.weight"].T) for p in ("to_q", "to_k", "to_v"))
        weights = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(64) + bias, dim=-1)
        return (weights @ vv).transpose(1, 2).reshape(b, length, -1) @ sd[f"{prefix}.to_out.weight"].T

    def ff(h, prefix):
        return F.gelu(h @ sd[f"{prefix}.ff.0.0.weight"].T) @ sd[f"{prefix}.ff.2.weight"].T

    def multiway(h, prefix):
        return torch.cat([ln(h[:, :lv], prefix + ".A"), ln(h[:, lv:], prefix + ".B")], dim=1)

    for i in range(2 * ENC):
        layer = f"encoder.attn_layers.layers.{i}"
        h = multiway(x, layer + ".0.0")
        if i % 2 == 0:
            x = x + attention(h, layer + ".1")
        else:
            x = x + torch.cat([ff(h[:, :lv], layer + ".1.A"), ff(h[:, lv:], layer + ".1.B")], dim=1)
    x = multiway(x, "encoder.attn_layers.final_norm")
    for i in range(2 * DEC):
        layer = f"decoder.attn_layers.layers.{i}"
        h = ln(x, layer + ".0.0")
        x = x + (attention(h, layer + ".1") if i % 2 == 0 else ff(h, layer + ".1"))
    out = ln(x, "decoder.attn_layers.final_norm")[:, lv:]
    logits = torch.stack([out @ sd[f"classifier.{k}.weight"].T for k in range(K)], dim=1)  # b k t d
    return logits.reshape(b, K * n, V)  # b (k t) d


def test_official_checkpoint_maps_onto_the_network(tmp_path):
    state = official_state_dict()
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "vatt_official.ckpt")
    model = load_vatt_decoder(tmp_path / "vatt_official.ckpt")
    config = model.config
    assert (config.num_codebooks, config.codebook_size, config.latent_dim, config.dim) == (K, V, LATENT, DIM)
    assert (config.encoder_depth, config.decoder_depth, config.num_heads, config.head_dim) == (ENC, DEC, HEADS, 64)
    assert config.logit_layout == "vatt_official" and config.video_dim == VIDEO_DIM
    assert config.video_family == "vatt_converter"  # not eva-CLIP's 768: the LLM's hidden states
    assert not model.has_codebooks  # the official model keeps the codec's tables outside
    codebooks = torch.randn(K, V, LATENT, generator=torch.Generator().manual_seed(5))
    model.set_codebooks(codebooks)

    n = 6
    codes, masked = grid(2, n, seed=7), torch.rand(2, K, n, generator=torch.Generator().manual_seed(8)) < 0.5
    video = torch.randn(2, 3, VIDEO_DIM, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ours = model(codes, masked, video)
        reference = official_forward(state, codes, masked, video, codebooks)
    # the official model's flat index j scores frame j // K, codebook j % K
    assert torch.allclose(ours.permute(0, 2, 1, 3).reshape(2, n * K, V), reference, atol=1e-4)


def test_official_checkpoint_errors_name_the_key(tmp_path):
    state = official_state_dict()
    del state[P + "classifier.0.weight"]
    state[P + "classifier.9.weight"] = torch.zeros(V, DIM)
    with pytest.raises(ValueError, match="missing key 'audio_token_decoder.classifier.0.weight'"):
        official_to_ours(state, "cut.ckpt")
    state = official_state_dict()
    state[P + "encoder.attn_layers.layers.1.0.0.A.weight"] = torch.zeros(DIM)
    with pytest.raises(ValueError, match="differs from the shared encoder norm"):
        official_to_ours(state, "norms.ckpt")
    state = official_state_dict()
    state[P + "pos_embed"] = torch.randn(1, 64, DIM)
    with pytest.raises(ValueError, match="pos_embed' is not the fixed sin-cos table"):
        official_to_ours(state, "pos.ckpt")


def test_eva_clip_width_condition_is_read_as_eva_clip_features():
    """A 768-wide img_linear reads eva-CLIP frame features: the family Load Encoder gives an open_clip
    EVA02 folder (whatever the folder is called); a 768-wide CLIP-L embedding is another space."""
    from comfyui_audiovisual.encoders.eva_clip import FAMILY
    from comfyui_audiovisual.nodes.payloads import Embedding

    config, _, has_codebooks = official_to_ours(official_state_dict(video_dim=768), "eva.ckpt")
    assert config.video_family == FAMILY == "eva_clip" and config.video_dim == 768 and not has_codebooks
    assert config.video_model == ""

    def features(family):
        return Embedding(vectors=torch.zeros(1, 10, 768), family=family, model="eva02_large_patch14_clip_336.merged2b_s6b_b61k",
                         modality="video")

    features("eva_clip").expect("VATT Sampler", config.video_family, dim=config.video_dim, model=config.video_model or None, sequence=True)
    with pytest.raises(ValueError, match="VATT Sampler: expected a EVA_CLIP embedding of width 768"):
        features("clip").expect("VATT Sampler", config.video_family, dim=config.video_dim, sequence=True)


def test_sampling_needs_the_codec_tables_of_an_official_model(tmp_path):
    torch.save({"state_dict": official_state_dict()}, tmp_path / "v.ckpt")
    model = load_vatt_decoder(tmp_path / "v.ckpt")
    with pytest.raises(ValueError, match="no codec codebook tables"):
        vatt_sample(model, torch.randn(1, 3, VIDEO_DIM), 5, steps=2)
    model.set_codebooks(torch.randn(K, V, LATENT))
    assert vatt_sample(model, torch.randn(1, 3, VIDEO_DIM), 5, steps=2).shape == (1, K, 5)


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------
def test_sampling_fills_all_codebooks_jointly_and_revealed_tokens_never_change():
    model = tiny_decoder()
    video = torch.randn(2, 4, VIDEO_DIM)
    n, steps = 10, 6
    history = []

    def record(step, total, tokens, still_masked):
        history.append((tokens.clone(), still_masked.clone()))

    out = vatt_sample(model, video, n, steps=steps, generator=torch.Generator().manual_seed(0), callback=record)
    assert out.shape == (2, K, n) and out.dtype == torch.long
    assert 0 <= int(out.min()) and int(out.max()) < V
    assert len(history) == steps and not bool(history[-1][1].any())
    # revealed slots keep their value at every later step and in the output
    for (tokens, masked) in history:
        revealed = ~masked
        assert torch.equal(tokens[revealed], out[revealed])
    # one joint schedule over the K * N slots of a row, not one per codebook
    expected = reveal_schedule(K * n, steps)
    previous = torch.ones(2, K, n, dtype=torch.bool)
    for step, (_, masked) in enumerate(history):
        revealed_now = (previous & ~masked).reshape(2, -1).sum(dim=1)
        assert revealed_now.tolist() == [expected[step]] * 2
        previous = masked
    # every codebook gets tokens revealed before the last step (joint ranking mixes them)
    assert all(bool((~history[-2][1][:, k]).any()) for k in range(K))


def test_given_slots_are_left_untouched():
    from comfyui_audiovisual.samplers.masked_sampler import masked_sample

    model = tiny_decoder()
    video = torch.randn(1, 4, VIDEO_DIM)
    given = grid(1, 8, seed=3)
    target = torch.zeros(1, K, 8, dtype=torch.bool)
    target[:, :, 3:6] = True  # regenerate frames 3..5 of every codebook
    out = masked_sample(vatt_model_fn(model, video), given, target, steps=4, cfg=5.0, top_k=8,
                        generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[~target], given[~target])
    assert out.shape == given.shape


def test_same_seed_same_tokens_other_seed_other_tokens():
    model = tiny_decoder()
    video = torch.randn(1, 4, VIDEO_DIM)

    def run(seed):
        return vatt_sample(model, video, 12, steps=4, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_guidance_uses_the_zeroed_condition_for_the_unconditional_pass():
    model = tiny_decoder()
    video = torch.randn(1, 4, VIDEO_DIM)
    calls = []
    fn = vatt_model_fn(model, video)

    def spy(tokens, masked, drop):
        calls.append(drop.clone())
        return fn(tokens, masked, drop)

    from comfyui_audiovisual.samplers.masked_sampler import guided_logits

    tokens, masked = grid(1, 5), torch.ones(1, K, 5, dtype=torch.bool)
    guided = guided_logits(spy, tokens, masked, cfg=5.0)
    assert calls[-1].tolist() == [False, True]  # one batched pass: conditional row, then unconditional
    cond = model(tokens, masked, video)
    uncond = model(tokens, masked, torch.zeros(1, 4, VIDEO_DIM), drop_condition=torch.tensor([True]))
    assert torch.allclose(guided, uncond + 5.0 * (cond - uncond), atol=1e-5)


def test_a_condition_batch_must_match_the_output_batch():
    model = tiny_decoder()
    with pytest.raises(ValueError, match="cannot drive 3 outputs"):
        vatt_sample(model, torch.randn(2, 4, VIDEO_DIM), 5, batch_size=3, steps=2)
    assert vatt_sample(model, torch.randn(1, 4, VIDEO_DIM), 5, batch_size=3, steps=2).shape == (3, K, 5)


def test_only_the_decoder_is_read_from_a_checkpoint_with_its_llm(tmp_path):
    """Issue 18: the frozen LLM beside the decoder is never read (safetensors key by key, pickles mapped)."""
    from safetensors.torch import save_file

    from comfyui_audiovisual.loaders.checkpoint_io import read_state_dict_subset
    from comfyui_audiovisual.loaders.vatt_checkpoints import _decoder_keys

    state = official_state_dict()
    state["encoder.base_model.model.model.layers.0.mlp.up_proj.weight"] = torch.randn(256, 64)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "vatt.ckpt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "vatt.safetensors"))
    decoder_keys = {k for k in state if k.startswith(P)}
    for name in ("vatt.ckpt", "vatt.safetensors"):
        read, _ = read_state_dict_subset(tmp_path / name, _decoder_keys)
        assert set(read) == decoder_keys
        assert all(torch.equal(read[k], state[k]) for k in decoder_keys)
        model = load_vatt_decoder(tmp_path / name)
        assert model.config.logit_layout == "vatt_official"
        assert torch.equal(model.heads[0].weight, state[P + "classifier.0.weight"])
    torch.save({"state_dict": state}, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)  # cannot be mapped
    assert set(read_state_dict_subset(tmp_path / "legacy.ckpt", _decoder_keys)[0]) == decoder_keys


@pytest.mark.parametrize("name", ["vatt.ckpt", "vatt.safetensors"])
def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path, name):
    from safetensors.torch import save_file

    state = official_state_dict()
    if name.endswith(".ckpt"):
        torch.save({"state_dict": state}, tmp_path / name)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / name))
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=rf"{name}: .*truncated or damaged"):
        load_vatt_decoder(tmp_path / name)
