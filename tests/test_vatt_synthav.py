"""The VATT SynthAV default's building blocks: the EnCodec trainer, windowed generation of long
videos, SynthAV pairs with captions (and re-pitched captions for text control), the trainer keeping
caption-bound clips with their caption, and the video -> audio evaluation."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from comfyui_audiovisual.audio.codec_tokenizer import load_codec
from comfyui_audiovisual.networks.vatt_decoder import VATTDecoder, VATTDecoderConfig
from comfyui_audiovisual.samplers.vatt import pool_frame_features, vatt_generate, vatt_sample, window_conditions
from comfyui_audiovisual.training import codec as codec_training
from comfyui_audiovisual.training.vatt import VATTTrainingArgs, load_pairs, make_synthav_pairs, train_vatt

TINY_CODEC = dict(num_filters=2, hidden_size=8, num_lstm_layers=1, codebook_size=16)


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


# ----------------------------------------------------------------------------------------------
# the codec trainer
# ----------------------------------------------------------------------------------------------
def test_the_codec_trainer_learns_codebooks_that_the_transformers_class_then_uses(tmp_path):
    from comfyui_audiovisual.audio.codec_tokenizer import save_codec

    model = codec_training.build_codec(TINY_CODEC)
    waves = codec_training.synthav_waves(4, 16000)
    assert waves.shape == (4, 32508)  # 44800 samples at 22050 Hz -> 16 kHz
    before = model.quantizer.layers[0].codebook.embed.clone()
    rvq = codec_training.RVQTrainer(model.quantizer, dead_code_threshold=0.1)
    args = codec_training.CodecTrainingArgs(steps=4, batch_size=2, segment_s=0.2, log_every=2, warmup_steps=1)
    history = codec_training.train_codec(model, waves, args, log=lambda e: None, rvq=rvq)
    assert [h["step"] for h in history] == [2, 4]
    assert all(np.isfinite(h["loss"]) for h in history) and len(history[-1]["codes_in_use"]) == 4
    assert not torch.equal(before, model.quantizer.layers[0].codebook.embed)  # learned, in the model's own buffers
    # the codes the trainer quantizes with are the ones the transformers class encodes with
    with torch.no_grad():
        z = model.encoder(waves[:1, :3200].unsqueeze(1))
        _, _, codes = rvq(z, update=False)
        assert torch.equal(codes, model.quantizer.encode(z, 1.6))
    folder = save_codec(model.eval(), str(tmp_path / "codec"))
    codec = load_codec(folder)
    assert (codec.sample_rate_hz, codec.frame_rate_hz, codec.max_codebooks, codec.codebook_size) == (16000, 50.0, 4, 16)
    tokens = codec.encode(waves[:1].unsqueeze(1))
    assert tokens.codes.shape == (1, 4, 102) and codec.decode(tokens).shape == (1, 1, 32508)


def test_the_reconstruction_loss_is_zero_for_a_perfect_copy_and_grows_with_a_wrong_pitch():
    from comfyui_audiovisual.synthav.world import synth_note

    args = codec_training.CodecTrainingArgs()
    note = torch.from_numpy(np.pad(synth_note(0, 0, 2, 0.0, 16000), (800, 800))).float().reshape(1, 1, -1)
    other = torch.from_numpy(np.pad(synth_note(0, 1, 2, 0.0, 16000), (800, 800))).float().reshape(1, 1, -1)
    same = codec_training.reconstruction_loss(note, note, 16000, args)
    wrong = codec_training.reconstruction_loss(other, note, 16000, args)
    assert all(float(v) < 1e-6 for v in same.values())
    assert float(wrong["stft"]) > 0.5 and float(wrong["mel"]) > 0.03


def test_the_codec_cli_writes_a_loadable_folder_and_resumes(tmp_path):
    out = tmp_path / "codec"
    common = ["--synthav", "3", "--out", str(out), "--batch-size", "2", "--segment-s", "0.2", "--eval-scenes", "0",
              "--sizes", '{"num_filters": 2, "hidden_size": 8, "codebook_size": 16}']
    assert codec_training.main([*common, "--steps", "2"]) == 0
    assert load_codec(str(out)).codebook_size == 16
    assert codec_training.main([*common, "--steps", "3", "--resume"]) == 0
    import json

    record = json.loads((out / "training.json").read_text())
    assert record["step"] == 3 and "SynthAV training scenes 0..2" in record["data"]


# ----------------------------------------------------------------------------------------------
# windowed generation
# ----------------------------------------------------------------------------------------------
def tiny_decoder(clip_s=0.0, video_dim=6):
    torch.manual_seed(0)
    model = VATTDecoder(VATTDecoderConfig.tiny(codebook_size=16, latent_dim=4, video_dim=video_dim, frame_rate_hz=10.0,
                                               clip_s=clip_s, dropout=0.0)).eval()
    model.set_codebooks(torch.randn(4, 16, 4))
    return model


def test_window_conditions_cut_pool_and_pad_the_frames():
    frames = torch.arange(13, dtype=torch.float32)[:, None].expand(13, 3)  # frame k holds k
    windows = window_conditions(frames, rate_hz=5.0, clip_s=2.0, windows=2, tokens=5)
    assert windows.shape == (2, 5, 3)
    assert windows[0, :, 0].tolist() == [0.5, 2.5, 4.5, 6.5, 8.5]  # pairs of frames 0..9
    assert windows[1, :, 0].tolist() == [10.5, 12.0, 12.0, 12.0, 12.0]  # frames 10..12, then the last repeated


def test_window_starts_cover_the_length_with_the_overlap():
    from comfyui_audiovisual.samplers.vatt import default_overlap, window_starts

    assert window_starts(34, 10, 2) == [0, 8, 16, 24]  # 24 + 10 = 34
    assert window_starts(34, 10, 0) == [0, 10, 20, 30]
    assert window_starts(7, 10, 2) == [0] and window_starts(10, 10, 3) == [0]
    assert (default_overlap(10), default_overlap(50), default_overlap(1)) == (2, 12, 0)
    with pytest.raises(ValueError, match="shorter than a window"):
        window_starts(34, 10, 10)


def test_a_clip_length_decoder_continues_each_window_from_the_last():
    """Windows of the training clip's length, each after the first starting 2 codec frames (a quarter)
    before the previous one ends, with those frames given as known tokens and its own frames as the condition."""
    model = tiny_decoder(clip_s=1.0)  # 10 codec frames per window
    frames = torch.randn(17, 6)  # 3.4 s at 5 Hz
    steps_seen = []
    codes = vatt_generate(model, frames, 5.0, 34, tokens=5, steps=3, cfg=2.0, generator=torch.Generator().manual_seed(0),
                          callback=lambda step, total, *_: steps_seen.append((step, total)))
    assert codes.shape == (1, 4, 34)
    assert steps_seen == [(s, 12) for s in range(12)]  # windows at 0, 8, 16, 24 codec frames x 3 steps
    # replayed by hand with the same draws: window 1 from its own frames, window 2 from frames 0.8 s on
    # and the last 2 codec frames of window 1 kept
    rng = torch.Generator().manual_seed(0)
    conditions = window_conditions(frames, 5.0, 1.0, 4, 5, starts_s=[0.0, 0.8, 1.6, 2.4])
    first = vatt_sample(model, conditions[0:1], 10, steps=3, cfg=2.0, generator=rng)
    second = vatt_sample(model, conditions[1:2], 10, steps=3, cfg=2.0, generator=rng, prefix=first[..., 8:])
    assert torch.equal(codes[..., :10], first) and torch.equal(codes[..., 8:18], second)
    assert torch.equal(second[..., :2], first[..., 8:])  # the known tokens are kept
    assert torch.equal(conditions[1, :, 0], frames[4:9, 0])  # the 5 frames from 0.8 s (frame 4 at 5 Hz), one a token
    independent = vatt_generate(model, frames, 5.0, 34, tokens=5, steps=3, cfg=2.0, generator=torch.Generator().manual_seed(0), overlap=0)
    assert torch.equal(independent[..., :10], first) and not torch.equal(independent, codes)


def test_a_decoder_without_a_clip_length_generates_the_whole_video_at_once():
    model = tiny_decoder(clip_s=0.0)
    frames = torch.randn(17, 6)
    codes = vatt_generate(model, frames, 5.0, 34, tokens=5, steps=2, generator=torch.Generator().manual_seed(1))
    expected = vatt_sample(model, pool_frame_features(frames, 5), 34, steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(codes, expected)


# ----------------------------------------------------------------------------------------------
# SynthAV pairs with captions
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoders_and_codec(tmp_path_factory):
    from tiny_encoders import write_tiny_clap, write_tiny_clip_vision

    base = tmp_path_factory.mktemp("vatt-synthav")
    from comfyui_audiovisual.audio.codec_tokenizer import save_codec

    torch.manual_seed(0)
    model = codec_training.build_codec(TINY_CODEC)
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
    return (write_tiny_clip_vision(str(base / "clip")), write_tiny_clap(str(base / "clap")),
            save_codec(model.eval(), str(base / "codec")))


def test_synthav_pairs_carry_captions_and_repitched_clips_follow_their_caption(tmp_path, encoders_and_codec):
    from comfyui_audiovisual.audio.prepare import prepare_waveform
    from comfyui_audiovisual.encoders.pretrained import load_encoder
    from comfyui_audiovisual.synthav.split import training_scene
    from comfyui_audiovisual.synthav.world import make_video, render_audio

    clip, clap, codec_dir = encoders_and_codec
    path = make_synthav_pairs(6, clip, codec_dir, tmp_path / "pairs.safetensors", duration_s=1.0, text_encoder_dir=clap,
                              text_edit=0.5, seed=3, log=None)
    pairs = load_pairs(path)
    assert pairs["codes"].shape == (6, 4, 50) and pairs["video"].shape[:2] == (6, 10)  # 5 frames, pooled (repeated) to 10 tokens
    assert pairs["text"].shape[:2] == (6, 1) and pairs["text_required"].dtype == torch.bool
    edited = pairs["text_required"].nonzero().flatten().tolist()
    plain = (~pairs["text_required"]).nonzero().flatten().tolist()
    assert edited and plain  # both kinds at 50 %
    meta = pairs["metadata"]
    assert (meta["text_family"], meta["text_model"], meta["video_model"], float(meta["clip_s"])) == ("clap", "clap", "clip", 1.0)
    codec, text_encoder = load_codec(codec_dir), load_encoder(clap)

    def codes_of(scene, audio_scene):
        video = make_video(scene.seed, fps=16.0, duration_s=1.0, scene=scene)
        audio = render_audio(audio_scene, onsets_s=video.appear_times, n_samples=len(video.audio))
        wave = prepare_waveform(torch.from_numpy(audio).reshape(1, 1, -1), 22050, 16000).unsqueeze(1)
        return codec.encode(wave, 4).codes[0]

    def caption_vector(caption):
        return text_encoder.encode_text([caption]).vectors[0]

    for i in plain:  # the scene's own sound and caption
        scene = training_scene(i)
        assert torch.equal(pairs["codes"][i], codes_of(scene, scene))
        assert torch.allclose(pairs["text"][i, 0], caption_vector(scene.audio_caption()), atol=1e-5)
    for i in edited:  # another note for every object, in the caption and in the sound alike
        scene = training_scene(i)
        candidates = [dataclasses.replace(scene, objects=tuple(dataclasses.replace(o, colour=c) for o, c in zip(scene.objects, combo)))
                      for combo in itertools.product(range(8), repeat=len(scene.objects))
                      if all(c != o.colour for o, c in zip(scene.objects, combo))]
        match = [c for c in candidates if torch.allclose(pairs["text"][i, 0], caption_vector(c.audio_caption()), atol=1e-5)]
        assert len(match) == 1 and match[0].audio_caption() != scene.audio_caption()
        assert torch.equal(pairs["codes"][i], codes_of(scene, match[0]))


def test_clips_bound_to_their_caption_never_train_without_it():
    g = torch.Generator().manual_seed(0)
    pairs = {"codes": torch.randint(0, 8, (8, 2, 5), generator=g), "video": torch.randn(8, 3, 6, generator=g),
             "text": torch.randn(8, 1, 4, generator=g), "text_required": torch.tensor([1, 1, 1, 1, 1, 1, 0, 0], dtype=torch.bool),
             "codebook_latents": torch.randn(2, 8, 4, generator=g), "metadata": {}}
    from comfyui_audiovisual.training.vatt import config_for_pairs

    model = VATTDecoder(config_for_pairs(pairs, dim=16, encoder_depth=1, decoder_depth=1, num_heads=2, head_dim=8))
    model.set_codebooks(pairs["codebook_latents"])
    seen = []
    original = model.forward

    def spy(tokens, masked, video, text=None, drop_condition=None):
        if text is None:
            seen.extend(video[:, 0, 0].tolist())
        return original(tokens, masked, video, text, drop_condition)

    model.forward = spy
    train_vatt(model, pairs, VATTTrainingArgs(steps=30, batch_size=4, text_drop=0.5, warmup_steps=1, log_every=30), log=lambda *_: None)
    free = {round(v, 5) for v in pairs["video"][6:, 0, 0].tolist()}
    assert seen and {round(v, 5) for v in seen} <= free


# ----------------------------------------------------------------------------------------------
# the evaluation
# ----------------------------------------------------------------------------------------------
def test_video2audio_scores_the_truth_high_and_late_or_wrong_sounds_low():
    from comfyui_audiovisual.synthav.video_evaluate import evaluate_video2audio, video_cases

    def by_content(text, appear="columns", delay_s=0.0, picture=False):
        from comfyui_audiovisual.synthav.world import render_audio

        table = {}  # the frames -> the sound to answer with
        for split, n in (("heldout", 6), ("unseen", 3)):
            for c in video_cases(split, n, text=text, appear=appear):
                audio = render_audio(c.scene, onsets_s=c.appear_times, n_samples=len(c.audio)) if picture else c.audio
                table[c.frames.tobytes()] = np.roll(audio, int(delay_s * 22050))

        return lambda frames, fps, captions, seed: [table[f.tobytes()] for f in frames]

    exact = evaluate_video2audio(by_content("none"), n=6, n_unseen=3)
    assert exact["pitch_acc"] == exact["onset_acc"] == exact["unseen_pitch_acc"] == 1.0 and exact["onset_err_ms"] < 10
    late = evaluate_video2audio(by_content("none", delay_s=0.1), n=6, n_unseen=3)
    assert late["onset_acc"] == 0.0 and 90 < late["onset_err_ms"] < 110 and late["pitch_acc"] == 1.0
    shuffled = evaluate_video2audio(by_content("none", appear="shuffled"), n=6, n_unseen=3, appear="shuffled")
    assert shuffled["onset_acc"] == 1.0
    # the sound of the picture where the caption names other notes: right timing, wrong pitch
    steered = evaluate_video2audio(by_content("other_pitch", picture=True), n=6, n_unseen=3, text="other_pitch")
    assert steered["pitch_acc"] == 0.0 and steered["video_pitch_acc"] == 1.0 and steered["onset_acc"] == 1.0
    obeyed = evaluate_video2audio(by_content("other_pitch"), n=6, n_unseen=3, text="other_pitch")
    assert obeyed["pitch_acc"] == 1.0 and obeyed["video_pitch_acc"] == 0.0


def test_blank_videos_show_the_background_alone_and_keep_the_scene_to_score():
    from comfyui_audiovisual.synthav.video_evaluate import video_cases
    from comfyui_audiovisual.synthav.world import render_image

    for blank, shown in zip(video_cases("heldout", 3, appear="blank"), video_cases("heldout", 3)):
        background = render_image(blank.scene, visible=())
        assert blank.frames.shape == shown.frames.shape and np.array_equal(blank.frames[-1], background)
        assert (blank.frames == blank.frames[:1]).all() and not np.array_equal(shown.frames[-1], background)
        assert blank.appear_times == shown.appear_times and np.array_equal(blank.audio, shown.audio)


def test_other_pitch_captions_name_the_shifted_notes():
    from comfyui_audiovisual.synthav.video_evaluate import video_cases
    from comfyui_audiovisual.synthav.world import NOTE_NAMES

    for case in video_cases("heldout", 4, text="other_pitch", pitch_shift=3):
        for o, shifted in zip(case.scene.objects, case.sound_scene.objects):
            assert shifted.colour == (o.colour + 3) % 8
            assert f"at {NOTE_NAMES[shifted.colour]}," in case.caption + ","


def test_reusing_a_caption_free_pairs_file_gives_the_same_pairs(tmp_path, encoders_and_codec):
    clip, clap, codec_dir = encoders_and_codec
    options = dict(duration_s=1.0, log=None)
    base = make_synthav_pairs(4, clip, codec_dir, tmp_path / "base.safetensors", **options)
    fresh = load_pairs(make_synthav_pairs(4, clip, codec_dir, tmp_path / "fresh.safetensors", text_encoder_dir=clap, text_edit=0.5,
                                          seed=1, **options))
    reused = load_pairs(make_synthav_pairs(4, clip, codec_dir, tmp_path / "reused.safetensors", text_encoder_dir=clap, text_edit=0.5,
                                           seed=1, reuse=base, **options))
    for key in ("codes", "video", "text", "text_required", "codebook_latents"):
        assert torch.equal(fresh[key], reused[key]), key
    with pytest.raises(ValueError, match="made with other settings"):
        make_synthav_pairs(4, clip, codec_dir, tmp_path / "x.safetensors", duration_s=2.0, reuse=base, log=None)


# ----------------------------------------------------------------------------------------------
# the spectrogram codec
# ----------------------------------------------------------------------------------------------
def test_the_embedded_spectrogram_codec_keeps_synthav_notes_through_its_grid():
    import os

    from comfyui_audiovisual.synthav.evaluate import score_audio
    from comfyui_audiovisual.synthav.split import scenes
    from conftest import PACK_DIR

    codec = load_codec(os.path.join(PACK_DIR, "embedded_models", "codecs", "synthav_spec_codec"))
    assert (codec.sample_rate_hz, codec.max_codebooks, codec.codebook_size, codec.hop_samples) == (22050, 10, 128, 2048)
    chosen = scenes("heldout", 4)
    waves = codec_training.synthav_waves(4, 22050, split="heldout")
    tokens = codec.encode(waves.unsqueeze(1))
    assert tokens.codes.shape == (4, 10, 22) and codec.frames_for_samples(44800) == 22  # the VQ's 10 x 22 grid
    assert torch.equal(codec.codebook_latents()[3], codec.model.quantize.embedding.weight)  # every row reads the one table
    decoded = codec.decode(tokens)
    assert decoded.shape == (4, 1, 44800)
    scores = score_audio(chosen, decoded[:, 0].numpy())
    assert scores["pitch_acc"] == 1.0 and scores["onset_acc"] == 1.0
    with pytest.raises(ValueError, match="all of them are needed"):
        codec.encode(waves[:1].unsqueeze(1), 4)


def test_a_spectrogram_codec_folder_names_a_missing_vq_file(tmp_path):
    from comfyui_audiovisual.audio.codec_tokenizer import write_spectrogram_codec

    folder = write_spectrogram_codec(str(tmp_path / "codec"), str(tmp_path / "vq" / "missing.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"codec/config.json: 'vq_model' points at .*missing.safetensors"):
        load_codec(folder)


def test_a_grid_longer_than_the_vq_clip_decodes_window_by_window_to_its_whole_length():
    import os

    from comfyui_audiovisual.samplers.vatt import default_overlap, window_starts
    from conftest import PACK_DIR

    codec = load_codec(os.path.join(PACK_DIR, "embedded_models", "codecs", "synthav_spec_codec"))
    window, f = codec.window_columns, codec.factor
    assert (window, f) == (22, 8)  # the VQ's training clip: 176 mel frames
    generator = torch.Generator().manual_seed(3)
    one = torch.randint(0, codec.codebook_size, (1, 10, window), generator=generator)
    assert torch.equal(codec.decode_mel(one), codec.tokenizer.decode_mel(one).clamp(0, 1))  # one window: as before
    num_samples = codec.samples_for_duration(7.3)
    total = codec.frames_for_samples(num_samples)
    codes = torch.randint(0, codec.codebook_size, (1, 10, total), generator=generator)
    mel = codec.decode_mel(codes)
    assert mel.shape == (1, 80, total * f) and float(mel.min()) >= 0 and float(mel.max()) <= 1
    overlap = default_overlap(window)
    starts = window_starts(total, window, overlap)
    starts[-1] = total - window
    assert len(starts) == 5
    alone = [codec.tokenizer.decode_mel(codes[..., s:s + window]).clamp(0, 1) for s in starts]
    for w, s in enumerate(starts):  # outside the overlaps, each window is its own decode
        lo = s + (overlap if w else 0) if w < len(starts) - 1 else starts[-2] + window
        hi = starts[w + 1] if w < len(starts) - 1 else total
        assert torch.allclose(mel[..., lo * f:hi * f], alone[w][..., (lo - s) * f:(hi - s) * f], atol=1e-6), w
    s0, s1 = starts[0], starts[1]  # within an overlap, between the two windows' decodes (a crossfade)
    a, b = alone[0][..., s1 * f:(s0 + window) * f], alone[1][..., :(s0 + window - s1) * f]
    joined = mel[..., s1 * f:(s0 + window) * f]
    assert bool((joined >= torch.minimum(a, b) - 1e-6).all() and (joined <= torch.maximum(a, b) + 1e-6).all())
    assert torch.allclose(joined[..., :2], a[..., :2], atol=0.05) and torch.allclose(joined[..., -2:], b[..., -2:], atol=0.05)
    wave = codec.decode(codec.tokens_for(codes, num_samples))
    assert wave.shape == (1, 1, num_samples)


def test_tokens_to_mel_decodes_a_long_grid_in_the_tokenizers_windows(host):
    import os

    from comfyui_audiovisual.nodes.payloads import TokenGrid
    from conftest import PACK_DIR

    nodes = host.nodes.NODE_CLASS_MAPPINGS
    tokenizer = nodes["AV_LoadVQTokenizer"].execute(model_name="synthav_spec_vq.safetensors").args[0]
    assert tokenizer.native_mel_frames == 176
    grid = torch.randint(0, 128, (1, 10, 50), generator=torch.Generator().manual_seed(1))
    mel = nodes["AV_DecodeMelTokens"].execute(tokenizer=tokenizer, audio_tokens=TokenGrid(grid, "audio", 128)).args[0].mel01
    codec = load_codec(os.path.join(PACK_DIR, "embedded_models", "codecs", "synthav_spec_codec"))  # the same VQ file
    assert mel.shape == (1, 80, 400) and torch.allclose(mel, codec.decode_mel(grid), atol=1e-6)
    assert not torch.allclose(mel, tokenizer.decode_mel(grid).clamp(0, 1), atol=1e-3)  # not the whole grid at once
