"""Save and load SeeingSounds :class:`AudioAdapter` files (one safetensors file = one adapter).

The config travels in the safetensors metadata under ``"config"`` (JSON); a ``config.json``
beside the file is accepted too. Other metadata (training figures, data source) is kept as
strings and returned by :func:`read_adapter_metadata`. Every key and shape is checked before a
weight is used; errors name the file and the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from ..networks.audio_adapter import AudioAdapter, AudioAdapterConfig
from .checkpoint_io import read_state_dict, write_safetensors_atomic

__all__ = ["CONFIG_METADATA_KEY", "save_audio_adapter", "load_audio_adapter", "read_adapter_config", "read_adapter_metadata"]

CONFIG_METADATA_KEY = "config"
CLASS_NAME = "AudioAdapter"

PathLike = Union[str, os.PathLike]


def read_adapter_config(path: PathLike, metadata: Optional[Dict[str, str]] = None) -> AudioAdapterConfig:
    """The adapter config of ``path``: metadata ``"config"`` first, then ``config.json`` beside it."""
    path = Path(path)
    source, text = None, None
    if metadata and CONFIG_METADATA_KEY in metadata:
        source, text = f"{path.name} metadata '{CONFIG_METADATA_KEY}'", metadata[CONFIG_METADATA_KEY]
    else:
        beside = path.with_name("config.json")
        if beside.is_file():
            source, text = str(beside), beside.read_text(encoding="utf-8")
    if text is None:
        raise ValueError(f"{path.name}: no adapter config found (expected safetensors metadata key "
                         f"'{CONFIG_METADATA_KEY}' or a config.json beside the file)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: invalid JSON ({error})") from error
    class_name = data.get("_class_name") if isinstance(data, dict) else None
    if class_name != CLASS_NAME:
        raise ValueError(f"{source}: holds a {class_name!r}, expected {CLASS_NAME!r} (is this an audio adapter file?)")
    try:
        return AudioAdapterConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from error


def read_adapter_metadata(path: PathLike) -> Dict[str, str]:
    """The string metadata of an adapter file (without the config)."""
    _, metadata = read_state_dict(path)
    return {k: v for k, v in metadata.items() if k != CONFIG_METADATA_KEY}


def save_audio_adapter(adapter: AudioAdapter, path: PathLike, extra_metadata: Optional[Dict[str, object]] = None) -> Path:
    """Write ``adapter`` (weights + config in metadata) to ``path`` via a temporary file + rename.
    ``extra_metadata`` values are stored as strings (non-strings JSON-encoded)."""
    path = Path(path)
    metadata = {"format": "pt", CONFIG_METADATA_KEY: json.dumps({"_class_name": CLASS_NAME, **adapter.config.to_dict()})}
    for key, value in (extra_metadata or {}).items():
        if key == CONFIG_METADATA_KEY:
            raise ValueError(f"save_audio_adapter: metadata key '{CONFIG_METADATA_KEY}' is reserved")
        metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
    write_safetensors_atomic(adapter.state_dict(), path, metadata)
    return path


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def load_audio_adapter(path: PathLike, device: Union[str, torch.device] = "cpu") -> AudioAdapter:
    """Load an :class:`AudioAdapter` in eval mode (float32).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, missing/invalid config, missing, unexpected or misshapen key,
            non-finite weights (the message names the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio adapter file not found")
    state, metadata = read_state_dict(path)
    config = read_adapter_config(path, metadata)
    with torch.device("meta"):
        adapter = AudioAdapter(config)
    expected = {key: value.shape for key, value in adapter.state_dict().items()}
    problems = []
    for key, shape in expected.items():
        if key not in state:
            problems.append(f"{path.name}: missing key '{key}' (expected shape {_shape(shape)})")
        elif tuple(state[key].shape) != tuple(shape):
            problems.append(f"{path.name}: key '{key}' has shape {_shape(state[key].shape)}, expected {_shape(shape)}")
        elif not state[key].is_floating_point():
            problems.append(f"{path.name}: key '{key}' has dtype {state[key].dtype}, expected a float dtype")
        elif not bool(torch.isfinite(state[key]).all()):
            problems.append(f"{path.name}: key '{key}' holds NaN or infinite values")
    problems += [f"{path.name}: unexpected key '{key}' with shape {_shape(state[key].shape)}" for key in state if key not in expected]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)
    adapter.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    return adapter.to(device).eval()
