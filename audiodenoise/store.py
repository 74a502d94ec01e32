"""The waveform stores of a prepared dataset: what the on-the-fly mixer draws from.

One folder per kind (``speech/``, ``noise/``), each a list of shards::

    NNNNN.npy     int16 [samples]: the shard's files, resampled, trimmed,
                  peak-normalised, one after the other (speech with short gaps)
    NNNNN.jsonl   first line: {"inputs", "settings", "samples"}; then one line
                  per file: {"file", "offset", "length", "group", ...}

The ``.jsonl`` is written last and names the sample count of its ``.npy``, so
a shard is complete exactly when both exist and agree.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write_bytes
from .errors import DatasetError
from .outputs import atomic_path

INT16_SCALE = 32767.0


def write_shard(folder: Path, index: int, pieces: list[tuple[dict, np.ndarray]], head: dict,
                *, gaps: list[int] | None = None) -> None:
    """Write one shard: ``pieces`` are ``(row, float32 signal)``; ``gaps[i]`` zeros go before piece ``i``."""
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[np.ndarray] = []
    rows: list[dict] = []
    offset = 0
    for i, (row, signal) in enumerate(pieces):
        gap = gaps[i] if gaps else 0
        if gap:
            parts.append(np.zeros(gap, dtype=np.int16))
            offset += gap
        parts.append(np.round(np.clip(signal, -1.0, 1.0) * INT16_SCALE).astype(np.int16))
        rows.append({**row, "offset": offset, "length": int(signal.size)})
        offset += signal.size
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    path = folder / f"{index:05d}.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, stream)
    lines = [{**head, "samples": int(stream.size)}] + rows
    atomic_write_bytes(folder / f"{index:05d}.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n"
                                                              for r in lines).encode())


def read_shard_head(folder: Path, index: int) -> dict | None:
    """The first line of a shard's ``.jsonl`` if the shard is complete, else None."""
    meta, data = folder / f"{index:05d}.jsonl", folder / f"{index:05d}.npy"
    if not (meta.is_file() and data.is_file()):
        return None
    try:
        with open(meta) as fh:
            head = json.loads(fh.readline() or "{}")
        stream = np.load(data, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if head.get("samples") != stream.shape[0]:
        return None
    return head


class WaveStore:
    """All shards of one kind, memory-mapped.

    ``files`` holds one dict per stored file, with ``shard`` added.
    """

    def __init__(self, folder: str | os.PathLike, *, n_shards: int, in_memory: bool = False) -> None:
        self.folder = Path(folder)
        self.streams: list[np.ndarray] = []
        self.files: list[dict] = []
        for index in range(n_shards):
            meta, data = self.folder / f"{index:05d}.jsonl", self.folder / f"{index:05d}.npy"
            try:
                lines = meta.read_text().splitlines()
                head = json.loads(lines[0])
                rows = [json.loads(line) for line in lines[1:]]
                stream = np.load(data, mmap_mode="r")
            except FileNotFoundError as exc:
                raise DatasetError(f"{exc.filename}: missing; the dataset is damaged, rerun `audiodenoise prepare` "
                                   "with the same options to repair it") from None
            except (OSError, ValueError, IndexError) as exc:
                raise DatasetError(f"{meta if isinstance(exc, (json.JSONDecodeError, IndexError)) else data}: "
                                   "unreadable; the dataset is damaged, rerun `audiodenoise prepare` with the same "
                                   "options to repair it") from None
            if stream.dtype != np.int16 or stream.ndim != 1 or head.get("samples") != stream.shape[0]:
                raise DatasetError(f"{data}: holds {stream.shape[0]} samples, its index says {head.get('samples')}; "
                                   "the dataset is damaged, rerun `audiodenoise prepare` with the same options")
            self.streams.append(np.array(stream) if in_memory else stream)
            self.files.extend({**row, "shard": index} for row in rows)
        self.samples = np.array([s.shape[0] for s in self.streams], dtype=np.int64)
        self.total_samples = int(self.samples.sum())
        self.file_lengths = np.array([f["length"] for f in self.files], dtype=np.int64)
        roots = np.sqrt(self.file_lengths)
        self.file_weights = roots / roots.sum() if roots.size else roots

    def __len__(self) -> int:
        return len(self.files)

    def file_signal(self, i: int) -> np.ndarray:
        """File ``i`` as float32."""
        row = self.files[i]
        return self.streams[row["shard"]][row["offset"] : row["offset"] + row["length"]].astype(np.float32) \
            / INT16_SCALE

    def matching(self, pattern: str) -> np.ndarray:
        """Indices of the stored files whose source path matches the glob ``pattern`` (case-sensitive)."""
        hits = [i for i, row in enumerate(self.files) if fnmatch.fnmatchcase(str(row.get("file", "")), pattern)]
        return np.array(hits, dtype=np.int64)

    def crop(self, rng: np.random.Generator, length: int, *, files: np.ndarray | None = None) -> np.ndarray:
        """A random stretch of ``length`` samples of the stored stream (each sample equally likely).

        With ``files`` (indices into :attr:`files`) the stretch starts inside one of those files, each of
        their samples equally likely (it may run on into the next stored file, as any crop may).
        """
        if self.total_samples == 0:
            raise DatasetError(f"{self.folder}: the store is empty")
        if files is not None:
            lengths = self.file_lengths[files]
            row = self.files[int(files[rng.choice(len(files), p=lengths / lengths.sum())])]
            stream = self.streams[row["shard"]]
            start = min(row["offset"] + int(rng.integers(0, row["length"])), max(0, stream.shape[0] - length))
            out = np.zeros(length, dtype=np.float32)
            piece = stream[start : start + length]
            out[: piece.shape[0]] = piece * np.float32(1.0 / INT16_SCALE)
            return out
        shard = int(rng.choice(len(self.streams), p=self.samples / self.total_samples))
        stream = self.streams[shard]
        if stream.shape[0] <= length:
            out = np.zeros(length, dtype=np.float32)
            out[: stream.shape[0]] = stream / INT16_SCALE
            return out
        start = int(rng.integers(0, stream.shape[0] - length + 1))
        return stream[start : start + length].astype(np.float32) * np.float32(1.0 / INT16_SCALE)

    def excerpt(self, rng: np.random.Generator, length: int) -> np.ndarray:
        """A stretch of one file, drawn with weight √duration (looped when shorter), quiet stretches redrawn."""
        index = int(rng.choice(len(self.files), p=self.file_weights))
        row = self.files[index]
        stream = self.streams[row["shard"]]
        start, size = row["offset"], row["length"]
        level = float(row.get("rms", 0.0))
        out = np.zeros(length, dtype=np.float32)
        for _ in range(5):
            if size >= length:
                begin = start + int(rng.integers(0, size - length + 1))
                out = stream[begin : begin + length]
            else:
                shift = int(rng.integers(0, size))
                piece = stream[start : start + size]
                out = np.tile(np.concatenate([piece[shift:], piece[:shift]]), length // size + 1)[:length]
            out = out.astype(np.float32) * np.float32(1.0 / INT16_SCALE)
            if float(np.sqrt(np.mean(np.square(out)))) > 0.1 * level:
                break
        return out
