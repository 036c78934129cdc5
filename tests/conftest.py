"""Shared fixtures. Host tests run against the real ComfyUI that setup.sh installed."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS_DIR = os.path.join(PACK_DIR, "tests", "_artifacts")


def write_video_without_frames(path):
    """An .mp4 with an audio stream and no video stream: what a user gets from a muted-picture export."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run as fast on one thread, and far faster when other processes share the CPU."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def outside_the_host():
    """torch.load as a process without the host sees it: a booted host (comfy/utils.py) allows a few
    globals, Lightning's ModelCheckpoint among them, for every weights-only load in its process; they
    are taken away while the test runs, so it tests the pack's own allow-list whatever ran before."""
    import torch

    kept = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(kept)


@pytest.fixture(scope="session")
def host():
    """The real host, booted once in this process (CPU) with the pack loaded by its own loader."""
    from comfyui_audiovisual.runner import host as host_boot

    return host_boot.boot(cpu=True)


@pytest.fixture
def run_graph(host, tmp_path):
    """Runs a workflow (dict or path) through the host's executor; returns {node id: [paths]}."""
    from comfyui_audiovisual.runner import run_workflow

    def run(workflow, overrides=None, out_dir=None):
        return run_workflow(workflow, overrides=overrides, out_dir=str(out_dir or tmp_path / "out"), cpu=True, progress=None)

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The host's real server (main.py) on a free loopback port, with its own base directory."""
    from comfyui_audiovisual.runner.host_location import find_host_dir

    base = tmp_path_factory.mktemp("server-base")
    os.makedirs(base / "custom_nodes")
    os.symlink(PACK_DIR, base / "custom_nodes" / "comfyui-audiovisual")
    port = free_port()
    host_dir = find_host_dir()
    log_path = base / "server.log"
    command = [sys.executable, os.path.join(host_dir, "main.py"), "--listen", "127.0.0.1", "--port", str(port), "--cpu",
               "--disable-auto-launch", "--base-directory", str(base), "--database-url", "sqlite:///:memory:"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=host_dir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the host server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "/system_stats", timeout=2).read()
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"the host server did not answer within 120 s:\n{log_path.read_text()[-3000:]}")
    yield {"url": url, "port": port, "base": base, "log": log_path}
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def tiny_models(host, tmp_path_factory):
    """Tiny random pack models registered in the host's model folders; {role: file name}."""
    from tiny_pack_models import write_tiny_pack_models

    folder = tmp_path_factory.mktemp("tiny-models")
    names = write_tiny_pack_models(str(folder))
    for key in ("av_vq", "av_maskgen"):
        host.folder_paths.add_model_folder_path(key, str(folder))
    return names


@contextlib.contextmanager
def model_folders_added(host, folders=(), first=()):
    """Registers model folders with the host for a with-block (around a module fixture's yield) and takes each
    one back after, with the host's cached file lists of its key: other test files register models of the same
    names (test_host_audioldm's 'tiny-audioldm' has a text encoder, test_host_mapper's has not), and a file run
    later in the same session must find its own. folders: (key, path) pairs searched after the key's others;
    first: pairs searched before them (the host's is_default). A path already registered is left as it was."""
    folder_paths = host.folder_paths
    added = []
    for pairs, default in ((folders, False), (first, True)):
        for key, path in pairs:
            path = str(path)
            if path not in folder_paths.folder_names_and_paths.get(key, ([], set()))[0]:
                folder_paths.add_model_folder_path(key, path, is_default=default)
                added.append((key, path))
    try:
        yield
    finally:
        for key, path in added:
            folder_paths.folder_names_and_paths[key][0].remove(path)
            folder_paths.filename_list_cache.pop(key, None)  # else its files stay listed until a folder changes


def tiny_overrides(names: dict) -> dict:
    """--set overrides that point a shipped workflow at the tiny models (node ids from workflows/graphs.py)."""
    return {"2.model_name": names["image_vq"], "3.model_name": names["spec_vq"], "4.model_name": names["maskgen"], "6.steps": 4}


@pytest.fixture
def video_file(host):
    """A 2 s, 16 fps video in the host's input folder whose frames differ (a moving bright bar)."""
    import uuid

    import av
    import numpy as np

    name = f"av_test_encoders_{uuid.uuid4().hex[:8]}.mp4"
    path = os.path.join(host.folder_paths.get_input_directory(), name)
    with av.open(path, mode="w") as container:
        stream = container.add_stream("mpeg4", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.options = {"qscale": "2"}
        for i in range(32):
            frame = np.full((48, 64, 3), 40, dtype=np.uint8)
            frame[:, 2 * i:2 * i + 8] = (250, 200, 30)
            frame[: 1 + i, :, 2] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    yield name
    os.remove(path)
