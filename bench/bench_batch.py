"""Batch throughput: ``denoise IN_DIR OUT_DIR -j N`` next to a shell loop calling ``denoise`` per file.

    .venv/bin/python bench/bench_batch.py [--short 200] [--long 10] [--jobs 1 2] [--loop-files 10]

Two sets of 16 kHz mono files: ``--short`` files of 2-3 s and ``--long``
files of one minute. Each set is denoised by the batch command (one process,
``--jobs N`` workers) and, on its first ``--loop-files`` files, by a shell
loop starting ``denoise IN OUT`` once per file; the loop's figures are
extrapolated to the whole set (per-file cost times the number of files) and
marked so. Wall-clock times include starting Python and loading torch and
the model, as a user sees them. The command's start-up cost (a batch of one
1 s file) is measured too, and the throughput without it is shown beside; with
``--jobs 2`` the workers' own start-up is not subtracted (the batch denoises
files in its own process while they start).

The model is the shipped one when ``pretrained/model.safetensors`` exists,
else a randomly initialised model with the default ``ModelConfig`` (same
size and speed as the shipped design) written to a temp folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_model, speech_like, write_audio  # noqa: E402

from audiodenoise.checkpoint import save_model  # noqa: E402
from audiodenoise.features import FeatureConfig  # noqa: E402
from audiodenoise.model import ModelConfig  # noqa: E402

SAMPLE_RATE = 16000
DENOISE = shutil.which("denoise", path=str(Path(sys.executable).parent)) or "denoise"


def make_set(folder: Path, n: int, seconds: tuple[float, float], seed: int) -> float:
    """``n`` noisy speech-like files with lengths drawn from ``seconds``; returns the total audio seconds."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(n):
        length = float(rng.uniform(*seconds))
        clean = speech_like(SAMPLE_RATE, length, seed=seed * 100_000 + i)
        noisy = clean + 0.03 * rng.standard_normal(clean.shape).astype(np.float32)
        write_audio(folder / f"f{i:04d}.wav", noisy, SAMPLE_RATE)
        total += clean.shape[1] / SAMPLE_RATE
    return total


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def shell_loop(files: list[Path], out: Path, model: Path) -> float:
    out.mkdir()
    script = 'for f in "$@"; do "$DENOISE" "$f" "$OUT/$(basename "$f")" --model "$MODEL" -q || exit 1; done'
    start = time.perf_counter()
    subprocess.run(
        ["bash", "-c", script, "loop", *map(str, files)],
        check=True,
        env={**os.environ, "DENOISE": DENOISE, "OUT": str(out), "MODEL": str(model)},
    )
    return time.perf_counter() - start


def row(label: str, files: int, audio_seconds: float, wall: float, note: str = "", startup: float = 0.0) -> str:
    text = f"  {label:<28} {wall:8.1f} s  {files / wall:7.2f} files/s  {audio_seconds / wall:8.1f} audio s/s"
    if startup:
        work = max(wall - startup, 1e-9)
        text += f"  (without start-up: {files / work:.2f} files/s, {audio_seconds / work:.1f} audio s/s)"
    return text + (f"  {note}" if note else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=200, help="number of 2-3 s files")
    parser.add_argument("--long", type=int, default=10, help="number of 60 s files")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--loop-files", type=int, default=10, help="files the shell loop runs on (then extrapolated)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp = Path(tmp)
        model = ROOT / "pretrained" / "model.safetensors"
        if model.is_file():
            which = "shipped model"
        else:
            model = tmp / "default.safetensors"
            save_model(model, make_model(ModelConfig()), FeatureConfig(), info={"note": "bench: random weights"})
            which = "default ModelConfig, random weights (no shipped model yet)"
        sets = {
            f"{args.short} x 2-3 s": (tmp / "short", args.short, (2.0, 3.0)),
            f"{args.long} x 60 s": (tmp / "long", args.long, (60.0, 60.0)),
        }
        try:
            load = "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
        except OSError:
            load = ""
        print(f"batch benchmark: {which}; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, {load}; 16 kHz mono files")
        make_set(tmp / "one", 1, (1.0, 1.0), 0)
        startup = timed([DENOISE, str(tmp / "one"), str(tmp / "out_one"), "--model", str(model), "-q"])
        print(f"start-up: {startup:.1f} s (a batch of one 1 s file: Python, torch, the model)")
        for seed, (name, (folder, n, seconds)) in enumerate(sets.items(), start=1):
            if n == 0:
                continue
            audio_seconds = make_set(folder, n, seconds, seed)
            print(f"{name} ({audio_seconds:.0f} s of audio):")
            for jobs in args.jobs:
                out = tmp / f"out_{folder.name}_j{jobs}"
                wall = timed([DENOISE, str(folder), str(out), "--model", str(model), "-j", str(jobs), "-q"])
                print(row(f"denoise DIR OUT -j {jobs}", n, audio_seconds, wall, startup=startup))
            files = sorted(folder.glob("*.wav"))[: args.loop_files]
            loop_audio = sum(_seconds(f) for f in files)
            wall = shell_loop(files, tmp / f"out_{folder.name}_loop", model)
            note = ""
            if len(files) < n:
                note = f"(extrapolated from {len(files)} files, {wall:.1f} s)"
                wall = wall * n / len(files)
                loop_audio = audio_seconds
            print(row("shell loop, denoise per file", n, loop_audio, wall, note))


def _seconds(path: Path) -> float:
    import soundfile as sf

    return sf.info(str(path)).duration


if __name__ == "__main__":
    main()
