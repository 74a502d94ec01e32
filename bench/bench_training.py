"""Training throughput on the CPU: seconds of audio trained per second, fp32 beside the default precision.

    python bench/bench_training.py [--dataset DIR] [--config TOML] [--steps 10] [--threads N] [--batch-size 16]
                                   [--bf16]

Without --dataset it prepares a small synthetic corpus (speech-like signals + noise) in a temp folder
first. ``--config`` times a training config's model, loss and mix (for example
``data_prep/ablation/crn.toml``) instead of the defaults. Each step is timed whole: on-the-fly mixing,
features, forward, loss, backward and the optimizer; the mixing share is printed too. The precisions
are measured interleaved (step by step), so a slow spell of the machine hits both alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from audiodenoise.dataset import PreparedDataset  # noqa: E402
from audiodenoise.mixer import Mixer  # noqa: E402
from audiodenoise.model import DenoisingAutoencoder, count_parameters  # noqa: E402
from audiodenoise.prepare import PrepareConfig, prepare  # noqa: E402
from audiodenoise.training import Step, TrainConfig, cpu_has_bf16, load_config, resolve_precision  # noqa: E402


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
    parser.add_argument("--config", type=Path, help="training config (TOML) whose model, loss and mix to time")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, help="default: the config's (16)")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 where it is not the default")
    parser.add_argument("--compile", action="store_true",
                        help="also time the default precision through torch.compile (compilation not counted)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default = resolve_precision("auto", torch.device("cpu"))
    precisions = ["fp32"] + (["bf16"] if default == "bf16" or args.bf16 else [])
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or synthetic_dataset(Path(tmp))
        data = PreparedDataset(dataset, in_memory=True)
        config = load_config(args.config) if args.config else TrainConfig()
        config = dataclasses.replace(config, batch_size=args.batch_size or config.batch_size)
        mixer = Mixer(data.speech, data.noise, config.mix, sample_rate=data.features.sample_rate, seed=0)
        runs = {}
        for label in precisions + ([f"{default}+compile"] if args.compile else []):
            torch.manual_seed(0)
            model = DenoisingAutoencoder(config.model).train()
            precision = label.split("+")[0]
            step = Step(dataclasses.replace(config, precision=precision), data.features, torch.device("cpu"))
            net = torch.compile(model) if label.endswith("+compile") else model
            runs[label] = (net, torch.optim.AdamW(model.parameters(), lr=config.lr), step)
        times = {label: {"mix": 0.0, "total": 0.0} for label in runs}
        for i in range(args.steps + 2):
            for precision, (model, optimizer, step) in runs.items():
                t0 = time.perf_counter()
                noisy, clean = mixer.batch(i, batch_size=config.batch_size)
                t1 = time.perf_counter()
                loss = step.loss(model, torch.from_numpy(noisy), torch.from_numpy(clean))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if i >= 2:  # the first steps warm up the allocator and oneDNN (and compile)
                    times[precision]["mix"] += t1 - t0
                    times[precision]["total"] += time.perf_counter() - t0
        seconds = config.batch_size * config.mix.segment_seconds * args.steps
        print(f"model: {config.model.layout} {list(config.model.channels)}, "
              f"{count_parameters(DenoisingAutoencoder(config.model))} "
              f"parameters, loss {config.loss}, batch {config.batch_size} x "
              f"{config.mix.segment_seconds:g} s, {args.threads} thread(s), {args.steps} steps, dataset {dataset}")
        print(f"CPU bf16 support: {'yes' if cpu_has_bf16() else 'no'}; default precision here: {default}"
              + ("" if default == "bf16" else " (bf16 autocast is emulated and slower without native bf16)"))
        print("| precision | audio s/s | s/step | mixing share |")
        print("|---|---|---|---|")
        for precision, t in times.items():
            label = f"{precision}{' (default)' if precision == default else ''}"
            print(f"| {label} | {seconds / t['total']:.1f} | {t['total'] / args.steps:.2f} | "
                  f"{100 * t['mix'] / t['total']:.1f} % |")


if __name__ == "__main__":
    main()
