"""Save and load SeeingSounds :class:`AudioAdapter` files (one safetensors file = one adapter).

The config travels in the safetensors metadata under ``"config"`` (JSON); a ``config.json``
beside the file is accepted too. Other metadata (training figures, data source) is kept as
strings and returned by :func:`read_adapter_metadata`. Every key and shape is checked before a
weight is used; errors name the file and the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from ..networks.audio_adapter import AudioAdapter, AudioAdapterConfig
from .checkpoint_io import CONFIG_METADATA_KEY, check_state_dict, read_model_config, read_state_dict, save_model_file

__all__ = ["CONFIG_METADATA_KEY", "save_audio_adapter", "load_audio_adapter", "read_adapter_config", "read_adapter_metadata"]

CLASS_NAME = "AudioAdapter"

PathLike = Union[str, os.PathLike]


def read_adapter_config(path: PathLike, metadata: Optional[Dict[str, str]] = None) -> AudioAdapterConfig:
    """The adapter config of ``path``: metadata ``"config"`` first, then ``config.json`` beside it."""
    return read_model_config(path, metadata, expected_class=CLASS_NAME, parse=AudioAdapterConfig.from_dict,
                             what=f"{CLASS_NAME!r} (is this an audio adapter file?)", missing="no adapter config found")


def read_adapter_metadata(path: PathLike) -> Dict[str, str]:
    """The string metadata of an adapter file (without the config)."""
    _, metadata = read_state_dict(path)
    return {k: v for k, v in metadata.items() if k != CONFIG_METADATA_KEY}


def save_audio_adapter(adapter: AudioAdapter, path: PathLike, extra_metadata: Optional[Dict[str, object]] = None) -> Path:
    """Write ``adapter`` (weights + config in metadata) to ``path`` via a temporary file + rename.
    ``extra_metadata`` values are stored as strings (non-strings JSON-encoded)."""
    return save_model_file(adapter, {"_class_name": CLASS_NAME, **adapter.config.to_dict()}, path, extra_metadata)


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
    check_state_dict(adapter, state, path.name, finite=True)
    adapter.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    return adapter.to(device).eval()
