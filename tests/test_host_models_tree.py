"""The weights ComfyUI users already have, in one shared models tree named by extra_model_paths.yaml
(issue 17): ComfyUI single files (CLIP-L/H/G vision, one in open_clip's layout, clip_l, T5-XXL fp16 / bf16 /
scaled fp8), a diffusers FLUX pipeline's text encoders, a T5 folder with only spiece.model, taming-transformers
and SpecVQGAN Lightning release checkpoints and a SpecVQGAN MelGAN: every one listed by its loader once the
host reads the yaml, and loaded by the headless runner in a fresh process (no test host, no Lightning)."""

import json
import os
import subprocess
import sys

import torch

from tiny_checkpoints import tiny_image_vqgan, tiny_melgan, tiny_spec_vqgan, write_melgan_checkpoint, write_taming_ckpt
from tiny_encoders import (write_diffusers_text_encoders, write_open_clip_vision, write_single_clip_text, write_single_clip_vision,
                           write_single_t5, write_tiny_t5_spiece_only)


def build_tree(root):
    models = root / "models"
    write_single_clip_vision(str(models / "clip_vision" / "clip_vision_h.safetensors"))
    write_single_clip_vision(str(models / "clip_vision" / "clip_vision_l.safetensors"), seed=1, dtype=torch.float32)
    write_single_clip_vision(str(models / "clip_vision" / "sdxl" / "clip_vision_g.safetensors"), seed=2, dtype=torch.float8_e4m3fn)
    write_open_clip_vision(str(models / "clip_vision" / "open_clip_vit_h.safetensors"), seed=3)
    write_single_clip_text(str(models / "text_encoders" / "clip_l.safetensors"))
    write_single_t5(str(models / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors"), dtype=torch.float8_e4m3fn, scaled=True)
    write_single_t5(str(models / "text_encoders" / "t5xxl_fp16.safetensors"), seed=1)
    write_single_t5(str(models / "text_encoders" / "t5xxl_bf16.safetensors"), seed=2, dtype=torch.bfloat16)
    write_tiny_t5_spiece_only(str(models / "text_encoders" / "t5-v1_1-xxl"))
    write_diffusers_text_encoders(str(models / "diffusers" / "FLUX.1-dev"))
    (models / "audiovisual" / "vq").mkdir(parents=True)
    write_taming_ckpt(tiny_image_vqgan(seed=3), str(models / "audiovisual" / "vq" / "vqgan_imagenet_last.ckpt"))
    write_taming_ckpt(tiny_spec_vqgan(seed=4), str(models / "audiovisual" / "vq" / "specvqgan_vas_last.ckpt"))
    (models / "audiovisual" / "vocoders" / "specvqgan").mkdir(parents=True)
    write_melgan_checkpoint(tiny_melgan(seed=2), str(models / "audiovisual" / "vocoders" / "specvqgan" / "best_netG.pt"))
    yaml_path = root / "extra_model_paths.yaml"
    yaml_path.write_text("shared:\n"
                         f"    base_path: {models}\n"
                         "    clip_vision: clip_vision\n"
                         "    text_encoders: text_encoders\n"
                         "    diffusers: diffusers\n"
                         "    av_vq: audiovisual/vq\n"
                         "    av_vocoders: audiovisual/vocoders\n")
    return yaml_path


def graph() -> dict:
    encoders = {
        "clip_vision/clip_vision_h.safetensors": ("AV_EncodeImage", {"image": ["img", 0]}),
        "clip_vision/clip_vision_l.safetensors": ("AV_EncodeImage", {"image": ["img", 0]}),
        "clip_vision/sdxl/clip_vision_g.safetensors": ("AV_EncodeImage", {"image": ["img", 0]}),
        "clip_vision/open_clip_vit_h.safetensors": ("AV_EncodeImage", {"image": ["img", 0]}),
        "text_encoders/clip_l.safetensors": ("AV_EncodeText", {"text": "a dog barking", "t5_tokens": 0}),
        "text_encoders/t5xxl_fp16.safetensors": ("AV_EncodeText", {"text": "a dog barking", "t5_tokens": 8}),
        "text_encoders/t5xxl_bf16.safetensors": ("AV_EncodeText", {"text": "a dog barking", "t5_tokens": 8}),
        "text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors": ("AV_EncodeText", {"text": "a dog barking", "t5_tokens": 8}),
        "text_encoders/t5-v1_1-xxl": ("AV_EncodeText", {"text": "a dog barking", "t5_tokens": 8}),
        "diffusers/FLUX.1-dev/text_encoder": ("AV_EncodeText", {"text": "a dog barking", "t5_tokens": 0}),
        "diffusers/FLUX.1-dev/text_encoder_2": ("AV_EncodeText", {"text": "a dog barking", "t5_tokens": 8}),
    }
    prompt = {"img": {"class_type": "LoadImage", "inputs": {"image": "audiovisual_example_scene.png"}},
              "snd": {"class_type": "LoadAudio", "inputs": {"audio": "audiovisual_example_scene.wav"}}}
    for index, (name, (encode, inputs)) in enumerate(encoders.items()):
        prompt[f"load{index}"] = {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": name}}
        prompt[f"enc{index}"] = {"class_type": encode, "inputs": {"encoder": [f"load{index}", 0], **inputs}}
        prompt[f"show{index}"] = {"class_type": "PreviewAny", "inputs": {"source": [f"enc{index}", 0]}}
    prompt.update({
        "vq": {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": "vqgan_imagenet_last.ckpt"}},
        "tok": {"class_type": "AV_EncodeImageTokens", "inputs": {"tokenizer": ["vq", 0], "image": ["img", 0], "fit_to_model": True}},
        "dec": {"class_type": "AV_DecodeImageTokens", "inputs": {"tokenizer": ["vq", 0], "image_tokens": ["tok", 0]}},
        "save_img": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "tree/taming"}},
        "spec": {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": "specvqgan_vas_last.ckpt"}},
        "atok": {"class_type": "AV_EncodeAudioTokens", "inputs": {"tokenizer": ["spec", 0], "audio": ["snd", 0]}},
        "amel": {"class_type": "AV_DecodeMelTokens", "inputs": {"tokenizer": ["spec", 0], "audio_tokens": ["atok", 0]}},
        "awave": {"class_type": "AV_MelToAudio", "inputs": {"vocoder": ["voc", 0], "mel": ["amel", 0]}},
        "save_spec": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["awave", 0], "filename_prefix": "tree/specvqgan"}},
        "voc": {"class_type": "AV_LoadVocoder", "inputs": {"vocoder_name": "specvqgan/best_netG.pt"}},
        "mel": {"class_type": "AV_AudioToMel", "inputs": {"audio": ["snd", 0]}},
        "wave": {"class_type": "AV_MelToAudio", "inputs": {"vocoder": ["voc", 0], "mel": ["mel", 0]}},
        "save_wav": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["wave", 0], "filename_prefix": "tree/melgan"}},
    })
    return prompt


def test_every_file_in_a_shared_models_tree_loads_in_a_headless_run(tmp_path):
    yaml_path = build_tree(tmp_path / "shared")
    workflow = tmp_path / "tree.json"
    workflow.write_text(json.dumps(graph()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "comfyui_audiovisual", "run", str(workflow), "--cpu", "--out",
                             str(tmp_path / "out"), "--extra-model-paths", str(yaml_path)],
                            capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    written = result.stdout.split()
    assert any(p.endswith(".png") and "taming" in p for p in written), written
    assert any(p.endswith(".wav") and "melgan" in p for p in written) and any(p.endswith(".wav") and "specvqgan" in p for p in written), written


def combo_options(host, node_id, input_name):
    spec = host.nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"][input_name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_every_file_of_the_tree_is_listed_by_its_loader_once_the_host_reads_the_yaml(host, tmp_path):
    import utils.extra_config

    yaml_path = build_tree(tmp_path / "shared")
    before = {key: list(paths) for key, (paths, _) in host.folder_paths.folder_names_and_paths.items()}
    utils.extra_config.load_extra_path_config(str(yaml_path))  # what the host's start-up and run --extra-model-paths do
    try:
        prompt = graph()
        encoders = sorted(node["inputs"]["encoder_name"] for node in prompt.values() if node["class_type"] == "AV_LoadEncoder")
        assert len(encoders) == 11
        listed = combo_options(host, "AV_LoadEncoder", "encoder_name")
        assert [name for name in encoders if name not in listed] == []
        # nothing of the tree that is not an encoder is offered (a pipeline's tokenizer folders, the VQ checkpoints)
        assert not any(name.startswith("diffusers/FLUX.1-dev/tokenizer") for name in listed)
        # a MelGAN dropped into the VQ folder, and a file of another kind, are not offered, and refused by name
        write_melgan_checkpoint(tiny_melgan(seed=5), str(tmp_path / "shared" / "models" / "audiovisual" / "vq" / "best_netG.pt"))
        (tmp_path / "shared" / "models" / "audiovisual" / "vq" / "notes.ckpt").write_bytes(b"not a checkpoint")
        vq = combo_options(host, "AV_LoadVQTokenizer", "model_name")
        assert {"vqgan_imagenet_last.ckpt", "specvqgan_vas_last.ckpt"} <= set(vq)
        assert "best_netG.pt" not in vq and "notes.ckpt" not in vq
        refusal = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadVQTokenizer"].validate_inputs("best_netG.pt")
        assert refusal == ("Load VQ Tokenizer: 'best_netG.pt' is not a VQ tokenizer this node reads; expected a diffusers VQModel "
                           "folder or a taming / SpecVQGAN checkpoint (.ckpt / .safetensors with quantize.embedding.weight)")
        assert host.nodes.NODE_CLASS_MAPPINGS["AV_LoadVQTokenizer"].validate_inputs("specvqgan_vas_last.ckpt") is True
        assert "specvqgan/best_netG.pt" in combo_options(host, "AV_LoadVocoder", "vocoder_name")
    finally:
        for key, (paths, _) in host.folder_paths.folder_names_and_paths.items():
            paths[:] = before.get(key, [])
