"""Save and load :class:`MaskedAVTransformer` checkpoints (one safetensors file = one model).

The config travels in the safetensors metadata under ``"config"`` (a JSON string); a
``config.json`` beside the file is accepted too. Every key and shape is checked before any weight
is used; errors name the file and the key (see docs/contracts.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from ..networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig
from .checkpoint_io import CONFIG_METADATA_KEY, check_state_dict, read_model_config, read_state_dict, save_model_file

__all__ = [
    "CONFIG_METADATA_KEY",
    "save_masked_transformer",
    "load_masked_transformer",
    "read_masked_transformer_config",
]

CLASS_NAME = "MaskedAVTransformer"

PathLike = Union[str, os.PathLike]


def read_masked_transformer_config(path: PathLike, metadata: Optional[Dict[str, str]] = None
                                   ) -> MaskedAVTransformerConfig:
    """The config of the checkpoint at ``path``: safetensors metadata ``"config"`` first, then a
    ``config.json`` in the same folder (its ``"_class_name"`` may be left out). Raises ValueError
    naming the file when neither exists or the JSON is not a valid config."""
    return read_model_config(path, metadata, expected_class=(CLASS_NAME, None),
                             parse=MaskedAVTransformerConfig.from_dict)


def save_masked_transformer(model: MaskedAVTransformer, path: PathLike,
                            extra_metadata: Optional[Dict[str, object]] = None) -> Path:
    """Write ``model`` to ``path`` (safetensors, config JSON in metadata ``"config"``).

    ``extra_metadata`` values are stored as strings (non-strings JSON-encoded); the keys
    ``"config"`` and ``"format"`` are reserved. Written to a temporary name, then renamed.
    """
    return save_model_file(model, {"_class_name": CLASS_NAME, **model.config.to_dict()}, path, extra_metadata)


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
    check_state_dict(model, state, path.name)
    model.load_state_dict(state, assign=True)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()
