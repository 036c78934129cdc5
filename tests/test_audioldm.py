"""AudioLDM loader and generation bridge on a tiny random pipeline saved in the published diffusers layout."""

import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from comfyui_audiovisual.loaders.audioldm import load_audioldm
from comfyui_audiovisual.samplers.audioldm_bridge import audioldm_generate
from tiny_audioldm import TINY_CLAP_DIM, TINY_HOP, TINY_SAMPLE_RATE, write_tiny_audioldm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_audioldm(str(tmp_path_factory.mktemp("audioldm") / "tiny-audioldm"))


@pytest.fixture(scope="module")
def model(folder):
    return load_audioldm(folder)


def unit(rows, seed):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, TINY_CLAP_DIM, generator=generator), dim=-1)


def generate(model, embedding, negative=None, **kw):
    settings = {"steps": 3, "guidance": 2.5, "duration_s": 1.0, "seed": 0, **kw}
    return audioldm_generate(model, embedding, negative, **settings)


def test_published_layout_loads_with_its_properties(folder, model):
    assert sorted(os.listdir(folder)) == ["model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae", "vocoder"]
    assert not any(name.endswith((".bin", ".pt", ".ckpt")) for _, _, files in os.walk(folder) for name in files)
    assert (model.clap_dim, model.sample_rate_hz, model.hop_samples, model.has_text_encoder) == (TINY_CLAP_DIM, TINY_SAMPLE_RATE, TINY_HOP, True)
    assert type(model.scheduler).__name__ == "DDIMScheduler"


def test_output_shape_rate_and_exact_durations(model):
    for duration_s, samples in ((1.0, 16000), (2.5, 40000), (1.003, 16048), (0.05, 800)):
        waveform, rate = generate(model, unit(2, 0), duration_s=duration_s)
        assert rate == TINY_SAMPLE_RATE
        assert waveform.shape == (2, 1, samples) and waveform.dtype == torch.float32
        assert torch.isfinite(waveform).all() and waveform.abs().max() > 1e-3


def test_same_seed_same_audio_other_seed_other_audio(model):
    first, _ = generate(model, unit(1, 1), seed=7)
    again, _ = generate(model, unit(1, 1), seed=7)
    other, _ = generate(model, unit(1, 1), seed=8)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3


def test_guidance_on_and_off_both_run_and_differ(model):
    plain, _ = generate(model, unit(1, 2), guidance=1.0)
    guided, _ = generate(model, unit(1, 2), guidance=4.0)
    assert torch.isfinite(plain).all() and torch.isfinite(guided).all()
    assert (plain - guided).abs().max() > 1e-3
    # without guidance the negative plays no part (one UNet pass per step, as the pipeline)
    assert torch.equal(plain, generate(model, unit(1, 2), unit(1, 3), guidance=1.0)[0])


def test_negative_embedding_changes_the_output_and_defaults_to_the_empty_text(model):
    default, _ = generate(model, unit(1, 4))
    negative, _ = generate(model, unit(1, 4), unit(1, 5))
    assert (default - negative).abs().max() > 1e-3
    empty_text = model.encode_text([""])
    assert torch.allclose(default, generate(model, unit(1, 4), empty_text)[0], atol=1e-6)
    # one negative row serves a batch
    batch, _ = generate(model, unit(2, 6), unit(1, 5))
    assert torch.allclose(batch, generate(model, unit(2, 6), unit(1, 5).expand(2, -1))[0], atol=1e-6)


def test_the_embedding_conditions_the_sound(model):
    assert (generate(model, unit(1, 1))[0] - generate(model, unit(1, 3))[0]).abs().max() > 1e-3


def test_embeddings_are_l2_normalised(model):
    scaled, _ = generate(model, unit(1, 9) * 3.0, unit(1, 10) * 0.2)
    assert torch.allclose(scaled, generate(model, unit(1, 9), unit(1, 10))[0], atol=1e-6)


def test_matches_diffusers_audioldm_pipeline(model):
    try:
        from diffusers import AudioLDMPipeline
    except ImportError:
        pytest.skip("this diffusers no longer ships AudioLDMPipeline")
    pipe = AudioLDMPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
                            scheduler=model.scheduler, vocoder=model.vocoder)
    pipe.set_progress_bar_config(disable=True)
    embedding, negative = unit(2, 11), unit(2, 12)
    ours, _ = generate(model, embedding, negative, steps=4, guidance=3.0, seed=21)
    theirs = pipe(prompt_embeds=embedding, negative_prompt_embeds=negative, num_inference_steps=4, guidance_scale=3.0,
                  audio_length_in_s=1.0, generator=torch.Generator().manual_seed(21), output_type="pt").audios
    assert theirs.shape == (2, 16000)
    assert (ours[:, 0] - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    # its own text path: the same CLAP text embedding as the pipeline's prompt encoding
    encoded = pipe._encode_prompt("a dog barks", torch.device("cpu"), 1, False)
    assert torch.allclose(model.encode_text(["a dog barks"]), encoded, atol=1e-6)
    assert torch.allclose(model.encode_text(["a dog barks"]).norm(dim=-1), torch.ones(1))


def test_callback_reports_every_step_and_can_interrupt(model):
    calls = []
    generate(model, unit(1, 0), steps=5, callback=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]

    class Stop(Exception):
        pass

    def stop(done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        generate(model, unit(1, 0), steps=5, callback=stop)


def test_bad_embeddings_are_refused(model):
    nan = unit(1, 0)
    nan[0, 3] = float("nan")
    with pytest.raises(ValueError, match="embedding: holds NaN"):
        generate(model, nan)
    with pytest.raises(ValueError, match="negative embedding: holds NaN"):
        generate(model, unit(1, 0), nan)
    with pytest.raises(ValueError, match=f"768-d, the AudioLDM UNet takes {TINY_CLAP_DIM}-d"):
        generate(model, torch.randn(1, 768))
    with pytest.raises(ValueError, match=r"expected CLAP vectors \[batch, 16\]"):
        generate(model, torch.randn(1, 4, TINY_CLAP_DIM))
    with pytest.raises(ValueError, match="has 3 rows, expected 1 or 2"):
        generate(model, unit(2, 0), unit(3, 1))
    with pytest.raises(ValueError, match="duration_s"):
        generate(model, unit(1, 0), duration_s=0.0)


def test_folder_without_text_encoder_generates_with_zero_unconditional(tmp_path):
    folder = write_tiny_audioldm(str(tmp_path / "no-text"), with_text_encoder=False)
    model = load_audioldm(folder)
    assert not model.has_text_encoder and model.clap_dim == TINY_CLAP_DIM
    assert torch.equal(model.unconditional_embedding(), torch.zeros(1, TINY_CLAP_DIM))
    waveform, rate = generate(model, unit(1, 0), duration_s=0.5)
    assert waveform.shape == (1, 1, 8000) and rate == TINY_SAMPLE_RATE
    with pytest.raises(ValueError, match="no text_encoder/ and tokenizer/"):
        model.encode_text(["a dog"])


def test_a_component_stored_as_pickle_loads_through_the_safe_reader(folder, model, tmp_path):
    from safetensors.torch import load_file

    copy = shutil.copytree(folder, tmp_path / "pickled")
    vocoder = copy / "vocoder"
    torch.save(load_file(str(vocoder / "model.safetensors")), vocoder / "pytorch_model.bin")
    os.remove(vocoder / "model.safetensors")
    unet = copy / "unet"
    torch.save(load_file(str(unet / "diffusion_pytorch_model.safetensors")), unet / "diffusion_pytorch_model.bin")
    os.remove(unet / "diffusion_pytorch_model.safetensors")
    reloaded = load_audioldm(str(copy))
    assert torch.equal(generate(reloaded, unit(1, 0))[0], generate(model, unit(1, 0))[0])
    # a pickle that would build other objects than tensors is refused, never unpickled
    torch.save({"weights": load_file(str(folder + "/vocoder/model.safetensors")), "hook": ValueError("x")}, vocoder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin: not a plain weights checkpoint"):
        load_audioldm(str(copy))


def test_other_folders_are_refused_by_name(folder, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    clip = tmp_path / "clip-vit-tiny"
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1,
                                                   image_size=32, patch_size=16, projection_dim=8)).save_pretrained(clip)
    with pytest.raises(ValueError, match="clip-vit-tiny: not a diffusers AudioLDM folder: model_index.json is missing "
                                         r"\(it holds a transformers 'clip_vision_model' model"):
        load_audioldm(str(clip))

    sd = tmp_path / "stable-diffusion"
    sd.mkdir()
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ValueError, match="stable-diffusion/model_index.json: _class_name is 'StableDiffusionPipeline', expected 'AudioLDMPipeline'"):
        load_audioldm(str(sd))
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDM2Pipeline"}))
    with pytest.raises(ValueError, match="AudioLDM 2 .* not supported"):
        load_audioldm(str(sd))

    with pytest.raises(FileNotFoundError, match="no such AudioLDM folder"):
        load_audioldm(str(tmp_path / "absent"))

    broken = shutil.copytree(folder, tmp_path / "no-vocoder")
    shutil.rmtree(broken / "vocoder")
    with pytest.raises(FileNotFoundError, match=r"no-vocoder: missing vocoder/config.json \(the SpeechT5HifiGan"):
        load_audioldm(str(broken))

    weightless = shutil.copytree(folder, tmp_path / "no-unet-weights")
    os.remove(weightless / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(FileNotFoundError, match="no-unet-weights/unet: no weights: expected diffusion_pytorch_model.safetensors"):
        load_audioldm(str(weightless))

    no_tokenizer = shutil.copytree(folder, tmp_path / "no-tokenizer")
    shutil.rmtree(no_tokenizer / "tokenizer")
    with pytest.raises(FileNotFoundError, match=r"needs both text_encoder/ and tokenizer/; missing tokenizer/"):
        load_audioldm(str(no_tokenizer))

    plain_unet = shutil.copytree(folder, tmp_path / "plain-unet")
    config = json.loads((plain_unet / "unet" / "config.json").read_text())
    config["class_embed_type"] = None
    (plain_unet / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="plain-unet/unet/config.json: class_embed_type is None, expected 'simple_projection'"):
        load_audioldm(str(plain_unet))
