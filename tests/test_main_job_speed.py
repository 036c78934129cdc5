"""What the main job's speed-ups keep: the same seed gives the same sound whether or not a live preview
is decoded, headless runs decode none, and an editor that watches still gets one (issue 20, fast).
No timings here: benchmarks/main_job_benchmark.py prints them."""

import os

import pytest

from conftest import PACK_DIR

IMAGE_TO_AUDIO = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")
FEW_STEPS = {"6.steps": 5, "6.seed": 3}


def _sampler_module(host):
    """The module the host loaded the sampler node from (the host's loader names the pack itself)."""
    import sys

    return sys.modules[host.nodes.NODE_CLASS_MAPPINGS["AV_VisualEchoesSampler"].__module__]


def _run(tmp_path, name, progress):
    from comfyui_audiovisual.runner import run_workflow

    written = run_workflow(IMAGE_TO_AUDIO, overrides=FEW_STEPS, out_dir=str(tmp_path / name), cpu=True, progress=progress)
    wav = next(p for paths in written.values() for p in paths if p.endswith(".wav"))
    with open(wav, "rb") as f:
        return f.read()


def test_headless_runs_decode_no_preview_and_watched_runs_do_with_the_same_sound(host, tmp_path, monkeypatch):
    masked_generation = _sampler_module(host)
    decoded = []
    real_preview = masked_generation._preview
    monkeypatch.setattr(masked_generation, "_preview", lambda *a: decoded.append(1) or real_preview(*a))
    hook_previews = []

    def hook(value, total, preview, prompt_id=None, node_id=None):
        hook_previews.append(preview)

    assert not masked_generation.editor_is_watching()  # the runner starts no server
    headless = _run(tmp_path, "headless", hook)
    assert decoded == [] and len(hook_previews) == FEW_STEPS["6.steps"] and all(p is None for p in hook_previews)

    hook_previews.clear()
    monkeypatch.setattr(masked_generation, "editor_is_watching", lambda: True)
    monkeypatch.setattr(masked_generation, "PREVIEW_INTERVAL_S", 0.0)
    watched = _run(tmp_path, "watched", hook)
    assert len(decoded) == FEW_STEPS["6.steps"]
    kinds = [p[0] for p in hook_previews]
    assert kinds == ["JPEG"] * FEW_STEPS["6.steps"]
    width, height = hook_previews[-1][1].size
    assert width > 0 and height > 0
    assert watched == headless  # the preview is pure display: the same seed, the same WAV, byte for byte


def test_a_watched_run_previews_at_most_every_interval_and_always_the_last_step(host, tmp_path, monkeypatch):
    masked_generation = _sampler_module(host)
    previews = []
    monkeypatch.setattr(masked_generation, "editor_is_watching", lambda: True)
    monkeypatch.setattr(masked_generation, "PREVIEW_INTERVAL_S", 1e9)
    _run(tmp_path, "sparse", lambda value, total, preview, **kw: previews.append((value, preview is not None)))
    assert [value for value, shown in previews if shown] == [1, FEW_STEPS["6.steps"]]  # the first step, then the last


@pytest.mark.parametrize("sockets, expected", [(None, False), ({}, False), ({"client": object()}, True)])
def test_the_editor_watches_only_when_the_hosts_server_has_a_client(host, monkeypatch, sockets, expected):
    import sys
    import types

    editor_is_watching = _sampler_module(host).editor_is_watching
    server = types.ModuleType("server")
    server.PromptServer = type("PromptServer", (), {"instance": None if sockets is None else types.SimpleNamespace(sockets=sockets)})
    monkeypatch.setitem(sys.modules, "server", server)
    assert editor_is_watching() is expected


def test_a_second_run_reuses_the_loaded_models_and_gives_the_same_sound(host, tmp_path):
    import sys

    loader = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadMaskedTransformer"]
    tokenizer_loader = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadVQTokenizer"]
    first = _run(tmp_path, "first", None)
    model = loader.execute("synthav_maskgen.safetensors").result[0]
    tokenizer = tokenizer_loader.execute("synthav_spec_vq.safetensors").result[0]
    second = _run(tmp_path, "second", None)
    assert loader.execute("synthav_maskgen.safetensors").result[0] is model
    assert tokenizer_loader.execute("synthav_spec_vq.safetensors").result[0] is tokenizer
    assert second == first and not model.model.training
    assert next(model.model.parameters()).dtype.is_floating_point and next(model.model.parameters()).device.type == "cpu"
    assert sys.modules[loader.__module__].load_once is sys.modules[tokenizer_loader.__module__].load_once


def test_a_model_file_replaced_on_disk_is_read_anew(host, tmp_path):
    import shutil
    import sys

    loader = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadMaskedTransformer"]
    model_folders = sys.modules[loader.__module__.rsplit(".", 1)[0] + ".model_folders"]
    source = host.folder_paths.get_full_path_or_raise("av_maskgen", "synthav_maskgen.safetensors")
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(source, copy)
    calls = []

    def load(path):
        calls.append(path)
        return object()

    first = model_folders.load_once("test", str(copy), load)
    assert model_folders.load_once("test", str(copy), load) is first and len(calls) == 1
    with open(copy, "ab") as f:  # a different file at the same path
        f.write(b" ")
    second = model_folders.load_once("test", str(copy), load)
    assert second is not first and len(calls) == 2
    assert not [k for k in model_folders._LOADED if k[:2] == ("test", str(copy)) and model_folders._LOADED[k] is first]
    for i in range(model_folders.LOADED_CACHE_SIZE + 2):  # the cache stays bounded
        model_folders.load_once(f"test{i}", str(copy), load)
    assert len(model_folders._LOADED) <= model_folders.LOADED_CACHE_SIZE


def test_the_command_line_run_ends_at_once_yet_cleans_up_and_keeps_its_output(tmp_path):
    """`python -m comfyui_audiovisual run` skips the interpreter's teardown (os._exit after the atexit
    handlers): the files are complete, the paths printed, the exit code kept, the host's temp folders gone."""
    import subprocess
    import sys
    import wave

    temp = tmp_path / "tmp"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "comfyui_audiovisual", "run", IMAGE_TO_AUDIO, "--set", "6.steps=2",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.split()
    assert len(printed) == 2 and all(os.path.isfile(p) for p in printed)
    with wave.open(next(p for p in printed if p.endswith(".wav"))) as wav:
        assert wav.getnframes() > 0
    left = [p.name for p in temp.iterdir() if p.name.startswith("av-")]
    assert left == []  # the host's custom-nodes link folder (atexit) and the run folder were removed
    failed = subprocess.run([sys.executable, "-m", "comfyui_audiovisual", "run", str(tmp_path / "none.json")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 2 and "no such workflow file" in failed.stderr
