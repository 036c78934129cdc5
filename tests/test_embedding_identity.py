"""Embedding spaces identified by the encoder's weights, not its folder name (issue 17): the same CLIP as a
transformers folder and as a ComfyUI single file gives one fingerprint; a mapper trained through the
node records it and accepts that CLIP under any name, and refuses other weights under the same name."""

import os
import sys

import pytest
import torch

from conftest import PACK_DIR

from comfyui_audiovisual.encoders.pretrained import load_encoder
from comfyui_audiovisual.encoders.single_file import load_single_file_encoder
from comfyui_audiovisual.nodes.payloads import Embedding
from tiny_encoders import SINGLE_VISION, _save_single_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_same_clip_twice(base, seed=0):
    """One CLIP vision tower saved as a transformers folder (fp32) and as clip_vision file (fp16)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**SINGLE_VISION)).eval()
    folder = os.path.join(base, "clip_vision", "clip-vit-large-patch14")
    model.save_pretrained(folder)
    single = _save_single_file(model, os.path.join(base, "clip_vision", "clip_vision_l.safetensors"), torch.float16)
    return folder, single


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    base = tmp_path_factory.mktemp("identity")
    folder, single = write_same_clip_twice(str(base))
    other, _ = write_same_clip_twice(str(base / "other"), seed=5)
    return {"folder": load_encoder(folder), "single": load_single_file_encoder(single), "other": load_encoder(other)}


def test_the_same_weights_give_one_fingerprint_under_any_name_and_other_weights_another(clips):
    folder, single, other = clips["folder"], clips["single"], clips["other"]
    assert (folder.model_name, single.model_name) == ("clip-vit-large-patch14", "clip_vision_l")
    assert folder.fingerprint == single.fingerprint and len(folder.fingerprint) == 16
    assert other.model_name == folder.model_name and other.fingerprint != folder.fingerprint
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert folder.encode_images(image).weights == folder.fingerprint


def test_expect_decides_by_fingerprint_when_both_sides_know_it():
    vectors = torch.randn(1, 16)
    named = Embedding(vectors, family="clip", model="clip_vision_l", modality="image", weights="aaaa")
    named.expect("N", "clip", 16, "clip-vit-large-patch14", weights="aaaa")  # same weights, another name: accepted
    with pytest.raises(ValueError, match=r"^N: expected a CLIP embedding of width 16 from 'clip_vision_l' \(weights bbbb\), "
                                         r"got .*\(weights aaaa\): embeddings of other weights live in another space \(an fp8 or bf16 copy of the same "
                                         r"encoder counts as other weights: its rounded values move the embeddings; use the "
                                         r"encoder file these were made for, or train on this one\)$"):
        named.expect("N", "clip", 16, "clip_vision_l", weights="bbbb")
    unknown = Embedding(vectors, family="clip", model="clip_vision_l", modality="image")
    with pytest.raises(ValueError, match="embeddings of another model live in another space"):  # no fingerprint: names
        unknown.expect("N", "clip", 16, "clip-vit-large-patch14", weights="aaaa")


def test_a_mapper_trained_through_the_node_records_the_weights_and_checks_them(host, clips, tmp_path):
    from comfyui_audiovisual.loaders.mapper import load_mapper

    train = host.nodes.NODE_CLASS_MAPPINGS["AV_TrainMapper"]
    apply = host.nodes.NODE_CLASS_MAPPINGS["AV_ApplyMapper"]
    HostEmbedding = sys.modules[apply.__module__].Embedding  # the host loaded the pack under its own module name
    images = torch.rand(4, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    source = clips["folder"].encode_images(images)
    target = clips["other"].encode_images(images)
    as_host = lambda e: HostEmbedding(e.vectors, family=e.family, model=e.model, modality=e.modality, weights=e.weights)
    mappers = tmp_path / "mappers"
    mappers.mkdir()
    host.folder_paths.add_model_folder_path("av_mappers", str(mappers), is_default=True)
    try:
        train.execute(as_host(source), as_host(target), kind="regression", steps=2, learning_rate=1e-3, batch_size=4,
                      width=16, depth=1, seed=0, file_name="identity_test")
    finally:
        host.folder_paths.folder_names_and_paths["av_mappers"][0].remove(str(mappers))
    mapper = load_mapper(mappers / "identity_test.safetensors")
    assert (mapper.source.model, mapper.source.weights) == ("clip-vit-large-patch14", clips["folder"].fingerprint)
    assert mapper.target.weights == clips["other"].fingerprint
    from_file = as_host(clips["single"].encode_images(images[:1]))  # the same CLIP as a single file: another name
    mapped = apply.execute(mapper, from_file, seed=0, steps=1).result[0]
    assert mapped.vectors.shape == (1, SINGLE_VISION["projection_dim"]) and mapped.weights == clips["other"].fingerprint
    same_name_other_weights = as_host(clips["other"].encode_images(images[:1]))
    with pytest.raises(ValueError, match=r"^Apply V2A Mapper: expected a CLIP embedding .* embeddings of other weights live in another space"):
        apply.execute(mapper, same_name_other_weights, seed=0, steps=1)


def test_the_embedded_mappers_know_their_encoders_by_weights():
    """The shipped SynthAV mappers record the fingerprints of the embedded CLIP and CLAP
    (training/synthav_v2a.py record_fingerprints), so other weights named synthav_clip are refused."""
    from comfyui_audiovisual.encoders.pretrained import load_encoder
    from comfyui_audiovisual.loaders.mapper import load_mapper
    from comfyui_audiovisual.nodes.payloads import Embedding

    embedded = os.path.join(PACK_DIR, "embedded_models")
    clip = load_encoder(os.path.join(embedded, "encoders", "synthav_clip"))
    clap = load_encoder(os.path.join(embedded, "encoders", "synthav_clap"))
    for name in ("synthav_clip_to_clap", "synthav_clip_to_clap_diffusion"):
        mapper = load_mapper(os.path.join(embedded, "mappers", f"{name}.safetensors"))
        assert (mapper.source.weights, mapper.target.weights) == (clip.fingerprint, clap.fingerprint), name
    impostor = Embedding(torch.randn(1, mapper.source.dim), "clip", "synthav_clip", "image", weights="0123456789abcdef")
    with pytest.raises(ValueError, match="embeddings of other weights live in another space"):
        impostor.expect("Apply V2A Mapper", "clip", mapper.source.dim, mapper.source.model, weights=mapper.source.weights)


def test_fp8_and_bf16_copies_are_other_weights_and_the_refusal_says_so(tmp_path):
    """Decided by the values: an fp8 (plain or scaled) or bf16 copy of a CLIP holds other numbers than its fp16
    original (fp8 keeps 3 mantissa bits), so its image embeddings move (here 0.6-4.0 % of their length after two
    layers; more in a deep tower), and a mapper fitted to the original's embeddings is not fitted to them. The
    copies get their own fingerprint; fp32 and fp16 copies of the same values share one."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**SINGLE_VISION)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    copies = {}
    for name, dtype, scaled in [("fp32", torch.float32, False), ("fp16", torch.float16, False), ("bf16", torch.bfloat16, False),
                                ("fp8", torch.float8_e4m3fn, False), ("fp8_scaled", torch.float8_e4m3fn, True)]:
        model.load_state_dict(state)  # _save_single_file loads what it stored back into the model
        path = _save_single_file(model, str(tmp_path / f"clip_vision_{name}.safetensors"), dtype, scaled=scaled)
        copies[name] = load_single_file_encoder(path)
    images = torch.rand(4, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    original = copies["fp16"].encode_images(images)
    assert copies["fp32"].fingerprint == original.weights
    for name in ("bf16", "fp8", "fp8_scaled"):
        copy = copies[name].encode_images(images)
        moved = float(((copy.vectors - original.vectors).norm(dim=-1) / original.vectors.norm(dim=-1)).max())
        assert moved > 1e-3, (name, moved)  # the values really differ: not a rounding of the fingerprint's own
        assert copy.weights not in (original.weights, "") and copy.model == f"clip_vision_{name}"
        with pytest.raises(ValueError, match=r"^Apply V2A Mapper: .*live in another space \(an fp8 or bf16 copy of the same "
                                             r"encoder counts as other weights: .*use the encoder file these were made for"):
            copy.expect("Apply V2A Mapper", "clip", original.dim, "clip_vision_fp16", weights=original.weights)
    assert len({copies[n].fingerprint for n in ("fp16", "bf16", "fp8", "fp8_scaled")}) == 4
