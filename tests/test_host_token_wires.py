"""A sampler or generator whose tokens go to a decoder that cannot take them (a tokenizer of another codebook
size, or the other modality) is refused at the very start of the generating node, before any sampling step,
naming both ends: the host's 0.3.75 validator does not see linked values, and the decoders run after it."""

import os
import re
import sys

import pytest
import torch
from diffusers import VQModel

from conftest import PACK_DIR, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDE_CODEBOOK = 64


IMAGE_TO_AUDIO = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")


def api_prompt(host, overrides):
    """The shipped image -> audio template in the API format, with its inputs overridden."""
    from comfyui_audiovisual.runner.run import to_api_prompt

    return to_api_prompt(IMAGE_TO_AUDIO, overrides, host)


@pytest.fixture(scope="module")
def wide_spec_vq(host, tiny_models, tmp_path_factory):
    """A spectrogram VQ like the tiny one but with 64 codes (the tiny transformer makes 32-code tokens)."""
    from comfyui_audiovisual.loaders.vq_checkpoints import save_vq_model
    from tiny_pack_models import MEL_FRAMES

    torch.manual_seed(5)
    vq = VQModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 5, up_block_types=("UpDecoderBlock2D",) * 5,
                 block_out_channels=(8,) * 5, layers_per_block=1, latent_channels=4, num_vq_embeddings=WIDE_CODEBOOK,
                 vq_embed_dim=4, norm_num_groups=4, sample_size=64).eval()
    folder = tmp_path_factory.mktemp("wide-vq")
    save_vq_model(vq, str(folder / "wide_spec_vq.safetensors"), {"mel_frames": MEL_FRAMES})
    host.folder_paths.add_model_folder_path("av_vq", str(folder))
    yield "wide_spec_vq.safetensors"
    host.folder_paths.folder_names_and_paths["av_vq"][0].remove(str(folder))


@pytest.fixture
def sampler_calls(monkeypatch):
    """Counts the sampling runs of every loaded copy of the pack's Visual Echoes nodes."""
    calls = []
    for name, module in list(sys.modules.items()):
        if name.endswith("nodes.masked_generation") and hasattr(module, "_run_sampler"):
            real = module._run_sampler

            def spy(*args, _real=real, **kwargs):
                calls.append(1)
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, "_run_sampler", spy)
    return calls


def test_tokens_for_a_tokenizer_of_another_codebook_are_refused_before_sampling(run_graph, host, tiny_models, wide_spec_vq, sampler_calls, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    overrides = {**tiny_overrides(tiny_models), "3.model_name": wide_spec_vq}
    prompt = api_prompt(host, overrides)
    prompt["6"]["inputs"].pop("preview")  # the live preview would decode with the same wrong tokenizer
    with pytest.raises(WorkflowError) as e:
        run_graph(prompt, out_dir=tmp_path / "out")
    message = str(e.value)
    assert message == (
        f"node 6 (AV_VisualEchoesSampler): Visual Echoes Sampler: the transformer '{tiny_models['maskgen']}' makes audio tokens "
        f"of 32 codes, but Tokens to Mel (node 7) decodes them with '{wide_spec_vq}' (Load VQ Tokenizer, node 3), a tokenizer of "
        f"{WIDE_CODEBOOK} codes; expected the tokenizer the transformer was trained with (32 codes)")
    assert "\n" not in message
    assert sampler_calls == []  # refused before any sampling step
    assert not (tmp_path / "out").exists()

    # the same graph with the transformer's own tokenizer samples and writes its files
    written = run_graph(api_prompt(host, tiny_overrides(tiny_models)), out_dir=tmp_path / "ok")
    assert len(sampler_calls) == 1 and any(p.endswith(".wav") for paths in written.values() for p in paths)


def test_tokens_sent_to_the_decoder_of_the_other_modality_are_refused_before_sampling(run_graph, host, tiny_models, sampler_calls, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    prompt = api_prompt(host, tiny_overrides(tiny_models))
    prompt["13"] = {"class_type": "AV_DecodeImageTokens", "inputs": {"tokenizer": ["2", 0], "image_tokens": ["6", 0]}}
    prompt["14"] = {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "x"}}
    with pytest.raises(WorkflowError) as e:
        run_graph(prompt, out_dir=tmp_path / "out")
    assert str(e.value) == ("node 6 (AV_VisualEchoesSampler): Visual Echoes Sampler: its audio tokens go to Tokens to Image "
                            "(node 13), which decodes image tokens; connect them to Tokens to Mel")
    assert sampler_calls == []


def test_inpainting_checks_its_decoders_too(run_graph, host, tiny_models, wide_spec_vq, sampler_calls, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    prompt = api_prompt(host, tiny_overrides(tiny_models))
    prompt["3"]["inputs"]["model_name"] = wide_spec_vq
    prompt["6"] = {"class_type": "AV_VisualEchoesInpaint",
                   "inputs": {"model": ["4", 0], "target": "image", "seed": 0, "steps": 2, "cfg": 1.0, "temperature": 1.0,
                              "schedule": "cosine", "start_s": 0.5, "end_s": 1.0, "image_tokens": ["5", 0]}}
    with pytest.raises(WorkflowError, match=r"^node 6 \(AV_VisualEchoesInpaint\): Visual Echoes Inpaint: the transformer "
                                            r"'tiny_maskgen\.safetensors' makes audio tokens of 32 codes, but Tokens to Mel \(node 7\)"):
        run_graph(prompt, out_dir=tmp_path / "out")
    assert sampler_calls == []


def test_a_preview_tokenizer_of_another_codebook_is_refused_before_sampling(run_graph, host, tiny_models, wide_spec_vq, sampler_calls, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    prompt = api_prompt(host, tiny_overrides(tiny_models))
    prompt["15"] = {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": wide_spec_vq}}
    prompt["6"]["inputs"]["preview"] = ["15", 0]  # Tokens to Mel keeps the right tokenizer
    with pytest.raises(WorkflowError) as e:
        run_graph(prompt, out_dir=tmp_path / "out")
    assert str(e.value) == ("node 6 (AV_VisualEchoesSampler): Visual Echoes Sampler: the 'preview' tokenizer has 64 codes, but the "
                            "transformer makes audio tokens of 32 codes; connect the audio tokenizer the transformer was trained with")
    assert sampler_calls == []


EMBEDDED = os.path.join(PACK_DIR, "embedded_models")
V2A_WORKFLOW = os.path.join(PACK_DIR, "workflows", "image_to_audio_v2a.json")


@pytest.mark.skipif(not os.path.exists(os.path.join(EMBEDDED, "vatt", "synthav_clap_to_spec_tokens.safetensors")),
                    reason="the embedded V2A models are not installed")
def test_the_v2a_generator_checks_the_tokenizer_its_tokens_are_decoded_with_before_generating(run_graph, host, monkeypatch, tmp_path):
    """Embedding to Audio Tokens checks its own tokenizer input against the generator already; the Tokens to Mel it
    feeds may load another one (here the 1024-code Visual Echoes tokenizer instead of the 512-code one)."""
    from comfyui_audiovisual.runner import WorkflowError
    from comfyui_audiovisual.runner.run import to_api_prompt

    calls = []
    for name, module in list(sys.modules.items()):
        if name.endswith("nodes.embedding_to_audio") and hasattr(module, "embedding_to_audio_grid"):
            real = module.embedding_to_audio_grid
            monkeypatch.setattr(module, "embedding_to_audio_grid", lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    prompt = to_api_prompt(V2A_WORKFLOW, {"25.steps": 2}, host)
    assert prompt["7"]["class_type"] == "AV_DecodeMelTokens" and prompt["7"]["inputs"]["tokenizer"] == ["3", 0]
    prompt["15"] = {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": "synthav_spec_vq.safetensors"}}
    prompt["7"]["inputs"]["tokenizer"] = ["15", 0]
    with pytest.raises(WorkflowError) as e:
        run_graph(prompt, out_dir=tmp_path / "out")
    assert re.fullmatch(r"node 25 \(AV_EmbeddingToAudioTokens\): Embedding to Audio Tokens: the generator "
                        r"'synthav_clap_to_spec_tokens\.safetensors' makes audio tokens of 512 codes, but Tokens to Mel \(node 7\) "
                        r"decodes them with 'synthav_spec_vq\.safetensors' \(Load VQ Tokenizer, node 15\), a tokenizer of \d+ codes; "
                        r"expected the tokenizer the generator was trained with \(512 codes\)", str(e.value)), str(e.value)
    assert calls == [] and not (tmp_path / "out").exists()
    prompt["7"]["inputs"]["tokenizer"] = ["3", 0]  # the generator's own tokenizer: it generates
    run_graph(prompt, out_dir=tmp_path / "ok")
    assert len(calls) == 1
