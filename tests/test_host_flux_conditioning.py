"""The host's own FLUX sampler consumes the audio adapter's CONDITIONING.

The test builds the smallest FLUX the host accepts (tests/tiny_flux.py: one double block, no single
block, the published 4096 + 768 text widths; 404M parameters, 0.8 GB in bfloat16) and loads it
through the host's own UNETLoader (models/diffusion_models) in fp8_e4m3fn, as many FLUX users do,
which halves the test's peak memory to about 2.5 GB.

A graph LoadAudio -> Load Encoder (tiny AST) -> Encode Audio -> Load Audio Adapter -> Audio to
Conditioning -> the host's KSampler (UNETLoader's model) -> SaveLatent runs in the host's executor.
A spy on the FLUX model's forward records what the sampler fed it: the T5 tokens that went into
`txt_in`, the pooled vector into `vector_in` and the guidance into `guidance_in` are exactly the
adapter's, and other audio or guidance gives another latent.
"""

import os

import pytest
import torch
from tiny_flux import release_models, tiny_flux_state_dict

FLUX_FILE = "tiny_flux_for_tests.safetensors"
ADAPTER_FILE = "tiny_flux_adapter.safetensors"


@pytest.fixture(scope="module")
def flux_setup(host, tmp_path_factory):
    import sys

    from safetensors.torch import save_file

    sys.path.insert(0, os.path.dirname(__file__))
    from tiny_encoders import AST_HIDDEN, write_tiny_ast

    from comfyui_audiovisual.loaders.audio_adapter import save_audio_adapter
    from comfyui_audiovisual.networks.audio_adapter import AudioAdapter, AudioAdapterConfig

    root = tmp_path_factory.mktemp("flux")
    for sub in ("diffusion_models", "audio_encoders", "adapters"):
        (root / sub).mkdir()
    save_file(tiny_flux_state_dict(), str(root / "diffusion_models" / FLUX_FILE))
    write_tiny_ast(str(root / "audio_encoders" / "tiny_ast"))
    torch.manual_seed(0)
    adapter = AudioAdapter(AudioAdapterConfig.for_target("flux", audio_dim=AST_HIDDEN, hidden_dim=16, num_heads=2, audio_encoder="tiny_ast"))
    save_audio_adapter(adapter, root / "adapters" / ADAPTER_FILE)
    host.folder_paths.add_model_folder_path("diffusion_models", str(root / "diffusion_models"))
    host.folder_paths.add_model_folder_path("audio_encoders", str(root / "audio_encoders"))
    host.folder_paths.add_model_folder_path("av_adapters", str(root / "adapters"))
    yield root
    release_models()
    os.remove(root / "diffusion_models" / FLUX_FILE)  # 0.8 GB


@pytest.fixture
def flux_spy(host, monkeypatch):
    """Records (txt, y, guidance, img) of every FLUX forward pass the host's sampler makes."""
    import comfy.ldm.flux.model as flux_model

    calls = []
    original = flux_model.Flux.forward_orig

    def spy(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None, *args, **kwargs):
        calls.append({"txt": txt.detach().clone(), "y": y.detach().clone(),
                      "guidance": None if guidance is None else guidance.detach().clone(), "img": tuple(img.shape)})
        return original(self, img, img_ids, txt, txt_ids, timesteps, y, guidance, *args, **kwargs)

    monkeypatch.setattr(flux_model.Flux, "forward_orig", spy)
    return calls


def graph(guidance=3.5, gain_db=None):
    prompt = {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "audiovisual_example_scene.wav"}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "audio_encoders/tiny_ast"}},
        "3": {"class_type": "AV_EncodeAudio", "inputs": {"encoder": ["2", 0], "audio": ["1", 0], "long_audio": "mean"}},
        "4": {"class_type": "AV_LoadAudioAdapter", "inputs": {"adapter_name": ADAPTER_FILE}},
        "5": {"class_type": "AV_AudioToConditioning", "inputs": {"adapter": ["4", 0], "audio_embedding": ["3", 0], "target": "FLUX",
                                                                  "guidance": guidance, "combine": "concat", "weight": 0.5}},
        "6": {"class_type": "UNETLoader", "inputs": {"unet_name": FLUX_FILE, "weight_dtype": "fp8_e4m3fn"}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["6", 0], "seed": 0, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "positive": ["5", 0], "negative": ["5", 0],
                                                   "latent_image": ["7", 0], "denoise": 1.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "audiovisual/flux_latent"}},
    }
    if gain_db is not None:
        prompt["10"] = {"class_type": "AV_AudioTransform", "inputs": {"audio": ["1", 0], "gain_db": gain_db, "semitones": 0.0, "caption_b": ""}}
        prompt["3"]["inputs"]["audio"] = ["10", 0]
    return prompt


def read_latent(path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(path)["latent_tensor"]


def expected_conditioning(host, guidance=3.5):
    """The same nodes run in this process, outside the executor: what Audio to Conditioning makes."""
    mappings = host.nodes.NODE_CLASS_MAPPINGS
    audio = mappings["LoadAudio"]().load("audiovisual_example_scene.wav")[0]
    encoder = mappings["AV_LoadEncoder"].execute("audio_encoders/tiny_ast").result[0]
    embedding = mappings["AV_EncodeAudio"].execute(encoder, audio, "mean").result[0]
    adapter = mappings["AV_LoadAudioAdapter"].execute(ADAPTER_FILE).result[0]
    return embedding, mappings["AV_AudioToConditioning"].execute(adapter, embedding, "FLUX", guidance).result[0]


def test_the_hosts_ksampler_reads_the_adapters_tokens_pooled_vector_and_guidance(run_graph, host, flux_setup, flux_spy, tmp_path):
    written = run_graph(graph(guidance=3.5), out_dir=tmp_path / "a")
    latent = read_latent(written["9"][0])
    assert latent.shape == (1, 16, 4, 4) and torch.isfinite(latent).all() and latent.abs().sum() > 0
    assert len(flux_spy) == 2  # 2 euler steps, cfg 1: one conditional pass each
    embedding, conditioning = expected_conditioning(host)
    assert embedding.vectors.shape == (1, 1214, 32)
    tokens, extras = conditioning[0]
    assert tokens.shape == (1, 256, 4096) and extras["pooled_output"].shape == (1, 768)
    for call in flux_spy:
        assert call["img"] == (1, 4, 64)  # 4x4 latent -> 2x2 patches of 16 x 2 x 2 channels
        assert torch.equal(call["txt"], tokens)  # the T5 tokens into txt_in
        assert torch.equal(call["y"], extras["pooled_output"])  # the CLIP pooled vector into vector_in
        assert torch.equal(call["guidance"], torch.tensor([3.5]))  # into guidance_in

    flux_spy.clear()
    release_models()
    other = run_graph(graph(guidance=1.5, gain_db=-12.0), out_dir=tmp_path / "b")
    assert all(torch.equal(call["guidance"], torch.tensor([1.5])) for call in flux_spy)
    assert not torch.allclose(flux_spy[0]["txt"], tokens) and not torch.allclose(flux_spy[0]["y"], extras["pooled_output"])
    assert not torch.allclose(read_latent(other["9"][0]), latent)


def test_a_conditioning_the_flux_model_cannot_read_stops_at_our_node(run_graph, host, flux_setup, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    prompt = graph()
    prompt["5"]["inputs"]["target"] = "SDXL"
    with pytest.raises(WorkflowError, match="node 5 \\(AV_AudioToConditioning\\): Audio to Conditioning: target SDXL reads 2048-wide tokens"):
        run_graph(prompt, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
