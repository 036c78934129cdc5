"""Save and load :class:`MaskedAVTransformer` checkpoints (one safetensors file = one model).

The config travels in the safetensors metadata under ``"config"`` (a JSON string); a
``config.json`` beside the file is accepted too. Every key and shape is checked before any weight
is used; errors name the file and the key (see docs/contracts.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from ..networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig
from .checkpoint_io import read_state_dict, write_safetensors_atomic

__all__ = [
    "CONFIG_METADATA_KEY",
    "save_masked_transformer",
    "load_masked_transformer",
    "read_masked_transformer_config",
]

CONFIG_METADATA_KEY = "config"
CLASS_NAME = "MaskedAVTransformer"

PathLike = Union[str, os.PathLike]


def read_masked_transformer_config(path: PathLike, metadata: Optional[Dict[str, str]] = None
                                   ) -> MaskedAVTransformerConfig:
    """The config of the checkpoint at ``path``: safetensors metadata ``"config"`` first, then a
    ``config.json`` in the same folder. Raises ValueError naming the file when neither exists or
    the JSON is not a valid config."""
    path = Path(path)
    source, text = None, None
    if metadata and CONFIG_METADATA_KEY in metadata:
        source, text = f"{path.name} metadata '{CONFIG_METADATA_KEY}'", metadata[CONFIG_METADATA_KEY]
    else:
        beside = path.with_name("config.json")
        if beside.is_file():
            source, text = str(beside), beside.read_text(encoding="utf-8")
    if text is None:
        raise ValueError(
            f"{path.name}: no config found (expected safetensors metadata key '{CONFIG_METADATA_KEY}' "
            f"or a config.json beside the file)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: invalid JSON ({error})") from error
    class_name = data.get("_class_name", CLASS_NAME) if isinstance(data, dict) else None
    if class_name != CLASS_NAME:
        raise ValueError(f"{source}: holds a {class_name!r}, expected {CLASS_NAME!r}")
    try:
        return MaskedAVTransformerConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from error


def save_masked_transformer(model: MaskedAVTransformer, path: PathLike,
                            extra_metadata: Optional[Dict[str, object]] = None) -> Path:
    """Write ``model`` to ``path`` (safetensors, config JSON in metadata ``"config"``).

    ``extra_metadata`` values are stored as strings (non-strings JSON-encoded); the key
    ``"config"`` is reserved. Written to a temporary name, then renamed.
    """
    path = Path(path)
    metadata = {"format": "pt",
                CONFIG_METADATA_KEY: json.dumps({"_class_name": CLASS_NAME, **model.config.to_dict()})}
    for key, value in (extra_metadata or {}).items():
        if key == CONFIG_METADATA_KEY:
            raise ValueError(f"save_masked_transformer: metadata key '{CONFIG_METADATA_KEY}' is reserved")
        metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
    write_safetensors_atomic(model.state_dict(), path, metadata)
    return path


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_state_dict(path: Path, state: Dict[str, torch.Tensor], expected: Dict[str, torch.Size]) -> None:
    problems = []
    for key, shape in expected.items():
        if key not in state:
            problems.append(f"{path.name}: missing key '{key}' (expected shape {_shape(shape)})")
        elif tuple(state[key].shape) != tuple(shape):
            problems.append(
                f"{path.name}: key '{key}' has shape {_shape(state[key].shape)}, expected {_shape(shape)}")
        elif not state[key].is_floating_point():
            problems.append(f"{path.name}: key '{key}' has dtype {state[key].dtype}, expected a float dtype")
    for key in state:
        if key not in expected:
            problems.append(f"{path.name}: unexpected key '{key}' with shape {_shape(state[key].shape)}")
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)


def load_masked_transformer(path: PathLike, device: Union[str, torch.device] = "cpu",
                            dtype: Optional[torch.dtype] = None) -> MaskedAVTransformer:
    """Load a :class:`MaskedAVTransformer` in eval mode.

    Args:
        path: a ``.safetensors`` file written by :func:`save_masked_transformer`, or any weight file
            ``checkpoint_io.read_state_dict`` reads (``.ckpt``/``.pt`` included) with the same keys
            and a ``config.json`` beside it.
        device: where the weights go.
        dtype: optional dtype to cast the weights to (default: as stored).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, missing/invalid config, missing or unexpected key, wrong shape
            (the message names the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: masked transformer checkpoint not found")
    state, metadata = read_state_dict(path)
    config = read_masked_transformer_config(path, metadata)
    with torch.device("meta"):
        model = MaskedAVTransformer(config)
    _check_state_dict(path, state, {key: value.shape for key, value in model.state_dict().items()})
    model.load_state_dict(state, assign=True)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()
