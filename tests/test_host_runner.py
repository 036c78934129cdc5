"""The headless runner on the real host: results never overwritten, outputs all or nothing, input files
by path, and a battery of bad inputs, each refused with one line naming the node and nothing written."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import PACK_DIR, tiny_overrides, write_video_without_frames
from test_host_pack import cli_in_process

IMAGE_TO_AUDIO = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def picture_prompt(prefixes=("pictures/x",), image=None):
    """Host nodes only: a picture (an input file, or an empty 8 x 8 one) saved under each prefix."""
    source = {"class_type": "LoadImage", "inputs": {"image": image}} if image else \
        {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFF0000}}
    prompt = {"1": source}
    for i, prefix in enumerate(prefixes):
        prompt[str(10 + i)] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}
    return prompt


def test_a_second_run_numbers_its_files_after_the_first_and_replaces_nothing(run_graph, tiny_models, tmp_path):
    out = tmp_path / "out"
    first = run_graph(IMAGE_TO_AUDIO, overrides={**tiny_overrides(tiny_models), "6.seed": 1}, out_dir=out)
    first_wav = next(p for ps in first.values() for p in ps if p.endswith(".wav"))
    first_bytes = open(first_wav, "rb").read()
    second = run_graph(IMAGE_TO_AUDIO, overrides={**tiny_overrides(tiny_models), "6.seed": 2}, out_dir=out)
    second_wav = next(p for ps in second.values() for p in ps if p.endswith(".wav"))
    assert os.path.basename(first_wav) == "image_to_audio_00001_.wav"
    assert os.path.basename(second_wav) == "image_to_audio_00002_.wav"
    assert open(first_wav, "rb").read() == first_bytes != open(second_wav, "rb").read()
    assert len([f for f in files_under(out) if f.endswith(".wav")]) == 2
    assert len([f for f in files_under(out) if f.endswith(".png")]) == 2


def test_files_of_one_prefix_keep_their_order_after_the_folders_own(run_graph, tmp_path):
    out = tmp_path / "out"
    (out / "pictures").mkdir(parents=True)
    (out / "pictures" / "x_00007_.png").write_bytes(b"earlier result")
    prompt = picture_prompt(("pictures/x",))
    prompt["2"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0x0000FF}}
    prompt["11"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pictures/x"}}
    written = run_graph(prompt, out_dir=out)
    names = sorted(os.path.basename(p) for ps in written.values() for p in ps)
    assert names == ["x_00008_.png", "x_00009_.png", "x_00010_.png"]
    assert (out / "pictures" / "x_00007_.png").read_bytes() == b"earlier result"


def test_an_output_folder_that_is_a_file_is_refused_before_running(host, tmp_path, capsys):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(picture_prompt()))
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    for out, expected in ((taken, f"output folder {taken}: it is a file; expected a folder (existing or to be made)"),
                          (taken / "sub", f"output folder {taken / 'sub'}: {taken} is a file, so the folder cannot be made")):
        code, stdout, stderr = cli_in_process(capsys, "run", str(path), "--out", str(out), "--cpu")
        assert code == 2 and stdout == ""
        assert stderr.strip().splitlines() == [f"error: {expected}"]
    assert taken.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["taken", "wf.json"]


def test_a_failure_while_moving_the_outputs_takes_back_the_ones_already_moved(run_graph, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    out = tmp_path / "out"
    out.mkdir()
    (out / "b").write_text("a file where the second output's folder would go")
    with pytest.raises(WorkflowError, match=r"could not save the outputs in .*out: .*b.*; nothing was written"):
        run_graph(picture_prompt(("a/x", "b/x")), out_dir=out)
    assert files_under(out) == ["b"]


def test_an_input_file_is_read_from_the_current_folder_first_then_the_hosts_input_folder(run_graph, host, tmp_path, monkeypatch):
    from comfyui_audiovisual.runner import WorkflowError

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    Image.new("RGB", (12, 10), (0, 200, 0)).save(here / "my_picture.png")
    written = run_graph(picture_prompt(image="my_picture.png"), out_dir=tmp_path / "out")
    saved = np.asarray(Image.open(written["10"][0]).convert("RGB"))
    assert saved.shape == (10, 12, 3) and (saved == [0, 200, 0]).all()
    # a name only the host's input folder holds (the example picture the pack copies there)
    written = run_graph(picture_prompt(image="audiovisual_example_scene.png"), out_dir=tmp_path / "out2")
    assert Image.open(written["10"][0]).size == (256, 256)
    input_dir = host.folder_paths.get_input_directory()
    with pytest.raises(WorkflowError) as e:
        run_graph(picture_prompt(image="missing.png"), out_dir=tmp_path / "out3")
    assert str(e.value) == (f"node 1 (LoadImage): input file 'missing.png' (image) not found in the current folder ({here}) "
                            f"nor in the host's input folder ({input_dir})")
    assert not (tmp_path / "out3").exists()
    assert not os.path.exists(os.path.join(input_dir, "my_picture.png"))  # nothing copied into the host's folder


BATTERY = {
    "nan_cfg": ({"6.cfg": float("nan")}, r"^node 6 \(AV_VisualEchoesSampler\): input 'cfg' is nan; expected a finite number$"),
    "infinite_temperature": ({"6.temperature": float("inf")}, r"^node 6 \(AV_VisualEchoesSampler\): input 'temperature' is inf; expected a finite number$"),
    "wav_prefix_outside_the_output_folder": (
        {"10.filename_prefix": "../escape"},
        r"^node 10 \(AV_SaveAudioWAV\): Save Audio \(WAV\): filename_prefix '\.\./escape' points outside the output folder; "
        r"give a file name, optionally with subfolders, inside it$"),
}


@pytest.mark.parametrize("case", sorted(BATTERY))
def test_bad_values_in_a_shipped_workflow_are_refused_by_node_and_write_nothing(run_graph, tiny_models, tmp_path, case):
    from comfyui_audiovisual.runner import WorkflowError

    overrides, expected = BATTERY[case]
    with pytest.raises(WorkflowError, match=expected) as e:
        run_graph(IMAGE_TO_AUDIO, overrides={**tiny_overrides(tiny_models), **overrides}, out_dir=tmp_path / "out")
    assert "av-run-" not in str(e.value)  # never the private run folder
    assert files_under(tmp_path) == []


def test_nan_given_on_the_command_line_exits_2_with_one_line(host, tiny_models, tmp_path, capsys):
    sets = [a for key, value in tiny_overrides(tiny_models).items() for a in ("--set", f"{key}={json.dumps(value)}")]
    code, stdout, stderr = cli_in_process(capsys, "run", IMAGE_TO_AUDIO, *sets, "--set", "6.cfg=NaN", "--out", str(tmp_path / "out"), "--cpu")
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == ["error: node 6 (AV_VisualEchoesSampler): input 'cfg' is nan; expected a finite number"]
    assert not (tmp_path / "out").exists()


def test_a_link_to_an_output_slot_the_node_lacks_is_named(run_graph, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    prompt = picture_prompt()
    prompt["10"]["inputs"]["images"] = ["1", 2]
    with pytest.raises(WorkflowError) as e:
        run_graph(prompt, out_dir=tmp_path / "out")
    assert str(e.value) == "node 10 (SaveImage): input 'images' is linked to output 2 of node 1 (EmptyImage), which has outputs: 0 IMAGE"
    assert not (tmp_path / "out").exists()


def test_ctrl_c_stops_the_run_within_a_step_and_writes_nothing(run_graph, tiny_models, tmp_path):
    """SIGINT while the sampler runs: the host's own interrupt, so the sampler stops at its next step."""
    from comfyui_audiovisual.runner import WorkflowError, run_workflow

    steps = []
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a shell's background job

    def press_ctrl_c_at_the_first_step(value, total, preview, prompt_id=None, node_id=None):
        steps.append(value)
        if len(steps) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(WorkflowError, match=r"^node 6 \(AV_VisualEchoesSampler\): interrupted; nothing was written$"):
        run_workflow(IMAGE_TO_AUDIO, overrides={**tiny_overrides(tiny_models), "6.steps": 30}, out_dir=str(tmp_path / "out"),
                     cpu=True, progress=press_ctrl_c_at_the_first_step)
    assert max(steps) < 30
    assert signal.getsignal(signal.SIGINT) is before  # the runner's handler is gone, the caller's is back
    assert not (tmp_path / "out").exists()


def test_train_help_lists_every_trainer(capsys):
    from comfyui_audiovisual.runner.cli import TRAINERS, main

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in TRAINERS)


def test_the_readme_example_with_a_picture_in_the_current_folder_runs_in_a_fresh_process_and_leaves_no_temp_folder(tmp_path):
    """`--set 1.image=my_picture.png` as the README shows it, from the folder holding the picture, on the
    embedded models; the process's temporary folders (its custom-nodes link, the run folder) are gone."""
    work, temp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    Image.open(os.path.join(PACK_DIR, "example_inputs", "audiovisual_example_scene.png")).save(work / "my_picture.png")
    env = dict(os.environ, PYTHONPATH="", TMPDIR=str(temp))
    result = subprocess.run([sys.executable, "-m", "comfyui_audiovisual", "run", IMAGE_TO_AUDIO, "--set", "1.image=my_picture.png",
                             "--set", "6.steps=2", "--out", "results", "--cpu"], cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout.split()
    assert any(p.endswith("image_to_audio_00001_.wav") for p in printed) and all(os.path.isfile(p) for p in printed)
    assert all(p.startswith(str(work / "results")) for p in printed)
    assert os.listdir(temp) == []


def _huge_picture(path):
    Image.new("1", (12000, 12000)).save(path)  # bilevel: small to write, 144 megapixels once decoded


def _long_wav(path):
    import wave

    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(b"\0\0" * 8000 * 601)


INPUT_FILES = {
    "huge_picture": ("LoadImage", "image", "huge.png", _huge_picture,
                     "input file 'huge.png' (image) is 12000 x 12000 pixels; the limit is 16.8 megapixels (4096 x 4096): shrink it first"),
    "not_a_picture": ("LoadImage", "image", "notes.png", lambda p: p.write_text("not a picture"),
                      "input file 'notes.png' (image) is not a picture that can be read"),
    "long_audio": ("LoadAudio", "audio", "long.wav", _long_wav,
                   "input file 'long.wav' (audio) is 601.0 s long; the limit is 600 s: cut it first (the pack's models take clips of 10 s at most)"),
    "video_without_frames": ("LoadVideo", "file", "silent.mp4", write_video_without_frames, "input file 'silent.mp4' (file) has no video"),
}


@pytest.mark.parametrize("case", sorted(INPUT_FILES))
def test_input_files_the_host_would_choke_on_are_refused_before_it_decodes_them(run_graph, tmp_path, monkeypatch, case):
    from comfyui_audiovisual.runner import WorkflowError

    class_type, input_name, file_name, make, expected = INPUT_FILES[case]
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    make(here / file_name)
    prompt = {"1": {"class_type": class_type, "inputs": {input_name: file_name}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    with pytest.raises(WorkflowError) as e:
        run_graph(prompt, out_dir=tmp_path / "out")
    assert str(e.value).startswith(f"node 1 ({class_type}): {expected}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("reader", ["AV_EncodeAudioTokens", "AV_AudioToMel"])
def test_a_silent_clip_is_refused_by_every_node_that_reads_a_sound(run_graph, tmp_path, monkeypatch, reader):
    """Audio to Tokens and Audio to Mel refuse a silent clip as the encoders, Encode Codec Tokens and Audio
    Transform do (a silent input is a muted track or a wrong file, not a sound to describe), naming the node."""
    import wave

    from comfyui_audiovisual.runner import WorkflowError

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with wave.open(str(here / "quiet.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(b"\0\0\0\0" * 16000)
    prompt = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "quiet.wav"}},
              "2": {"class_type": "AV_LoadVQTokenizer", "inputs": {"model_name": "synthav_spec_vq.safetensors"}},
              "3": {"class_type": reader, "inputs": {"audio": ["1", 0], **({"tokenizer": ["2", 0]} if reader == "AV_EncodeAudioTokens" else {})}},
              "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
    title = {"AV_EncodeAudioTokens": "Audio to Tokens", "AV_AudioToMel": "Audio to Mel"}[reader]
    with pytest.raises(WorkflowError, match=rf"^node 3 \({reader}\): {title}: audio: the clip is silent"):
        run_graph(prompt, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_video_template_marks_its_caption_as_the_examples_and_runs_without_it_when_bypassed(host):
    """The caption shipped names the example video's notes: its node says so, and bypassing it (as the
    title says) leaves VATT without a caption instead of failing."""
    from comfyui_audiovisual.runner.run import to_api_prompt

    workflow = json.load(open(os.path.join(PACK_DIR, "workflows", "video_to_audio.json"), encoding="utf-8"))
    caption = next(n for n in workflow["nodes"] if n["id"] == 12)
    assert caption["title"] == "Caption of the example video (edit, or Ctrl+B)"
    assert "describes the example video" in workflow["extra"]["description"]
    assert to_api_prompt(workflow, host=host)["6"]["inputs"]["text"] == ["12", 0]
    caption["mode"] = 4
    prompt = to_api_prompt(workflow, host=host)
    assert "12" not in prompt and "text" not in prompt["6"]["inputs"]


def test_serve_is_the_hosts_server_process_so_stopping_it_frees_the_port(tmp_path):
    """`serve` becomes the host's server (same process id, no child): stopping it by its id, as a service
    manager or `kill` does, leaves nothing running on the port."""
    import socket
    import time
    import urllib.request

    import psutil

    from conftest import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH="")
    with open(tmp_path / "serve.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "comfyui_audiovisual", "serve", "--port", str(port), "--cpu"],
                                   cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300  # a bail-out for a server that never answers, not a timing check
        while time.monotonic() < deadline:  # until the server answers, or the process ends (the assertion below says why)
            if process.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        # the address it prints opens the editor on the pack's default template (the frontend's ?template=&source=)
        url = next(w for w in (tmp_path / "serve.log").read_text().split() if w.startswith("http://"))
        assert url == f"http://127.0.0.1:{port}/?template=image_to_audio&source=comfyui-audiovisual"
        served = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/workflow_templates/comfyui-audiovisual/image_to_audio.json"))
        assert served == json.load(open(IMAGE_TO_AUDIO, encoding="utf-8"))
        assert psutil.Process(process.pid).children(recursive=True) == []
        assert any(c.laddr.port == port for c in psutil.Process(process.pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN)
        process.terminate()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nobody listens any more


def test_audio_to_tokens_analyses_only_the_seconds_its_tokenizer_takes(host, tiny_models):
    """A long clip gives the tokens and mel of its first seconds (the tokenizer's length), as the whole
    clip did; the cut comes before the analysis, so the mel front end never sees the rest."""
    import torch

    from comfyui_audiovisual.audio.mel_frontend import SPECVQGAN_MEL
    from comfyui_audiovisual.nodes.tokenizers import EncodeAudioTokens, LoadVQTokenizer, audio_to_mel01

    tokenizer = LoadVQTokenizer.execute(model_name=tiny_models["spec_vq"]).args[0]
    frames = tokenizer.native_mel_frames
    generator = torch.Generator().manual_seed(0)
    long_clip = {"waveform": 0.1 * torch.randn(1, 2, 44100 * 30, generator=generator), "sample_rate": 44100}
    head = {"waveform": long_clip["waveform"][..., :44100 * 4], "sample_rate": 44100}
    tokens_long, mel_long = EncodeAudioTokens.execute(tokenizer=tokenizer, audio=long_clip).args
    tokens_head, mel_head = EncodeAudioTokens.execute(tokenizer=tokenizer, audio=head).args
    assert torch.equal(tokens_long.indices, tokens_head.indices) and torch.equal(mel_long.mel01, mel_head.mel01)
    analysed = audio_to_mel01(long_clip, "test", max_frames=frames)
    seconds = analysed.shape[-1] * SPECVQGAN_MEL.hop_samples / SPECVQGAN_MEL.sample_rate_hz
    assert analysed.shape[-1] > frames and seconds < frames * SPECVQGAN_MEL.hop_samples / SPECVQGAN_MEL.sample_rate_hz + 1
    whole = audio_to_mel01(long_clip, "test")
    assert torch.allclose(analysed[..., :frames], whole[..., :frames], atol=1e-5)


def test_the_packs_nodes_refuse_nan_and_infinite_floats_from_any_client(host, tiny_models):
    """Over HTTP no runner checks the prompt: the node itself refuses (the host's range check lets NaN pass)."""
    from comfyui_audiovisual.runner.host import new_executor
    from comfyui_audiovisual.runner.run import _QuietServer, to_api_prompt

    import asyncio
    import uuid

    prompt = to_api_prompt(IMAGE_TO_AUDIO, tiny_overrides(tiny_models), host)
    prompt["6"]["inputs"]["cfg"] = float("nan")  # past the runner's own check, as a prompt POSTed to the server is
    ok, _, outputs, _ = asyncio.run(host.execution.validate_prompt(uuid.uuid4().hex, prompt, None))
    assert ok  # the host's validator accepts it
    executor = new_executor(host, _QuietServer())
    executor.execute(prompt, uuid.uuid4().hex, {}, outputs)
    assert not executor.success
    event, data = next((e, d) for e, d in executor.status_messages if e == "execution_error")
    assert data["node_id"] == "6" and data["exception_message"].strip() == "Visual Echoes Sampler: cfg is nan; expected a finite number"
    for name, cls in host.nodes.NODE_CLASS_MAPPINGS.items():
        if name.startswith("AV_"):
            assert getattr(cls, "_av_finite_floats", False), name


def test_a_host_save_node_refusing_a_prefix_names_the_output_folder_not_the_runs_own(run_graph, tmp_path):
    from comfyui_audiovisual.runner import WorkflowError

    with pytest.raises(WorkflowError) as e:
        run_graph(picture_prompt(("../outside/x",)), out_dir=tmp_path / "out")
    assert str(e.value) == (f"node 10 (SaveImage): the filename_prefix points outside the output folder ({tmp_path / 'out'}); "
                            "give a file name, optionally with subfolders, inside it")
    assert files_under(tmp_path) == []


def test_ctrl_c_on_the_command_line_exits_2_with_one_line_and_writes_nothing(tmp_path):
    """A real SIGINT to `run` in a fresh process, once the sampler has reported its first step (of 30):
    the host's interrupt stops it at its next step; exit 2, one error line, no output folder."""
    env = dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "comfyui_audiovisual", "run", IMAGE_TO_AUDIO, "--out", str(tmp_path / "out"), "--cpu"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = b""
    while b"] 1/30" not in seen:  # the progress bar's first step
        byte = process.stderr.read(1)
        assert byte, f"run ended before the sampler started: {seen.decode(errors='replace')[-2000:]}"
        seen += byte
    process.send_signal(signal.SIGINT)
    stdout, rest = process.communicate(timeout=600)
    errors = [line for line in (seen + rest).decode().replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert process.returncode == 2, (seen + rest).decode(errors="replace")[-2000:]
    assert errors == ["error: node 6 (AV_VisualEchoesSampler): interrupted; nothing was written"]
    assert stdout == b"" and not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_written_in_is_refused_before_running(host, tmp_path, capsys):
    """A folder without write permission (or, for root, whom permissions do not stop, a read-only file
    system such as Linux's /sys): refused before the graph runs, exit 2, one line."""
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = tempfile.mkstemp(dir=locked)
    except OSError:
        parent = locked
    else:
        os.close(probe[0])
        os.remove(probe[1])
        parent = "/sys"  # root writes through 0o500
        try:
            os.close(tempfile.mkstemp(dir=parent)[0])
            pytest.skip("no folder here refuses writes to this user")
        except OSError:
            pass
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(picture_prompt()))
    out = os.path.join(str(parent), "results")
    code, stdout, stderr = cli_in_process(capsys, "run", str(path), "--out", out, "--cpu")
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [f"error: output folder {out}: cannot write in {parent} (Permission denied)"]
    assert not os.path.exists(out)
