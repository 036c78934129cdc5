"""Safe reading and atomic writing of weight files.

Only data is ever read: `.safetensors` through safetensors, and pickled torch checkpoints
(`.ckpt`, `.pt`, `.pth`, `.bin`) only through `torch.load(..., weights_only=True)`, whose
unpickler refuses anything but tensors and plain containers. A pickle that would construct other
objects (and so could run code) is refused with a ValueError, never loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Mapping

import torch

SAFETENSORS_EXTENSIONS = (".safetensors",)
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")

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
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weight file")
    ext = os.path.splitext(path)[1].lower()
    if ext in SAFETENSORS_EXTENSIONS:
        return _read_safetensors(path)
    if ext in PICKLE_EXTENSIONS:
        return _read_torch_pickle(path)
    raise ValueError(
        f"{name}: unknown weight file extension {ext!r}; expected one of "
        f"{', '.join(SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS)}"
    )


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


def _retry_with_data_only_globals(path: str, error: Exception):
    name = os.path.basename(path)
    refusal = (
        f"{name}: not a plain weights checkpoint: its pickle would construct objects other than tensors "
        f"and plain containers, which could run code, so it was not loaded"
    )
    try:
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        raise ValueError(f"{refusal} ({_short_reason(error)})") from error
    if not needed or not needed <= _DATA_ONLY_GLOBALS:
        listed = ", ".join(sorted(needed - _DATA_ONLY_GLOBALS)[:5]) or _short_reason(error)
        raise ValueError(f"{refusal} (it needs: {listed})") from error
    allowed = [_import_global(qualified) for qualified in sorted(needed)] + _numeric_numpy_dtype_classes()
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
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
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
