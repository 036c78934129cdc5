"""V2A-Mapper files: one safetensors file = one mapper (weights + config JSON in metadata "config").

Config layout (JSON object in the safetensors metadata under ``"config"``; a ``config.json`` beside
the file is accepted too)::

    {"_class_name": "V2AMapper", "kind": "regression" | "diffusion",
     "source": {"family": "clip", "model": "clip-vit-large-patch14", "dim": 768, "normalised": false, "modality": "image",
                "weights": "3f1c..."},   # "weights" (the encoder's weights fingerprint) is optional
     "target": {"family": "clap", "model": "clap-htsat-unfused", "dim": 512, "normalised": true, "modality": "audio"},
     "network": {...RegressionMapperConfig or DiffusionMapperConfig fields...}}

Every key and shape is checked against the config before any weight is used; errors name the file
and the key (docs/contracts.md).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import torch

from ..networks.v2a_mapper import DiffusionMapper, DiffusionMapperConfig, RegressionMapper, RegressionMapperConfig
from .checkpoint_io import CONFIG_METADATA_KEY, check_state_dict, read_model_config, read_state_dict, save_model_file

__all__ = ["CONFIG_METADATA_KEY", "MAPPER_KINDS", "EmbeddingSpace", "V2AMapper", "save_mapper", "load_mapper",
           "read_mapper_config", "build_network"]

CLASS_NAME = "V2AMapper"
MAPPER_KINDS = ("regression", "diffusion")

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class EmbeddingSpace:
    """Where vectors live: encoder family ("clip", "clap", ...), model name ("" when unknown),
    width, whether the encoder's vectors are L2-normalised, and what was encoded ("image",
    "audio", ...; "" when unknown; informative only, CLAP audio and text share one space)."""

    family: str
    model: str
    dim: int
    normalised: bool = False
    modality: str = ""
    weights: str = ""  # the encoder's weights fingerprint (encoders.pretrained.weights_fingerprint); "" unknown

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ValueError(f"EmbeddingSpace: family must be a non-empty string, got {self.family!r}")
        if not isinstance(self.model, str):
            raise ValueError(f"EmbeddingSpace: model must be a string, got {self.model!r}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"EmbeddingSpace: dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.normalised, bool):
            raise ValueError(f"EmbeddingSpace: normalised must be true or false, got {self.normalised!r}")
        if not isinstance(self.modality, str):
            raise ValueError(f"EmbeddingSpace: modality must be a string, got {self.modality!r}")
        if not isinstance(self.weights, str):
            raise ValueError(f"EmbeddingSpace: weights must be a string (a fingerprint), got {self.weights!r}")

    def describe(self) -> str:
        return f"{self.family.upper()} ({self.model or 'unknown model'}, width {self.dim})"

    @classmethod
    def from_dict(cls, data) -> "EmbeddingSpace":
        if not isinstance(data, dict):
            raise ValueError(f"expected an object with family, model, dim, normalised, modality; got {data!r}")
        unknown = sorted(set(data) - {"family", "model", "dim", "normalised", "modality", "weights"})
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        missing = [k for k in ("family", "dim") if k not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return cls(family=data["family"], model=data.get("model", ""), dim=data["dim"], normalised=data.get("normalised", False),
                   modality=data.get("modality", ""), weights=data.get("weights", ""))


def _space_dict(space: EmbeddingSpace) -> Dict:
    """The space as written in a mapper file; "weights" only when known (files without it stay as before)."""
    data = asdict(space)
    if not data["weights"]:
        del data["weights"]
    return data


def build_network(kind: str, network: Dict) -> Union[RegressionMapper, DiffusionMapper]:
    """A fresh network of ``kind`` from its config dict."""
    if kind == "regression":
        return RegressionMapper(RegressionMapperConfig.from_dict(network))
    if kind == "diffusion":
        return DiffusionMapper(DiffusionMapperConfig.from_dict(network))
    raise ValueError(f"mapper kind must be one of {', '.join(MAPPER_KINDS)}, got {kind!r}")


class V2AMapper:
    """A mapper network with the spaces it maps between (what travels on the AV_MAPPER socket)."""

    def __init__(self, network: Union[RegressionMapper, DiffusionMapper], source: EmbeddingSpace, target: EmbeddingSpace,
                 name: str = ""):
        self.network = network
        self.source = source
        self.target = target
        self.name = name
        config = network.config
        if config.source_dim != source.dim or config.target_dim != target.dim:
            raise ValueError(f"V2AMapper: the network maps {config.source_dim} -> {config.target_dim} but the spaces are "
                             f"{source.describe()} -> {target.describe()}")
        if config.normalize_output != target.normalised:
            raise ValueError(f"V2AMapper: normalize_output={config.normalize_output} but the target space "
                             f"normalised={target.normalised}")

    @property
    def kind(self) -> str:
        return "diffusion" if isinstance(self.network, DiffusionMapper) else "regression"

    def config_dict(self) -> Dict:
        return {"_class_name": CLASS_NAME, "kind": self.kind, "source": _space_dict(self.source), "target": _space_dict(self.target),
                "network": self.network.config.to_dict()}

    def describe(self) -> str:
        return f"{self.kind} mapper {self.source.describe()} -> {self.target.describe()}"

    @torch.no_grad()
    def map(self, vectors: torch.Tensor, *, steps: int = 50, generator: Optional[torch.Generator] = None, eta: float = 0.0,
            guidance_scale: float = 1.0, callback: Optional[Callable] = None,
            check_interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """Source vectors [B, source_dim] -> target vectors [B, target_dim] (float32, on the network's device).
        The diffusion options are ignored by a regression mapper."""
        if vectors.dim() != 2 or vectors.shape[1] != self.source.dim:
            raise ValueError(f"{self.describe()}: expected source vectors [batch, {self.source.dim}], got {tuple(vectors.shape)}")
        if not bool(torch.isfinite(vectors).all()):
            raise ValueError(f"{self.describe()}: the source vectors hold NaN or infinite values")
        parameter = next(self.network.parameters())
        if self.kind == "regression":
            was_training = self.network.training
            self.network.eval()
            try:
                if check_interrupt is not None:
                    check_interrupt()
                out = self.network.map(vectors.to(parameter.device, parameter.dtype)).float()
            finally:
                self.network.train(was_training)
            if callback is not None:
                callback(0, 1, out)
            return out
        from ..samplers.mapper_diffusion import sample_diffusion_mapper

        return sample_diffusion_mapper(self.network, vectors, steps=steps, generator=generator, eta=eta,
                                       guidance_scale=guidance_scale, callback=callback, check_interrupt=check_interrupt)


def save_mapper(mapper: V2AMapper, path: PathLike, extra_metadata: Optional[Dict[str, object]] = None) -> Path:
    """Write ``mapper`` to ``path`` (safetensors, config JSON in metadata "config"), atomically."""
    state = {k: v.detach().float() for k, v in mapper.network.state_dict().items()}
    return save_model_file(state, mapper.config_dict(), path, extra_metadata)


def _check_config(data: Dict) -> Dict:
    kind = data.get("kind")
    if kind not in MAPPER_KINDS:
        raise ValueError(f"kind is {kind!r}, expected one of {', '.join(MAPPER_KINDS)}")
    for key in ("source", "target", "network"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"missing or invalid '{key}' object")
    for key in ("source", "target"):
        try:
            EmbeddingSpace.from_dict(data[key])
        except ValueError as error:
            raise ValueError(f"'{key}' space: {error}") from error
    return data


def read_mapper_config(path: PathLike, metadata: Optional[Dict[str, str]] = None) -> Dict:
    """The checked config dict of the mapper file at ``path`` (see the module docstring)."""
    return read_model_config(path, metadata, expected_class=CLASS_NAME, parse=_check_config,
                             what=f"a {CLASS_NAME!r} (is this a mapper file?)", missing="not a V2A mapper file: no config")


def load_mapper(path: PathLike, device: Union[str, torch.device] = "cpu") -> V2AMapper:
    """Load a mapper written by :func:`save_mapper` (eval mode, float32, on ``device``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, not a mapper, bad config, missing/unexpected key, wrong shape,
            NaN or infinite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mapper file")
    state, metadata = read_state_dict(path)
    data = read_mapper_config(path, metadata)
    try:
        source, target = EmbeddingSpace.from_dict(data["source"]), EmbeddingSpace.from_dict(data["target"])
        network = build_network(data["kind"], data["network"])
        mapper = V2AMapper(network, source, target, name=path.stem)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path.name}: bad mapper config: {error}") from error
    check_state_dict(network, state, path.name, finite=True)
    network.load_state_dict({k: v.float() for k, v in state.items()})
    network.to(device).eval()
    return mapper
