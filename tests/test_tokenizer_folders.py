"""Where encoder folders keep their tokenizer (issue 17): a diffusers pipeline's sibling folders
(text_encoder -> tokenizer, text_encoder_2 -> tokenizer_2), and a T5 folder with only spiece.model
(read through sentencepiece + protobuf, or an error naming the missing package)."""

import importlib.util
import os

import pytest
import torch

from comfyui_audiovisual.encoders.pretrained import load_encoder
from tiny_encoders import write_diffusers_text_encoders, write_tiny_t5_spiece_only

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_diffusers_pipelines_text_encoders_use_the_sibling_tokenizer_folders(tmp_path):
    pipeline = write_diffusers_text_encoders(str(tmp_path / "FLUX.1-dev"))
    assert not os.path.exists(os.path.join(pipeline, "text_encoder_2", "tokenizer.json"))  # as published: beside
    clip_text = load_encoder(os.path.join(pipeline, "text_encoder"))
    t5 = load_encoder(os.path.join(pipeline, "text_encoder_2"))
    from transformers import AutoTokenizer

    for encoder, sibling in ((clip_text, "tokenizer"), (t5, "tokenizer_2")):
        reference = AutoTokenizer.from_pretrained(os.path.join(pipeline, sibling))
        assert encoder.tokenizer("a dog barking")["input_ids"] == reference("a dog barking")["input_ids"]
    sequence = t5.encode_text(["a dog barking"], sequence_length=8)
    assert sequence.vectors.shape[:2] == (1, 8) and sequence.family == "t5"
    assert clip_text.encode_text(["a dog barking"]).family == "clip_text"


def test_a_folder_without_a_tokenizer_anywhere_says_so(tmp_path):
    pipeline = write_diffusers_text_encoders(str(tmp_path / "pipe"))
    import shutil

    shutil.rmtree(os.path.join(pipeline, "tokenizer_2"))
    with pytest.raises(FileNotFoundError, match=r"text_encoder_2': a T5 encoder folder needs its tokenizer files .*; it has "
                                                r"no tokenizer files \(nor a sibling tokenizer folder"):
        load_encoder(os.path.join(pipeline, "text_encoder_2"))


def test_a_t5_folder_with_only_spiece_model_tokenizes_as_sentencepiece_does(tmp_path):
    import sentencepiece

    folder = write_tiny_t5_spiece_only(str(tmp_path / "t5-v1_1-xxl"))
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "spiece.model"]
    encoder = load_encoder(folder)
    pieces = sentencepiece.SentencePieceProcessor(model_file=os.path.join(folder, "spiece.model"))
    for text in ("a dog barking in the park", "waves at dawn"):
        assert encoder.tokenizer(text)["input_ids"] == pieces.encode(text) + [1]  # T5 appends </s> (id 1)
    embedding = encoder.encode_text(["a dog barking"], sequence_length=6)
    assert embedding.vectors.shape[:2] == (1, 6) and torch.isfinite(embedding.vectors).all()


@pytest.mark.parametrize("package, module", [("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf")])
def test_without_sentencepiece_or_protobuf_the_error_names_the_package(tmp_path, monkeypatch, package, module):
    folder = write_tiny_t5_spiece_only(str(tmp_path / "t5"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real_find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match=rf"t5': a T5 encoder folder needs its tokenizer files .*; reading "
                                                rf"'.*spiece\.model' needs the Python package\(s\) {package} "
                                                rf"\(pip install {package}\)$"):
        load_encoder(folder)
