"""Fuzzed input files: random bytes, truncated and bit-flipped WAV/FLAC/OGG, huge declared lengths.

Every case is seeded (a fixed list of seeds), so the suite is repeatable. Each file either gives
our error (one line, nothing written) or, for a bit flip that still decodes, a whole, finite
output; always within a time limit, and in a subprocess within a memory limit.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_model, speech_like
from typer.testing import CliRunner

from audiodenoise.api import Denoiser
from audiodenoise.cli.denoise import app
from audiodenoise.errors import AudioDenoiseError
from audiodenoise.features import FeatureConfig

SEEDS = range(6)
TIME_LIMIT_SECONDS = 20
MEMORY_LIMIT_BYTES = 3 << 30  # address space of a whole python + torch process
MAX_RSS_BYTES = 1 << 30  # 230 MB idle; 280 MB at most over the cases


@dataclass(frozen=True)
class Case:
    name: str
    ext: str
    data: bytes
    must_fail: bool  # False: a bit flip may leave a decodable file, which must then denoise whole


def _encode(ext: str, subtype: str, *, channels: int = 2, seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    wav = speech_like(16000, seconds, channels=channels, seed=7)
    sf.write(buf, wav.T, 16000, format={"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}[ext], subtype=subtype)
    return buf.getvalue()


def _flip_bits(data: bytes, rng: np.random.Generator, *, n: int, region: int) -> bytes:
    out = bytearray(data)
    for _ in range(n):
        out[int(rng.integers(0, min(region, len(out))))] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _wav_declaring(data: bytes, data_bytes: int, *, keep_body: int = 64, fmt: tuple | None = None) -> bytes:
    """The WAV ``data`` with its data chunk declaring ``data_bytes`` and only ``keep_body`` bytes of it left."""
    out = bytearray(data)
    at = out.find(b"data")
    struct.pack_into("<I", out, at + 4, data_bytes)
    struct.pack_into("<I", out, 4, min(data_bytes + at, 0xFFFFFFFF))  # RIFF size to match
    if fmt is not None:  # (format tag, channels, rate, byte rate, block align, bits)
        struct.pack_into("<HHIIHH", out, out.find(b"fmt ") + 8, *fmt)
    return bytes(out[: at + 8 + keep_body])


def _flac_declaring(data: bytes, total_samples: int) -> bytes:
    """The FLAC ``data`` with STREAMINFO's 36-bit total sample count replaced."""
    out = bytearray(data)
    assert out[:4] == b"fLaC" and out[4] & 0x7F == 0  # STREAMINFO first; its fields start at byte 8
    packed = int.from_bytes(out[18:26], "big")  # rate:20 channels:3 bits:5 total:36
    packed = (packed & ~((1 << 36) - 1)) | total_samples
    out[18:26] = packed.to_bytes(8, "big")
    return bytes(out)


def build_cases() -> list[Case]:
    real = {
        "wav": ("wav", _encode("wav", "PCM_16")),
        "wavfloat": ("wav", _encode("wav", "FLOAT")),
        "flac": ("flac", _encode("flac", "PCM_16")),
        "ogg": ("ogg", _encode("ogg", "VORBIS")),
    }
    magic = {"wav": b"RIFF\x00\x10\x00\x00WAVEfmt ", "flac": b"fLaC", "ogg": b"OggS\x00\x02"}
    cases = []
    for ext in ("wav", "flac", "ogg"):
        for seed in SEEDS:
            rng = np.random.default_rng([1, seed])
            size = int(rng.integers(1, 1 << 16))
            cases.append(Case(f"{ext}-random-bytes-{seed}", ext, rng.bytes(size), True))
            cases.append(Case(f"{ext}-magic-then-random-{seed}", ext, magic[ext] + rng.bytes(size), True))
    for name, (ext, data) in real.items():
        # cut inside the header, just after it, and part way through the body; an OGG stream has no
        # declared length (it ends at its last whole page), so a cut in its body may decode, shorter
        for cut in (1, 4, 8, 12, 20, 36, 44, 60, 200, 1000, len(data) // 2, len(data) - 10):
            may_decode = ext == "ogg" and cut >= len(data) // 2
            cases.append(Case(f"{name}-truncated-at-{cut}", ext, data[:cut], not may_decode))
        for seed in SEEDS:
            rng = np.random.default_rng([2, seed])
            flipped = _flip_bits(data, rng, n=int(rng.integers(1, 4)), region=128)
            cases.append(Case(f"{name}-header-bit-flips-{seed}", ext, flipped, False))
            flipped = _flip_bits(data, rng, n=int(rng.integers(1, 30)), region=len(data))
            cases.append(Case(f"{name}-bit-flips-anywhere-{seed}", ext, flipped, False))
    wav, flac = real["wav"][1], real["flac"][1]
    cases += [
        Case("wav-declares-2-GB-holds-64-bytes", "wav", _wav_declaring(wav, 0x7FF00000), True),
        Case("wav-declares-2-GB-at-192-kHz-1024-channels", "wav",
             _wav_declaring(wav, 0x7FF00000, fmt=(1, 1024, 192000, 192000 * 2048, 2048, 16)), True),
        # the same header with the "length unknown" marker of a streamed WAV: a real 1024-channel file
        Case("wav-streamed-1024-channels-15-frames", "wav",
             _wav_declaring(wav, 0xFFFFFFFF, keep_body=15 * 2048, fmt=(1, 1024, 192000, 192000 * 2048, 2048, 16)),
             False),
        Case("wav-sample-rate-0", "wav", _wav_declaring(wav, 32000, keep_body=32000, fmt=(1, 2, 0, 0, 4, 16)), True),
        Case("flac-declares-2-to-the-36-samples", "flac", _flac_declaring(flac, (1 << 36) - 1), True),
        Case("flac-declares-2-to-the-36-samples-truncated", "flac", _flac_declaring(flac, (1 << 36) - 1)[:4000],
             True),
    ]
    return cases


CASES = build_cases()
CASE_IDS = [case.name for case in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


class _TimedOut(Exception):
    pass


@contextmanager
def time_limit(seconds: int):
    """Raise :class:`_TimedOut` in the main thread after ``seconds`` (SIGALRM)."""

    def on_alarm(signum, frame):
        raise _TimedOut(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def denoiser() -> Denoiser:
    return Denoiser(make_model(), FeatureConfig(), device="cpu")


def _layout(tmp_path: Path, case: Case) -> tuple[Path, Path]:
    src = tmp_path / "in" / f"fuzz.{case.ext}"
    src.parent.mkdir()
    src.write_bytes(case.data)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return src, out_dir


def _check_output(path: Path, src_data: bytes) -> None:
    """A decodable fuzzed input gave an output: it is whole, finite and shaped like the input."""
    source = sf.info(io.BytesIO(src_data))
    out, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert (sample_rate, out.shape) == (source.samplerate, (source.frames, source.channels))
    assert np.isfinite(out).all() and np.abs(out).max(initial=0) <= 1.0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fuzzed_file_through_the_api(tmp_path, denoiser, case):
    src, out_dir = _layout(tmp_path, case)
    dst = out_dir / "out.wav"
    start = time.monotonic()
    with time_limit(TIME_LIMIT_SECONDS):
        try:
            denoiser.denoise_file(src, dst)
        except AudioDenoiseError as exc:  # anything else fails the test
            message = str(exc)
            assert message.startswith(str(src)) and "\n" not in message, message
            assert os.listdir(out_dir) == []  # no output, no temp file
        else:
            assert not case.must_fail, "a broken file was denoised"
            assert os.listdir(out_dir) == ["out.wav"]
            _check_output(dst, case.data)
    assert time.monotonic() - start < TIME_LIMIT_SECONDS
    assert src.read_bytes() == case.data


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fuzzed_file_through_the_cli(tmp_path, tiny_model_file, case):
    src, out_dir = _layout(tmp_path, case)
    with time_limit(TIME_LIMIT_SECONDS):
        result = CliRunner().invoke(app, [str(src), str(out_dir / "out.wav"), "--model", str(tiny_model_file), "-q"])
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr, result.exception)
    if result.exit_code == 1:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"denoise: error: {src}: "), result.stderr
        assert "internal error" not in lines[0]
        assert os.listdir(out_dir) == []
    else:
        assert not case.must_fail, "a broken file was denoised"
        assert result.stderr == ""
        assert os.listdir(out_dir) == ["out.wav"]
    assert result.stdout == ""
    assert src.read_bytes() == case.data


# -- time and memory, measured in a separate process ---------------------------------------------

HARNESS = """
import json, resource, signal, sys, time
from audiodenoise.api import Denoiser
from audiodenoise.errors import AudioDenoiseError

def on_alarm(signum, frame):
    raise TimeoutError("time limit")

signal.signal(signal.SIGALRM, on_alarm)
model, limit, jobs = sys.argv[1], int(sys.argv[2]), json.loads(sys.stdin.read())
denoiser = Denoiser.from_file(model, device="cpu")
for name, src, dst in jobs:
    start = time.monotonic()
    signal.alarm(limit)
    try:
        denoiser.denoise_file(src, dst)
        outcome = "ok"
    except AudioDenoiseError as exc:
        outcome = "error"
    except BaseException as exc:  # MemoryError, TimeoutError, a bug: reported, not raised
        outcome = f"{type(exc).__name__}: {exc}"
    signal.alarm(0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"name": name, "outcome": outcome, "seconds": time.monotonic() - start, "max_rss": rss}),
          flush=True)
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def test_every_fuzzed_file_in_bounded_time_and_memory(tmp_path, tiny_model_file):
    jobs = []
    for i, case in enumerate(CASES):
        folder = tmp_path / f"{i:03d}"
        folder.mkdir()
        (folder / f"in.{case.ext}").write_bytes(case.data)
        jobs.append((case.name, str(folder / f"in.{case.ext}"), str(folder / "out.wav")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, str(tiny_model_file), str(TIME_LIMIT_SECONDS)],
        input=json.dumps(jobs), capture_output=True, text=True, env=env, preexec_fn=_limit_memory,
        timeout=TIME_LIMIT_SECONDS * 4 + 2 * len(CASES),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["name"] for r in results] == CASE_IDS  # none crashed the process
    must_fail = {case.name for case in CASES if case.must_fail}
    for r in results:
        assert r["outcome"] in ("ok", "error"), r
        assert r["outcome"] == "error" or r["name"] not in must_fail, r
        assert r["seconds"] < TIME_LIMIT_SECONDS, r
    assert max(r["max_rss"] for r in results) < MAX_RSS_BYTES, max(results, key=lambda r: r["max_rss"])


@pytest.mark.parametrize("name", ["wav-declares-2-GB-holds-64-bytes", "flac-declares-2-to-the-36-samples",
                                  "ogg-magic-then-random-0"])
def test_console_script_on_a_fuzzed_file(tmp_path, tiny_model_file, name):
    script = shutil.which("denoise", path=str(Path(sys.executable).parent)) or shutil.which("denoise")
    if script is None:
        pytest.skip("the denoise console script is not installed")
    case = next(c for c in CASES if c.name == name)
    src, out_dir = _layout(tmp_path, case)
    start = time.monotonic()
    proc = subprocess.run(
        # -q: a progress bar (also drawn when stderr is a pipe) would precede the error line
        [script, str(src), str(out_dir / "out.wav"), "--model", str(tiny_model_file), "-q"],
        capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    # generous: the process also starts python and imports torch on a busy machine
    assert time.monotonic() - start < 3 * TIME_LIMIT_SECONDS
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"denoise: error: {src}: "), proc.stderr
    assert proc.stdout == ""
    assert os.listdir(out_dir) == []
    assert src.read_bytes() == case.data
