"""Safe reading and atomic writing of weight files, and the one way to read and write our own model files.

Only data is ever read: `.safetensors` through safetensors, and pickled torch checkpoints
(`.ckpt`, `.pt`, `.pth`, `.bin`) only through `torch.load(..., weights_only=True)`, whose
unpickler refuses anything but tensors and plain containers; a second try allows only an exact list
of data-only globals (numpy arrays and scalars, paths) and Lightning's ModelCheckpoint class name (as
an inert stand-in; taming / SpecVQGAN releases carry it). A pickle that would construct other
objects (and so could run code) is refused with a ValueError, never loaded.

Our own model files (one safetensors file = one model) carry their config as JSON in the metadata
key "config" (a `config.json` beside the file is accepted too), with a "_class_name" saying what
model it is: `save_model_file` writes one, `read_model_config` reads and checks the config, and
`check_state_dict` checks the weights against the model built from it; every error names the file.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

SAFETENSORS_EXTENSIONS = (".safetensors",)
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
CONFIG_METADATA_KEY = "config"  # our model files: the config JSON's metadata key
_RESERVED_METADATA_KEYS = (CONFIG_METADATA_KEY, "format")

# Globals that only rebuild plain data (numpy arrays / scalars, paths). Old Lightning checkpoints
# sometimes hold these beside the weights (callback state, hyper-parameters). Anything else in a
# pickle makes the file "not a plain weights checkpoint".
_DATA_ONLY_GLOBALS = {
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
}


class _LightningModelCheckpointName:
    """Stands in, by name only, for `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`.

    Lightning 1.0-1.2 (taming-transformers and SpecVQGAN release checkpoints) pickle that class as
    the key of the callback state: `{"callbacks": {ModelCheckpoint: {...}}}`. The unpickler gets this
    empty class in its place (Lightning is never imported); it has no methods, so nothing in the
    file can make it run code.
    """


# Exact pickle global names -> the inert stand-ins the unpickler gets for them.
_STAND_IN_GLOBALS = {
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": _LightningModelCheckpointName,
}


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a weight file, on the CPU.

    Args:
        path: a `.safetensors` file, or a torch pickle (`.ckpt`/`.pt`/`.pth`/`.bin`). A Lightning
            checkpoint ({"state_dict": {...}, "epoch": ..., ...}) is unwrapped to its state dict.

    Returns:
        (state_dict, metadata): name -> tensor, and str -> str metadata (safetensors header
        metadata; for a pickle, the top-level scalar entries such as "epoch", "global_step").

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, unreadable file, a pickle that is not plain weights, or no
            tensors in it.
    """
    path, name, ext = _weight_file(path)
    if ext in SAFETENSORS_EXTENSIONS:
        return _read_safetensors(path)
    if ext in PICKLE_EXTENSIONS:
        return _read_torch_pickle(path)
    raise ValueError(
        f"{name}: unknown weight file extension {ext!r}; expected one of "
        f"{', '.join(SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS)}"
    )


def holds_key(path: str | os.PathLike, match, needle: bytes) -> bool:
    """Whether a weights file holds a tensor whose key name satisfies `match`, read cheaply for listing
    loaders: a safetensors header's key names; in a torch zip the pickle's bytes are searched for `needle`
    (never unpickled); a legacy (non-zip) pickle through `read_state_dict` (weights-only). False for files
    of other extensions and unreadable ones (the loader says why when it is asked to load them)."""
    import zipfile

    text = os.fspath(path)
    ext = os.path.splitext(text)[1].lower()
    try:
        if ext in SAFETENSORS_EXTENSIONS:
            from safetensors import safe_open

            with safe_open(text, framework="pt", device="cpu") as handle:
                return any(match(key) for key in handle.keys())
        if ext not in PICKLE_EXTENSIONS:
            return False
        if zipfile.is_zipfile(text):
            with zipfile.ZipFile(text) as archive:
                pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
                return bool(pickles) and needle in archive.read(pickles[0])
        state_dict, _ = read_state_dict(text)
        return any(match(key) for key in state_dict)
    except Exception:  # unreadable: not listed
        return False


def file_stamp(path: str) -> tuple:
    """A file's size and modification time; a folder's (name, size, time) of its files. What caches of
    things read from a file are keyed by (with its absolute path), so a file replaced on disk is read anew."""
    if os.path.isdir(path):
        return tuple(sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
                            for entry in os.scandir(path) if entry.is_file()))
    stat = os.stat(path)
    return (stat.st_size, stat.st_mtime_ns)


_FILE_FACTS: dict[tuple, object] = {}


def file_fact(what: str, path: str | os.PathLike, compute: Callable[[str], object], default=None):
    """`compute(path)` once per process for a file as it is now, for cheap checks repeated on every listing
    (whether a file is a VQ checkpoint, which encoder or vocoder it holds): kept, keyed by `what`, the
    file's absolute path and `file_stamp`. `default` (not cached) when the path cannot be stat'ed."""
    text = os.fspath(path)
    try:
        key = (what, os.path.abspath(text), file_stamp(text))
    except OSError:
        return default
    if key not in _FILE_FACTS:
        _FILE_FACTS[key] = compute(text)
    return _FILE_FACTS[key]


def _weight_file(path: str | os.PathLike) -> tuple[str, str, str]:
    """(path, file name, lower-case extension) of an existing weight file, or FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weight file")
    return path, os.path.basename(path), os.path.splitext(path)[1].lower()


def read_state_dict_subset(
    path: str | os.PathLike, select: Callable[[list[str]], "set[str] | list[str]"]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Like `read_state_dict`, but only the tensors whose names `select(all names)` returns are read
    into memory: a safetensors file is opened and read key by key; a torch pickle is loaded with
    `mmap=True` (its tensors stay in the file until touched) and only the selected ones are kept.
    So a decoder stored beside a large frozen LLM costs the decoder's size in RAM, not the file's.
    (A pickle in torch's pre-1.6 format cannot be mapped and is read whole.)

    Raises FileNotFoundError, or ValueError naming the file: unknown extension, a truncated or damaged
    file, a pickle that is not plain weights, no tensors.
    """
    path, name, ext = _weight_file(path)
    if ext in SAFETENSORS_EXTENSIONS:
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt", device="cpu") as handle:
                metadata = dict(handle.metadata() or {})
                keys = list(handle.keys())
                wanted = set(select(keys))
                tensors = {key: handle.get_tensor(key) for key in keys if key in wanted}
        except Exception as error:  # safetensors raises its own error types for a bad or short file
            raise ValueError(f"{name}: not a readable safetensors file, truncated or damaged ({_short_reason(error)}; "
                             f"{os.path.getsize(path)} bytes on disk); download it again") from error
        return tensors, metadata
    if ext not in PICKLE_EXTENSIONS:
        raise ValueError(f"{name}: unknown weight file extension {ext!r}; expected one of "
                         f"{', '.join(SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS)}")
    import zipfile

    mmap = zipfile.is_zipfile(path)
    if not mmap and _looks_like_truncated_zip(path):
        raise ValueError(f"{name}: the checkpoint is truncated or damaged (a torch zip archive without its end "
                         f"record; {os.path.getsize(path)} bytes on disk); download it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        obj = _retry_with_data_only_globals(path, error, mmap=mmap)
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{name}: not a readable torch checkpoint, truncated or damaged ({_short_reason(error)}; "
                         f"{os.path.getsize(path)} bytes on disk)") from error
    tensors, metadata = _unwrap(obj, name)
    wanted = set(select(list(tensors)))
    # The selected tensors stay backed by the file's private mapping, as safetensors' are: their pages are read
    # when first used (moving the model to a device or dtype copies them); the rest are never touched.
    kept = {key: value for key, value in tensors.items() if key in wanted}
    del obj, tensors
    return kept, metadata


def _looks_like_truncated_zip(path: str) -> bool:
    """A file that starts like a zip archive (torch's format since 1.6) but has no readable end record."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    name = os.path.basename(path)
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(path, framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    except Exception as error:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{name}: not a readable safetensors file ({error})") from error
    return tensors, metadata


def _read_torch_pickle(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    name = os.path.basename(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as error:
        obj = _retry_with_data_only_globals(path, error)
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{name}: not a readable torch checkpoint ({error})") from error
    return _unwrap(obj, name)


def _retry_with_data_only_globals(path: str, error: Exception, mmap: bool = False):
    name = os.path.basename(path)
    refusal = (
        f"{name}: not a plain weights checkpoint: its pickle would construct objects other than tensors "
        f"and plain containers, which could run code, so it was not loaded"
    )
    try:
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        raise ValueError(f"{refusal} ({_short_reason(error)})") from error
    harmless = _DATA_ONLY_GLOBALS | set(_STAND_IN_GLOBALS)
    if not needed or not needed <= harmless:
        listed = ", ".join(sorted(needed - harmless)[:5]) or _short_reason(error)
        raise ValueError(f"{refusal} (it needs: {listed})") from error
    allowed = [(_STAND_IN_GLOBALS[qualified], qualified) if qualified in _STAND_IN_GLOBALS else _import_global(qualified)
               for qualified in sorted(needed)] + _numeric_numpy_dtype_classes()
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as second:
        raise ValueError(f"{refusal} ({_short_reason(second)})") from second


def _numeric_numpy_dtype_classes() -> list:
    """numpy's numeric dtype classes (numpy >= 1.25 pickles arrays and scalars with them); not object/void."""
    try:
        import numpy.dtypes as dtypes
    except ImportError:
        return []
    return [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and n not in ("ObjectDType", "VoidDType")]


def _short_reason(error: Exception) -> str:
    """The useful line of torch's long weights-only refusal message."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip().split("\n\n")[0].strip()
    return text.splitlines()[0] if text else type(error).__name__


def _import_global(qualified: str):
    import importlib

    module_name, _, attr = qualified.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def _unwrap(obj, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{name}: expected a dict of tensors (a state dict), found a {type(obj).__name__}")
    metadata = {
        str(key): str(value)
        for key, value in obj.items()
        if isinstance(value, (str, int, float, bool)) and not isinstance(value, torch.Tensor)
    }
    inner = obj.get("state_dict") if isinstance(obj.get("state_dict"), Mapping) else obj
    tensors = {str(key): value for key, value in inner.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{name}: holds no tensors; expected a state dict (or a Lightning checkpoint with 'state_dict')")
    return tensors, metadata


def write_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, object] | None = None
) -> None:
    """Write `tensors` to `path` as safetensors through a temporary file in the same folder + rename.

    Metadata values that are not strings are stored as JSON. Tensors are moved to the CPU and made
    contiguous; tensors sharing storage are copied (safetensors refuses shared storage).
    """
    from safetensors.torch import save_file

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prepared: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{os.path.basename(path)}: value of {key!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if pointer is not None and pointer in seen_storage:
            tensor = tensor.clone()
        elif pointer is not None:
            seen_storage.add(pointer)
        prepared[key] = tensor
    text_metadata = {
        str(key): value if isinstance(value, str) else json.dumps(value) for key, value in (metadata or {}).items()
    }
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    os.close(handle)
    try:
        save_file(prepared, temporary, metadata=text_metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; the finished file gets the usual permissions
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def torch_save_atomic(obj, path: str | os.PathLike) -> None:
    """`torch.save` a training state (tensors, numbers, strings, lists and dicts only, so that
    `torch.load(weights_only=True)` reads it back) through a temporary file + rename: an
    interruption leaves the previous state, never half a file."""
    path = os.fspath(path)
    temporary = path + ".tmp"
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


# ---------------------------------------------------------------------------------------------
# our own model files: weights + config JSON in the metadata


def save_model_file(
    model_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
    config: Mapping[str, object],
    path: str | os.PathLike,
    extra_metadata: Mapping[str, object] | None = None,
    *,
    format: str = "pt",
) -> Path:
    """Write one model file: the weights, `config` as JSON in metadata "config" (include its
    "_class_name"), metadata "format" and `extra_metadata` (non-strings stored as JSON), through a
    temporary file + rename. The keys "config" and "format" are reserved."""
    path = Path(path)
    metadata: dict[str, object] = {"format": format, CONFIG_METADATA_KEY: json.dumps(dict(config))}
    for key, value in (extra_metadata or {}).items():
        if str(key) in _RESERVED_METADATA_KEYS:
            raise ValueError(f"{path.name}: metadata key {str(key)!r} is reserved (the file's {key} is written by the saver)")
        metadata[str(key)] = value
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    write_safetensors_atomic(state, path, metadata)
    return path


def read_folder_config(folder: str | os.PathLike, what: str, expected: str) -> dict:
    """The config.json of a transformers / diffusers model folder, as a dict.

    Raises FileNotFoundError when the folder ("<what> folder '...' does not exist") or its config.json
    ("... has no config.json; expected <expected>") is missing, ValueError when the file is not a
    JSON object; every message names the path.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} folder '{folder}' does not exist; expected {expected}")
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{folder}' has no config.json; expected {expected}")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def read_model_config(
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
    *,
    expected_class: str | tuple[str | None, ...],
    what: str | None = None,
    parse: Callable[[dict], object] | None = None,
    missing: str | None = "no config found",
):
    """The config of our model file `path`: the JSON in `metadata["config"]` (its safetensors
    metadata, from `read_state_dict`), else a `config.json` beside the file.

    Args:
        expected_class: the "_class_name" the config must hold; a tuple accepts any of them, and
            None in it accepts a config without "_class_name".
        what: what the file should hold, as the class-mismatch error says it after "expected"
            (default: "a '<class name>'").
        parse: turns the JSON object into the caller's config (e.g. `SomeConfig.from_dict`); its
            TypeError / ValueError come back as a ValueError naming where the config came from.
        missing: how the error starts when there is no config at all; None: return None then (the
            caller tries another layout).

    Returns:
        `parse(data)`, or the dict itself without `parse` (None only with `missing=None`).

    Raises:
        ValueError: no config (naming the file and both places looked at), invalid JSON, another
            "_class_name", or a config `parse` refuses; naming the file (and metadata key) or the
            config.json it came from.
    """
    path = Path(path)
    source, text = None, None
    if metadata and CONFIG_METADATA_KEY in metadata:
        source, text = f"{path.name} metadata '{CONFIG_METADATA_KEY}'", metadata[CONFIG_METADATA_KEY]
    elif path.with_name("config.json").is_file():
        source, text = str(path.with_name("config.json")), path.with_name("config.json").read_text(encoding="utf-8")
    if text is None:
        if missing is None:
            return None
        raise ValueError(f"{path.name}: {missing} (expected safetensors metadata key '{CONFIG_METADATA_KEY}' "
                         f"or a config.json beside the file)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: invalid JSON ({error})") from error
    accepted = expected_class if isinstance(expected_class, tuple) else (expected_class,)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: holds a JSON {type(data).__name__}, expected a JSON object (the model's config)")
    class_name = data.get("_class_name")
    if class_name not in accepted:
        named = " or ".join(repr(name) for name in accepted if name is not None)
        raise ValueError(f"{source}: holds a {class_name!r}, expected {what or 'a ' + named}")
    if parse is None:
        return data
    try:
        return parse(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from error


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def check_state_dict(
    expected: torch.nn.Module | Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    finite: bool = False,
    names: Mapping[str, str] | None = None,
) -> None:
    """Check `state` against the state dict of `expected` (a module, on the meta device is fine)
    before any weight is used.

    Args:
        source: how the errors name the file (e.g. `path.name`).
        finite: also refuse NaN / infinite values.
        names: how the errors name a key (e.g. its name in the original checkpoint), when not itself.

    Raises:
        ValueError: "<source>: missing key '<k>' (expected shape (..))", "<source>: key '<k>' has
            shape (..), expected (..)", a non-float tensor where a float one is expected, NaN (with
            `finite`), "<source>: unexpected key '<k>' with shape (..)"; the first problem, with how
            many more there are.
    """
    reference = expected.state_dict() if isinstance(expected, torch.nn.Module) else expected
    names = names if names is not None else {}  # a mapping with a fallback .get may be empty
    problems = []
    for key, tensor in reference.items():
        name = names.get(key, key)
        found = state.get(key)
        if found is None:
            problems.append(f"{source}: missing key '{name}' (expected shape {_shape(tensor.shape)})")
        elif tuple(found.shape) != tuple(tensor.shape):
            problems.append(f"{source}: key '{name}' has shape {_shape(found.shape)}, expected {_shape(tensor.shape)}")
        elif tensor.is_floating_point() and not found.is_floating_point():
            problems.append(f"{source}: key '{name}' has dtype {found.dtype}, expected a float dtype")
        elif finite and found.is_floating_point() and not bool(torch.isfinite(found).all()):
            problems.append(f"{source}: key '{name}' holds NaN or infinite values")
    problems += [f"{source}: unexpected key '{names.get(key, key)}' with shape {_shape(state[key].shape)}"
                 for key in state if key not in reference]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)
