"""ComfyUI's single-file encoders through the host's HTTP API (issue 17): the real server lists the
files of its own models/clip_vision and models/text_encoders in Load Encoder, and a prompt posted to
/prompt encodes a picture and a text with them."""

import asyncio
import json
import urllib.request

import pytest
import torch

from test_host_http import _queue_and_watch
from tiny_encoders import write_single_clip_text, write_single_clip_vision, write_single_t5

EXAMPLE_IMAGE = "audiovisual_example_scene.png"  # copied into the host's input folder when the pack loads


@pytest.fixture(scope="module")
def files_served(server):
    models = server["base"] / "models"
    write_single_clip_vision(str(models / "clip_vision" / "clip_vision_h.safetensors"))
    write_single_clip_text(str(models / "text_encoders" / "clip_l.safetensors"))
    write_single_t5(str(models / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors"), dtype=torch.float8_e4m3fn, scaled=True)
    return server


def test_the_server_lists_and_runs_single_file_encoders(files_served):
    url = files_served["url"]
    info = json.loads(urllib.request.urlopen(f"{url}/object_info/AV_LoadEncoder", timeout=30).read())
    spec = info["AV_LoadEncoder"]["input"]["required"]["encoder_name"]
    names = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
    for name in ("clip_vision/clip_vision_h.safetensors", "text_encoders/clip_l.safetensors",
                 "text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors"):
        assert name in names, names
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "2": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/clip_vision_h.safetensors"}},
        "3": {"class_type": "AV_EncodeImage", "inputs": {"encoder": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors"}},
        "5": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["4", 0], "text": "a cat purring", "t5_tokens": 8}},
        "6": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/clip_l.safetensors"}},
        "7": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["6", 0], "text": "a cat purring", "t5_tokens": 0}},
        **{f"p{n}": {"class_type": "PreviewAny", "inputs": {"source": [n, 0]}} for n in ("3", "5", "7")},
    }
    events, history = asyncio.run(_queue_and_watch(url, prompt))
    kinds = [event["type"] for event in events]
    assert "execution_error" not in kinds, [e for e in events if e["type"] == "execution_error"]
    assert history["status"]["status_str"] == "success"
    shown = {node: "".join(history["outputs"][node]["text"]) for node in ("p3", "p5", "p7")}
    assert "family='clip'" in shown["p3"] and "model='clip_vision_h'" in shown["p3"]
    assert "family='t5'" in shown["p5"] and "family='clip_text'" in shown["p7"]
