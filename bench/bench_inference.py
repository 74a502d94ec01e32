"""Inference benchmark: real-time factor on one CPU thread and peak memory on a long file.

    python bench/bench_inference.py                    # shipped model, 2-hour long file
    python bench/bench_inference.py --model run/model.safetensors --long-minutes 10

Prints a table:

- real-time factor (processing seconds / audio seconds, lower is faster) of
  ``Denoiser.denoise_file`` (file to file: read, resample, model, write) with
  ``torch.set_num_threads(1)`` on a generated 60 s 16 kHz mono file and a 60 s
  48 kHz stereo file;
- peak resident memory (``ru_maxrss`` of a fresh subprocess) while denoising a
  generated ``--long-minutes`` 48 kHz stereo PCM_16 WAV (default 120 min, about
  1.4 GB of input and output on disk in a temp folder, written block by block).

The test signals are synthetic (harmonic "speech" with a syllable envelope plus
noise); the model does the same work whatever the content.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

BLOCK_SECONDS = 10.0


def write_test_file(path: Path, *, sample_rate: int, channels: int, seconds: float, seed: int = 0) -> Path:
    """A noisy speech-like PCM_16 WAV, generated and written block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    total = int(round(seconds * sample_rate))
    block = int(BLOCK_SECONDS * sample_rate)
    f0 = 100 + 80 * rng.random(channels)
    phase = np.zeros(channels)
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=channels, format="WAV",
                      subtype="PCM_16") as fh:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / sample_rate
            inst = f0[:, None] * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))[None]
            ph = phase[:, None] + 2 * np.pi * np.cumsum(inst, axis=1) / sample_rate
            phase = ph[:, -1] % (2 * np.pi)
            voiced = sum(np.sin(k * ph) / k for k in range(1, 12))
            envelope = (0.5 * (1 + np.sin(2 * np.pi * 3.0 * t))) ** 2
            noise = rng.standard_normal((channels, n))
            wav = 0.15 * voiced * envelope[None] + 0.03 * noise
            fh.write(np.clip(wav, -1, 1).T.astype(np.float32))
    return path


def load_denoiser(model: str | None):
    from audiodenoise.api import Denoiser, pretrained_path

    if model is None:
        if not pretrained_path().is_file():
            sys.exit(f"bench: error: {pretrained_path()}: the shipped model is not built yet; pass --model PATH")
        return Denoiser.from_pretrained(device="cpu"), str(pretrained_path())
    return Denoiser.from_file(model, device="cpu"), model


def measure_rtf(denoiser, src: Path, dst: Path) -> tuple[float, float]:
    """(audio seconds, processing seconds) of one file-to-file run."""
    start = time.perf_counter()
    result = denoiser.denoise_file(src, dst, overwrite=True)
    return result.duration, time.perf_counter() - start


def _vm_hwm_mb() -> float | None:
    """Peak RSS of this address space (Linux ``VmHWM``; unlike ru_maxrss it restarts at exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def child_memory(args: argparse.Namespace) -> None:
    """Run in a fresh process: denoise one file, print peak RSS and timings as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    denoiser, _ = load_denoiser(args.model)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    audio_seconds, seconds = measure_rtf(denoiser, Path(args.child_memory[0]), Path(args.child_memory[1]))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"baseline_mb": baseline_kb / 1024, "peak_mb": peak_kb / 1024, "vm_hwm_mb": _vm_hwm_mb(),
                      "audio_seconds": audio_seconds, "seconds": seconds}))


def run_long(args: argparse.Namespace, workdir: Path) -> tuple:
    """Generate the long file and denoise it in a fresh subprocess; its table row."""
    label = f"{args.long_minutes:g} min 48 kHz stereo"
    src = workdir / "long.wav"
    print(f"  {label}: writing {src} ...", file=sys.stderr, flush=True)
    write_test_file(src, sample_rate=48000, channels=2, seconds=args.long_minutes * 60, seed=1)
    print(f"  {label}: {src.stat().st_size / 1e9:.2f} GB, denoising in a subprocess ...", file=sys.stderr, flush=True)
    command = [sys.executable, __file__, "--child-memory", str(src), str(workdir / "long-out.wav"),
               "--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"bench: error: the long-file run failed:\n{child.stderr}")
    stats = json.loads(child.stdout.strip().splitlines()[-1])
    src.unlink()
    (workdir / "long-out.wav").unlink()
    print(f"  {label}: RTF {stats['seconds'] / stats['audio_seconds']:.4f}, peak RSS {stats['peak_mb']:.0f} MB",
          file=sys.stderr, flush=True)
    return label, stats["audio_seconds"], stats["seconds"], stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the real-time-factor files")
    parser.add_argument("--long-minutes", type=float, default=120.0,
                        help="length of the 48 kHz stereo peak-memory file (0: skip it)")
    parser.add_argument("--workdir", help="folder for the generated files (default: a temp folder, removed after)")
    parser.add_argument("--child-memory", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args)
        return

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="audiodenoise-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        # the long run first, while this process is still small: a child's ru_maxrss starts
        # at its parent's resident size (fork), so a parent holding torch would inflate it
        long_row = run_long(args, workdir) if args.long_minutes > 0 else None

        import torch

        torch.set_num_threads(args.threads)
        denoiser, model_name = load_denoiser(args.model)
        # warm-up: first-call allocations and kernel selection are not part of the steady rate
        warm = write_test_file(workdir / "warm.wav", sample_rate=48000, channels=2, seconds=2.0)
        denoiser.denoise_file(warm, workdir / "warm-out.wav", overwrite=True)
        for sample_rate, channels in ((16000, 1), (48000, 2)):
            label = f"{args.seconds:g} s {sample_rate / 1000:g} kHz {'mono' if channels == 1 else 'stereo'}"
            src = write_test_file(workdir / f"in-{sample_rate}-{channels}.wav", sample_rate=sample_rate,
                                  channels=channels, seconds=args.seconds, seed=sample_rate)
            audio_seconds, seconds = measure_rtf(denoiser, src, workdir / f"out-{sample_rate}-{channels}.wav")
            rows.append((label, audio_seconds, seconds, None))
            print(f"  {label}: RTF {seconds / audio_seconds:.4f}", file=sys.stderr, flush=True)
        if long_row:
            rows.append(long_row)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    import audiodenoise
    from audiodenoise.model import count_parameters, macs_per_second

    features = denoiser.features
    macs = macs_per_second(denoiser.model, features.sample_rate / features.hop_length)
    print(f"audiodenoise {audiodenoise.__version__}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}")
    print(f"model: {model_name} ({count_parameters(denoiser.model):,} parameters, {macs / 1e9:.3f} G MACs "
          f"per second of audio, chunks of {denoiser.chunk_seconds:g} s)")
    print()
    print(f"| {'file':<24} | {'audio s':>8} | {'process s':>9} | {'RTF':>6} | {'peak RSS':>9} |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 11}|{'-' * 8}|{'-' * 11}|")
    for label, audio_seconds, seconds, stats in rows:
        peak = f"{stats['peak_mb']:.0f} MB" if stats else "-"
        print(f"| {label:<24} | {audio_seconds:>8.1f} | {seconds:>9.2f} | {seconds / audio_seconds:>6.4f} "
              f"| {peak:>9} |")
    for label, _, _, stats in rows:
        if stats:
            hwm = f" (VmHWM {stats['vm_hwm_mb']:.0f} MB)" if stats.get("vm_hwm_mb") else ""
            print(f"\n{label}: peak RSS {stats['peak_mb']:.0f} MB{hwm}, of which {stats['baseline_mb']:.0f} MB "
                  "was in use after importing torch and loading the model")


if __name__ == "__main__":
    main()
