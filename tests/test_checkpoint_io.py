"""The shared reader and writer of our own model files (loaders/checkpoint_io.py): weights + config
JSON in metadata "config" (or a config.json beside the file), every error naming the file."""

import json
import os
import re

import pytest
import torch
from safetensors.torch import save_file

from comfyui_audiovisual.loaders.checkpoint_io import (
    check_state_dict,
    file_fact,
    read_model_config,
    read_state_dict,
    save_model_file,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Tiny(torch.nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.proj = torch.nn.Linear(2, width)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def read(path, **options):
    _, metadata = read_state_dict(path)
    return read_model_config(path, metadata, **options)


def test_round_trip_keeps_config_and_metadata(tmp_path):
    model = Tiny()
    path = save_model_file(model, {"_class_name": "Tiny", "width": 3}, tmp_path / "tiny.safetensors",
                           {"steps": 12, "note": "hello"})
    state, metadata = read_state_dict(path)
    assert read_model_config(path, metadata, expected_class="Tiny") == {"_class_name": "Tiny", "width": 3}
    assert metadata["steps"] == "12" and metadata["note"] == "hello" and metadata["format"] == "pt"
    assert torch.equal(state["proj.weight"], model.proj.weight)
    check_state_dict(Tiny(), state, path.name)  # no problem: no error
    assert read(path, expected_class="Tiny", parse=lambda data: data["width"] * 2) == 6
    assert os.listdir(tmp_path) == ["tiny.safetensors"]  # written through a temporary name
    with pytest.raises(ValueError, match=r"tiny2\.safetensors: metadata key 'config' is reserved"):
        save_model_file(model, {}, tmp_path / "tiny2.safetensors", {"config": "{}"})
    assert not (tmp_path / "tiny2.safetensors").exists()


def test_wrong_class_name_names_the_file_and_the_expected_class(tmp_path):
    path = save_model_file(Tiny(), {"_class_name": "Other"}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"^other\.safetensors metadata 'config': holds a 'Other', expected a 'Tiny'$"):
        read(path, expected_class="Tiny")
    with pytest.raises(ValueError, match=r"other\.safetensors metadata 'config': holds a 'Other', expected 'Tiny' \(a tiny file\)"):
        read(path, expected_class="Tiny", what="'Tiny' (a tiny file)")
    with pytest.raises(ValueError, match=r"other\.safetensors.*expected a 'A' or 'B'"):
        read(path, expected_class=("A", "B"))
    bare = save_model_file(Tiny(), {"width": 3}, tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match=r"bare\.safetensors metadata 'config': holds a None, expected a 'Tiny'"):
        read(bare, expected_class="Tiny")
    assert read(bare, expected_class=("Tiny", None)) == {"width": 3}  # None: "_class_name" may be left out


def test_no_config_anywhere_names_the_file_and_where_it_looked(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"proj.weight": torch.zeros(3, 2)}, str(path))
    with pytest.raises(ValueError, match=r"^plain\.safetensors: no config found \(expected safetensors metadata "
                                         r"key 'config' or a config\.json beside the file\)$"):
        read(path, expected_class="Tiny")
    with pytest.raises(ValueError, match=r"^plain\.safetensors: not a tiny file: no config"):
        read(path, expected_class="Tiny", missing="not a tiny file: no config")
    assert read(path, expected_class="Tiny", missing=None) is None


def test_config_json_beside_the_file_is_used_and_named(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"proj.weight": torch.zeros(3, 2)}, str(path))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "Tiny", "width": 3}))
    assert read(path, expected_class="Tiny") == {"_class_name": "Tiny", "width": 3}
    assert read_model_config(path, None, expected_class="Tiny")["width"] == 3  # no metadata given: only beside
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "Other"}))
    beside = re.escape(str(tmp_path / "config.json"))
    with pytest.raises(ValueError, match=rf"^{beside}: holds a 'Other', expected a 'Tiny'"):
        read(path, expected_class="Tiny")
    # the file's own metadata wins over a config.json beside it
    own = save_model_file(Tiny(), {"_class_name": "Tiny", "width": 5}, tmp_path / "own.safetensors")
    assert read(own, expected_class="Tiny")["width"] == 5


def test_bad_json_and_a_refused_config_name_the_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    save_file({"proj.weight": torch.zeros(3, 2)}, str(path), metadata={"config": "{not json"})
    with pytest.raises(ValueError, match=r"^broken\.safetensors metadata 'config': invalid JSON"):
        read(path, expected_class="Tiny")
    save_file({"proj.weight": torch.zeros(3, 2)}, str(path), metadata={"config": "[1, 2]"})
    with pytest.raises(ValueError, match=r"^broken\.safetensors metadata 'config': holds a JSON list, expected a JSON object"):
        read(path, expected_class="Tiny")
    (tmp_path / "config.json").write_text("{")
    save_file({"proj.weight": torch.zeros(3, 2)}, str(path))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'config.json'))}: invalid JSON"):
        read(path, expected_class="Tiny")
    save_file({"w": torch.zeros(1)}, str(path), metadata={"config": '{"_class_name": "Tiny", "width": -1}'})

    def parse(data):
        raise ValueError(f"width must be positive, got {data['width']}")

    with pytest.raises(ValueError, match=r"^broken\.safetensors metadata 'config': width must be positive, got -1$"):
        read(path, expected_class="Tiny", parse=parse)


def test_state_dict_problems_name_the_file_and_the_key():
    model = Tiny()
    good = {k: v.clone() for k, v in model.state_dict().items()}
    missing = {k: v for k, v in good.items() if k != "proj.bias"}
    with pytest.raises(ValueError, match=r"^m\.safetensors: missing key 'proj\.bias' \(expected shape \(3,\)\)$"):
        check_state_dict(model, missing, "m.safetensors")
    shaped = {**good, "proj.weight": torch.zeros(4, 2)}
    with pytest.raises(ValueError, match=r"^s\.safetensors: key 'proj\.weight' has shape \(4, 2\), expected \(3, 2\)$"):
        check_state_dict(model, shaped, "s.safetensors")
    extra = {**good, "head.weight": torch.zeros(5)}
    with pytest.raises(ValueError, match=r"^u\.safetensors: unexpected key 'head\.weight' with shape \(5,\)$"):
        check_state_dict(model, extra, "u.safetensors")
    integer = {**good, "proj.bias": torch.zeros(3, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"^i\.safetensors: key 'proj\.bias' has dtype torch\.int64, expected a float dtype$"):
        check_state_dict(model, integer, "i.safetensors")
    nan = {**good, "proj.bias": torch.tensor([0.0, float("nan"), 1.0])}
    check_state_dict(model, nan, "n.safetensors")  # NaN is only refused when asked
    with pytest.raises(ValueError, match=r"^n\.safetensors: key 'proj\.bias' holds NaN or infinite values$"):
        check_state_dict(model, nan, "n.safetensors", finite=True)
    several = {k: v for k, v in extra.items() if k != "proj.bias"}
    with pytest.raises(ValueError, match=r"^x\.safetensors: missing key 'proj\.bias' .*\(and 1 more problems\)$"):
        check_state_dict(model, several, "x.safetensors")
    with pytest.raises(ValueError, match=r"^o\.ckpt: missing key 'linear\.b' "):  # named as in the original file
        check_state_dict(model, missing, "o.ckpt", names={"proj.bias": "linear.b"})
    with torch.device("meta"):
        on_meta = Tiny()
    check_state_dict(on_meta, good, "meta.safetensors")  # a model built on the meta device is a fine reference


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from comfyui_audiovisual.loaders.checkpoint_io import write_safetensors_atomic

    umask = os.umask(0o022)
    try:
        write_safetensors_atomic({"w": torch.zeros(2)}, tmp_path / "m.safetensors")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "m.safetensors").st_mode) == 0o644  # readable from a shared models folder


def test_file_fact_is_computed_once_per_file_as_it_is_now(tmp_path):
    """The one cache behind the listings' cheap checks (is_vq_entry, single_file_kind, vocoder_entry_kind)."""
    path = tmp_path / "entry.bin"
    path.write_bytes(b"one")
    calls = []

    def size(text):
        calls.append(text)
        return os.path.getsize(text)

    assert file_fact("test size", path, size) == 3
    assert file_fact("test size", str(path), size) == 3 and len(calls) == 1  # the same file: kept
    assert file_fact("test other", path, lambda text: "other") == "other"  # another fact about it: its own entry
    path.write_bytes(b"three")
    os.utime(path, ns=(1, 1))  # replaced (another size and time): read anew
    assert file_fact("test size", path, size) == 5 and len(calls) == 2
    assert file_fact("test size", tmp_path / "missing.bin", size) is None  # unreadable: the default, not computed
    assert file_fact("test size", tmp_path / "missing.bin", size, default=False) is False and len(calls) == 2
