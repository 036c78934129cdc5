"""The pack in the host's real server: /object_info, POST /prompt, websocket progress, POST /interrupt."""

import asyncio
import json
import os
import uuid

import aiohttp
import numpy as np
import pytest

from conftest import PACK_DIR

WORKFLOW = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")


@pytest.fixture(scope="module")
def served(server):
    """The server with tiny models in its models/audiovisual folders and the workflow in API format."""
    from tiny_pack_models import write_tiny_pack_models

    names = write_tiny_pack_models(str(server["base"] / "models" / "audiovisual" / "vq"))
    os.makedirs(server["base"] / "models" / "audiovisual" / "maskgen", exist_ok=True)
    os.replace(server["base"] / "models" / "audiovisual" / "vq" / names["maskgen"], server["base"] / "models" / "audiovisual" / "maskgen" / names["maskgen"])
    return server, names


async def _get_json(session, url):
    async with session.get(url) as response:
        assert response.status == 200
        return await response.json()


async def _queue_and_watch(url, prompt, interrupt_after_progress=False, timeout_s=240):
    client_id = uuid.uuid4().hex
    events = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
            async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
                body = await response.json()
                assert response.status == 200, body
                prompt_id = body["prompt_id"]
            interrupted = False
            async with asyncio.timeout(timeout_s):
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    events.append(event)
                    data = event.get("data", {})
                    if event["type"] == "progress" and interrupt_after_progress and not interrupted and data.get("value", 0) >= 2:
                        async with session.post(f"{url}/interrupt", json={}) as r:
                            assert r.status == 200
                        interrupted = True
                    if event["type"] in ("execution_success", "execution_error", "execution_interrupted") and data.get("prompt_id") == prompt_id:
                        break
                    if event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                        break
        # The server stores the history just after it reports the end: poll for it, bounded.
        for _ in range(100):
            history = await _get_json(session, f"{url}/history/{prompt_id}")
            if prompt_id in history:
                break
            await asyncio.sleep(0.1)
    return events, history.get(prompt_id, {})


def _prompt_for(server, names, steps, batch_size):
    from comfyui_audiovisual.runner.run import to_api_prompt

    prompt = to_api_prompt(WORKFLOW, {"2.model_name": names["image_vq"], "3.model_name": names["spec_vq"], "4.model_name": names["maskgen"],
                                      "6.steps": steps, "6.batch_size": batch_size})
    return prompt


def test_object_info_lists_every_pack_node_with_category_and_tooltips(served):
    server, _ = served

    async def fetch():
        async with aiohttp.ClientSession() as session:
            return await _get_json(session, server["url"] + "/object_info")

    info = asyncio.run(fetch())
    ours = {name: node for name, node in info.items() if name.startswith("AV_")}
    assert {"AV_VisualEchoesSampler", "AV_LoadVQTokenizer", "AV_SaveAudioWAV", "AV_MelToAudio"} <= set(ours)
    for name, node in ours.items():
        assert node["category"].startswith("audiovisual/"), name
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{input_name}"


def test_prompt_runs_with_websocket_progress_and_writes_the_wav(served, host):
    server, names = served
    prompt = _prompt_for(server, names, steps=6, batch_size=1)
    events, history = asyncio.run(_queue_and_watch(server["url"], prompt))
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert any(p["max"] == 6 and p["value"] == 6 for p in progress), progress[-5:]
    outputs = history["outputs"]
    wav = outputs["10"]["audio"][0]
    assert wav["filename"].endswith(".wav")
    assert (server["base"] / "output" / wav["subfolder"] / wav["filename"]).is_file()


def test_interrupt_in_the_middle_of_a_run_writes_nothing(served, host):
    server, names = served
    output = server["base"] / "output"
    before = set(output.rglob("*")) if output.exists() else set()
    prompt = _prompt_for(server, names, steps=200, batch_size=32)
    prompt["10"]["inputs"]["filename_prefix"] = "interrupted/run"
    events, history = asyncio.run(_queue_and_watch(server["url"], prompt, interrupt_after_progress=True))
    types = [e["type"] for e in events]
    assert "execution_interrupted" in types, types[-10:]
    progress = [e["data"]["value"] for e in events if e["type"] == "progress" and e["data"].get("max") == 200]
    assert progress and max(progress) < 200  # stopped in the middle
    after = set(output.rglob("*")) if output.exists() else set()
    assert not [p for p in after - before if p.is_file()]
    assert not (output / "interrupted").exists()


def test_every_shipped_workflow_is_an_editor_template_with_a_thumbnail(server):
    """The host lists custom-node templates from the pack's workflows/ folder (Templates dialog);
    each one is served as a UI workflow, with the .jpg thumbnail the editor asks for beside it."""
    shipped = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(PACK_DIR, "workflows")) if n.endswith(".json"))

    async def fetch():
        async with aiohttp.ClientSession() as session:
            listing = await _get_json(session, f"{server['url']}/workflow_templates")
            assert sorted(listing.get("comfyui-audiovisual", [])) == shipped, listing
            for name in shipped:
                workflow = await _get_json(session, f"{server['url']}/api/workflow_templates/comfyui-audiovisual/{name}.json")
                assert workflow["nodes"] and workflow["links"], name
                async with session.get(f"{server['url']}/api/workflow_templates/comfyui-audiovisual/{name}.jpg") as response:
                    assert response.status == 200, name
                    assert (await response.read())[:3] == b"\xff\xd8\xff", name  # JPEG

    asyncio.run(fetch())


def test_a_video_without_pictures_is_refused_by_the_node_that_reads_it(server):
    """In the editor the host's Load Video accepts an audio-only file (the runner refuses it before the
    run, the server cannot): the pack's node that reads the frames names itself and the cause instead
    of the host's "tuple index out of range", and nothing is written."""
    import wave

    from conftest import write_video_without_frames

    input_dir = server["base"] / "input"
    input_dir.mkdir(exist_ok=True)
    write_video_without_frames(input_dir / "no_pictures.mp4")
    with wave.open(str(input_dir / "tone.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.sin(np.arange(16000) * 0.1) * 8000).astype("<i2").tobytes())
    output = server["base"] / "output"
    before = set(output.rglob("*")) if output.exists() else set()
    prompt = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "tone.wav"}},
              "2": {"class_type": "LoadVideo", "inputs": {"file": "no_pictures.mp4"}},
              "3": {"class_type": "AV_FitAudioToDuration", "inputs": {"audio": ["1", 0], "duration_s": 0.0, "video": ["2", 0]}},
              "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "no_pictures/run"}}}
    events, _history = asyncio.run(_queue_and_watch(server["url"], prompt))
    errors = [e["data"] for e in events if e["type"] == "execution_error"]
    assert errors, [e["type"] for e in events]
    assert errors[0]["node_id"] == "3"
    assert errors[0]["exception_message"].startswith("Fit Audio to Duration: the video has no video frames"), errors[0]["exception_message"]
    after = set(output.rglob("*")) if output.exists() else set()
    assert not [p for p in after - before if p.is_file()]


def test_every_node_that_reads_video_frames_names_itself_for_a_file_without_pictures(host, tmp_path):
    """Encode Video, VATT Video Features and Caption Video read frames through one function; the host's
    own video object (as Load Video gives it) fails inside it with the node's name and the cause."""
    from comfy_api.latest import InputImpl
    from conftest import write_video_without_frames

    from comfyui_audiovisual.nodes.video_input import sampled_video_frames

    write_video_without_frames(tmp_path / "no_pictures.mp4")
    video = InputImpl.VideoFromFile(str(tmp_path / "no_pictures.mp4"))
    for node in ("Encode Video", "VATT Video Features", "Caption Video"):
        with pytest.raises(ValueError, match=f"^{node}: the video has no video frames"):
            sampled_video_frames(video, None, None, 4.0, node)
