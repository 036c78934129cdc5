"""The official VATT-LLaMA pipeline as nodes (issue 18), on tiny random models written where and as a user's
downloads lie (workflows/graphs.py's names): an eva-CLIP open_clip folder, a Vicuna-layout LLaMA folder
with its sentencepiece tokenizer, the Lightning checkpoint holding the converter (frozen base, q/v LoRA,
projector) beside the decoder, and AudioGen's audiocraft EnCodec package. The template runs headless and
over the host's HTTP API: video in, the converter's caption shown, a 16 kHz sound of the video's length
muxed back into it."""

import asyncio
import json
import os
import wave

import pytest
import torch

from conftest import PACK_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKFLOW = os.path.join(PACK_DIR, "workflows", "video_to_audio_vatt_official.json")
EXAMPLE_VIDEO_S = 4.0  # example_inputs/audiovisual_example_video.mp4
CHEAP = {"25.steps": 2, "22.max_new_tokens": 24}  # the graph as shipped otherwise


def write_official_release(models_dir) -> None:
    from comfyui_audiovisual.loaders.audiocraft_encodec import COMPRESSION_FILE
    from comfyui_audiovisual.workflows.graphs import OFFICIAL_CODEC, OFFICIAL_EVA_CLIP, OFFICIAL_LLM, OFFICIAL_VATT
    from tiny_audiocraft import write_compression_package
    from tiny_encoders import write_tiny_eva_clip
    from tiny_vatt import CODEC_LATENT, write_official_vatt_llama

    write_tiny_eva_clip(str(models_dir / OFFICIAL_EVA_CLIP), embed=768)
    write_official_vatt_llama(str(models_dir), str(models_dir / OFFICIAL_LLM), OFFICIAL_VATT, quiet_eos=True)  # captions of 24 tokens
    codec = models_dir / "audiovisual" / "codecs" / OFFICIAL_CODEC
    codec.mkdir(parents=True)
    write_compression_package(codec / COMPRESSION_FILE, dimension=CODEC_LATENT, n_q=4, bins=2048)


@pytest.fixture(scope="module")
def release(host, tmp_path_factory):
    base = tmp_path_factory.mktemp("vatt-official") / "models"
    write_official_release(base)
    for key, sub in (("clip_vision", "clip_vision"), ("text_encoders", "text_encoders"), ("av_vatt", "audiovisual/vatt"),
                     ("av_codecs", "audiovisual/codecs")):
        host.folder_paths.add_model_folder_path(key, str(base / sub))
    return base


def frames_of(path):
    with wave.open(str(path)) as f:
        return f.getframerate(), f.getnframes()


def test_the_template_carries_a_note_naming_the_four_downloads():
    from comfyui_audiovisual.runner.run import to_api_prompt
    from comfyui_audiovisual.workflows.graphs import OFFICIAL_CODEC, OFFICIAL_EVA_CLIP, OFFICIAL_LLM, OFFICIAL_VATT

    workflow = json.load(open(WORKFLOW))
    [note] = [n for n in workflow["nodes"] if n["type"] == "Note"]
    text = note["widgets_values"][0]
    for needed in (f"audiovisual/vatt/{OFFICIAL_VATT}", f"models/{OFFICIAL_LLM}/", f"models/{OFFICIAL_EVA_CLIP}/",
                   f"codecs/{OFFICIAL_CODEC}/compression_state_dict.bin"):
        assert needed in text, needed
    assert str(note["id"]) not in to_api_prompt(WORKFLOW)


def test_the_converter_node_lists_llama_folders_only(host, release, tmp_path):
    from tiny_encoders import write_config_only

    write_config_only(str(release / "text_encoders" / "not_a_llama"), "bert")  # a kind no loader lists
    required = host.nodes.NODE_CLASS_MAPPINGS["AV_VATTConverter"].INPUT_TYPES()["required"]
    llms = required["llm"][1]["options"] if isinstance(required["llm"][1], dict) and "options" in required["llm"][1] else required["llm"][0]
    assert "text_encoders/vicuna" in llms and not any("not_a_llama" in name for name in llms)


def test_the_template_runs_headless_caption_condition_and_sound(host, release, run_graph, tmp_path):
    """Video in: the converter's states of the video and its own caption condition the decoder, the WAV
    lasts the video's 4 s at 16 kHz and the video comes back with it."""
    from comfyui_audiovisual.encoders.vatt_converter import clip_frames, load_vatt_converter
    from comfyui_audiovisual.runner.run import to_api_prompt
    from comfyui_audiovisual.workflows.graphs import OFFICIAL_LLM, OFFICIAL_VATT
    from host_prompt import execute_prompt

    written = run_graph(WORKFLOW, overrides=CHEAP, out_dir=tmp_path / "out")
    assert frames_of(written["28"][0]) == (16000, int(EXAMPLE_VIDEO_S * 16000))
    import av

    with av.open(written["27"][0]) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        audio = next(s for s in container.streams if s.type == "audio")
        assert abs(float(audio.duration * audio.time_base) - EXAMPLE_VIDEO_S) < 0.1

    prompt = to_api_prompt(WORKFLOW, CHEAP)
    outputs, ui = execute_prompt(host, prompt, ["21", "22"])
    features, condition = outputs["21"], outputs["22"]
    [caption] = ui["22"]["text"]
    assert caption.strip()  # written by the converter, shown on the node
    assert condition.family == "vatt_converter" and abs(condition.duration_s - EXAMPLE_VIDEO_S) < 1e-6
    converter = load_vatt_converter(release / "audiovisual" / "vatt" / OFFICIAL_VATT, release / OFFICIAL_LLM, with_tokenizer=True)
    expected, _ = converter.condition(clip_frames(features.frame_vectors), caption)
    assert condition.vectors.shape == expected.shape and condition.vectors.shape[:2] != (1, 10)
    assert torch.allclose(condition.vectors, expected, atol=1e-5)

    typed = dict(CHEAP, **{"22.caption": "a dog barking in the park"})
    outputs, ui = execute_prompt(host, to_api_prompt(WORKFLOW, typed), ["22"])
    assert ui["22"]["text"] == ["a dog barking in the park"]
    expected, _ = converter.condition(clip_frames(features.frame_vectors), "a dog barking in the park")
    assert torch.allclose(outputs["22"].vectors, expected, atol=1e-5)


def test_bad_inputs_are_refused_by_node_and_file(host, release, run_graph, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError
    from comfyui_audiovisual.workflows.graphs import OFFICIAL_VATT

    vatt = release / "audiovisual" / "vatt"
    state = torch.load(vatt / OFFICIAL_VATT, weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in state.items() if "video_proj" not in k}}, vatt / "no_converter.ckpt")
    with pytest.raises(WorkflowError, match=r"VATT Converter \(official\): no_converter\.ckpt: no 'encoder\.base_model\.model\.model\.video_proj"):
        run_graph(WORKFLOW, overrides=dict(CHEAP, **{"22.checkpoint": "no_converter.ckpt"}), out_dir=tmp_path / "a")
    # CLIP-family features (not eva-CLIP's) are refused before the LLM loads
    from tiny_encoders import write_tiny_clip_vision

    write_tiny_clip_vision(str(release / "clip_vision" / "tiny_clip"))
    with pytest.raises(WorkflowError, match=r"VATT Converter \(official\): expected a EVA_CLIP embedding"):
        run_graph(WORKFLOW, overrides=dict(CHEAP, **{"20.encoder_name": "clip_vision/tiny_clip"}), out_dir=tmp_path / "b")


def test_the_template_runs_over_http(server):
    """As in the editor: the files in the server's models tree, the template queued with POST /prompt; the
    caption is in the node's ui output and the WAV lasts the video."""
    from test_host_http import _queue_and_watch

    from comfyui_audiovisual.runner.run import to_api_prompt

    base = server["base"]
    write_official_release(base / "models")
    prompt = to_api_prompt(WORKFLOW, CHEAP)
    events, history = asyncio.run(_queue_and_watch(server["url"], prompt))
    errors = [e["data"].get("exception_message") for e in events if e["type"] == "execution_error"]
    assert not errors and history["status"]["status_str"] == "success", errors
    assert history["outputs"]["22"]["text"][0].strip()
    wav = history["outputs"]["28"]["audio"][0]
    assert frames_of(base / "output" / wav["subfolder"] / wav["filename"]) == (16000, int(EXAMPLE_VIDEO_S * 16000))


def test_interrupting_the_caption_stops_it_and_writes_nothing(host, release, tmp_path):
    """The converter reports each caption token; an interruption at the first stops it there."""
    import comfy.model_management as mm

    from comfyui_audiovisual.runner import WorkflowError, run_workflow

    seen = []

    def interrupt_at_the_first_token(value, total, preview, prompt_id=None, node_id=None):
        # the converter is the first node of this graph to report (one report per caption token, of 24);
        # then the sampler (of its 2 steps)
        seen.append((value, total))
        mm.interrupt_current_processing(True)

    with pytest.raises(WorkflowError, match=r"node 22 \(AV_VATTConverter\): interrupted"):
        run_workflow(WORKFLOW, overrides=dict(CHEAP, **{"22.seed": 7}), out_dir=str(tmp_path / "out"), cpu=True,
                     progress=interrupt_at_the_first_token)
    assert seen == [(1, 24)]  # stopped after the first of 24 tokens
    assert not (tmp_path / "out").exists()
    assert not mm.processing_interrupted()


def test_the_template_runs_a_vatt_gemma_release_through_the_same_nodes(host, release, run_graph, tmp_path):
    """VATT-Gemma (a Gemma folder, 32 wide here, 2048 in the release): the same converter node and template with the
    checkpoint and the LLM switched; the Gemma converter's own instruction when none is typed."""
    from comfyui_audiovisual.encoders.vatt_converter import LAYOUTS
    from comfyui_audiovisual.runner.run import to_api_prompt
    from host_prompt import execute_prompt
    from tiny_vatt import write_official_vatt_llama

    write_official_vatt_llama(str(release), str(release / "text_encoders" / "gemma_2b"), "vatt_gemma.ckpt", gemma=True, quiet_eos=True)
    required = host.nodes.NODE_CLASS_MAPPINGS["AV_VATTConverter"].INPUT_TYPES()["required"]
    assert "text_encoders/gemma_2b" in str(required["llm"])
    gemma = dict(CHEAP, **{"22.checkpoint": "vatt_gemma.ckpt", "22.llm": "text_encoders/gemma_2b", "23.model_name": "vatt_gemma.ckpt"})
    written = run_graph(WORKFLOW, overrides=gemma, out_dir=tmp_path / "out")
    assert frames_of(written["28"][0]) == (16000, int(EXAMPLE_VIDEO_S * 16000))
    outputs, ui = execute_prompt(host, to_api_prompt(WORKFLOW, gemma), ["22"])
    assert ui["22"]["text"][0].strip() and outputs["22"].family == "vatt_converter"
    assert LAYOUTS["gemma"].instruction == "Imagine possible sounds for this video."
    # a LLaMA folder for the Gemma converter is refused by name before anything runs
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError, match=r"VATT Converter \(official\): vicuna: a 'llama' model; vatt_gemma\.ckpt is the converter of VATT-Gemma"):
        run_graph(WORKFLOW, overrides=dict(gemma, **{"22.llm": "text_encoders/vicuna"}), out_dir=tmp_path / "bad")


def test_a_bfloat16_llm_folder_computes_in_bfloat16_on_a_gpu(host, tmp_path):
    """Gemma's Hub folders are bfloat16 (float16 can overflow there): the node asks the host for bfloat16 on a GPU that
    has it; other folders get float16 on a GPU; on a CPU everything is float32."""
    from comfyui_audiovisual.nodes.device import compute_dtype
    from comfyui_audiovisual.nodes.vatt import _stored_dtype

    for name, written, expected in (("gemma", "bfloat16", torch.bfloat16), ("vicuna", "float16", torch.float32), ("none", None, torch.float32)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "x", **({"torch_dtype": written} if written else {})}))
        assert _stored_dtype(str(tmp_path / name)) == expected
    assert compute_dtype(torch.device("cpu"), torch.bfloat16) == torch.float32


def test_llm_weights_replaced_in_place_are_read_anew_by_the_converter(host, release, tmp_path):
    """The loaded converter is kept for the next run keyed by its checkpoint and its LLM folder as they are now
    (nodes.model_folders.load_once): new weights written over the LLM folder's model.safetensors (the checkpoint
    unchanged) give the states of the new weights, not the cached converter's."""
    import shutil

    from safetensors.torch import load_file, save_file

    from comfyui_audiovisual.encoders.vatt_converter import clip_frames, load_vatt_converter
    from comfyui_audiovisual.runner.run import to_api_prompt
    from comfyui_audiovisual.workflows.graphs import OFFICIAL_VATT
    from host_prompt import execute_prompt

    folder = release / "text_encoders" / "vicuna_in_place"
    shutil.copytree(release / "text_encoders" / "vicuna", folder)
    try:
        typed = dict(CHEAP, **{"22.caption": "rain on a tin roof", "22.llm": "text_encoders/vicuna_in_place"})
        prompt = to_api_prompt(WORKFLOW, typed)
        before = execute_prompt(host, prompt, ["21", "22"])[0]
        weights = load_file(str(folder / "model.safetensors"))
        save_file({k: v * 1.5 if v.dim() == 2 else v for k, v in weights.items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
        after = execute_prompt(host, prompt, ["21", "22"])[0]
        frames = clip_frames(before["21"].frame_vectors)
        old = load_vatt_converter(release / "audiovisual" / "vatt" / OFFICIAL_VATT, release / "text_encoders" / "vicuna", with_tokenizer=True)
        new = load_vatt_converter(release / "audiovisual" / "vatt" / OFFICIAL_VATT, folder, with_tokenizer=True)
        assert torch.allclose(before["22"].vectors, old.condition(frames, "rain on a tin roof")[0], atol=1e-5)
        expected = new.condition(frames, "rain on a tin roof")[0]
        assert (expected - before["22"].vectors).abs().max() > 1e-2  # the new weights give other states
        assert torch.allclose(after["22"].vectors, expected, atol=1e-5)
    finally:
        shutil.rmtree(folder)
