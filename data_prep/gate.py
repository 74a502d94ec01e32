"""The checks a candidate model file passes before ``ship.py`` makes it the shipped one.

    python data_prep/gate.py MODEL [MODEL ...] [--dataset data_prep/dataset] [--config data_prep/stage14.toml]

For each model, one line per check:

- ``loss``: the fp32 compressed-magnitude loss over all validation pairs, the card's yardstick whatever loss
  a run trained with (lower is better; this is what picks the candidate).
- ``near-clean``: 40 validation pairs with their noise rescaled to 25 dB SNR, at 8 and 16 kHz: output SI-SDR
  against the input's. The validation pairs stop at 20 dB, so they do not see this regime; the telephone
  test's two decisive dev pairs sit in it (27-28 dB once resampled to 8 kHz).
- ``telephone``: what ``tests/test_telephone.py`` asserts (ten dev pairs at 8 / 11.025 / 12 kHz, PESQ-WB and
  SI-SDR must rise over the input's; clean full-band clips must keep SI-SDR above 15 dB). A candidate that
  fails it is not shipped: the test is strict.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiodenoise import audio
from audiodenoise.api import Denoiser
from audiodenoise.checkpoint import load_model
from audiodenoise.dataset import PreparedDataset
from audiodenoise.evaluate import score_pair, si_sdr
from audiodenoise.training import Step, load_config, validation_loss

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "eval"
TELEPHONE_RATES = (8000, 11025, 12000)


def read_at(path: Path, rate: int) -> np.ndarray:
    """A file as (channels, samples) float32 at ``rate``."""
    wav, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.resample(np.ascontiguousarray(wav.T), file_rate, rate)


def at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled so that their energy ratio is ``snr_db`` (noise-free input: clean)."""
    noise_energy = float(np.sum(noise.astype(np.float64) ** 2))
    if noise_energy == 0.0:
        return clean.copy()
    gain = np.sqrt(float(np.sum(clean.astype(np.float64) ** 2)) / noise_energy / 10 ** (snr_db / 10))
    return (clean + gain * noise).astype(np.float32)


def near_clean(models: dict[str, Denoiser], valid_dir: Path, *, snr_db: float = 25.0, rate: int, n: int = 40) -> None:
    rows = list(csv.DictReader(open(valid_dir / "pairs.csv", newline="")))[::7][:n]
    pairs = []
    for row in rows:
        noisy = read_at(valid_dir / "noisy" / f"{row['id']}.flac", rate)
        clean = read_at(valid_dir / "clean" / f"{row['id']}.flac", rate)
        pairs.append((clean[0].astype(np.float64), at_snr(clean, noisy - clean, snr_db)))
    before = np.mean([si_sdr(c, x[0].astype(np.float64)) for c, x in pairs])
    for name, d in models.items():
        after = np.mean([si_sdr(c, d.denoise(x, rate)[0].astype(np.float64)) for c, x in pairs])
        print(f"{name}: near-clean {snr_db:g} dB at {rate} Hz, {len(pairs)} validation pairs: SI-SDR "
              f"{before:.2f} -> {after:.2f} dB", flush=True)


def telephone(models: dict[str, Denoiser]) -> None:
    groups: dict[float, list[str]] = {}
    with open(EVAL / "dev" / "pairs.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            groups.setdefault(float(row["snr_db"]), []).append(row["id"])
    ids = {g[i] for _, g in sorted(groups.items()) for i in (0, -1)}  # as tests/test_telephone.py picks them
    names = sorted(p.name for p in (EVAL / "dev" / "noisy").iterdir() if p.stem in ids)
    for name, d in models.items():
        verdict = []
        for rate in TELEPHONE_RATES:
            rows = []
            for file in names:
                noisy = read_at(EVAL / "dev" / "noisy" / file, rate)
                clean = read_at(EVAL / "dev" / "clean" / file, rate)
                b = score_pair(clean[0], noisy[0], sample_rate=rate)
                a = score_pair(clean[0], d.denoise(noisy, rate)[0], sample_rate=rate)
                rows.append((b["pesq_wb"], a["pesq_wb"], b["si_sdr"], a["si_sdr"]))
            m = np.mean(rows, axis=0)
            ok = m[1] > m[0] and m[3] > m[2]
            verdict.append(ok)
            print(f"{name}: telephone {rate} Hz: PESQ-WB {m[0]:.2f} -> {m[1]:.2f}, SI-SDR {m[2]:.2f} -> {m[3]:.2f}"
                  f"{'' if ok else '  FAILS'}", flush=True)
        for clip in ("speech-female.wav", "speech-male.wav"):
            scores = []
            for rate in (*TELEPHONE_RATES, 16000, 44100):
                wav = read_at(EVAL / "fullband" / clip, rate)
                scores.append(si_sdr(wav[0].astype(np.float64), d.denoise(wav, rate)[0].astype(np.float64)))
            verdict.append(min(scores) > 15.0)
            print(f"{name}: clean {clip} at 8 / 11.025 / 12 / 16 / 44.1 kHz: SI-SDR "
                  + " / ".join(f"{s:.1f}" for s in scores), flush=True)
        print(f"{name}: telephone test {'passes' if all(verdict) else 'FAILS'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--dataset", type=Path, default=ROOT / "data_prep" / "dataset")
    parser.add_argument("--config", type=Path, default=ROOT / "data_prep" / "stage14.toml")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = PreparedDataset(args.dataset)
    cfg = load_config(args.config, {"precision": "fp32", "valid_batches": 0, "loss": "compressed_mag"})
    step = Step(cfg, dataset.features, torch.device("cpu"))
    valid = dataset.valid()
    for path in args.models:
        print(f"{path}: loss {validation_loss(load_model(path).model, valid, step, config=cfg):.6f}", flush=True)
    models = {str(path): Denoiser.from_file(path, device="cpu") for path in args.models}
    for rate in (8000, 16000):
        near_clean(models, args.dataset / "valid", rate=rate)
    telephone(models)


if __name__ == "__main__":
    main()
