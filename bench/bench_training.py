"""Training throughput on the CPU with the default config, and data loading's share of step time.

    python bench/bench_training.py [--dataset DIR] [--steps 20] [--threads N] [--batch-size 16]

Without --dataset it prepares a small synthetic corpus (speech-like signals + noise) in a temp
folder first. Prints pairs/s, seconds of audio per second and the data-loading share.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from audiodenoise.dataset import PairsDataset  # noqa: E402
from audiodenoise.model import DenoisingAutoencoder, count_parameters  # noqa: E402
from audiodenoise.prepare import PrepareConfig, prepare  # noqa: E402
from audiodenoise.training import TrainConfig, batch_indices, loss_fn  # noqa: E402


def synthetic_dataset(root: Path) -> Path:
    from conftest import speech_like, write_audio

    clean, noise = root / "clean", root / "noise"
    clean.mkdir()
    noise.mkdir()
    for i in range(24):
        write_audio(clean / f"{100 + i}-1-{i}.flac", speech_like(16000, 8.0, seed=i), 16000)
    rng = np.random.default_rng(0)
    write_audio(noise / "noise.wav", 0.1 * rng.standard_normal((1, 16000 * 20)).astype(np.float32), 16000)
    out = root / "dataset"
    prepare([clean], [noise], out, config=PrepareConfig(valid_fraction=0.1), progress=False, log=lambda m: None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or synthetic_dataset(Path(tmp))
        train_set = PairsDataset(dataset, "train")
        config = TrainConfig(batch_size=args.batch_size)
        model = DenoisingAutoencoder(config.model).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        frames = train_set[0][0].shape[-1]
        seconds_per_pair = (frames - 1) * train_set.features.hop_length / train_set.features.sample_rate
        data_time = step_time = 0.0
        for step in range(args.steps + 2):
            t0 = time.perf_counter()
            noisy, clean = train_set.batch(batch_indices(step, n=len(train_set), batch_size=config.batch_size,
                                                         seed=0))
            t1 = time.perf_counter()
            loss = loss_fn(model(noisy), noisy, clean, config=config, features=train_set.features)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 2:  # the first steps warm up the allocator and oneDNN
                data_time += t1 - t0
                step_time += time.perf_counter() - t0
        pairs_per_s = args.steps * config.batch_size / step_time
        print(f"model: {count_parameters(model)} parameters, batch {config.batch_size} x {seconds_per_pair:.1f} s, "
              f"{args.threads} thread(s), {args.steps} steps, dataset {dataset}")
        print("| pairs/s | audio s/s | s/step | data loading share |")
        print("|---|---|---|---|")
        print(f"| {pairs_per_s:.2f} | {pairs_per_s * seconds_per_pair:.1f} | {step_time / args.steps:.2f} | "
              f"{100 * data_time / step_time:.1f} % |")


if __name__ == "__main__":
    main()
