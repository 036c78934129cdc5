"""The host's own CLIP (Load CLIP / DualCLIPLoader: clip_l + t5xxl for FLUX) wired into the pack (issue 17):
CLIP Text to Embedding gives the T5 token sequence or the CLIP-L pooled vector of a prompt, equal to what
Encode Text gives for the same files, with the same weights fingerprint."""

import asyncio
import inspect
import json
import os
import uuid

import pytest
import torch

from comfyui_audiovisual.encoders.single_file import load_single_file_encoder
from tiny_encoders import SINGLE_CLIP_TEXT, SINGLE_T5, host_tokenizer_dirs, write_single_clip_text, write_single_t5

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a dog barking in the rain"


@pytest.fixture(scope="module")
def files(host, tmp_path_factory):
    root = tmp_path_factory.mktemp("host-clip") / "text_encoders"
    root.mkdir()
    host.folder_paths.add_model_folder_path("text_encoders", str(root))
    yield {"clip_l": write_single_clip_text(str(root / "clip_l.safetensors"))[0],
            "t5": write_single_t5(str(root / "t5xxl_fp16.safetensors"))[0],
            "t5_scaled": write_single_t5(str(root / "t5xxl_fp8_e4m3fn_scaled.safetensors"), dtype=torch.float8_e4m3fn, scaled=True)[0]}
    host.folder_paths.folder_names_and_paths["text_encoders"][0].remove(str(root))


def host_flux_clip(host, clip_l_path, t5_path):
    """The host's CLIP as DualCLIPLoader (type flux) builds it, with the tiny architectures: DualCLIPLoader picks
    its configs by layer count (the published 12-layer CLIP-L, 24-layer T5-XXL), so the FLUX text model is
    built here from the host's own classes and config files, widths and depths replaced by the tiny ones, and loaded
    as its Load CLIP loads a file on either host (0.3.x: scaled fp8 ops; 0.33: the file's scaled fp8 turned into its
    per-layer quantization, loaded while the CLIP is built)."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.flux as flux
    import comfy.text_encoders.sd3_clip
    import comfy.text_encoders.t5
    import comfy.utils

    base = os.path.join(host.host_dir, "comfy")
    clip_config = {**json.load(open(os.path.join(base, "sd1_clip_config.json"))), **SINGLE_CLIP_TEXT}
    t5_config = {**json.load(open(os.path.join(base, "text_encoders", "t5_config_xxl.json"))),
                 **{k: SINGLE_T5[k] for k in ("d_model", "d_kv", "num_heads", "d_ff", "num_layers")}}

    t5_state, metadata = comfy.utils.load_torch_file(t5_path, return_metadata=True)
    if hasattr(comfy.utils, "convert_old_quants"):  # 0.33's Load CLIP: a scaled fp8 file becomes per-layer quantization
        t5_state, _ = comfy.utils.convert_old_quants(t5_state, model_prefix="", metadata=metadata)
    detected = comfy.text_encoders.sd3_clip.t5_xxl_detect(t5_state)  # as the host's loader: scaled fp8 -> its ops

    class TinyFluxClipModel(flux.FluxClipModel):
        def __init__(self, dtype_t5=None, device="cpu", dtype=None, model_options={}):
            torch.nn.Module.__init__(self)
            self.clip_l = comfy.sd1_clip.SDClipModel(device=device, dtype=dtype, return_projected_pooled=False,
                                                     textmodel_json_config=clip_config, model_options=model_options)
            t5_options = {**model_options, "model_name": "t5xxl"}
            if "t5xxl_scaled_fp8" in detected:  # 0.3.x
                t5_options["scaled_fp8"] = detected["t5xxl_scaled_fp8"]
            if "t5_quantization_metadata" in detected:  # 0.33, as its T5XXLModel passes it on
                t5_options["quantization_metadata"] = detected["t5_quantization_metadata"]
            self.t5xxl = comfy.sd1_clip.SDClipModel(device=device, dtype=detected.get("dtype_t5", dtype), textmodel_json_config=t5_config,
                                                    special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                                                    model_options=t5_options)
            self.dtypes = {dtype, detected.get("dtype_t5", dtype)}

    states = [comfy.utils.load_torch_file(clip_l_path), t5_state]
    target = comfy.supported_models_base.ClipTarget(flux.FluxTokenizer, TinyFluxClipModel)
    if "state_dict" in inspect.signature(comfy.sd.CLIP).parameters:  # 0.33 loads the files as it builds the CLIP (its quantized layers have no weights before)
        clip = comfy.sd.CLIP(target=target, state_dict=[dict(state) for state in states])
    else:
        clip = comfy.sd.CLIP(target=target)
    for state in states:
        missing, _ = clip.load_sd(state)
        assert not [k for k in missing if "position_ids" not in k], missing
    return clip


def test_the_hosts_dual_clip_wires_into_the_node(host, files):
    prompt = {
        "1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors",
                                                          "type": "flux"}},
        "2": {"class_type": "AV_CLIPTextToEmbedding", "inputs": {"clip": ["1", 0], "text": PROMPT, "encoder": "t5xxl"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    ok, error, _, node_errors = asyncio.run(host.execution.validate_prompt(uuid.uuid4().hex, prompt, None))
    assert ok, (error, node_errors)


def test_the_hosts_t5_and_clip_l_give_what_encode_text_gives_with_the_same_fingerprint(host, files):
    node = host.nodes.NODE_CLASS_MAPPINGS["AV_CLIPTextToEmbedding"]
    clip = host_flux_clip(host, files["clip_l"], files["t5"])
    clip_tokenizer, t5_tokenizer = host_tokenizer_dirs()
    t5 = node.execute(clip, PROMPT, "t5xxl").result[0]
    ours = load_single_file_encoder(files["t5"], t5_tokenizer=t5_tokenizer)
    ours.module.float()
    expected = ours.encode_text([PROMPT], sequence_length=256)  # the host pads FLUX T5 prompts to at least 256 tokens
    assert (t5.family, t5.model, t5.modality, tuple(t5.vectors.shape)) == ("t5", "", "text", (1, 256, SINGLE_T5["d_model"]))
    assert t5.weights == ours.fingerprint and len(t5.weights) == 16
    # the host computes in float16 on the CPU; the rest is the same computation
    assert torch.allclose(t5.vectors, expected.vectors, atol=2e-2, rtol=0), float((t5.vectors - expected.vectors).abs().max())

    pooled = node.execute(clip, PROMPT, "clip_l").result[0]
    ours_l = load_single_file_encoder(files["clip_l"], clip_tokenizer=clip_tokenizer)
    ours_l.module.float()
    expected_l = ours_l.encode_text([PROMPT])
    assert (pooled.family, pooled.modality, tuple(pooled.vectors.shape)) == ("clip_text", "text", (1, SINGLE_CLIP_TEXT["hidden_size"]))
    assert pooled.weights == ours_l.fingerprint
    assert torch.allclose(pooled.vectors, expected_l.vectors, atol=2e-2, rtol=0), float((pooled.vectors - expected_l.vectors).abs().max())
    assert not torch.allclose(pooled.vectors, node.execute(clip, "rain", "clip_l").result[0].vectors, atol=1e-3)  # the text counts

    # the scaled fp8 T5 as the host runs it (its scaled-fp8 Linear layers) gives what Encode Text gives for that file,
    # and the same fingerprint: the identity tensors (token embedding, final norm) are not Linear, so stay float16
    scaled = host_flux_clip(host, files["clip_l"], files["t5_scaled"])
    q_weight = scaled.cond_stage_model.t5xxl.transformer.encoder.block[0].layer[0].SelfAttention.q.weight
    assert getattr(q_weight, "storage_dtype", q_weight.dtype) == torch.float8_e4m3fn  # 0.33: a QuantizedTensor over fp8
    from_host = node.execute(scaled, PROMPT, "t5xxl").result[0]
    ours_scaled = load_single_file_encoder(files["t5_scaled"], t5_tokenizer=t5_tokenizer)
    ours_scaled.module.float()
    expected_scaled = ours_scaled.encode_text([PROMPT], sequence_length=256)
    assert from_host.weights == ours_scaled.fingerprint == ours.fingerprint
    assert torch.allclose(from_host.vectors, expected_scaled.vectors, atol=2e-2, rtol=0), float((from_host.vectors - expected_scaled.vectors).abs().max())
    assert not torch.allclose(expected_scaled.vectors, expected.vectors, atol=1e-4)  # the Linear layers are rounded



def test_a_clip_without_the_chosen_encoder_or_no_clip_is_one_line_naming_the_node(host, files):
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    node = host.nodes.NODE_CLASS_MAPPINGS["AV_CLIPTextToEmbedding"]
    with pytest.raises(ValueError, match=r"^CLIP Text to Embedding: 'clip' must be the host's CLIP \(Load CLIP, DualCLIPLoader\), got str$"):
        node.execute("clip_l.safetensors", PROMPT, "t5xxl")
    clip_config = {**json.load(open(os.path.join(host.host_dir, "comfy", "sd1_clip_config.json"))), **SINGLE_CLIP_TEXT}

    class TinyClipL(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, dtype=dtype, textmodel_json_config=clip_config, model_options=model_options)

    class TinySD1(comfy.sd1_clip.SD1ClipModel):  # what Load CLIP (stable_diffusion) builds from a clip_l file
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, clip_model=TinyClipL)

    clip_l_only = comfy.sd.CLIP(target=comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinySD1))
    with pytest.raises(ValueError) as e:
        node.execute(clip_l_only, PROMPT, "t5xxl")
    assert str(e.value) == ("CLIP Text to Embedding: this CLIP (TinySD1) holds no t5xxl text encoder (it holds clip_l); "
                            "load a t5xxl file with Load CLIP or DualCLIPLoader")
