"""Corpus -> (noisy, clean) log-magnitude pairs on disk: ``audiodenoise prepare``.

Layout of a prepared dataset folder::

    dataset.json              feature + prepare config (a rerun must match it)
    shards/NNNNN-noisy.npy    float16 [pairs, freq, frames] log-magnitudes
    shards/NNNNN-clean.npy
    shards/NNNNN.jsonl        one line per pair (written last: marks the shard done)
    valid_audio/*.wav         a few validation pairs as audio, for PESQ/STOI/SI-SDR
    manifest.jsonl            all pairs, in order
    summary.json              hours, pairs, files skipped and why

Clean files are packed (with short gaps) into fixed-length segments, so short
clips (letters, syllables) are used without padding whole segments with
silence. Each segment is mixed with a random stretch of a random noise file
(or synthetic noise) at a random SNR, then both signals are scaled to a random
level. The validation split is held out by speaker (LibriSpeech-style names
``SPEAKER-CHAPTER-UTT``) or else by source file. Every shard draws from its own
seeded generator, so a fixed seed gives an identical dataset and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from . import audio
from ._config import config_from_dict, config_to_dict
from .checkpoint import atomic_write_bytes
from .errors import AudioDenoiseError, ConfigError, DatasetError
from .features import FeatureConfig, analyze
from .mixing import SILENCE_RMS, colored_noise, mix_at_snr, noise_excerpt, rms

DATASET_FORMAT = "audiodenoise-dataset"
DATASET_VERSION = 1
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
SYNTHETIC_KINDS = ("white", "pink", "brown", "hum")
_SPEAKER_NAME = re.compile(r"^(\d+)-\d+-\d+$")


@dataclass(frozen=True)
class PrepareConfig:
    """How pairs are made. Levels are RMS in dBFS."""

    segment_seconds: float = 4.0
    snr_db_min: float = -5.0
    snr_db_max: float = 20.0
    level_db_min: float = -40.0
    level_db_max: float = -15.0
    peak_max: float = 0.95
    mixes_per_segment: int = 2
    synthetic_noise_prob: float = 0.1
    gap_seconds_max: float = 0.4
    valid_fraction: float = 0.05
    files_per_shard: int = 48
    valid_audio_per_shard: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.snr_db_min <= self.snr_db_max:
            raise ConfigError(f"snr_db_min {self.snr_db_min} > snr_db_max {self.snr_db_max}")
        if not self.level_db_min <= self.level_db_max <= 0:
            raise ConfigError(f"need level_db_min <= level_db_max <= 0, got {self.level_db_min}, {self.level_db_max}")
        if not 0.5 <= self.segment_seconds <= 60:
            raise ConfigError(f"segment_seconds must be 0.5-60, got {self.segment_seconds}")
        if self.mixes_per_segment < 1 or self.files_per_shard < 1:
            raise ConfigError("mixes_per_segment and files_per_shard must be at least 1")
        if not 0 <= self.valid_fraction < 1 or not 0 <= self.synthetic_noise_prob <= 1:
            raise ConfigError("valid_fraction must be in [0, 1) and synthetic_noise_prob in [0, 1]")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PrepareConfig:
        return config_from_dict(cls, data)


@dataclass
class Skipped:
    path: str
    reason: str


def find_audio(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Audio files under ``roots`` (recursively), sorted; a root may be a file."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"{root}: not found")
        if root.is_file():
            found.add(root)
            continue
        for dirpath, _, names in os.walk(root, followlinks=True):
            found.update(Path(dirpath) / n for n in names if Path(n).suffix.lower() in AUDIO_EXTENSIONS)
    return sorted(found)


def speaker_group(path: Path) -> str:
    """Speaker id for LibriSpeech-style names, else the file itself."""
    match = _SPEAKER_NAME.match(path.stem)
    return f"speaker:{match.group(1)}" if match else f"file:{path}"


def is_valid_group(group: str, config: PrepareConfig) -> bool:
    """Deterministic, order-independent split by a hash of the group."""
    digest = hashlib.sha256(f"{config.seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < config.valid_fraction


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """File as mono float32 at ``sample_rate``; raises AudioError on a bad file."""
    wav, rate = audio.load(path)
    return audio.resample(wav.mean(axis=0, keepdims=True), rate, sample_rate)[0]


def trim_silence(x: np.ndarray, *, threshold_db: float = -50.0) -> np.ndarray:
    """Drop leading/trailing samples quieter than ``threshold_db`` below the peak."""
    peak = np.abs(x).max() if x.size else 0.0
    if peak <= 0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (threshold_db / 20))
    return x[loud[0] : loud[-1] + 1]


class NoiseBank:
    """All noise files, trimmed and resampled, drawn in proportion to sqrt(duration)."""

    def __init__(self, files: list[Path], sample_rate: int, skipped: list[Skipped], progress: bool) -> None:
        self.names: list[str] = []
        self.signals: list[np.ndarray] = []
        for path in _bar(files, "loading noise", progress):
            try:
                x = trim_silence(load_mono(path, sample_rate))
            except AudioDenoiseError as exc:
                skipped.append(Skipped(str(path), str(exc)))
                continue
            if x.size < sample_rate // 10 or rms(x) < SILENCE_RMS:
                skipped.append(Skipped(str(path), "noise file is silent or shorter than 0.1 s"))
                continue
            self.names.append(str(path))
            self.signals.append(x)
        if not self.signals:
            raise DatasetError("the noise corpus holds no usable (non-silent, readable) audio")
        weights = np.sqrt(np.array([s.size for s in self.signals], dtype=np.float64))
        self.probabilities = weights / weights.sum()
        self.seconds = sum(s.size for s in self.signals) / sample_rate

    def draw(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, str, int]:
        """A noise stretch of ``length`` samples, its file and offset; mostly-silent stretches are redrawn."""
        index = int(rng.choice(len(self.signals), p=self.probabilities))
        signal = self.signals[index]
        level = rms(signal)
        for _ in range(5):
            excerpt, offset = noise_excerpt(signal, length, rng)
            if rms(excerpt) > 0.1 * level:
                break
        return excerpt, self.names[index], offset


def prepare(
    clean_dirs: list[str | os.PathLike],
    noise_dirs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    config: PrepareConfig = PrepareConfig(),
    features: FeatureConfig = FeatureConfig(),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Build (or resume, or reuse) a prepared dataset in ``out``; return its summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    (out / "valid_audio").mkdir(exist_ok=True)
    header = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "features": features.to_dict(),
        "prepare": config.to_dict(),
        "clean_dirs": [str(Path(d).resolve()) for d in clean_dirs],
        "noise_dirs": [str(Path(d).resolve()) for d in noise_dirs],
    }
    _check_or_write_header(out, header)
    clean_files = find_audio(clean_dirs)
    noise_files = find_audio(noise_dirs)
    if not clean_files:
        raise DatasetError(f"no audio files found under {', '.join(map(str, clean_dirs))}")
    if not noise_files:
        raise DatasetError(f"no audio files found under {', '.join(map(str, noise_dirs))}")
    shards = [clean_files[i : i + config.files_per_shard] for i in range(0, len(clean_files), config.files_per_shard)]
    todo = [i for i in range(len(shards)) if not _shard_done(out, i, shards[i])]
    skipped: list[Skipped] = []
    if todo:
        log(f"prepare: {len(clean_files)} clean files in {len(shards)} shards ({len(todo)} to do), "
            f"{len(noise_files)} noise files")
        bank = NoiseBank(noise_files, features.sample_rate, skipped, progress)
        for index in _bar(todo, "shards", progress):
            skipped.extend(_make_shard(out, index, shards[index], bank, config, features))
        noise_names = set(map(str, noise_files))
        _write_json(out / "noise_skipped.json", [dataclasses.asdict(s) for s in skipped if s.path in noise_names])
    summary = _summarize(out, len(shards), config, noise_files)
    return summary


def _make_shard(
    out: Path, index: int, files: list[Path], bank: NoiseBank, config: PrepareConfig, features: FeatureConfig
) -> list[Skipped]:
    rng = np.random.default_rng([config.seed, index])
    sample_rate = features.sample_rate
    seg_len = int(round(config.segment_seconds * sample_rate))
    skipped: list[Skipped] = []
    rows: list[dict] = []
    noisy_all: list[np.ndarray] = []
    clean_all: list[np.ndarray] = []
    streams: dict[str, list[tuple[Path, np.ndarray]]] = {"train": [], "valid": []}
    for path in files:
        try:
            x = load_mono(path, sample_rate)
        except AudioDenoiseError as exc:
            skipped.append(Skipped(str(path), str(exc)))
            continue
        if rms(x) < SILENCE_RMS:
            skipped.append(Skipped(str(path), "clean file is silent"))
            continue
        split = "valid" if is_valid_group(speaker_group(path), config) else "train"
        streams[split].append((path, x))
    n_valid_audio = 0
    for split, items in streams.items():
        for segment, sources in _pack(items, seg_len, rng, config, sample_rate):
            for _ in range(config.mixes_per_segment):
                noisy, clean, row = _mix(segment, bank, rng, config, sample_rate)
                row.update(split=split, clean=sources)
                if split == "valid" and n_valid_audio < config.valid_audio_per_shard:
                    stem = out / "valid_audio" / f"{index:05d}-{n_valid_audio}"
                    sf.write(f"{stem}-noisy.wav", noisy, sample_rate, subtype="FLOAT")
                    sf.write(f"{stem}-clean.wav", clean, sample_rate, subtype="FLOAT")
                    n_valid_audio += 1
                noisy_all.append(noisy)
                clean_all.append(clean)
                rows.append(row)
    shape = (0, features.n_freqs, seg_len // features.hop_length + 1)
    noisy_lm = _features(noisy_all, features, shape)
    clean_lm = _features(clean_all, features, shape)
    _save_npy(out / "shards" / f"{index:05d}-noisy.npy", noisy_lm)
    _save_npy(out / "shards" / f"{index:05d}-clean.npy", clean_lm)
    for row_index, row in enumerate(rows):
        row.update(shard=index, row=row_index)
    skipped_rows = [{"skipped": s.path, "reason": s.reason} for s in skipped]
    head = [{"inputs": _fingerprint(files)}]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in head + rows + skipped_rows)
    atomic_write_bytes(out / "shards" / f"{index:05d}.jsonl", text.encode())
    return skipped


def _pack(
    items: list[tuple[Path, np.ndarray]],
    seg_len: int,
    rng: np.random.Generator,
    config: PrepareConfig,
    sample_rate: int,
) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """Concatenate files with random short gaps and cut fixed-length segments.

    Yields each segment and the files in it: ``{"file", "file_offset_s", "segment_offset_s", "seconds"}``.
    A last piece of at least half a segment is zero-padded; a shorter one is dropped.
    """
    pieces: list[np.ndarray] = []
    spans: list[tuple[int, int, Path]] = []  # (start, stop) in stream samples, file
    total = 0
    for path, x in items:
        gap = int(rng.uniform(0, config.gap_seconds_max) * sample_rate)
        pieces += [np.zeros(gap, dtype=np.float32), x]
        spans.append((total + gap, total + gap + x.size, path))
        total += gap + x.size
    if not pieces:
        return
    stream = np.concatenate(pieces)
    for begin in range(0, total, seg_len):
        end = begin + seg_len
        if total - begin < seg_len // 2:
            break
        segment = stream[begin:end]
        if segment.size < seg_len:
            segment = np.concatenate([segment, np.zeros(seg_len - segment.size, dtype=np.float32)])
        sources = [
            {
                "file": str(path),
                "file_offset_s": round(max(0, begin - start) / sample_rate, 4),
                "segment_offset_s": round(max(0, start - begin) / sample_rate, 4),
                "seconds": round((min(stop, end) - max(start, begin)) / sample_rate, 4),
            }
            for start, stop, path in spans
            if start < end and stop > begin
        ]
        yield segment, sources


def _mix(
    clean: np.ndarray, bank: NoiseBank, rng: np.random.Generator, config: PrepareConfig, sample_rate: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    length = clean.size
    if rng.random() < config.synthetic_noise_prob:
        kind = str(rng.choice(SYNTHETIC_KINDS))
        noise, noise_name, offset = colored_noise(kind, length, rng, sample_rate=sample_rate), f"synthetic:{kind}", 0
    else:
        noise, noise_name, offset = bank.draw(length, rng)
    snr_db = float(rng.uniform(config.snr_db_min, config.snr_db_max))
    noisy, _ = mix_at_snr(clean, noise, snr_db)
    level_db = float(rng.uniform(config.level_db_min, config.level_db_max))
    gain = 10 ** (level_db / 20) / max(rms(noisy), 1e-12)
    peak = float(np.abs(noisy).max()) * gain
    if peak > config.peak_max:
        gain *= config.peak_max / peak
    row = {
        "noise": noise_name,
        "noise_offset_s": round(offset / sample_rate, 4),
        "snr_db": round(snr_db, 3),
        "gain_db": round(20 * np.log10(gain), 3),
    }
    return (noisy * gain).astype(np.float32), (clean * gain).astype(np.float32), row


def _features(signals: list[np.ndarray], features: FeatureConfig, empty_shape: tuple) -> np.ndarray:
    if not signals:
        return np.zeros(empty_shape, dtype=np.float16)
    with torch.inference_mode():
        log_mag, _ = analyze(torch.from_numpy(np.stack(signals)), config=features)
    return log_mag.numpy().astype(np.float16)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _fingerprint(files: list[Path]) -> str:
    """Names and sizes of a shard's input files: a shard made from other files is redone."""
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size if path.exists() else -1
        digest.update(f"{path}\0{size}\n".encode())
    return digest.hexdigest()[:16]


def _shard_done(out: Path, index: int, files: list[Path]) -> bool:
    base = out / "shards" / f"{index:05d}"
    if not all(Path(f"{base}{suffix}").is_file() for suffix in (".jsonl", "-noisy.npy", "-clean.npy")):
        return False
    with open(f"{base}.jsonl") as fh:
        first = json.loads(fh.readline() or "{}")
    return first.get("inputs") == _fingerprint(files)


def _check_or_write_header(out: Path, header: dict) -> None:
    path = out / "dataset.json"
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise DatasetError(f"{path}: unreadable dataset header; choose another --out") from None
        if existing.get("features") != header["features"]:
            raise DatasetError(
                f"{out}: holds a dataset made with another feature configuration; choose another --out"
            )
        if existing != header:
            changed = sorted(k for k in header if existing.get(k) != header[k])
            raise DatasetError(f"{out}: holds a dataset made with other settings ({', '.join(changed)}); "
                               "choose another --out")
        return
    if any((out / "shards").iterdir()):
        raise DatasetError(f"{out}: holds shards but no dataset.json; choose an empty --out")
    _write_json(path, header)


def _summarize(out: Path, n_shards: int, config: PrepareConfig, noise_files: list[Path]) -> dict:
    pairs: Counter = Counter()
    seconds: Counter = Counter()
    clean_files: set = set()
    skipped = []
    manifest = []
    for index in range(n_shards):
        for line in (out / "shards" / f"{index:05d}.jsonl").read_text().splitlines():
            row = json.loads(line)
            if "inputs" in row:
                continue
            if "skipped" in row:
                skipped.append(row)
                continue
            manifest.append(line)
            pairs[row["split"]] += 1
            for source in row["clean"]:
                clean_files.add(source["file"])
                seconds[row["split"]] += source["seconds"]
    noise_log = out / "noise_skipped.json"
    noise_skipped = json.loads(noise_log.read_text()) if noise_log.exists() else []
    atomic_write_bytes(out / "manifest.jsonl", ("\n".join(manifest) + "\n").encode())
    summary = {
        "pairs": dict(pairs),
        "pair_hours": round(sum(pairs.values()) * config.segment_seconds / 3600, 3),
        "speech_hours_train": round(seconds["train"] / 3600 / config.mixes_per_segment, 3),
        "speech_hours_valid": round(seconds["valid"] / 3600 / config.mixes_per_segment, 3),
        "clean_files_used": len(clean_files),
        "noise_files": len(noise_files),
        "skipped": skipped + [{"skipped": s["path"], "reason": s["reason"]} for s in noise_skipped],
    }
    _write_json(out / "summary.json", summary)
    return summary


def _write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _bar(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file" if desc.startswith("loading") else "shard")
