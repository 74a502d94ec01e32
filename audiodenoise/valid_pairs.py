"""The fixed validation pairs of a prepared dataset: ``valid/noisy``, ``valid/clean``, ``valid/pairs.csv``.

Consecutive segments of the held-out speech, each mixed with the noise a few
times by seeded generators, so a fixed seed gives the same pairs (written by
``audiodenoise prepare``, read by :class:`~audiodenoise.dataset.PreparedDataset`).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from .checkpoint import atomic_write_bytes
from .features import FeatureConfig
from .mixer import MixConfig, Mixer
from .mixing import SILENCE_RMS, rms
from .store import WaveStore

if TYPE_CHECKING:
    from .prepare import PrepareConfig


def write_valid_pairs(out: Path, speech: WaveStore, noise: WaveStore, config: PrepareConfig,
                      features: FeatureConfig, settings: str) -> int:
    """The fixed validation pairs: consecutive segments of the held-out speech, each mixed ``mixes`` times."""
    folder = out / "valid"
    marker = folder / "settings.txt"
    if marker.is_file() and marker.read_text().strip() == settings and (folder / "pairs.csv").is_file():
        rows = (folder / "pairs.csv").read_text().splitlines()[1:]
        if all((folder / kind / f"{r.split(',')[0]}.flac").is_file() for r in rows for kind in ("noisy", "clean")):
            return len(rows)
    shutil.rmtree(folder, ignore_errors=True)
    tmp = out / ".valid.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "noisy").mkdir(parents=True)
    (tmp / "clean").mkdir()
    sample_rate = features.sample_rate
    seg = int(round(config.segment_seconds * sample_rate))
    mix = MixConfig(segment_seconds=config.segment_seconds, snr_db_low=(config.snr_db_min, config.snr_db_max),
                    snr_db_high=(config.snr_db_min, config.snr_db_max), low_snr_share=1.0,
                    level_db=(config.level_db_min, config.level_db_max), peak_max=0.95, noises_max=1,
                    synthetic_prob=0.1, babble_prob=0.0, speed_prob=0.0, eq_prob=0.0, band_limit_prob=0.0,
                    reverb_prob=0.0, clip_prob=0.0, noise_only_prob=0.0)
    mixer = Mixer(speech, noise, mix, sample_rate=sample_rate, seed=config.seed)
    lines = ["id,snr_db,seconds"]
    count = 0
    for shard, stream in enumerate(speech.streams):
        for begin in range(0, stream.shape[0] - seg // 2, seg):
            clean_seg = np.zeros(seg, dtype=np.float32)
            piece = stream[begin : begin + seg].astype(np.float32) / 32767.0
            clean_seg[: piece.size] = piece
            if rms(clean_seg) < SILENCE_RMS:
                continue
            for m in range(config.mixes_per_segment):
                if count >= config.valid_pairs_max:
                    break
                rng = np.random.default_rng([config.seed, 4, shard, begin, m])
                noisy, clean, snr_db = mixer.mix_with(clean_seg, rng)
                pair_id = f"v{count:05d}"
                for kind, x in (("noisy", noisy), ("clean", clean)):
                    sf.write(tmp / kind / f"{pair_id}.flac", x, sample_rate, subtype="PCM_24")
                lines.append(f"{pair_id},{snr_db:.3f},{config.segment_seconds:g}")
                count += 1
    atomic_write_bytes(tmp / "pairs.csv", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(tmp / "settings.txt", f"{settings}\n".encode())
    os.replace(tmp, folder)
    return count


def read_valid_pairs(root: str | os.PathLike) -> list[dict]:
    """The validation pairs of a prepared dataset: ``{"id", "snr_db", "noisy", "clean"}`` (paths)."""
    folder = Path(root) / "valid"
    path = folder / "pairs.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{"id": r["id"], "snr_db": float(r["snr_db"]), "noisy": folder / "noisy" / f"{r['id']}.flac",
                 "clean": folder / "clean" / f"{r['id']}.flac"} for r in csv.DictReader(fh)]
