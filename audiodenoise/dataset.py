"""Reading a prepared dataset (see :mod:`audiodenoise.prepare`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import DatasetError
from .features import FeatureConfig
from .prepare import DATASET_FORMAT, DATASET_VERSION
from .store import WaveStore
from .valid_pairs import read_valid_pairs


def read_header(root: str | os.PathLike) -> dict:
    """The ``dataset.json`` of a prepared dataset, checked."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{root}: not a complete prepared dataset (no dataset.json); run `audiodenoise prepare` "
                           "(a rerun with the same options finishes an interrupted one)")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DatasetError(f"{path}: unreadable dataset header; rerun `audiodenoise prepare` to repair it") from None
    if header.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path}: not an audiodenoise dataset (format {header.get('format')!r})")
    if header.get("version") != DATASET_VERSION:
        raise DatasetError(f"{path}: dataset format v{header.get('version')}, this audiodenoise reads "
                           f"v{DATASET_VERSION}; prepare the corpus again into a new folder")
    return header


@dataclass
class ValidPairs:
    """The fixed validation pairs, in memory: ``noisy``/``clean`` ``float32 [pairs, time]``."""

    ids: list[str]
    snr_db: np.ndarray
    noisy: np.ndarray
    clean: np.ndarray
    files: list[tuple[Path, Path]]

    def __len__(self) -> int:
        return len(self.ids)


class PreparedDataset:
    """A prepared dataset: the training speech and noise stores, the validation pairs, the features."""

    def __init__(self, root: str | os.PathLike, *, in_memory: bool = False) -> None:
        self.root = Path(root)
        header = read_header(root)
        self.features = FeatureConfig.from_dict(header["features"])
        shards = header.get("shards", {})
        self.speech = WaveStore(self.root / "speech", n_shards=shards.get("speech", 0), in_memory=in_memory)
        self.noise = WaveStore(self.root / "noise", n_shards=shards.get("noise", 0), in_memory=in_memory)
        if self.speech.total_samples == 0 or len(self.noise) == 0:
            raise DatasetError(f"{root}: holds no training speech or no noise; prepare it from a larger corpus")
        self._valid: ValidPairs | None = None

    def valid(self) -> ValidPairs:
        """The validation pairs (read once)."""
        if self._valid is None:
            rows = read_valid_pairs(self.root)
            noisy, clean = [], []
            for row in rows:
                try:
                    noisy.append(sf.read(row["noisy"], dtype="float32")[0])
                    clean.append(sf.read(row["clean"], dtype="float32")[0])
                except (OSError, RuntimeError, sf.LibsndfileError):
                    raise DatasetError(f"{row['noisy'].parent.parent}: validation pair {row['id']} is unreadable; "
                                       "rerun `audiodenoise prepare` with the same options to repair it") from None
            length = max((x.size for x in noisy), default=0)
            pad = [np.pad(x, (0, length - x.size)) for x in noisy], [np.pad(x, (0, length - x.size)) for x in clean]
            self._valid = ValidPairs(
                ids=[r["id"] for r in rows],
                snr_db=np.array([r["snr_db"] for r in rows]),
                noisy=np.stack(pad[0]) if rows else np.zeros((0, 0), np.float32),
                clean=np.stack(pad[1]) if rows else np.zeros((0, 0), np.float32),
                files=[(r["noisy"], r["clean"]) for r in rows],
            )
        return self._valid
