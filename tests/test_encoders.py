"""The encoder loader and encode methods (plain code, no host) on tiny random CLIP / CLAP / AST / T5
folders saved in the published layouts, checked against transformers' own processors and models."""

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from comfyui_audiovisual.encoders.preprocessing import clip_pixel_values, window_starts
from comfyui_audiovisual.encoders.pretrained import load_encoder
from comfyui_audiovisual.encoders.video_frames import aggregate, sample_frame_indices, sample_frames
from comfyui_audiovisual.nodes.payloads import Embedding
from tiny_encoders import (AST_HIDDEN, CLAP_PROJECTION, CLIP_PROJECTION, CLIP_TEXT_WIDTH, T5_WIDTH, write_config_only,
                           write_not_an_encoder, write_tiny_ast, write_tiny_clap, write_tiny_clip, write_tiny_clip_text,
                           write_tiny_clip_vision, write_tiny_t5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {
        "clip": write_tiny_clip(str(root / "tiny_clip")),
        "clip_vision": write_tiny_clip_vision(str(root / "tiny_clip_vision")),
        "clip_text": write_tiny_clip_text(str(root / "tiny_clip_text")),
        "clip_text_projection": write_tiny_clip_text(str(root / "tiny_clip_text_proj"), projection=True),
        "clap": write_tiny_clap(str(root / "tiny_clap")),
        "ast": write_tiny_ast(str(root / "tiny_ast")),
        "t5": write_tiny_t5(str(root / "tiny_t5")),
    }


@pytest.fixture(scope="module")
def encoders(folders):
    return {name: load_encoder(path) for name, path in folders.items()}


def smooth_images(batch, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 5, 7, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear").permute(0, 2, 3, 1).contiguous()


def tone(seconds, rate, freq=440.0, channels=1, batch=1):
    t = torch.arange(int(seconds * rate)) / rate
    wave = 0.3 * torch.sin(2 * math.pi * freq * t) + 0.1 * torch.sin(2 * math.pi * 3.1 * freq * t)
    return wave.expand(batch, channels, -1).clone()


# ---- loading ------------------------------------------------------------------------------------
def test_each_published_kind_loads_with_its_family_modalities_and_rates(encoders):
    expected = {
        "clip": ("clip", ("image", "text"), None), "clip_vision": ("clip", ("image",), None),
        "clip_text": ("clip_text", ("text",), None), "clip_text_projection": ("clip_text", ("text",), None),
        "clap": ("clap", ("audio", "text"), 48000), "ast": ("ast", ("audio",), 16000), "t5": ("t5", ("text",), None),
    }
    for name, (family, modalities, rate) in expected.items():
        encoder = encoders[name]
        assert (encoder.family, encoder.modalities, encoder.sample_rate_hz) == (family, modalities, rate), name
        assert isinstance(encoder.module, torch.nn.Module) and not encoder.module.training
    assert encoders["clap"].window_s == 10.0
    assert encoders["ast"].window_s == pytest.approx((1023 * 160 + 400) / 16000)  # exactly 1024 fbank frames
    assert encoders["clip"].model_name == "tiny_clip"


def test_a_folder_of_another_kind_is_refused_naming_it_and_the_supported_kinds(tmp_path):
    folder = write_not_an_encoder(str(tmp_path / "a_bert"))
    with pytest.raises(ValueError) as e:
        load_encoder(folder)
    message = str(e.value)
    assert "a_bert" in message and "model_type 'bert'" in message
    for kind in ("clip", "clap", "audio-spectrogram-transformer", "t5"):
        assert kind in message


def test_missing_config_missing_weights_and_mismatched_weights_fail_clearly(tmp_path, folders):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty' has no config.json"):
        load_encoder(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no loadable ClapModel weights"):
        load_encoder(write_config_only(str(tmp_path / "config_only"), "clap"))
    # a CLAP config.json beside CLIP weights: the weights do not fit
    mixed = tmp_path / "clap_config_clip_weights"
    shutil.copytree(folders["clap"], mixed)
    shutil.copyfile(os.path.join(folders["clip"], "model.safetensors"), mixed / "model.safetensors")
    with pytest.raises(ValueError, match="clap_config_clip_weights.*do not fit ClapModel"):
        load_encoder(str(mixed))


def test_a_clip_folder_without_tokenizer_encodes_images_only_and_says_why(tmp_path):
    encoder = load_encoder(write_tiny_clip(str(tmp_path / "clip_no_tok"), with_tokenizer=False))
    assert encoder.modalities == ("image",)
    with pytest.raises(ValueError, match="'clip_no_tok' is a CLIP encoder; it encodes image, not text .no tokenizer: it has no tokenizer files"):
        encoder.encode_text(["a dog"])


def test_asking_for_a_modality_the_encoder_lacks_says_which_it_has(encoders):
    with pytest.raises(ValueError) as e:
        encoders["clip"].encode_audio(tone(1, 16000), 16000)
    assert str(e.value) == "'tiny_clip' is a CLIP encoder; it encodes image, text, not audio"
    with pytest.raises(ValueError, match="'tiny_ast' is an AST encoder; it encodes audio, not text"):
        encoders["ast"].encode_text(["rain"])
    with pytest.raises(ValueError, match="'tiny_t5' is a T5 encoder; it encodes text, not image"):
        encoders["t5"].encode_images(torch.rand(1, 8, 8, 3))


# ---- CLIP ---------------------------------------------------------------------------------------
def test_clip_preprocessing_in_torch_matches_transformers_clip_image_processor():
    from transformers import CLIPImageProcessor

    images = smooth_images(2, 45, 70)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    reference = processor(images=list(images.permute(0, 3, 1, 2)), do_rescale=False, return_tensors="pt")["pixel_values"]
    ours = clip_pixel_values(images, 32)
    assert ours.shape == (2, 3, 32, 32)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_clip_image_and_text_embeddings_equal_the_models_own_projected_features(encoders, folders):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folders["clip"]).eval()
    images = smooth_images(3, 40, 52, seed=1)
    pixels = CLIPImageProcessor.from_pretrained(folders["clip"])(images=list(images.permute(0, 3, 1, 2)), do_rescale=False,
                                                                 return_tensors="pt")["pixel_values"]
    tokenizer = CLIPTokenizer.from_pretrained(folders["clip"])
    tokens = tokenizer(["a dog barking", "rain on a roof"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        image_ref = model.get_image_features(pixel_values=pixels).pooler_output
        text_ref = model.get_text_features(**tokens).pooler_output
    image = encoders["clip"].encode_images(images)
    text = encoders["clip"].encode_text(["a dog barking", "rain on a roof"])
    assert isinstance(image, Embedding) and (image.family, image.model, image.modality) == ("clip", "tiny_clip", "image")
    assert image.vectors.shape == (3, CLIP_PROJECTION) and text.vectors.shape == (2, CLIP_PROJECTION)
    assert torch.allclose(image.vectors, image_ref, atol=1e-5)
    assert torch.allclose(text.vectors, text_ref, atol=1e-5)
    assert text.family == "clip" and text.modality == "text"
    # prompts differ -> vectors differ; the same prompt twice -> the same vector
    assert not torch.allclose(text.vectors[0], text.vectors[1])
    assert torch.allclose(encoders["clip"].encode_text(["a dog barking"]).vectors[0], text.vectors[0], atol=1e-5)


def test_clip_accepts_grey_and_rgba_images_and_refuses_nan(encoders):
    rgb = smooth_images(1, 36, 36)
    grey = rgb.mean(dim=-1, keepdim=True)
    rgba = torch.cat([rgb, torch.ones(1, 36, 36, 1)], dim=-1)
    assert torch.allclose(encoders["clip"].encode_images(rgba).vectors, encoders["clip"].encode_images(rgb).vectors)
    assert torch.allclose(encoders["clip"].encode_images(grey).vectors,
                          encoders["clip"].encode_images(grey.expand(-1, -1, -1, 3)).vectors)
    bad = rgb.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encoders["clip"].encode_images(bad)
    with pytest.raises(ValueError, match="empty"):
        encoders["clip"].encode_images(torch.zeros(0, 8, 8, 3))


def test_clip_vision_folder_gives_image_embeds(encoders, folders):
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(folders["clip_vision"]).eval()
    images = smooth_images(2, 32, 32)
    with torch.no_grad():
        reference = model(pixel_values=clip_pixel_values(images, 32)).image_embeds
    out = encoders["clip_vision"].encode_images(images)
    assert out.vectors.shape == (2, CLIP_PROJECTION) and torch.allclose(out.vectors, reference, atol=1e-5)


def test_clip_text_model_gives_the_pooled_output_and_the_projection_variant_text_embeds(encoders, folders):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokens = CLIPTokenizer.from_pretrained(folders["clip_text"])(["a violin"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        pooled = CLIPTextModel.from_pretrained(folders["clip_text"]).eval()(**tokens).pooler_output
        projected = CLIPTextModelWithProjection.from_pretrained(folders["clip_text_projection"]).eval()(**tokens).text_embeds
    plain = encoders["clip_text"].encode_text(["a violin"])
    proj = encoders["clip_text_projection"].encode_text(["a violin"])
    assert plain.family == "clip_text" and plain.vectors.shape == (1, CLIP_TEXT_WIDTH)
    assert torch.allclose(plain.vectors, pooled, atol=1e-5)
    assert proj.vectors.shape == (1, CLIP_PROJECTION) and torch.allclose(proj.vectors, projected, atol=1e-5)


# ---- T5 ------------------------------------------------------------------------------------------
def test_t5_gives_the_token_sequence_and_pads_to_the_asked_length(encoders, folders):
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(folders["t5"])
    ids = tokenizer(["a dog barking in the rain"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = T5EncoderModel.from_pretrained(folders["t5"]).eval()(input_ids=ids).last_hidden_state
    out = encoders["t5"].encode_text(["a dog barking in the rain"])
    assert out.family == "t5" and out.is_sequence and out.vectors.shape == (1, ids.shape[1], T5_WIDTH)
    assert ids[0, -1] == tokenizer.eos_token_id
    assert torch.allclose(out.vectors, reference, atol=1e-5)
    padded = encoders["t5"].encode_text(["a dog barking in the rain"], sequence_length=20)
    assert padded.vectors.shape == (1, 20, T5_WIDTH)
    cut = encoders["t5"].encode_text(["a dog barking in the rain"], sequence_length=3)
    assert cut.vectors.shape == (1, 3, T5_WIDTH)


# ---- audio ---------------------------------------------------------------------------------------
def test_window_starts_cover_the_clip_with_full_windows_the_last_aligned_to_the_end():
    assert window_starts(100, 100) == [0]
    assert window_starts(30, 100) == [0]
    assert window_starts(250, 100) == [0, 100, 150]
    assert window_starts(201, 100) == [0, 100, 101]


def test_clap_audio_is_resampled_downmixed_projected_and_normalised(encoders, folders):
    from transformers import ClapFeatureExtractor, ClapModel

    clap = encoders["clap"]
    clip_16k = tone(3, 16000, channels=2)
    out = clap.encode_audio(clip_16k, 16000)
    assert (out.family, out.model, out.modality) == ("clap", "tiny_clap", "audio")
    assert out.vectors.shape == (1, CLAP_PROJECTION)
    assert torch.allclose(out.vectors.norm(dim=-1), torch.ones(1), atol=1e-5)
    # the reference: resample with torchaudio, then the published feature extractor and ClapModel
    import torchaudio.functional as AF

    wave_48k = AF.resample(clip_16k.mean(dim=1), 16000, 48000)[0].numpy()
    extractor = ClapFeatureExtractor.from_pretrained(folders["clap"])
    features = extractor([wave_48k], sampling_rate=48000, return_tensors="pt")
    with torch.no_grad():
        reference = ClapModel.from_pretrained(folders["clap"]).eval().get_audio_features(**features).pooler_output
    assert torch.allclose(out.vectors, reference, atol=1e-5)
    # another sound, another vector
    other = clap.encode_audio(tone(3, 16000, freq=1500.0) * torch.linspace(0, 1, 48000), 16000)
    assert not torch.allclose(out.vectors, other.vectors, atol=1e-3)


def test_clap_long_audio_is_windowed_mean_first_or_all(encoders):
    clap = encoders["clap"]
    rate = 48000
    g = torch.Generator().manual_seed(3)
    long_clip = torch.randn(1, 1, 25 * rate, generator=g) * torch.linspace(0.05, 0.5, 25 * rate)
    windows = [long_clip[..., s:s + 10 * rate] for s in (0, 10 * rate, 15 * rate)]  # last aligned to the end
    each = torch.cat([clap.encode_audio(w, rate).vectors for w in windows])
    first = clap.encode_audio(long_clip, rate, long_audio="first")
    mean = clap.encode_audio(long_clip, rate)
    everything = clap.encode_audio(long_clip, rate, long_audio="all")
    assert torch.allclose(first.vectors[0], each[0], atol=1e-5)
    assert torch.allclose(mean.vectors[0], torch.nn.functional.normalize(each.mean(dim=0), dim=-1), atol=1e-5)
    assert everything.vectors.shape == (1, 3, CLAP_PROJECTION) and torch.allclose(everything.vectors[0], each, atol=1e-5)


def test_clap_text_is_in_the_clap_space(encoders):
    text = encoders["clap"].encode_text(["a dog barking", "waves on the beach"])
    assert text.family == "clap" and text.vectors.shape == (2, CLAP_PROJECTION)
    assert torch.allclose(text.vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(text.vectors[0], text.vectors[1])


def test_ast_gives_the_published_token_count_and_normalisation(encoders, folders):
    from transformers import ASTFeatureExtractor, ASTModel

    ast = encoders["ast"]
    extractor = ASTFeatureExtractor.from_pretrained(folders["ast"])
    assert (extractor.sampling_rate, extractor.num_mel_bins, extractor.max_length) == (16000, 128, 1024)
    assert (extractor.mean, extractor.std) == (-4.2677393, 4.5689974)
    clip_44k = tone(4, 44100, channels=2, batch=2)
    clip_44k[1] *= 0.25
    out = ast.encode_audio(clip_44k, 44100)
    assert (out.family, out.modality) == ("ast", "audio") and out.vectors.shape == (2, 1214, AST_HIDDEN)
    import torchaudio.functional as AF

    mono_16k = AF.resample(clip_44k.mean(dim=1), 44100, 16000)
    features = extractor(list(mono_16k.numpy()), sampling_rate=16000, return_tensors="pt")["input_values"]
    assert features.shape == (2, 1024, 128)
    with torch.no_grad():
        reference = ASTModel.from_pretrained(folders["ast"]).eval()(input_values=features).last_hidden_state
    assert torch.allclose(out.vectors, reference, atol=1e-4)
    assert not torch.allclose(out.vectors[0], out.vectors[1], atol=1e-3)  # louder and quieter differ


def test_one_ast_window_is_exactly_1024_frames_and_long_audio_averages_windows(encoders):
    import torchaudio

    ast = encoders["ast"]
    window = int(round(ast.window_s * 16000))
    frames = torchaudio.compliance.kaldi.fbank(torch.randn(1, window), num_mel_bins=128, sample_frequency=16000,
                                               window_type="hanning", dither=0.0)
    assert frames.shape[0] == 1024
    g = torch.Generator().manual_seed(4)
    long_clip = torch.randn(1, 1, 2 * window + 1000, generator=g) * 0.2
    starts = [0, window, window + 1000]
    each = torch.cat([ast.encode_audio(long_clip[..., s:s + window], 16000).vectors for s in starts])
    mean = ast.encode_audio(long_clip, 16000)
    assert mean.vectors.shape == (1, 1214, AST_HIDDEN)
    assert torch.allclose(mean.vectors[0], each.mean(dim=0), atol=1e-5)
    joined = ast.encode_audio(long_clip, 16000, long_audio="all")
    assert joined.vectors.shape == (1, 3 * 1214, AST_HIDDEN)
    assert torch.allclose(ast.encode_audio(long_clip, 16000, long_audio="first").vectors[0], each[0], atol=1e-5)


@pytest.mark.parametrize("name", ["clap", "ast"])
def test_empty_silent_or_nan_audio_is_refused(encoders, name):
    encoder = encoders[name]
    with pytest.raises(ValueError, match="empty"):
        encoder.encode_audio(torch.zeros(1, 1, 0), 16000)
    with pytest.raises(ValueError, match="silent"):
        encoder.encode_audio(torch.zeros(1, 2, 16000), 16000)
    with pytest.raises(ValueError, match=r"clip\(s\) \[1\] of the batch are silent"):
        encoder.encode_audio(torch.cat([tone(1, 16000), torch.zeros(1, 1, 16000)]), 16000)
    bad = tone(1, 16000)
    bad[0, 0, 10] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encoder.encode_audio(bad, 16000)
    with pytest.raises(ValueError, match="long_audio"):
        encoder.encode_audio(tone(1, 16000), 16000, long_audio="middle")


# ---- spaces ---------------------------------------------------------------------------------------
def test_a_clip_embedding_where_a_clap_one_is_expected_fails_naming_both(encoders):
    image = encoders["clip"].encode_images(smooth_images(1, 32, 32))
    with pytest.raises(ValueError) as e:
        image.expect("Map Embedding", "clap", dim=512)
    assert "Map Embedding: expected a CLAP embedding" in str(e.value) and "CLIP image embedding" in str(e.value)
    audio = encoders["clap"].encode_audio(tone(1, 48000), 48000)
    assert audio.expect("Map Embedding", "clap", dim=CLAP_PROJECTION, model="tiny_clap", sequence=False) is audio


# ---- video frames ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fps", [16, 30, 29.97, 25])
def test_frame_sampling_at_5_hz_takes_the_frames_shown_at_each_fifth_of_a_second(fps):
    num_frames = int(2 * fps)  # 2 s (1.969 s at 29.97 fps: still 10 instants)
    indices, times = sample_frame_indices(num_frames, fps, 5.0)
    assert torch.allclose(times, torch.arange(10, dtype=torch.float64) / 5)
    # the frame shown at t is the one that started at or before t and ends after it
    assert torch.all(indices.double() / fps <= times + 1e-9) and torch.all((indices.double() + 1) / fps > times)
    frames = torch.arange(num_frames, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 2, 2, 3)
    sampled, sampled_times = sample_frames(frames, fps, 5.0)
    assert sampled.shape == (10, 2, 2, 3) and torch.equal(sampled[:, 0, 0, 0].long(), indices)


def test_frame_sampling_known_indices_and_edge_cases():
    assert sample_frame_indices(32, 16, 5)[0].tolist() == [0, 3, 6, 9, 12, 16, 19, 22, 25, 28]
    assert sample_frame_indices(60, 30, 5)[0].tolist() == [0, 6, 12, 18, 24, 30, 36, 42, 48, 54]
    assert sample_frame_indices(4, 2, 4)[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # rate above fps repeats frames
    assert sample_frame_indices(1, 24, 5)[0].tolist() == [0]  # one frame still gives one sample
    assert sample_frame_indices(11, 10, 5)[0].tolist() == [0, 2, 4, 6, 8, 10]  # 1.1 s -> instants 0..1.0
    with pytest.raises(ValueError, match="no frames"):
        sample_frame_indices(0, 24, 5)
    with pytest.raises(ValueError, match="no frames"):
        sample_frames(torch.zeros(0, 4, 4, 3), 24, 5)
    with pytest.raises(ValueError, match="fps"):
        sample_frame_indices(10, 0, 5)
    with pytest.raises(ValueError, match="sampling rate"):
        sample_frame_indices(10, 24, -1)


def test_aggregation_mean_middle_per_frame():
    vectors = torch.arange(12, dtype=torch.float32).view(4, 3)
    assert torch.equal(aggregate(vectors, "mean"), vectors.mean(dim=0, keepdim=True))
    assert torch.equal(aggregate(vectors, "middle"), vectors[2:3])
    assert torch.equal(aggregate(vectors, "per-frame"), vectors[None])
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(vectors, "max")


def test_long_encodes_report_progress_per_batch(encoders):
    calls = []
    out = encoders["clip"].encode_images(smooth_images(40, 32, 32), progress=lambda done, total: calls.append((done, total)))
    assert out.vectors.shape == (40, CLIP_PROJECTION) and calls == [(32, 40), (40, 40)]
    calls.clear()
    encoders["ast"].encode_audio(torch.randn(1, 1, 16000 * 95) * 0.1, 16000, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(8, 10), (10, 10)]  # 95 s -> 10 windows of 10.255 s, 8 per pass


def test_a_legacy_pytorch_model_bin_folder_loads_the_same_weights(tmp_path, encoders, folders):
    folder = tmp_path / "tiny_ast_bin"
    shutil.copytree(folders["ast"], folder)
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    os.remove(folder / "model.safetensors")
    clip = tone(2, 16000)
    legacy = load_encoder(str(folder)).encode_audio(clip, 16000)
    assert torch.allclose(legacy.vectors, encoders["ast"].encode_audio(clip, 16000).vectors, atol=1e-6)
