"""The V2A-Mapper defaults' plain code: contrastive encoder training (inputs prepared exactly as the
encoders prepare them, the loss), the spectrogram-token generator's sampling and length, and the
embedded models' held-out behaviour (skipped until they are installed)."""

import math
import os

import numpy as np
import pytest
import torch

from conftest import PACK_DIR

from comfyui_audiovisual.synthav import split as S
from comfyui_audiovisual.synthav.world import SAMPLE_RATE, render_audio, render_image
from comfyui_audiovisual.training import contrastive_encoders as C

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_CLIP = dict(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=32, text_layers=1,
                 text_heads=2, projection_dim=16, vocab_size=320)
TINY_CLAP = dict(spec_size=64, n_mels=32, patch_size=8, patch_stride=8, window_size=4, patch_hidden=16, depths=[1, 1],
                 audio_heads=[2, 2], text_hidden=32, text_layers=1, text_heads=2, projection_dim=16, vocab_size=320,
                 hop_length=640)
EMBEDDED = os.path.join(PACK_DIR, "embedded_models")


def _tiny_encoder(kind, folder, scenes):
    from comfyui_audiovisual.encoders.pretrained import load_encoder

    captions = [C.caption_for(s, kind) for s in scenes]
    sizes = dict(C.CLIP_SIZES if kind == "clip" else C.CLAP_SIZES, **(TINY_CLIP if kind == "clip" else TINY_CLAP))
    tokenizer = C.train_caption_tokenizer(kind, captions, sizes["vocab_size"], sizes["max_text_tokens"])
    model, processor = (C.build_clip if kind == "clip" else C.build_clap)(tokenizer, sizes, seed=0)
    C.write_encoder_folder(model.eval(), tokenizer, processor, str(folder))
    return load_encoder(str(folder)), captions


def test_soft_contrastive_loss_is_clips_loss_for_distinct_captions_and_shares_duplicates():
    torch.manual_seed(0)
    logits = torch.randn(6, 6)
    distinct = torch.arange(6)
    labels = torch.arange(6)
    clip_loss = 0.5 * (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.t(), labels))
    assert torch.allclose(C.soft_contrastive_loss(logits, distinct), clip_loss, atol=1e-6)
    # rows 0 and 1 share a caption: a matrix scoring both pairs equally high is the optimum (no
    # gradient), while CLIP's loss, calling the twin a negative, would push them apart
    group = torch.tensor([0, 0, 1, 2, 3, 4])
    twins = torch.full((6, 6), -20.0)
    twins[:2, :2] = 20.0
    twins[range(2, 6), range(2, 6)] = 20.0
    for groups, expect_zero in ((group, True), (torch.arange(6), False)):
        logits = twins.clone().requires_grad_(True)
        C.soft_contrastive_loss(logits, groups).backward()
        assert (float(logits.grad.abs().max()) < 1e-6) == expect_zero


@pytest.mark.parametrize("kind", ["clip", "clap"])
def test_training_inputs_are_what_the_encoder_encodes(kind, tmp_path):
    """The training forward on the prepared inputs gives the encoder's own encode_* output."""
    scenes = S.scenes("train", 6)
    encoder, captions = _tiny_encoder(kind, tmp_path / kind, scenes)
    model = encoder.module
    with torch.no_grad():
        if kind == "clip":
            images = torch.from_numpy(np.stack([render_image(s) for s in scenes]))
            pixels = C.clip_training_inputs(encoder, images)
            trained_path = model.get_image_features(pixel_values=pixels).pooler_output
            reference = encoder.encode_images(images).vectors
        else:
            waves = torch.from_numpy(np.stack([render_audio(s) for s in scenes]))
            features = C.clap_training_inputs(encoder, waves, SAMPLE_RATE)
            trained_path = model.get_audio_features(input_features=features).pooler_output
            reference = encoder.encode_audio(waves.unsqueeze(1), SAMPLE_RATE).vectors
        ids, mask = C.text_training_inputs(encoder, captions)
        text_path = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        text_reference = encoder.encode_text(captions).vectors
    assert torch.allclose(trained_path, reference, atol=1e-5)
    assert torch.allclose(text_path, text_reference, atol=1e-5)


def test_caption_tokenizer_keeps_words_whole_and_refuses_captions_too_long():
    captions = [C.caption_for(s, "clip") for s in S.scenes("train", 200)]
    tokenizer = C.train_caption_tokenizer("clip", captions, 384, 32)
    assert tokenizer.tokenize("a large red circle on the far left") == ["a</w>", "large</w>", "red</w>", "circle</w>", "on</w>",
                                                                        "the</w>", "far</w>", "left</w>"]
    with pytest.raises(ValueError, match="needs .* tokens, more than the model's 8"):
        C.train_caption_tokenizer("clip", captions, 384, 8)


def test_a_few_contrastive_steps_lower_the_loss(tmp_path):
    scenes = S.scenes("train", 16)
    encoder, captions = _tiny_encoder("clip", tmp_path / "clip", scenes)
    images = torch.from_numpy(np.stack([render_image(s) for s in scenes]))
    pixels = C.clip_training_inputs(encoder, images)
    ids, mask = C.text_training_inputs(encoder, captions)
    group = torch.arange(16)
    model = encoder.module.requires_grad_(True)
    records = C.train_contrastive("clip", model, pixels, ids, mask, group,
                                  C.ContrastiveArgs(steps=30, batch_size=16, lr=3e-3, warmup_steps=0, log_every=5))
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]
    with pytest.raises(ValueError, match="fewer than one batch"):
        C.train_contrastive("clip", model, pixels[:4], ids[:4], mask[:4], group[:4], C.ContrastiveArgs(steps=1, batch_size=8))


# ---------------------------------------------------------------------------------------------
# the generator's sampling
# ---------------------------------------------------------------------------------------------
def _tiny_generator(codebook_size=32, rows=2, condition_dim=8, seed=0):
    from comfyui_audiovisual.networks.vatt_decoder import VATTDecoder, VATTDecoderConfig

    torch.manual_seed(seed)
    model = VATTDecoder(VATTDecoderConfig.tiny(num_codebooks=1, codebook_size=codebook_size, latent_dim=4, video_dim=condition_dim,
                                               video_family="clap", video_tokens=1))
    model.set_codebooks(torch.randn(1, codebook_size, 4))
    return model.eval()


def test_columns_for_duration():
    from comfyui_audiovisual.samplers.embedding_to_audio import columns_for_duration

    spc = 8 * 256 / 22050
    assert columns_for_duration(2.0, spc) == 22  # 2 s fits one 22-column window (2.04 s)
    assert columns_for_duration(22 * spc, spc) == 22
    assert columns_for_duration(5.0, spc) == math.ceil(5.0 / spc)
    with pytest.raises(ValueError, match="positive"):
        columns_for_duration(0.0, spc)


def test_generator_grid_shape_windows_and_seed():
    from comfyui_audiovisual.samplers.embedding_to_audio import embedding_to_audio_grid

    model = _tiny_generator()
    condition = torch.randn(2, 8)

    def run(columns, seed):
        return embedding_to_audio_grid(model, condition, rows=2, window_columns=5, columns=columns, steps=3,
                                       generator=torch.Generator().manual_seed(seed))

    one = run(None, 1)
    assert one.shape == (2, 2, 5) and one.dtype == torch.long and int(one.max()) < 32
    assert torch.equal(one, run(None, 1)) and not torch.equal(one, run(None, 2))
    calls = []
    long = embedding_to_audio_grid(model, condition, 2, 5, 12, steps=3, generator=torch.Generator().manual_seed(1),
                                   callback=lambda done, total: calls.append((done, total)))
    assert long.shape == (2, 2, 12)  # windows at columns 0, 4, 8 (each continues the last over 1 column), the last cut
    assert calls[-1] == (9, 9) and len(calls) == 9
    assert torch.equal(long[..., :5], one)  # the first window is the same draw as a single window
    independent = embedding_to_audio_grid(model, condition, 2, 5, 12, steps=3, generator=torch.Generator().manual_seed(1),
                                          overlap_columns=0)
    assert torch.equal(independent[..., :5], one) and not torch.equal(independent[..., 5:], long[..., 5:])
    with pytest.raises(ValueError, match="one vector per row"):
        embedding_to_audio_grid(model, condition.unsqueeze(1), 2, 5)


# ---------------------------------------------------------------------------------------------
# the embedded models
# ---------------------------------------------------------------------------------------------
def _embedded(*parts):
    path = os.path.join(EMBEDDED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not installed yet")
    return path


def test_embedded_clip_and_clap_retrieve_held_out_captions():
    from comfyui_audiovisual.encoders.pretrained import load_encoder

    scenes = S.scenes("heldout", 48)
    for kind in ("clip", "clap"):
        encoder = load_encoder(_embedded("encoders", f"synthav_{kind}"))
        scores = C.retrieval_scores(encoder, scenes, kind)
        # 48 candidates: chance is about 0.02
        assert scores["top5"] > 0.3, (kind, scores)
        # an untrained model of the same architecture is near chance
        torch.manual_seed(0)
        encoder.module = type(encoder.module)(encoder.module.config).eval()
        assert C.retrieval_scores(encoder, scenes, kind)["top5"] < 0.3


def test_embedded_mapper_maps_pictures_near_their_own_sounds():
    from comfyui_audiovisual.encoders.pretrained import load_encoder
    from comfyui_audiovisual.loaders.mapper import load_mapper

    clip = load_encoder(_embedded("encoders", "synthav_clip"))
    clap = load_encoder(_embedded("encoders", "synthav_clap"))
    mapper = load_mapper(_embedded("mappers", "synthav_clip_to_clap.safetensors"))
    scenes = S.scenes("heldout", 32)
    with torch.no_grad():
        images = clip.encode_images(torch.from_numpy(np.stack([render_image(s) for s in scenes]))).vectors
        sounds = clap.encode_audio(torch.from_numpy(np.stack([render_audio(s) for s in scenes])).unsqueeze(1), SAMPLE_RATE).vectors
        mapped = mapper.map(images)
    similarity = torch.nn.functional.normalize(mapped, dim=-1) @ torch.nn.functional.normalize(sounds, dim=-1).t()
    own = similarity.diag()
    others = (similarity.sum(1) - own) / (len(scenes) - 1)
    # measured: 0.75 of 128 held-out pictures land nearer their own sound than the average other
    # one, cosine 0.39 against 0.02; an untrained mapper of the same shape is at chance (~0.5, ~0)
    assert float((own > others).float().mean()) > 0.65
    assert float(own.mean()) > float(others.mean()) + 0.2
    from comfyui_audiovisual.training.mapper import new_mapper

    untrained = new_mapper("regression", mapper.source, mapper.target, images, sounds, {"hidden_dim": 256, "num_blocks": 2}, seed=1)
    fresh = torch.nn.functional.normalize(untrained.map(images), dim=-1) @ torch.nn.functional.normalize(sounds, dim=-1).t()
    assert float(fresh.diag().mean()) < float(own.mean()) - 0.2


def test_embedded_generator_reads_its_clap_condition():
    """With every token masked, the one-step prediction of held-out sounds' spectrogram tokens is far
    better from their CLAP vectors than from a zeroed condition (measured 24.9 % against 9.5 % on 256
    kept-out training scenes)."""
    from comfyui_audiovisual.audio.mel_frontend import waveform_to_mel
    from comfyui_audiovisual.encoders.pretrained import load_encoder
    from comfyui_audiovisual.loaders.vatt_checkpoints import load_vatt_decoder
    from comfyui_audiovisual.loaders.vq_checkpoints import load_vq_model
    from comfyui_audiovisual.samplers.visual_echoes import audio_grid_to_sequence
    from comfyui_audiovisual.vq.tokenizer import VQTokenizer

    generator = load_vatt_decoder(_embedded("vatt", "synthav_clap_to_spec_tokens.safetensors"))
    clap = load_encoder(_embedded("encoders", "synthav_clap"))
    spec = VQTokenizer(load_vq_model(os.path.join(EMBEDDED, "vq", "synthav_spec_vq512.safetensors"))[0].eval(), "audio")
    assert torch.equal(generator.codebook_latents[0], spec.vq.quantize.embedding.weight.detach().float())
    waves = torch.from_numpy(np.stack([render_audio(s) for s in S.scenes("heldout", 32)]))
    with torch.no_grad():
        tokens = audio_grid_to_sequence(spec.encode_mel(waveform_to_mel(waves), mode="pad")).unsqueeze(1)
        condition = clap.encode_audio(waves.unsqueeze(1), SAMPLE_RATE).vectors.unsqueeze(1)
        masked = torch.ones_like(tokens, dtype=torch.bool)
        accuracy = {}
        for drop in (False, True):
            logits = generator(tokens, masked, condition, drop_condition=torch.full((32,), drop))
            accuracy[drop] = float((logits.argmax(-1) == tokens).float().mean())
    assert accuracy[False] > accuracy[True] + 0.08, accuracy
