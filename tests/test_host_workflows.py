"""Every shipped Visual Echoes workflow runs through the host's real executor (on tiny random models of the
embedded defaults' shapes), and what it writes is checked: files, sample rate, length, no NaN."""

import glob
import json
import os
import wave

import numpy as np
import pytest
from PIL import Image

from conftest import PACK_DIR, tiny_overrides

# The Visual Echoes workflows: tiny_overrides points their loaders at tiny models. The others have
# host tests of their own (test_host_v2a_workflows.py, test_seeing_sounds_default.py).
WORKFLOWS = [p for p in sorted(glob.glob(os.path.join(PACK_DIR, "workflows", "*.json")))
             if '"AV_LoadMaskedTransformer"' in open(p, encoding="utf-8").read()]
HOP = 256
MEL_FRAMES = 176


def read_wav(path):
    with wave.open(path) as f:
        rate, channels, frames = f.getframerate(), f.getnchannels(), f.readframes(f.getnframes())
    return rate, np.frombuffer(frames, dtype="<i2").reshape(-1, channels).T / 32768.0


def test_the_main_job_and_the_other_templates_are_shipped():
    names = {os.path.basename(p) for p in WORKFLOWS}
    assert {"image_to_audio.json", "audio_to_image.json", "co_generation.json", "audio_inpainting.json"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_runs_on_the_host_and_writes_checked_outputs(run_graph, tiny_models, tmp_path, path):
    workflow = json.load(open(path))
    assert "nodes" in workflow and "links" in workflow  # shipped in the editor's format
    written = run_graph(path, overrides=tiny_overrides(tiny_models), out_dir=tmp_path / "out")
    files = [p for paths in written.values() for p in paths]
    assert files and all(os.path.isfile(p) and str(p).startswith(str(tmp_path / "out")) for p in files)
    types = {n["type"] for n in workflow["nodes"]}
    wavs = [p for p in files if p.endswith(".wav")]
    pngs = [p for p in files if p.endswith(".png")]
    if "AV_SaveAudioWAV" in types:
        assert len(wavs) == 1
        rate, audio = read_wav(wavs[0])
        assert rate == 22050  # the vocoder's own rate (and the example sound's)
        if "AV_PutBackIntoAudio" in types:  # inpainting: the whole input sound, unchanged outside the range
            node = next(n for n in workflow["nodes"] if n["type"] == "AV_PutBackIntoAudio")
            start_s, end_s = node["widgets_values"][:2]
            _, original = read_wav(os.path.join(PACK_DIR, "example_inputs", "audiovisual_example_scene.wav"))
            assert audio.shape == original.shape == (1, 44800)
            first, last = round(start_s * rate), round(end_s * rate)
            assert np.allclose(audio[:, :first], original[:, :first], atol=2 / 32768)
            assert np.allclose(audio[:, last:], original[:, last:], atol=2 / 32768)
            assert not np.allclose(audio[:, first:last], original[:, first:last], atol=0.01)
        else:
            assert audio.shape == (1, MEL_FRAMES * HOP)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0
        spectrogram = [p for p in pngs if "spectrogram" in os.path.basename(p)]
        assert len(spectrogram) == 1 and Image.open(spectrogram[0]).size == (MEL_FRAMES * 2, 80 * 3)
    if "AV_DecodeImageTokens" in types:
        images = [p for p in pngs if "_image" in os.path.basename(p)]
        assert len(images) == 1 and Image.open(images[0]).size == (64, 64)


def test_same_seed_same_sound_and_another_seed_another(run_graph, tiny_models, tmp_path):
    path = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")
    runs = []
    for i, seed in enumerate([5, 5, 6]):
        written = run_graph(path, overrides={**tiny_overrides(tiny_models), "6.seed": seed}, out_dir=tmp_path / f"o{i}")
        wav = [p for ps in written.values() for p in ps if p.endswith(".wav")][0]
        runs.append(read_wav(wav)[1])
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_missing_model_file_names_the_node_and_writes_nothing(run_graph, tiny_models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    path = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")
    overrides = {**tiny_overrides(tiny_models), "4.model_name": "does_not_exist.safetensors"}
    with pytest.raises(WorkflowError) as e:
        run_graph(path, overrides=overrides, out_dir=tmp_path / "out")
    assert "node 4 (AV_LoadMaskedTransformer)" in str(e.value) and "does_not_exist.safetensors" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_condition_of_the_wrong_modality_is_refused_by_name(run_graph, tiny_models, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "audiovisual_example_scene.png"}},
        "2": {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": tiny_models["spec_vq"]}},
        "5": {"class_type": "AV_EncodeImageTokens", "inputs": {"tokenizer": ["2", 0], "image": ["1", 0], "fit_to_model": True}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }
    with pytest.raises(WorkflowError, match="node 5 .*audio tokenizer; connect an image tokenizer"):
        run_graph(prompt, out_dir=tmp_path / "out")


def test_a_taming_lightning_checkpoint_tokenizes_and_decodes_through_the_nodes(run_graph, host, tmp_path):
    """A taming-transformers .ckpt in models/audiovisual/vq loads through AV_LoadVQTokenizer (weights_only
    torch.load, keys converted at load time) and the graph's picture equals taming's own round trip."""
    import torch
    from tiny_checkpoints import tiny_image_vqgan, write_taming_ckpt

    folder = tmp_path / "taming"
    folder.mkdir()
    model = tiny_image_vqgan(seed=5)
    write_taming_ckpt(model, str(folder / "tiny_taming_image.ckpt"))
    host.folder_paths.add_model_folder_path("av_vq", str(folder))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "audiovisual_example_scene.png"}},
        "2": {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": "tiny_taming_image.ckpt"}},
        "5": {"class_type": "AV_EncodeImageTokens", "inputs": {"tokenizer": ["2", 0], "image": ["1", 0], "fit_to_model": False}},
        "13": {"class_type": "AV_DecodeImageTokens", "inputs": {"tokenizer": ["2", 0], "image_tokens": ["5", 0]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "audiovisual/taming_roundtrip"}},
    }
    written = run_graph(prompt, out_dir=tmp_path / "out")
    graph_picture = np.asarray(Image.open(written["14"][0]).convert("RGB"), dtype=np.float32) / 255
    example = np.asarray(Image.open(os.path.join(PACK_DIR, "example_inputs", "audiovisual_example_scene.png")).convert("RGB"),
                         dtype=np.float32) / 255
    with torch.no_grad():
        x = torch.from_numpy(example).permute(2, 0, 1)[None] * 2 - 1
        reference = ((model(x)[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()
    assert graph_picture.shape == reference.shape == (256, 256, 3)
    assert np.abs(graph_picture - reference).max() <= 1.5 / 255
