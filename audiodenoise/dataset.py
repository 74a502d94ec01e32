"""Reading a prepared dataset (see :mod:`audiodenoise.prepare`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetError
from .features import FeatureConfig
from .prepare import DATASET_FORMAT, DATASET_VERSION


def read_header(root: str | os.PathLike) -> dict:
    """The ``dataset.json`` of a prepared dataset, checked."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{root}: not a prepared dataset (no dataset.json); run `audiodenoise prepare` first")
    try:
        header = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DatasetError(f"{path}: unreadable dataset header") from None
    if header.get("format") != DATASET_FORMAT or header.get("version", 0) > DATASET_VERSION:
        raise DatasetError(f"{path}: unsupported dataset format {header.get('format')!r} v{header.get('version')}")
    return header


class PairsDataset(torch.utils.data.Dataset):
    """(noisy, clean) log-magnitude pairs of one split, read from memory-mapped shards.

    Items are ``float32`` tensors ``[freq, frames]``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = Path(root)
        header = read_header(root)
        self.features = FeatureConfig.from_dict(header["features"])
        manifest = self.root / "manifest.jsonl"
        if not manifest.is_file():
            raise DatasetError(f"{root}: no manifest.jsonl; the dataset is incomplete, rerun `audiodenoise prepare`")
        index = []
        for line in manifest.read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == split:
                index.append((row["shard"], row["row"]))
        self.index = index
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _array(self, shard: int, kind: str) -> np.ndarray:
        key = (shard, kind)
        if key not in self._arrays:
            self._arrays[key] = np.load(self.root / "shards" / f"{shard:05d}-{kind}.npy", mmap_mode="r")
        return self._arrays[key]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        shard, row = self.index[i]
        noisy = torch.from_numpy(np.asarray(self._array(shard, "noisy")[row], dtype=np.float32))
        clean = torch.from_numpy(np.asarray(self._array(shard, "clean")[row], dtype=np.float32))
        return noisy, clean

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack the items at ``indices``: two ``[batch, freq, frames]`` tensors."""
        pairs = [self[i] for i in indices]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def valid_audio(self) -> list[tuple[Path, Path]]:
        """(noisy, clean) audio files kept for PESQ/STOI/SI-SDR, sorted."""
        folder = self.root / "valid_audio"
        noisy = sorted(folder.glob("*-noisy.wav")) if folder.is_dir() else []
        return [(n, n.with_name(n.name.replace("-noisy.wav", "-clean.wav"))) for n in noisy]
