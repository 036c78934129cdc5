"""The embedded SeeingSounds default (embedded_models/encoders/synthav_{ast,t5,clip_text} and
adapters/synthav_audio_adapter.safetensors) and the FLUX workflow (workflows/audio_to_image_flux.json).

* Plain code: the embedded encoders and adapter load; on SynthAV held-out scenes the adapter's MSE
  against the frozen text encoders' outputs for each scene's caption is well below what an adapter
  that ignores the sound scores (always answering the training captions' mean target).
* Through the host: the shipped FLUX workflow runs unchanged but for --set style overrides that point
  it at the embedded AST and adapter, a tiny FLUX built for the embedded text widths and a tiny
  FLUX-layout VAE (tests/tiny_flux.py): a picture comes out, and another sound gives another picture.
  As shipped (the user's FLUX files absent) it stops at validation, naming a FLUX file loader.
"""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_flux import release_models, tiny_flux_state_dict, tiny_flux_vae_state_dict

from conftest import PACK_DIR

EMBEDDED = os.path.join(PACK_DIR, "embedded_models")
ENCODERS = {name: os.path.join(EMBEDDED, "encoders", f"synthav_{name}") for name in ("ast", "t5", "clip_text")}
ADAPTER = os.path.join(EMBEDDED, "adapters", "synthav_audio_adapter.safetensors")
WORKFLOW = os.path.join(PACK_DIR, "workflows", "audio_to_image_flux.json")
FLUX_FILE = "tiny_flux_synthav_widths.safetensors"
VAE_FILE = "tiny_flux_vae.safetensors"


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def embedded():
    from comfyui_audiovisual.encoders.pretrained import load_encoder
    from comfyui_audiovisual.loaders.audio_adapter import load_audio_adapter

    return {name: load_encoder(path) for name, path in ENCODERS.items()}, load_audio_adapter(ADAPTER)


def test_the_embedded_default_is_small_and_documented(embedded):
    encoders, adapter = embedded
    assert (encoders["ast"].family, encoders["t5"].family, encoders["clip_text"].family) == ("ast", "t5", "clip_text")
    config = adapter.config
    assert config.target == "custom" and config.pooling == "attention"
    assert (config.audio_encoder, config.text_encoder, config.pooled_encoder) == ("synthav_ast", "synthav_t5", "synthav_clip_text")
    assert config.audio_dim == encoders["ast"].module.config.hidden_size
    assert config.text_dim == encoders["t5"].module.config.d_model and config.pooled_dim == encoders["clip_text"].module.config.hidden_size
    files = [os.path.join(root, f) for path in [*ENCODERS.values()] for root, _, names in os.walk(path) for f in names] + [ADAPTER]
    assert sum(os.path.getsize(f) for f in files) < 11e6
    for card in ("encoders/synthav_ast.md", "encoders/synthav_t5.md", "encoders/synthav_clip_text.md", "adapters/synthav_audio_adapter.md"):
        assert os.path.isfile(os.path.join(EMBEDDED, card)), card


def test_the_embedded_adapter_hears_the_sound_on_held_out_scenes(embedded):
    """Held-out SynthAV scenes the pipeline never evaluated on (indices 1000..1023): the adapter's MSE
    is far below always answering the mean target of 256 training captions (an adapter that ignores
    the sound), for the T5 tokens and for the CLIP pooled vector."""
    from comfyui_audiovisual.training import audio_adapter as training

    encoders, adapter = embedded
    heldout = training.encode_features(training.synthav_clips("heldout", 24, start=1000), encoders["ast"], encoders["t5"],
                                       encoders["clip_text"], text_tokens=adapter.config.text_tokens)
    assert heldout.audio.shape[1:] == (302, 64)  # the embedded AST's 256-frame window
    captions = [clip[2] for clip in training.synthav_clips("train", 256)]
    train_targets = training.AdapterFeatures(torch.zeros(len(captions), 1, 1), torch.arange(len(captions)), captions,
                                             encoders["t5"].encode_text(captions, sequence_length=adapter.config.text_tokens).vectors,
                                             encoders["clip_text"].encode_text(captions).vectors)
    baseline = training.mean_target_mse(train_targets, heldout)
    got = training.adapter_mse(adapter, heldout)
    assert got["text"] < 0.6 * baseline["text"]
    assert got["pooled"] < 0.6 * baseline["pooled"]


def test_the_embedded_ast_is_what_the_encode_node_runs(embedded):
    """A longer clip goes through the embedded AST window by window; the 2.6 s window is the
    extractor's 256 frames, and the AST's token count follows from its config."""
    encoders, _ = embedded
    ast = encoders["ast"]
    assert ast.sample_rate_hz == 16000 and ast.window_samples == 255 * 160 + 400
    clip = torch.sin(torch.arange(int(5 * 16000)) * 2 * np.pi * 440 / 16000).reshape(1, 1, -1)
    assert ast.encode_audio(clip, 16000, long_audio="all").vectors.shape == (1, 2 * 302, 64)


def test_the_pipeline_labels_each_onset_slot_and_feeds_the_ast_what_encode_audio_does(embedded):
    """training/synthav_seeing_sounds.py: the classifier's labels come from the scene, and its inputs
    give the same AST tokens as the encoder the nodes use (up to the float16 the inputs are kept in)."""
    from comfyui_audiovisual.synthav.split import split_scene
    from comfyui_audiovisual.synthav.world import SAMPLE_RATE, render_audio
    from comfyui_audiovisual.training.synthav_seeing_sounds import ast_inputs, scene_labels

    scenes = [split_scene("train", i) for i in range(6)]
    labels = scene_labels(scenes)
    assert labels.shape == (6, 4, 3)
    for scene, row in zip(scenes, labels):
        columns = {o.column: o for o in scene.objects}
        for slot in range(4):
            o = columns.get(slot)
            assert row[slot].tolist() == ([o.timbre, o.pitch, o.loudness] if o else [4, 8, 3])
    ast = embedded[0]["ast"]
    audio = [render_audio(s) for s in scenes[:2]]
    inputs = ast_inputs(audio, SAMPLE_RATE, ast.feature_extractor)
    assert inputs.shape == (2, 256, 128) and inputs.dtype == torch.float16
    with torch.no_grad():
        tokens = ast.module(input_values=inputs.float()).last_hidden_state
    expected = ast.encode_audio(torch.from_numpy(np.stack(audio)).unsqueeze(1), SAMPLE_RATE).vectors
    assert tokens.shape == expected.shape == (2, 302, 64)
    assert torch.allclose(tokens, expected, atol=1e-2) and not torch.allclose(tokens[0], tokens[1], atol=0.1)


# ------------------------------------------------------------------------------------------ host
@pytest.fixture(scope="module")
def flux_files(host, tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("flux-synthav")
    for sub in ("diffusion_models", "vae"):
        (root / sub).mkdir()
    from comfyui_audiovisual.loaders.audio_adapter import load_audio_adapter

    config = load_audio_adapter(ADAPTER).config
    save_file(tiny_flux_state_dict(context_dim=config.text_dim, pooled_dim=config.pooled_dim), str(root / "diffusion_models" / FLUX_FILE))
    save_file(tiny_flux_vae_state_dict(), str(root / "vae" / VAE_FILE))
    host.folder_paths.add_model_folder_path("diffusion_models", str(root / "diffusion_models"))
    host.folder_paths.add_model_folder_path("vae", str(root / "vae"))
    yield root
    release_models()
    os.remove(root / "diffusion_models" / FLUX_FILE)  # 0.8 GB


def tiny_overrides(**extra) -> dict:
    """The shipped graph pointed at the embedded AST + adapter and the tiny FLUX + VAE (node ids from
    workflows/graphs.py AUDIO_TO_IMAGE_FLUX), one step at 32 x 32."""
    return {"41.encoder_name": "av_encoders/synthav_ast", "43.adapter_name": "synthav_audio_adapter.safetensors",
            "44.target": "FLUX (adapter widths)", "48.unet_name": FLUX_FILE, "48.weight_dtype": "fp8_e4m3fn",
            "49.width": 32, "49.height": 32, "50.steps": 1, "51.vae_name": VAE_FILE, **extra}


@pytest.fixture
def flux_inputs(host, monkeypatch):
    """Records what the host's sampler feeds the FLUX model: txt (-> txt_in), y (-> vector_in), guidance."""
    import comfy.ldm.flux.model as flux_model

    calls = []
    original = flux_model.Flux.forward_orig

    def spy(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None, *args, **kwargs):
        calls.append({"txt": txt.detach().clone(), "y": y.detach().clone(), "guidance": guidance})
        return original(self, img, img_ids, txt, txt_ids, timesteps, y, guidance, *args, **kwargs)

    monkeypatch.setattr(flux_model.Flux, "forward_orig", spy)
    return calls


def read_picture(written, node="53") -> np.ndarray:
    assert len(written[node]) == 1
    return np.asarray(Image.open(written[node][0]).convert("RGB"), dtype=np.float32) / 255


def test_the_flux_workflow_makes_a_picture_from_the_sound_on_tiny_models(run_graph, flux_files, flux_inputs, tmp_path):
    workflow = json.load(open(WORKFLOW))
    assert "nodes" in workflow and "links" in workflow  # the editor's format
    bypassed = {str(n["id"]) for n in workflow["nodes"] if n.get("mode") == 4}
    assert bypassed == {"45", "46", "47"}  # the optional text branch ships off
    first = read_picture(run_graph(WORKFLOW, overrides=tiny_overrides(), out_dir=tmp_path / "a"))
    assert first.shape == (32, 32, 3) and np.isfinite(first).all() and first.std() > 0  # VAE Decode -> Save Image
    assert len(flux_inputs) == 1  # one euler step at cfg 1
    call = flux_inputs[0]
    assert call["txt"].shape == (1, 32, 16) and call["y"].shape == (1, 16)  # the audio tokens alone: no text branch
    assert torch.equal(call["guidance"].cpu(), torch.tensor([3.5]))
    release_models()
    higher = read_picture(run_graph(WORKFLOW, overrides=tiny_overrides(**{"40.semitones": 12.0}), out_dir=tmp_path / "b"))
    assert not torch.allclose(flux_inputs[1]["txt"], call["txt"]) and not torch.allclose(flux_inputs[1]["y"], call["y"])
    assert higher.shape == first.shape and not np.array_equal(higher, first)


def test_as_shipped_the_flux_workflow_names_the_missing_flux_file(run_graph, host, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    overrides = {"41.encoder_name": "av_encoders/synthav_ast", "43.adapter_name": "synthav_audio_adapter.safetensors"}
    with pytest.raises(WorkflowError, match=r"node (48 \(UNETLoader\)|51 \(VAELoader\)): Value not in list: "
                                            r"(unet_name: 'flux1-dev|vae_name: 'ae)\.safetensors' not in"):
        run_graph(WORKFLOW, overrides=overrides, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_flux_workflow_runs_over_http_with_the_files_in_the_servers_models_tree(server, host, embedded):
    """As in the editor: the tiny FLUX and VAE in the server's own models/diffusion_models and models/vae,
    the embedded AST and adapter, the shipped template converted and queued with POST /prompt."""
    import asyncio

    from safetensors.torch import save_file
    from test_host_http import _queue_and_watch

    from comfyui_audiovisual.runner.run import to_api_prompt

    _encoders, adapter = embedded
    models = server["base"] / "models"
    for sub in ("diffusion_models", "vae"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    save_file(tiny_flux_state_dict(context_dim=adapter.config.text_dim, pooled_dim=adapter.config.pooled_dim),
              str(models / "diffusion_models" / FLUX_FILE))
    try:
        save_file(tiny_flux_vae_state_dict(), str(models / "vae" / VAE_FILE))
        events, history = asyncio.run(_queue_and_watch(server["url"], to_api_prompt(WORKFLOW, tiny_overrides()), timeout_s=400))
    finally:
        os.remove(models / "diffusion_models" / FLUX_FILE)  # 0.8 GB
    errors = [e["data"].get("exception_message") for e in events if e["type"] == "execution_error"]
    assert not errors and history["status"]["status_str"] == "success", errors
    [picture] = history["outputs"]["53"]["images"]
    written = server["base"] / "output" / picture["subfolder"] / picture["filename"]
    assert np.asarray(Image.open(written)).shape == (32, 32, 3)
