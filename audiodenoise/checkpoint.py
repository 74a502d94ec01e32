"""Model files: safetensors weights plus JSON metadata, loaded without pickle.

A model file is one ``.safetensors`` file whose string metadata holds:

- ``format``: ``"audiodenoise-model"``
- ``format_version``: :data:`FORMAT_VERSION` (an integer as text)
- ``package_version``: the audiodenoise version that wrote it
- ``config``: JSON ``{"model": ModelConfig, "features": FeatureConfig, "info": {...}}``

The file alone is enough to denoise correctly: the feature configuration
travels with the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__, outputs
from .errors import ConfigError, ModelError
from .features import FeatureConfig
from .model import DenoisingAutoencoder, ModelConfig

FORMAT = "audiodenoise-model"
FORMAT_VERSION = 1
MAX_MODEL_BYTES = 512 * 1024 * 1024


@dataclass
class LoadedModel:
    """A model and the configuration it was trained with."""

    model: DenoisingAutoencoder
    features: FeatureConfig
    info: dict[str, Any] = field(default_factory=dict)


def save_model(
    path: str | os.PathLike,
    model: DenoisingAutoencoder,
    features: FeatureConfig,
    info: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` to ``path`` atomically (temp file, then rename)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {"model": model.config.to_dict(), "features": features.to_dict(), "info": info or {}}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "package_version": __version__,
        "config": json.dumps(config, sort_keys=True),
    }
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_model(path: str | os.PathLike, *, sha256: str | None = None) -> LoadedModel:
    """Read a model file; never unpickles anything.

    Raises
    ------
    ModelError
        Missing, unreadable, corrupt, newer-format or mismatching files, or a
        checksum that differs from ``sha256``.
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise ModelError(f"{name}: model file not found")
    if not path.is_file():
        raise ModelError(f"{name}: not a file")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"{name}: {size} bytes is too large for a model file")
    data = path.read_bytes()
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ModelError(f"{name}: checksum mismatch (sha256 {digest[:12]}..., expected {sha256[:12]}...)")
    try:
        tensors = st_load(data)
        metadata = _read_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{name}: not a valid audiodenoise model file ({_first_line(exc)})") from None
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{name}: not an audiodenoise model file (format {metadata.get('format')!r})")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise ModelError(f"{name}: bad format_version {metadata.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ModelError(
            f"{name}: model format version {version} is newer than this audiodenoise "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade audiodenoise"
        )
    try:
        config = json.loads(metadata["config"])
        model_config = ModelConfig.from_dict(config["model"])
        features = FeatureConfig.from_dict(config["features"])
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as exc:
        raise ModelError(f"{name}: bad configuration in model file ({_first_line(exc)})") from None
    if model_config.n_freqs != features.n_freqs:
        raise ModelError(f"{name}: model expects {model_config.n_freqs} bins, features give {features.n_freqs}")
    model = DenoisingAutoencoder(model_config)
    load_state_strict(model, tensors, name=name)
    model.eval()
    return LoadedModel(model=model, features=features, info=config.get("info") or {})


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], *, name: str) -> None:
    """Load ``tensors`` into ``model``, naming any missing, unexpected, misshaped or non-finite ones."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_some(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_some(unexpected)}")
        raise ModelError(f"{name}: weights do not match the model ({'; '.join(parts)})")
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise ModelError(
                f"{name}: weight {key} has shape {list(value.shape)}, the model needs {list(expected[key].shape)}"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ModelError(f"{name}: weight {key} holds NaN or infinite values")
    model.load_state_dict(tensors, strict=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder (synced, the replaced file's mode kept)."""
    outputs.write_bytes(path, data, fsync=True)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("file too short")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise ValueError("bad header length")
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("bad metadata")
    return metadata


def _some(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

