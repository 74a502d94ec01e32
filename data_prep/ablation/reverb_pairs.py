"""A reverberant copy of the fixed validation pairs, to score what reverberation in training buys.

    python data_prep/ablation/reverb_pairs.py [--dataset data_prep/dataset] [--out runs/valid-reverb] [--seed 0]

The validation pairs are dry (no room), so they can only show what ``mix.reverb_prob`` costs. This writes the
same pairs with each clean utterance put through a synthetic room (``augment.synthetic_rir``, RT60 drawn in
0.2-1.0 s, direct-to-reverberant ratio -3..12 dB, the training mixer's rooms): the noisy input is the
reverberant speech plus the pair's own noise, rescaled so the pair keeps its SNR (a pair that would clip
is scaled down, input and reference together); the reference is the direct path and 50 ms of early
reflections (``augment.reverberate``), the target the mixer trains on.
``OUT/noisy``, ``OUT/clean`` and ``OUT/pairs.csv`` then go to ``audiodenoise evaluate --noisy OUT/noisy
--clean OUT/clean`` like the validation pairs. The same seed gives the same rooms.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from audiodenoise import augment

ROOT = Path(__file__).resolve().parents[2]
RT60_S = (0.2, 1.0)
PEAK_MAX = 0.99


def reverberant_pair(noisy: np.ndarray, clean: np.ndarray, rng: np.random.Generator, *,
                     sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy input, early-reflection reference)`` for one dry pair ``noisy = clean + noise``, both ``[time]``."""
    rir = augment.synthetic_rir(rng, rt60_s=rng.uniform(*RT60_S), sample_rate=sample_rate)
    wet, early = augment.reverberate(clean, rir, sample_rate=sample_rate)
    speech_rms = np.sqrt(np.mean(clean.astype(np.float64) ** 2))
    gain = np.sqrt(np.mean(wet.astype(np.float64) ** 2)) / speech_rms if speech_rms > 0 else 1.0
    noisy_rev = wet + gain * (noisy - clean)
    scale = min(1.0, PEAK_MAX / max(float(np.max(np.abs(noisy_rev))), 1e-12))  # a pair scaled together, never clipped
    return (scale * noisy_rev).astype(np.float32), (scale * early).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=ROOT / "data_prep" / "dataset")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "valid-reverb")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    valid = args.dataset / "valid"
    if not (valid / "pairs.csv").is_file():
        raise SystemExit(f"error: {valid / 'pairs.csv'} not found: run `audiodenoise prepare` first")
    rng = np.random.default_rng(args.seed)
    for sub in ("noisy", "clean"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    with open(valid / "pairs.csv", newline="") as fh:
        ids = [row["id"] for row in csv.DictReader(fh)]
    peak = 0.0
    for pair_id in ids:
        noisy, sample_rate = sf.read(str(valid / "noisy" / f"{pair_id}.flac"), dtype="float32")
        clean, _ = sf.read(str(valid / "clean" / f"{pair_id}.flac"), dtype="float32")
        noisy_rev, early = reverberant_pair(noisy, clean, rng, sample_rate=sample_rate)
        peak = max(peak, float(np.max(np.abs(noisy_rev))))
        sf.write(str(args.out / "noisy" / f"{pair_id}.flac"), noisy_rev, sample_rate, subtype="PCM_24")
        sf.write(str(args.out / "clean" / f"{pair_id}.flac"), early, sample_rate, subtype="PCM_24")
    shutil.copyfile(valid / "pairs.csv", args.out / "pairs.csv")
    print(f"wrote {len(ids)} reverberant pairs to {args.out} (input peak {peak:.2f})")


if __name__ == "__main__":
    main()
