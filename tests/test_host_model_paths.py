"""Shared model folders in headless runs: the host folder's extra_model_paths.yaml and
`run --extra-model-paths`, read as the host's own start-up reads them (issue 17)."""

import os
import shutil
import subprocess
import sys

import pytest

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED = os.path.join(PACK_DIR, "embedded_models")


def host_with_own_yaml(tmp_path, yaml_text: str) -> str:
    """A host folder (links to the real one's entries) that holds its own extra_model_paths.yaml."""
    from comfyui_audiovisual.runner.host_location import find_host_dir

    real = find_host_dir()
    host = tmp_path / "host"
    host.mkdir()
    for entry in os.listdir(real):
        if entry != "extra_model_paths.yaml":
            os.symlink(os.path.join(real, entry), host / entry)
    (host / "extra_model_paths.yaml").write_text(yaml_text)
    return str(host)


def run_cli(args, host_dir, cwd):
    env = {**os.environ, "COMFYUI_PATH": host_dir, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "comfyui_audiovisual", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_run_finds_models_in_folders_named_by_both_yaml_files(tmp_path):
    # shared tree A (named by the host folder's yaml, relative to a base_path) holds the image tokenizer,
    # tree B (named by --extra-model-paths) the transformer, each under a name no other folder has
    shared_a, shared_b = tmp_path / "shared_a", tmp_path / "shared_b"
    (shared_a / "models" / "audiovisual" / "vq").mkdir(parents=True)
    (shared_b / "maskgen").mkdir(parents=True)
    shutil.copy(os.path.join(EMBEDDED, "vq", "synthav_image_vq.safetensors"),
                shared_a / "models" / "audiovisual" / "vq" / "team_image_vq.safetensors")
    shutil.copy(os.path.join(EMBEDDED, "maskgen", "synthav_maskgen.safetensors"),
                shared_b / "maskgen" / "team_maskgen.safetensors")
    host = host_with_own_yaml(tmp_path, f"team:\n    base_path: {shared_a}\n    av_vq: models/audiovisual/vq\n")
    option = tmp_path / "more_paths.yaml"
    option.write_text("other:\n    av_maskgen: shared_b/maskgen\n")  # relative to the yaml's folder, as the host reads it
    workflow = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")
    overrides = ["--set", "2.model_name=team_image_vq.safetensors", "--set", "4.model_name=team_maskgen.safetensors",
                 "--set", "6.steps=2"]
    out = tmp_path / "out"

    missing = run_cli([workflow, *overrides, "--out", str(out), "--cpu"], host, tmp_path)
    assert missing.returncode == 2 and "team_maskgen.safetensors" in missing.stderr, missing.stderr[-2000:]
    assert "team_image_vq" not in missing.stderr  # the host folder's yaml was read: only the option's model is missing

    done = run_cli([workflow, *overrides, "--out", str(out), "--cpu", "--extra-model-paths", str(option)], host, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    written = done.stdout.split()
    assert any(path.endswith(".wav") and os.path.isfile(path) for path in written), done.stdout


def test_a_missing_or_malformed_yaml_is_one_line_naming_it(host, tmp_path, capsys):
    from comfyui_audiovisual.runner.cli import main

    workflow = os.path.join(PACK_DIR, "workflows", "image_to_audio.json")
    nowhere = tmp_path / "nowhere.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("team:\n  - av_vq\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("team: [unclosed\n")
    cases = ((nowhere, "does not exist"), (bad, "section 'team' is not a mapping of folder names to paths"),
             (broken, "is not readable YAML"))
    for path, expected in cases:
        capsys.readouterr()
        assert main(["run", workflow, "--cpu", "--out", str(tmp_path / "out"), "--extra-model-paths", str(path)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and expected in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_serve_passes_the_files_to_the_hosts_own_option(host, tmp_path, capsys):
    from comfy.cli_args import parser as host_parser  # the host's own command line (booted by conftest's host fixture)

    from comfyui_audiovisual.runner.cli import main
    from comfyui_audiovisual.runner.model_paths import host_arguments
    from comfyui_audiovisual.runner.serve import server_command

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("a:\n    av_vq: vq\n")
    second.write_text("b:\n    av_maskgen: maskgen\n")
    command = server_command(8188, True, host_arguments([str(first), str(second)]))
    parsed = host_parser.parse_args(command[2:])
    assert parsed.extra_model_paths_config == [[str(first), str(second)]]
    assert host_arguments([]) == []
    assert main(["serve", "--extra-model-paths", str(tmp_path / "missing.yaml")]) == 2  # refused before the host starts
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "missing.yaml' does not exist" in lines[0]


def test_folders_a_test_registers_are_taken_back_and_no_longer_listed(host, tmp_path):
    """conftest.model_folders_added, behind the module fixtures of test_host_vatt and test_host_mapper: a file run
    later in the same session lists and finds only its own models of the same names."""
    from conftest import model_folders_added

    folder_paths = host.folder_paths
    first, later = tmp_path / "first", tmp_path / "later"
    for folder in (first, later):
        folder.mkdir()
        (folder / f"probe_{folder.name}.safetensors").write_bytes(b"{}")
    before = {key: list(folder_paths.folder_names_and_paths[key][0]) for key in ("av_vatt", "av_codecs")}
    with model_folders_added(host, [("av_vatt", later)], first=[("av_codecs", first)]):
        assert folder_paths.folder_names_and_paths["av_vatt"][0][-1] == str(later)
        assert folder_paths.folder_names_and_paths["av_codecs"][0][0] == str(first)  # searched first
        assert "probe_later.safetensors" in folder_paths.get_filename_list("av_vatt")
        with model_folders_added(host, [("av_vatt", later)]):  # already registered: left to its owner
            pass
        assert "probe_later.safetensors" in folder_paths.get_filename_list("av_vatt")
    assert {key: folder_paths.folder_names_and_paths[key][0] for key in before} == before
    assert "probe_later.safetensors" not in folder_paths.get_filename_list("av_vatt")  # not from a stale file list
    assert folder_paths.get_full_path("av_codecs", "probe_first.safetensors") is None
