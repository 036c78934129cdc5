"""The Visual Echoes SynthAV rebuild (training/synthav_defaults.py) at toy sizes: every stage runs,
the staged models load with the metadata the nodes read, a second run skips what exists, and a
longer transformer run resumes from the checkpoint instead of starting again."""

import json
import os

import pytest

from comfyui_audiovisual.loaders.checkpoint_io import read_state_dict
from comfyui_audiovisual.loaders.masked_transformer import load_masked_transformer
from comfyui_audiovisual.loaders.vq_checkpoints import load_vq_model
from comfyui_audiovisual.training.synthav_defaults import MODEL_FILES, RECIPES, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOY = ["--scenes", "16", "--vq-steps", "2", "--vq-batch", "4", "--decoder-steps", "1", "--decoder-batch", "2",
       "--maskgen-batch", "4", "--ceiling-scenes", "2", "--accuracy-scenes", "4", "--device", "cpu", "--workers", "1"]


@pytest.mark.parametrize("recipe", ["cpu", "gpu"])
def test_rebuild_runs_every_stage_then_resumes(tmp_path, recipe):
    work = tmp_path / "work"
    assert main(["--work", str(work), "--maskgen-steps", "2", "--recipe", recipe, *TOY]) == 0
    models = work / "models"
    image_vq, image_info = load_vq_model(str(models / MODEL_FILES["image_vq"]))
    spec_vq, spec_info = load_vq_model(str(models / MODEL_FILES["spec_vq"]))
    model = load_masked_transformer(str(models / MODEL_FILES["maskgen"]))
    _, metadata = read_state_dict(str(models / MODEL_FILES["maskgen"]))
    assert json.loads(metadata["image_grid"]) == [16, 16] and json.loads(metadata["audio_grid"]) == [10, 22]
    assert model.config.image_seq_len == 256 and model.config.audio_seq_len == 220
    # the CPU recipe's transformer reads a spectrogram column and a 4-token image strip as one position each
    assert (model.config.audio_group, model.config.image_group) == ((10, 4) if recipe == "cpu" else (1, 1))
    assert model.config.dim == RECIPES[recipe]["maskgen_config"]["dim"]
    # the transformer's vocabularies are the pruned codebooks
    assert model.config.image_vocab_size == image_vq.quantize.embedding.weight.shape[0] <= 256
    assert model.config.audio_vocab_size == spec_vq.quantize.embedding.weight.shape[0] <= 128
    ceilings = json.loads((work / "tokenizer_ceilings.json").read_text())
    assert set(ceilings["audio"]) >= {"pitch_acc", "timbre_acc", "loudness_acc", "onset_acc"}
    assert set(ceilings["image"]) >= {"hue_acc", "shape_acc", "size_acc", "position_acc"}
    assert ceilings["audio_codes"]["codebook_size"] == model.config.audio_vocab_size
    accuracy = json.loads((work / "maskgen_token_accuracy.json").read_text())
    assert set(accuracy) == {"heldout_scenes", "audio|image", "audio|nothing", "image|audio", "image|nothing"}
    stages = json.loads((work / "pipeline_log.json").read_text().splitlines()[0])["stages"]
    assert [s["stage"] for s in stages if "command" in s][:4] == [
        "image tokenizer", "spectrogram tokenizer", "image decoder refinement", "spectrogram decoder refinement"]
    assert all(s["command"].startswith("python -m comfyui_audiovisual ") for s in stages if "command" in s)
    image_command = next(s["command"] for s in stages if s["stage"] == "image tokenizer")
    assert ("--chroma-weight 8" in image_command) == (recipe == "cpu")  # the CPU tokenizer weights the objects' pixels

    stamps = {name: os.path.getmtime(work / name) for name in ("train_arrays.safetensors", "image_vq.safetensors",
                                                                "spec_vq.safetensors", "tokens.safetensors")}
    assert main(["--work", str(work), "--maskgen-steps", "3", "--recipe", recipe, *TOY]) == 0
    assert stamps == {name: os.path.getmtime(work / name) for name in stamps}  # nothing rebuilt
    second = json.loads((work / "pipeline_log.json").read_text().splitlines()[1])["stages"]
    assert [s["stage"] for s in second] == ["training arrays", "masked transformer"]
    assert "--resume" in second[1]["command"]
    _, metadata = read_state_dict(str(work / "maskgen" / "model.safetensors"))
    assert metadata["step"] == "3"
    assert not (tmp_path / "embedded_models").exists()


def test_recipe_sizes_are_per_tokenizer_unless_one_number_is_given():
    from comfyui_audiovisual.training.synthav_defaults import _per_modality

    sizes = RECIPES["cpu"]["vq_steps"]
    assert (_per_modality(sizes, "image"), _per_modality(sizes, "audio")) == (850, 1000)
    assert _per_modality(7, "image") == _per_modality(7, "audio") == 7
