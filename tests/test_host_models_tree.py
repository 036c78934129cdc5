"""The weights ComfyUI users already have, in one shared models tree named by extra_model_paths.yaml
(issue 17): ComfyUI single files (clip_vision, clip_l, scaled fp8 T5), a diffusers FLUX pipeline's text
encoders, a T5 folder with only spiece.model, a taming-transformers Lightning release checkpoint and a
SpecVQGAN MelGAN, every one loaded by the headless runner in a fresh process (no test host, no Lightning)."""

import json
import os
import subprocess
import sys

import torch

from tiny_checkpoints import tiny_image_vqgan, tiny_melgan, write_melgan_checkpoint, write_taming_ckpt
from tiny_encoders import (write_diffusers_text_encoders, write_single_clip_text, write_single_clip_vision, write_single_t5,
                           write_tiny_t5_spiece_only)


def build_tree(root):
    models = root / "models"
    write_single_clip_vision(str(models / "clip_vision" / "clip_vision_h.safetensors"))
    write_single_clip_text(str(models / "text_encoders" / "clip_l.safetensors"))
    write_single_t5(str(models / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors"), dtype=torch.float8_e4m3fn, scaled=True)
    write_tiny_t5_spiece_only(str(models / "text_encoders" / "t5-v1_1-xxl"))
    write_diffusers_text_encoders(str(models / "diffusers" / "FLUX.1-dev"))
    (models / "audiovisual" / "vq").mkdir(parents=True)
    write_taming_ckpt(tiny_image_vqgan(seed=3), str(models / "audiovisual" / "vq" / "vqgan_imagenet_last.ckpt"))
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
        "text_encoders/clip_l.safetensors": ("AV_EncodeText", {"text": "a dog barking", "t5_tokens": 0}),
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
    assert any(p.endswith(".png") and "taming" in p for p in written) and any(p.endswith(".wav") for p in written), written
