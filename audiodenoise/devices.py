"""The torch device a model runs on, from the ``--device`` spelling (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cpu``/``cuda`` are taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for, but no CUDA GPU is available")
    return torch.device(device)
