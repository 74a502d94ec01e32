"""The model shipped inside the package: where its file is and the checksum it must match."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelError

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+
    from importlib.resources.abc import Traversable

PRETRAINED_PACKAGE = "audiodenoise.pretrained"
PRETRAINED_FILE = "model.safetensors"


def pretrained_resource(name: str) -> Traversable:
    """The file ``name`` beside the shipped model in the installed package (its checksum, ``MODEL_CARD.md``, ...)."""
    return resources.files(PRETRAINED_PACKAGE).joinpath(name)


def pretrained_path() -> Path:
    """Path of the shipped model file inside the installed package."""
    return Path(str(pretrained_resource(PRETRAINED_FILE)))


def pretrained_sha256() -> str:
    """The checksum the shipped model must match (from ``model.safetensors.sha256`` beside it)."""
    path = pretrained_path().with_name(PRETRAINED_FILE + ".sha256")
    try:
        fields = path.read_bytes().split()
    except OSError as exc:
        raise ModelError(f"{path}: the shipped model's checksum file cannot be read ({exc.strerror or exc}); "
                         "reinstall audiodenoise") from None
    digest = fields[0].decode("ascii", "replace").lower() if fields else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ModelError(f"{path}: not a SHA-256 checksum file; reinstall audiodenoise")
    return digest
