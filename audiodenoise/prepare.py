"""Corpus -> what the on-the-fly mixer draws from: ``audiodenoise prepare``.

The design's preprocessing step: scan the clean-speech and noise folders,
decode, resample to the model rate, check, trim, measure and split; store the
result as int16 waveforms; make the fixed validation pairs. Training mixes its
own fresh pairs every step (:mod:`audiodenoise.mixer`) and turns them into
log-magnitude spectrograms as it goes.

Layout of a prepared dataset folder::

    speech/NNNNN.{npy,jsonl}      training speech (see :mod:`audiodenoise.store`)
    valid_speech/NNNNN.{npy,jsonl} held-out speech (by speaker, else by file)
    noise/NNNNN.{npy,jsonl}       training noise and music
    valid_noise/NNNNN.{npy,jsonl} held-out noise (by file) for the validation pairs
    valid/noisy/ID.flac, valid/clean/ID.flac, valid/pairs.csv (id, snr_db)
                                  the fixed validation pairs (same seed, same pairs);
                                  `audiodenoise evaluate --noisy valid/noisy --clean valid/clean`
    summary.json                  hours, files, what was dropped and why
    dataset.json                  written last: the dataset is complete

Every shard draws from its own seeded generator and records the settings and
inputs it was made from, so a fixed seed gives an identical dataset, an
interrupted or failed run resumes where it stopped, and a damaged shard is
redone by the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import audio
from ._config import config_from_dict, config_to_dict
from .checkpoint import atomic_write_bytes
from .errors import AudioDenoiseError, ConfigError, DatasetError
from .features import FeatureConfig
from .mixing import SILENCE_RMS, rms
from .store import WaveStore, read_shard_head, write_shard
from .valid_pairs import read_valid_pairs, write_valid_pairs

__all__ = ["AUDIO_EXTENSIONS", "DATASET_FORMAT", "DATASET_VERSION", "STORE_PEAK", "PrepareConfig", "find_audio",
           "held_out_noise", "is_valid_group", "load_mono", "noise_group", "prepare", "read_valid_pairs",
           "speaker_group", "speech_range_db", "trim_silence"]

DATASET_FORMAT = "audiodenoise-dataset"
DATASET_VERSION = 2
MIN_NOISE_FILES_TO_HOLD_OUT = 10
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
STORE_PEAK = 0.9
_SPEAKER_NAME = re.compile(r"^(\d+)-\d+-\d+$")
_TAKE_NUMBER = re.compile(r"[\s_.-]*\d+$")


@dataclass(frozen=True)
class PrepareConfig:
    """How the corpus is stored and the validation pairs made. Levels are RMS in dBFS."""

    segment_seconds: float = 4.0
    snr_db_min: float = -5.0
    snr_db_max: float = 20.0
    level_db_min: float = -40.0
    level_db_max: float = -15.0
    mixes_per_segment: int = 2
    valid_pairs_max: int = 400
    gap_seconds_max: float = 0.4
    valid_fraction: float = 0.05
    valid_noise_fraction: float = 0.1
    min_speech_range_db: float = 20.0
    trim_db: float = 50.0
    files_per_shard: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.snr_db_min <= self.snr_db_max:
            raise ConfigError(f"snr_db_min {self.snr_db_min} > snr_db_max {self.snr_db_max}")
        if not self.level_db_min <= self.level_db_max <= 0:
            raise ConfigError(f"need level_db_min <= level_db_max <= 0, got {self.level_db_min}, {self.level_db_max}")
        if not 0.5 <= self.segment_seconds <= 60:
            raise ConfigError(f"segment_seconds must be 0.5-60, got {self.segment_seconds}")
        if self.mixes_per_segment < 1 or self.files_per_shard < 1 or self.valid_pairs_max < 0:
            raise ConfigError("mixes_per_segment and files_per_shard must be at least 1, valid_pairs_max at least 0")
        for name in ("valid_fraction", "valid_noise_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PrepareConfig:
        return config_from_dict(cls, data)


def find_audio(roots: Iterable[str | os.PathLike], *, role: str = "audio") -> list[Path]:
    """Audio files under ``roots`` (recursively), sorted; a root may be a file."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"{root}: {role} folder not found")
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


def is_valid_group(group: str, config: PrepareConfig, fraction: float | None = None) -> bool:
    """Deterministic, order-independent split by a hash of the group (``fraction``: config.valid_fraction)."""
    digest = hashlib.sha256(f"{config.seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < (config.valid_fraction if fraction is None else fraction)


def noise_group(path: Path) -> str:
    """Folder and file name without a trailing take number (``door_slam3.wav`` -> ``sfx/door_slam``), so
    the takes of one sound fall on one side of the split; independent of where the corpus lies."""
    return f"noise:{path.parent.name}/{_TAKE_NUMBER.sub('', path.stem) or path.stem}"


def held_out_noise(noise_files: list[Path], config: PrepareConfig) -> set[Path]:
    """The noise files kept out of training for the validation pairs: a hash of :func:`noise_group` picks
    ``valid_noise_fraction`` of the groups. A corpus of
    fewer than ``MIN_NOISE_FILES_TO_HOLD_OUT`` files holds none out: training needs the little it has."""
    if len(noise_files) < MIN_NOISE_FILES_TO_HOLD_OUT:
        return set()
    held = {p for p in noise_files if is_valid_group(noise_group(p), config, config.valid_noise_fraction)}
    return held if len(held) < len(noise_files) else set()


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


def speech_range_db(x: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """``(floor_dbfs, range_db)``: 10th percentile of 50 ms frame RMS, and the 90th percentile above it.

    A small range means the recording's noise floor sits close to the voice.
    """
    frame = max(1, sample_rate // 20)
    n = x.size // frame
    if n < 2:
        return -120.0, 120.0
    frames = np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))
    floor, loud = np.percentile(frames, [10, 90])
    floor_db = 20 * np.log10(max(floor, 1e-6))
    return float(floor_db), float(20 * np.log10(max(loud, 1e-6)) - floor_db)


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
    """Build (or resume, or repair, or reuse) a prepared dataset in ``out``; return its summary."""
    from .outputs import check_output_dir

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; choose another --out")
    check_output_dir(out, inputs=[*clean_dirs, *noise_dirs], what="dataset folder")
    clean_files = find_audio(clean_dirs, role="clean speech")
    noise_files = find_audio(noise_dirs, role="noise")
    if not clean_files:
        raise DatasetError(f"no audio files found under {', '.join(map(str, clean_dirs))}")
    if not noise_files:
        raise DatasetError(f"no audio files found under {', '.join(map(str, noise_dirs))}")
    header = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "features": features.to_dict(),
        "prepare": config.to_dict(),
        "clean_dirs": [str(Path(d).resolve()) for d in clean_dirs],
        "noise_dirs": [str(Path(d).resolve()) for d in noise_dirs],
    }
    _check_header(out, header)
    created = not out.exists()
    try:
        return _build(out, header, clean_files, noise_files, config, features, progress, log)
    except BaseException:
        if created:  # a failed first run leaves nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _build(out: Path, header: dict, clean_files: list[Path], noise_files: list[Path], config: PrepareConfig,
           features: FeatureConfig, progress: bool, log: Callable[[str], None]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    settings = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:16]
    per = config.files_per_shard
    speech_shards = [clean_files[i : i + per] for i in range(0, len(clean_files), per)]
    noise_shards = [noise_files[i : i + per] for i in range(0, len(noise_files), per)]
    held = held_out_noise(noise_files, config)

    def noise_inputs(files: list[Path]) -> str:  # which files are held out is part of a noise shard's inputs
        return f"{_fingerprint(files)}:{_fingerprint([f for f in files if f in held])}"

    todo_noise = [i for i, files in enumerate(noise_shards)
                  if not _done(out, ("noise", "valid_noise"), i, noise_inputs(files), settings)]
    if not held and config.valid_noise_fraction > 0:
        log(f"prepare: {len(noise_files)} noise file(s): too few to hold any out, so the validation pairs mix in "
            "training noise (validation scores will flatter the model on that noise)")
    todo_speech = [i for i, files in enumerate(speech_shards)
                   if not _done(out, ("speech", "valid_speech"), i, _fingerprint(files), settings)]
    if todo_noise or todo_speech:
        log(f"prepare: {len(clean_files)} clean files in {len(speech_shards)} shards ({len(todo_speech)} to do), "
            f"{len(noise_files)} noise files in {len(noise_shards)} shards ({len(todo_noise)} to do)")
    head = {"settings": settings}
    for index in _bar(todo_noise, "noise shards", progress):
        _noise_shard(out, index, noise_shards[index], {**head, "inputs": noise_inputs(noise_shards[index])},
                     config, features, held)
    for index in _bar(todo_speech, "speech shards", progress):
        _speech_shard(out, index, speech_shards[index], {**head, "inputs": _fingerprint(speech_shards[index])},
                      config, features)
    speech = WaveStore(out / "speech", n_shards=len(speech_shards))
    noise = WaveStore(out / "noise", n_shards=len(noise_shards))
    valid_noise = WaveStore(out / "valid_noise", n_shards=len(noise_shards))
    valid_speech = WaveStore(out / "valid_speech", n_shards=len(speech_shards))
    if speech.total_samples < features.sample_rate * config.segment_seconds:
        if valid_speech.total_samples:
            raise DatasetError(f"all usable speech fell in the validation split (--valid-fraction "
                               f"{config.valid_fraction:g} holds out whole speakers or files); add speakers or "
                               "lower --valid-fraction")
        raise DatasetError(f"less than one {config.segment_seconds:g} s segment of usable training speech in "
                           f"{len(clean_files)} files (see the skipped files above); add more clean speech")
    if len(noise) == 0:
        raise DatasetError("the noise corpus holds no usable (non-silent, readable) audio")
    n_valid = write_valid_pairs(out, valid_speech, valid_noise if len(valid_noise) else noise, config, features,
                                settings)
    if n_valid < 20:
        log(f"warning: only {n_valid} validation pairs: validation scores will be noisy or missing. Hold out more "
            "speakers with --valid-fraction, or add speakers (LibriSpeech-style names SPEAKER-CHAPTER-UTT are "
            "held out by speaker, other files one by one)")
    summary = _summarize(out, speech, valid_speech, noise, valid_noise, n_valid, len(speech_shards),
                         len(noise_shards), features)
    _write_json(out / "dataset.json", {**header, "shards": {"speech": len(speech_shards),
                                                           "noise": len(noise_shards)}})
    return summary


def _speech_shard(out: Path, index: int, files: list[Path], head: dict, config: PrepareConfig,
                  features: FeatureConfig) -> None:
    rng = np.random.default_rng([config.seed, index])
    sample_rate = features.sample_rate
    streams: dict[str, list] = {"speech": [], "valid_speech": []}
    skipped = []
    for path in files:
        try:
            x = load_mono(path, sample_rate)
        except AudioDenoiseError as exc:
            skipped.append({"skipped": str(path), "reason": str(exc)})
            continue
        floor_db, range_db = speech_range_db(x, sample_rate)
        x = trim_silence(x, threshold_db=-config.trim_db)
        if x.size < sample_rate // 10 or rms(x) < SILENCE_RMS:
            skipped.append({"skipped": str(path), "reason": "clean file is silent or shorter than 0.1 s"})
            continue
        if range_db < config.min_speech_range_db:
            skipped.append({"skipped": str(path), "reason": f"noise floor only {range_db:.1f} dB below the speech "
                                                           f"(minimum {config.min_speech_range_db:g} dB)"})
            continue
        group = speaker_group(path)
        x = x * (STORE_PEAK / float(np.abs(x).max()))
        row = {"file": str(path), "group": group, "rms": round(rms(x), 6), "floor_dbfs": round(floor_db, 1),
               "range_db": round(range_db, 1)}
        kind = "valid_speech" if is_valid_group(group, config) else "speech"
        gap = int(rng.uniform(0, config.gap_seconds_max) * sample_rate)
        streams[kind].append((row, x, gap))
    for kind, items in streams.items():
        extra = {"skipped": skipped} if kind == "speech" else {}
        write_shard(out / kind, index, [(r, x) for r, x, _ in items], {**head, **extra},
                    gaps=[g for _, _, g in items])


def _noise_shard(out: Path, index: int, files: list[Path], head: dict, config: PrepareConfig,
                 features: FeatureConfig, held: set[Path]) -> None:
    pieces: dict[str, list] = {"noise": [], "valid_noise": []}
    skipped = []
    for path in files:
        try:
            x = trim_silence(load_mono(path, features.sample_rate), threshold_db=-config.trim_db)
        except AudioDenoiseError as exc:
            skipped.append({"skipped": str(path), "reason": str(exc)})
            continue
        if x.size < features.sample_rate // 10 or rms(x) < SILENCE_RMS:
            skipped.append({"skipped": str(path), "reason": "noise file is silent or shorter than 0.1 s"})
            continue
        x = x * (STORE_PEAK / float(np.abs(x).max()))
        kind = "valid_noise" if path in held else "noise"
        pieces[kind].append(({"file": str(path), "group": str(path.parent), "rms": round(rms(x), 6)}, x))
    for kind, items in pieces.items():
        write_shard(out / kind, index, items, {**head, "skipped": skipped} if kind == "noise" else head)


def _done(out: Path, kinds: tuple[str, ...], index: int, fingerprint: str, settings: str) -> bool:
    for kind in kinds:
        head = read_shard_head(out / kind, index)
        if head is None or head.get("settings") != settings or head.get("inputs") != fingerprint:
            return False
    return True


def _fingerprint(files: list[Path]) -> str:
    """Names and sizes of a shard's input files: a shard made from other files is redone."""
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size if path.exists() else -1
        digest.update(f"{path}\0{size}\n".encode())
    return digest.hexdigest()[:16]


def _check_header(out: Path, header: dict) -> None:
    path = out / "dataset.json"
    if not path.is_file():
        return
    try:
        existing = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return  # a damaged header is rewritten at the end of this run
    existing.pop("shards", None)
    if existing.get("version") != DATASET_VERSION:
        raise DatasetError(f"{out}: holds a dataset of format v{existing.get('version')}; choose another --out")
    if existing != header:
        changed = sorted(k for k in header if existing.get(k) != header[k])
        raise DatasetError(f"{out}: holds a complete dataset made with other settings ({', '.join(changed)}); "
                           "choose another --out")


def _summarize(out: Path, speech: WaveStore, valid_speech: WaveStore, noise: WaveStore, valid_noise: WaveStore,
               n_valid: int, n_speech: int, n_noise: int, features: FeatureConfig) -> dict:
    skipped = []
    for kind, n in (("speech", n_speech), ("noise", n_noise)):
        for index in range(n):
            with open(out / kind / f"{index:05d}.jsonl") as fh:
                skipped.extend(json.loads(fh.readline()).get("skipped", []))
    hours = 3600 * features.sample_rate
    summary = {
        "speech_hours_train": round(sum(f["length"] for f in speech.files) / hours, 3),
        "speech_hours_valid": round(sum(f["length"] for f in valid_speech.files) / hours, 3),
        "noise_hours": round(sum(f["length"] for f in noise.files) / hours, 3),
        "noise_hours_valid": round(sum(f["length"] for f in valid_noise.files) / hours, 3),
        "speech_files_train": len(speech),
        "speech_files_valid": len(valid_speech),
        "noise_files": len(noise),
        "noise_files_valid": len(valid_noise),
        "valid_pairs": n_valid,
        "dropped_noisy_floor": sum(1 for s in skipped if s["reason"].startswith("noise floor only")),
        "skipped": skipped,
    }
    _write_json(out / "summary.json", summary)
    return summary


def _write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _bar(items, desc: str, enabled: bool):
    if not enabled or not items:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="shard")
