"""MaskedAVTransformer: shapes, weight tying, masking, the drop path, config and checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_audiovisual.loaders.masked_transformer import load_masked_transformer, save_masked_transformer
from comfyui_audiovisual.networks.masked_transformer import (
    MaskedAVTransformer,
    MaskedAVTransformerConfig,
    count_parameters_for,
)

AUDIO_LEN, IMAGE_LEN, AUDIO_VOCAB, IMAGE_VOCAB = 10, 16, 20, 30


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_config(**overrides):
    values = dict(audio_vocab_size=AUDIO_VOCAB, image_vocab_size=IMAGE_VOCAB, audio_seq_len=AUDIO_LEN,
                  image_seq_len=IMAGE_LEN, dim=32, encoder_depth=2, decoder_depth=1, num_heads=4, dropout=0.0)
    values.update(overrides)
    return MaskedAVTransformerConfig(**values)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MaskedAVTransformer(small_config()).eval()


def random_inputs(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randint(0, AUDIO_VOCAB, (batch, AUDIO_LEN), generator=g)
    image = torch.randint(0, IMAGE_VOCAB, (batch, IMAGE_LEN), generator=g)
    audio_masked = torch.rand(batch, AUDIO_LEN, generator=g) < 0.5
    image_masked = torch.rand(batch, IMAGE_LEN, generator=g) < 0.5
    return audio, image, audio_masked, image_masked


def test_forward_shapes_cover_real_codes_only(model):
    audio, image, audio_masked, image_masked = random_inputs()
    audio_logits, image_logits = model(audio, image, audio_masked, image_masked)
    assert audio_logits.shape == (3, AUDIO_LEN, AUDIO_VOCAB)
    assert image_logits.shape == (3, IMAGE_LEN, IMAGE_VOCAB)
    assert model.audio_token_embedding.num_embeddings == AUDIO_VOCAB + 1  # + [MASK]
    assert model.audio_mask_id == AUDIO_VOCAB and model.image_mask_id == IMAGE_VOCAB


def test_head_is_tied_to_the_token_embedding(model):
    keys = model.state_dict().keys()
    assert not any(k.startswith("audio_head") and model.state_dict()[k].shape == (AUDIO_VOCAB, 32) for k in keys)
    audio, image, audio_masked, image_masked = random_inputs()
    with torch.no_grad():
        model.audio_token_embedding.weight[:AUDIO_VOCAB].zero_()
        audio_logits, image_logits = model(audio, image, audio_masked, image_masked)
    assert torch.equal(audio_logits, torch.zeros_like(audio_logits))  # bias is zero-initialised
    assert image_logits.abs().sum() > 0
    # and gradients of the audio logits reach the embedding matrix through the head
    fresh = MaskedAVTransformer(small_config())
    all_masked = torch.ones(1, AUDIO_LEN, dtype=torch.bool)
    fresh(audio[:1], image[:1], all_masked, torch.ones(1, IMAGE_LEN, dtype=torch.bool))[0].sum().backward()
    assert fresh.audio_token_embedding.weight.grad[:AUDIO_VOCAB].abs().sum() > 0


def test_ids_at_masked_positions_are_ignored(model):
    audio, image, audio_masked, image_masked = random_inputs()
    reference = model(audio, image, audio_masked, image_masked)
    audio2 = torch.where(audio_masked, (audio + 7) % AUDIO_VOCAB, audio)
    image2 = torch.where(image_masked, (image + 5) % IMAGE_VOCAB, image)
    other = model(audio2, image2, audio_masked, image_masked)
    assert torch.allclose(reference[0], other[0]) and torch.allclose(reference[1], other[1])
    # while an unmasked id does change the prediction
    audio3 = audio.clone()
    position = int((~audio_masked[0]).nonzero()[0])
    audio3[0, position] = (audio3[0, position] + 1) % AUDIO_VOCAB
    assert not torch.allclose(reference[0][0], model(audio3, image, audio_masked, image_masked)[0][0])


def test_drop_path_rows_are_independent(model):
    batch = 3
    audio, image, _, _ = random_inputs(batch)
    audio_masked = torch.zeros(batch, AUDIO_LEN, dtype=torch.bool)
    image_masked = torch.zeros(batch, IMAGE_LEN, dtype=torch.bool)
    audio_masked[:, :6] = True
    image_masked[0, :4] = True
    image_masked[1, 8:12] = True
    image_masked[2, ::4] = True
    masked = torch.cat([audio_masked, image_masked], 1)
    drop = torch.zeros_like(masked)
    drop[0, [0, 2, 10, 11]] = True
    drop[1, [1, 18, 19, 3]] = True
    drop[2, [4, 5, 10, 14]] = True
    assert bool((drop <= masked).all())
    together = model(audio, image, audio_masked, image_masked, drop)
    assert together[0].shape == (batch, AUDIO_LEN, AUDIO_VOCAB)
    for row in range(batch):
        alone = model(audio[row:row + 1], image[row:row + 1], audio_masked[row:row + 1],
                      image_masked[row:row + 1], drop[row:row + 1])
        assert torch.allclose(alone[0][0], together[0][row], atol=1e-5)
        assert torch.allclose(alone[1][0], together[1][row], atol=1e-5)
    # dropping changes what the encoder sees, so the prediction differs from no drop
    no_drop = model(audio, image, audio_masked, image_masked)
    assert not torch.allclose(no_drop[0], together[0])


def test_drop_path_rejects_bad_masks(model):
    audio, image, audio_masked, image_masked = random_inputs(2)
    masked = torch.cat([audio_masked, image_masked], 1)
    unmasked_drop = torch.zeros_like(masked)
    unmasked_drop[:, :] = ~masked
    with pytest.raises(ValueError, match="only remove masked"):
        model(audio, image, audio_masked, image_masked, unmasked_drop)
    uneven = torch.zeros_like(masked)
    uneven[0, masked[0].nonzero()[:2, 0]] = True
    uneven[1, masked[1].nonzero()[:1, 0]] = True
    with pytest.raises(ValueError, match="same number"):
        model(audio, image, audio_masked, image_masked, uneven)


def test_forward_rejects_wrong_shapes(model):
    audio, image, audio_masked, image_masked = random_inputs()
    with pytest.raises(ValueError, match="audio_tokens has shape"):
        model(audio[:, :5], image, audio_masked, image_masked)


def test_config_round_trip_and_presets():
    config = small_config()
    assert MaskedAVTransformerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown keys"):
        MaskedAVTransformerConfig.from_dict({**config.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="divisible"):
        small_config(num_heads=5)
    large = MaskedAVTransformerConfig.vit_large()
    assert (large.dim, large.encoder_depth, large.decoder_depth, large.num_heads) == (1024, 24, 8, 16)
    assert (large.audio_seq_len, large.image_seq_len) == (265, 256)
    assert 380e6 < count_parameters_for(large) < 450e6
    tiny = MaskedAVTransformerConfig.tiny(audio_seq_len=7)
    assert tiny.audio_seq_len == 7 and tiny.dim == 64


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def test_save_load_round_trip(model, tmp_path):
    path = save_masked_transformer(model, tmp_path / "ve.safetensors", extra_metadata={"step": 7})
    loaded = load_masked_transformer(path)
    assert loaded.config == model.config and not loaded.training
    inputs = random_inputs()
    for a, b in zip(model(*inputs), loaded(*inputs)):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".tmp-*"))


def test_config_json_beside_the_file_is_accepted(model, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="weights.safetensors: no config"):
        load_masked_transformer(path)
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    assert load_masked_transformer(path).config == model.config


def test_wrong_shape_names_file_key_and_shapes(model, tmp_path):
    path = save_masked_transformer(model, tmp_path / "bad.safetensors")
    state = load_file(str(path))
    state["image_head.bias"] = torch.zeros(IMAGE_VOCAB + 3)
    metadata = {"config": json.dumps(model.config.to_dict())}
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(ValueError) as error:
        load_masked_transformer(path)
    message = str(error.value)
    assert "bad.safetensors" in message and "'image_head.bias'" in message
    assert f"({IMAGE_VOCAB + 3},)" in message and f"expected ({IMAGE_VOCAB},)" in message


def test_missing_key_and_missing_file(model, tmp_path):
    path = save_masked_transformer(model, tmp_path / "partial.safetensors")
    state = load_file(str(path))
    del state["decoder_mask_embedding"]
    save_file(state, str(path), metadata={"config": json.dumps(model.config.to_dict())})
    with pytest.raises(ValueError, match=r"partial\.safetensors: missing key 'decoder_mask_embedding'"):
        load_masked_transformer(path)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_masked_transformer(tmp_path / "nowhere.safetensors")


# -- token groups (audio_group / image_group) ----------------------------------------------------
def grouped_model(seed=0):
    torch.manual_seed(seed)
    return MaskedAVTransformer(small_config(audio_group=5, image_group=4)).eval()


def test_groups_keep_per_token_shapes_and_shorten_the_sequence():
    model = grouped_model()
    audio, image, audio_masked, image_masked = random_inputs()
    audio_logits, image_logits = model(audio, image, audio_masked, image_masked)
    assert audio_logits.shape == (3, AUDIO_LEN, AUDIO_VOCAB) and image_logits.shape == (3, IMAGE_LEN, IMAGE_VOCAB)
    assert model.audio_position_embedding.shape == (1, AUDIO_LEN // 5, 32)
    assert model.image_position_embedding.shape == (1, IMAGE_LEN // 4, 32)
    assert model.audio_token_embedding.num_embeddings == (AUDIO_VOCAB + 1) * 5  # a [MASK] row per slot
    hidden = model.embed_tokens(audio, image, audio_masked, image_masked)
    assert hidden.shape == (3, AUDIO_LEN // 5 + IMAGE_LEN // 4, 32)


def test_a_group_is_one_position_whose_slots_are_told_apart():
    model = grouped_model()
    audio, image, audio_masked, image_masked = random_inputs()
    reference = model(audio, image, audio_masked, image_masked)
    # ids at masked tokens are ignored, also inside a partly masked group
    audio2 = torch.where(audio_masked, (audio + 3) % AUDIO_VOCAB, audio)
    assert torch.allclose(reference[0], model(audio2, image, audio_masked, image_masked)[0])
    # swapping two known tokens within one group changes the prediction (slots have their own embeddings)
    masked = audio_masked.clone()
    masked[:, 0:2] = False  # the first two tokens of the first group are known
    swapped = audio.clone()
    swapped[:, [0, 1]] = audio[:, [1, 0]]
    same_ids = audio[:, 0] == audio[:, 1]
    changed = model(swapped, image, masked, image_masked)[0] - model(audio, image, masked, image_masked)[0]
    assert changed[~same_ids].abs().amax() > 1e-4


def test_groups_validate_lengths_and_refuse_the_drop_path():
    with pytest.raises(ValueError, match="audio_seq_len 10 is not a multiple of audio_group 3"):
        small_config(audio_group=3)
    model = grouped_model()
    audio, image, audio_masked, image_masked = random_inputs()
    drop = torch.zeros(3, AUDIO_LEN + IMAGE_LEN, dtype=torch.bool)
    assert torch.equal(model(audio, image, audio_masked, image_masked, drop)[0], model(audio, image, audio_masked, image_masked)[0])
    audio_masked[:, 0] = True
    drop[:, 0] = True
    with pytest.raises(ValueError, match="drop is not supported with token groups"):
        model(audio, image, audio_masked, image_masked, drop)


def test_grouped_model_save_load_round_trip(tmp_path):
    model = grouped_model(seed=3)
    path = tmp_path / "grouped.safetensors"
    save_masked_transformer(model, str(path))
    loaded = load_masked_transformer(str(path)).eval()
    assert (loaded.config.audio_group, loaded.config.image_group) == (5, 4)
    inputs = random_inputs()
    for a, b in zip(model(*inputs), loaded(*inputs)):
        assert torch.equal(a, b)


def test_sincos_positions_put_an_audio_column_nearest_the_image_strip_at_its_place():
    from comfyui_audiovisual.networks.masked_transformer import init_positions_sincos

    config = MaskedAVTransformerConfig(audio_vocab_size=8, image_vocab_size=8, audio_seq_len=4 * 8, image_seq_len=8 * 8,
                                       dim=64, encoder_depth=1, decoder_depth=1, num_heads=4, audio_group=4, image_group=2)
    model = MaskedAVTransformer(config)
    init_positions_sincos(model, (4, 8), (8, 8))  # audio 4 rows x 8 columns (a group = one column); image 8 x 8
    audio = model.audio_position_embedding[0, :, :32]  # the horizontal half: time / x
    image = model.image_position_embedding[0, :, :32].view(8, 4, 32)[0]  # top image row: 4 strips of 2 tokens
    similarity = audio @ image.t()  # [8 columns, 4 strips]
    assert similarity.argmax(dim=1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(model.decoder_audio_position_embedding, model.audio_position_embedding)
    with pytest.raises(ValueError, match="do not give the model's"):
        init_positions_sincos(model, (4, 7), (8, 8))
