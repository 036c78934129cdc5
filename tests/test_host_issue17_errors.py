"""The errors issue 17 names, as a user meets them in the host: each is one line naming the node, the file
and what was expected, and nothing is written (a tokenizer-less diffusers text encoder, a release checkpoint
that pickles code, a file in text_encoders that is no encoder)."""

import asyncio
import os
import shutil
import uuid

import pytest
import torch
from safetensors.torch import save_file

from tiny_encoders import write_diffusers_text_encoders

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Payload:
    """Unpickling this would create a file: the reader must refuse it without running it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def models(host, tmp_path_factory):
    root = tmp_path_factory.mktemp("issue17-errors")
    pipeline = write_diffusers_text_encoders(str(root / "diffusers" / "FLUX.1-tiny"))
    shutil.rmtree(os.path.join(pipeline, "tokenizer_2"))  # a pipeline copied without its T5 tokenizer
    (root / "text_encoders").mkdir()
    save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(root / "text_encoders" / "a_lora.safetensors"))
    (root / "vq").mkdir()
    marker = root / "PWNED"
    torch.save({"state_dict": {"quantize.embedding.weight": torch.zeros(4, 2)}, "callback": Payload(str(marker))},
               str(root / "vq" / "evil_release.ckpt"))
    added = [(key, str(root / folder)) for key, folder in (("diffusers", "diffusers"), ("text_encoders", "text_encoders"), ("av_vq", "vq"))]
    for key, path in added:
        host.folder_paths.add_model_folder_path(key, path)
    yield {"root": root, "marker": marker}
    for key, path in added:  # other test files list these folders
        host.folder_paths.folder_names_and_paths[key][0].remove(path)


def one_line_error(run_graph, prompt, out_dir):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError) as e:
        run_graph(prompt, out_dir=out_dir)
    message = str(e.value)
    assert "\n" not in message and not os.path.exists(out_dir)
    return message


def test_a_text_encoder_without_its_tokenizer_names_the_node_the_folder_and_the_files(run_graph, models, tmp_path):
    prompt = {"1": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "diffusers/FLUX.1-tiny/text_encoder_2"}},
              "2": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["1", 0], "text": "rain", "t5_tokens": 0}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    message = one_line_error(run_graph, prompt, tmp_path / "out")
    assert message.startswith("node 1 (AV_LoadEncoder): Load Encoder: ")
    assert "FLUX.1-tiny/text_encoder_2': a T5 encoder folder needs its tokenizer files" in message
    assert "nor a sibling tokenizer folder" in message


def test_a_release_checkpoint_that_pickles_code_is_refused_by_name_and_never_runs(run_graph, models, tmp_path):
    prompt = {"1": {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": "evil_release.ckpt"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    message = one_line_error(run_graph, prompt, tmp_path / "out")
    assert message.startswith("node 1 (AV_LoadVQTokenizer): Load VQ Tokenizer: evil_release.ckpt: not a plain weights checkpoint")
    assert "open" in message  # what it would have run
    assert not models["marker"].exists()


def test_a_file_that_is_no_encoder_is_refused_in_validation_naming_what_was_expected(host, models):
    prompt = {"1": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/a_lora.safetensors"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    ok, _error, _outputs, node_errors = asyncio.run(host.execution.validate_prompt(uuid.uuid4().hex, prompt, None))
    assert not ok
    details = node_errors["1"]["errors"][0]["details"]
    assert details.endswith("Load Encoder: a_lora.safetensors: not an encoder file this pack reads; expected a CLIP vision, "
                            "CLIP text or T5 file in the host's key layout"), details
