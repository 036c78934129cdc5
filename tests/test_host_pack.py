"""The pack inside the real host: loading, node schemas, the runner's errors."""

import json
import os
import subprocess
import sys

import pytest

from conftest import PACK_DIR


def pack_node_classes(host):
    return {name: cls for name, cls in host.nodes.NODE_CLASS_MAPPINGS.items() if name.startswith("AV_")}


def test_pack_loads_through_the_hosts_loader(host):
    classes = pack_node_classes(host)
    assert "AV_SaveAudioWAV" in classes
    # loaded by the host's custom-node loader, from this checkout
    assert any(os.path.realpath(d) == os.path.realpath(PACK_DIR) for d in host.nodes.LOADED_MODULE_DIRS.values())


def test_every_node_has_a_category_under_audiovisual_and_tooltips_on_every_input(host):
    from comfyui_audiovisual.nodes.extension import AudioVisualExtension  # noqa: F401  (importable outside too)

    classes = pack_node_classes(host)
    assert len(classes) >= 1
    for name, cls in classes.items():
        info = cls.GET_NODE_INFO_V1()
        assert info["category"].startswith("audiovisual/"), name
        assert info["description"], f"{name} has no description"
        for section in ("required", "optional"):
            for input_name, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run([sys.executable, "-m", "comfyui_audiovisual", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def cli_in_process(capsys, *args):
    from comfyui_audiovisual.runner.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


WAV_SINK = {"class_type": "AV_SaveAudioWAV", "inputs": {"filename_prefix": "x"}}

BAD_WORKFLOWS = {
    "unknown_type": ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, "node 1 (NoSuchNode): unknown node type 'NoSuchNode'"),
    "missing_input": ({"1": dict(WAV_SINK)}, "node 1 (AV_SaveAudioWAV): Required input is missing: audio"),
    "dangling_link": ({"1": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["7", 0], "filename_prefix": "x"}}},
                      "node 1 (AV_SaveAudioWAV): input 'audio' is linked to node 7, which is not in the workflow"),
    "cycle": ({"1": {"class_type": "AudioConcat", "inputs": {"audio1": ["2", 0], "audio2": ["2", 0], "direction": "after"}},
               "2": {"class_type": "AudioConcat", "inputs": {"audio1": ["1", 0], "audio2": ["1", 0], "direction": "after"}},
               "3": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["1", 0], "filename_prefix": "x"}}},
              "the workflow has a cycle"),
}


@pytest.mark.parametrize("case", sorted(BAD_WORKFLOWS))
def test_runner_errors_exit_2_with_one_line_and_write_nothing(host, tmp_path, capsys, case):
    workflow, expected = BAD_WORKFLOWS[case]
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow))
    out = tmp_path / "out"
    code, stdout, stderr = cli_in_process(capsys, "run", str(path), "--out", str(out), "--cpu")
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], stderr
    assert stdout == ""
    assert not out.exists() or not any(out.rglob("*"))


def test_malformed_json_fails_in_a_fresh_process_with_exit_2(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"1": {"class_type": ')
    result = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--cpu", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "broken.json: not valid JSON" in lines[0]
    assert not (tmp_path / "out").exists()
