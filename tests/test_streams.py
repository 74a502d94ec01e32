"""Pipes: `denoise - OUT`, `denoise IN -`, `denoise - -`: WAV or FLAC, read and written block by block."""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
from conftest import make_model, speech_like, write_audio

from audiodenoise import streams
from audiodenoise.api import Denoiser
from audiodenoise.errors import AudioError, OutputError
from audiodenoise.features import FeatureConfig


@pytest.fixture(scope="module")
def denoiser() -> Denoiser:
    return Denoiser(make_model(), FeatureConfig(), device="cpu", chunk_seconds=0.5)


def _wav_bytes(wav: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wav.T, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _flac_bytes(wav: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wav.T, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def _streaming_wav_header(rate: int, channels: int) -> bytes:
    """What ffmpeg writes to a pipe: 16-bit PCM with both sizes 0xFFFFFFFF ("length unknown")."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<I", 16) + fmt + b"data\xff\xff\xff\xff"


def _read_stream(data: bytes) -> tuple[np.ndarray, streams.StreamInfo]:
    source = streams.InputStream(io.BytesIO(data))
    wav = np.concatenate(list(source.blocks()), axis=1)
    source.close()
    return wav, source.info


@pytest.fixture
def src(tmp_path):
    return write_audio(tmp_path / "in.wav", speech_like(22050, 2.3, channels=2, seed=2), 22050, "PCM_16")


@pytest.fixture
def expected(tmp_path, src, denoiser):
    denoiser.denoise_file(src, tmp_path / "expected.wav")
    return sf.read(str(tmp_path / "expected.wav"), dtype="float32", always_2d=True)[0].T


def test_stdin_wav_to_a_file_equals_denoising_the_file(tmp_path, src, expected, denoiser):
    result = streams.denoise_stream(denoiser, "-", tmp_path / "out.wav", stdin=io.BytesIO(src.read_bytes()))
    assert (result.sample_rate, result.channels, result.frames) == (22050, 2, expected.shape[1])
    out, rate = sf.read(str(tmp_path / "out.wav"), dtype="float32", always_2d=True)
    assert rate == 22050 and np.array_equal(out.T, expected)
    assert sf.info(str(tmp_path / "out.wav")).subtype == "PCM_16"


def test_stdin_to_a_file_in_missing_folders_creates_them_as_a_file_input_does(tmp_path, src, expected, denoiser):
    dst = tmp_path / "new" / "sub" / "out.wav"
    streams.denoise_stream(denoiser, "-", dst, stdin=io.BytesIO(src.read_bytes()))
    out, _ = sf.read(str(dst), dtype="float32", always_2d=True)
    assert np.array_equal(out.T, expected)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_file_to_stdout_equals_denoising_the_file(tmp_path, src, denoiser, fmt):
    denoiser.denoise_file(src, tmp_path / f"expected.{fmt}")  # libsndfile's own sample conversion for fmt
    expected = sf.read(str(tmp_path / f"expected.{fmt}"), dtype="float32", always_2d=True)[0].T
    stdout = io.BytesIO()
    streams.denoise_stream(denoiser, src, "-", format=fmt, stdout=stdout)
    data = stdout.getvalue()
    assert data[:4] == {"wav": b"RIFF", "flac": b"fLaC"}[fmt]
    out, info = _read_stream(data)
    assert (info.sample_rate, info.channels, info.subtype) == (22050, 2, "PCM_16")
    assert np.array_equal(out, expected)


def test_stdin_flac_to_stdout_wav(src, expected, denoiser):
    wav = sf.read(str(src), dtype="float32", always_2d=True)[0].T
    stdout = io.BytesIO()
    streams.denoise_stream(denoiser, "-", "-", stdin=io.BytesIO(_flac_bytes(wav, 22050)), stdout=stdout)
    out, _ = _read_stream(stdout.getvalue())
    assert np.array_equal(out, expected)


def test_a_streaming_header_of_unknown_length_is_read_to_the_end(denoiser):
    samples = (np.random.default_rng(0).uniform(-0.3, 0.3, (1, 16000 * 3)) * 32767).astype("<i2")
    data = _streaming_wav_header(16000, 1) + samples.T.tobytes()
    wav, info = _read_stream(data)
    assert info.sample_rate == 16000 and wav.shape == (1, 48000)
    assert np.array_equal(wav, samples / 32768.0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no audio on standard input"),
        (b"hello, world\n", "not a WAV or FLAC stream"),
        (b"OggS" + bytes(100), "not a WAV or FLAC stream"),
    ],
)
def test_bad_streams_are_named_clearly(tmp_path, denoiser, data, match):
    with pytest.raises(AudioError, match=f"^stdin: {match}"):
        streams.denoise_stream(denoiser, "-", tmp_path / "out.wav", stdin=io.BytesIO(data))
    assert list(tmp_path.iterdir()) == []  # no output, not even a temp file


def test_a_truncated_stream_fails_and_leaves_no_output_file(tmp_path, src, denoiser):
    data = src.read_bytes()[:50000]  # the header declares the whole length
    with pytest.raises(AudioError, match=r"stdin: stream is truncated \(header says 50715 samples, it ended after"):
        streams.denoise_stream(denoiser, "-", tmp_path / "out.wav", stdin=io.BytesIO(data))
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: os.mkfifo(p), r"exists and is a FIFO, not a regular file; choose another output path"),
        (lambda p: p.mkdir(), r"is a folder, expected an output file path"),
    ],
    ids=["fifo", "folder"],
)
def test_a_stream_to_a_file_follows_the_one_output_rule(tmp_path, src, denoiser, make, match, overwrite):
    dst = tmp_path / "out.wav"
    make(dst)
    stdin = io.BytesIO(src.read_bytes())
    with pytest.raises(OutputError, match=f"^{re.escape(str(dst))}: {match}"):
        streams.denoise_stream(denoiser, "-", dst, overwrite=overwrite, stdin=stdin)
    assert stdin.tell() == 0  # refused before anything was read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.wav"]  # no temp file either


def test_a_stream_to_a_file_name_over_the_limit_is_refused_before_reading(tmp_path, src, denoiser):
    dst = tmp_path / ("x" * 300 + ".wav")
    stdin = io.BytesIO(src.read_bytes())
    with pytest.raises(OutputError, match=r"file name is 304 bytes, longer than the file system's \d+-byte limit"):
        streams.denoise_stream(denoiser, "-", dst, stdin=stdin)
    assert stdin.tell() == 0
    assert list(tmp_path.iterdir()) == [src]


def test_a_stream_replaces_an_existing_file_only_with_overwrite(tmp_path, src, expected, denoiser):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"old")
    with pytest.raises(OutputError, match=f"^{re.escape(str(dst))}: already exists; pass --overwrite to replace it$"):
        streams.denoise_stream(denoiser, "-", dst, stdin=io.BytesIO(src.read_bytes()))
    assert dst.read_bytes() == b"old"
    streams.denoise_stream(denoiser, "-", dst, overwrite=True, stdin=io.BytesIO(src.read_bytes()))
    np.testing.assert_array_equal(sf.read(str(dst), dtype="float32", always_2d=True)[0].T, expected)


def test_format_is_for_stdout_only(tmp_path, src, denoiser):
    with pytest.raises(AudioError, match="--format applies to standard output"):
        streams.denoise_stream(denoiser, src, tmp_path / "out.wav", format="flac")
    with pytest.raises(AudioError, match="cannot be piped; use one of wav, flac"):
        streams.denoise_stream(denoiser, src, "-", format="mp3", stdout=io.BytesIO())


class _GeneratedStream(io.RawIOBase):
    """A WAV stream of ``seconds`` of noise, made as it is read; counts the bytes taken."""

    def __init__(self, seconds: float, rate: int = 16000) -> None:
        self._header = _streaming_wav_header(rate, 1)
        self._left = int(seconds * rate) * 2
        self._rng = np.random.default_rng(0)
        self.taken = 0
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.largest_read = max(self.largest_read, len(buffer))
        if self._header:
            n = min(len(buffer), len(self._header))
            buffer[:n], self._header = self._header[:n], self._header[n:]
        else:
            n = min(len(buffer), self._left) // 2 * 2
            buffer[:n] = (self._rng.uniform(-0.1, 0.1, n // 2) * 32767).astype("<i2").tobytes()
            self._left -= n
        self.taken += n
        return n


def test_standard_input_is_read_in_blocks_not_all_at_once():
    raw = _GeneratedStream(600.0)  # 10 minutes, 19.2 MB
    source = streams.InputStream(raw)
    blocks = source.blocks()
    first = next(blocks)
    assert first.shape == (1, streams.BLOCK_FRAMES)
    assert raw.taken < 1 << 20  # a block and the pipe's buffer, not the stream
    assert raw.largest_read <= 1 << 16
    n = first.shape[1] + sum(block.shape[1] for block in blocks)
    assert n == 600 * 16000 and raw.taken == 44 + 2 * n
    source.close()


_PIPE_SCRIPT = """
import os, resource, struct, sys
import numpy as np
seconds, model = float(sys.argv[1]), sys.argv[2]
rate = 16000
r_in, w_in = os.pipe()
child = os.fork()
if child == 0:  # the producer: a generated WAV stream of unknown length, written block by block
    os.close(r_in)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    os.write(w_in, b"RIFF\\xff\\xff\\xff\\xffWAVEfmt " + struct.pack("<I", 16) + fmt + b"data\\xff\\xff\\xff\\xff")
    rng = np.random.default_rng(0)
    for _ in range(int(seconds)):
        data = (rng.uniform(-0.1, 0.1, rate) * 32767).astype("<i2").tobytes()
        while data:
            data = data[os.write(w_in, data):]
    os._exit(0)
os.close(w_in)
proc = __import__("subprocess").Popen(
    [sys.executable, "-m", "audiodenoise", "denoise", "-", "-", "-q", "--model", model],
    stdin=r_in, stdout=__import__("subprocess").PIPE)
os.close(r_in)
total = 0
while chunk := proc.stdout.read(1 << 16):
    total += len(chunk)
_, status, usage = os.wait4(proc.pid, 0)
os.waitpid(child, 0)
print(os.waitstatus_to_exitcode(status), total, usage.ru_maxrss)
"""


def _pipe_run(seconds: float, model) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", _PIPE_SCRIPT, str(seconds), str(model)], capture_output=True,
                         text=True, check=True, timeout=600)
    code, total, rss_kb = (int(x) for x in out.stdout.split())
    return code, total, rss_kb


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 for the child's peak memory")
def test_a_long_stream_through_pipes_runs_in_bounded_memory(tiny_model_file):
    # peak memory of `denoise - -` for a 30 s and a 10 min stream: holding the stream (19 MB of PCM,
    # 37 MiB as float32, as much again for the output) would show; chunks and context are a few MB
    short = _pipe_run(30, tiny_model_file)
    long = _pipe_run(600, tiny_model_file)
    assert short[0] == long[0] == 0
    assert (short[1], long[1]) == (44 + 30 * 32000, 44 + 600 * 32000)  # every sample came out on stdout
    growth_mb = (long[2] - short[2]) / 1024
    print(f"peak RSS {short[2] / 1024:.0f} MB (30 s), {long[2] / 1024:.0f} MB (10 min)")
    # holding the input alone would add >= 37 MiB; 20 MB was exceeded once (22 MB) by allocator noise
    assert growth_mb < 30, f"peak memory grew {growth_mb:.0f} MB from a 30 s to a 10 min stream"


def test_stdout_carries_nothing_but_audio(tmp_path, src, tiny_model_file):
    proc = subprocess.run([sys.executable, "-m", "audiodenoise", "denoise", str(src), "-", "--model",
                           str(tiny_model_file)], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out, info = _read_stream(proc.stdout)  # the whole of stdout parses as one WAV stream
    assert out.shape == (2, 50715) and info.sample_rate == 22050
    assert b"wrote -" in proc.stderr


def test_cat_into_denoise_into_denoise(tmp_path, src, tiny_model_file):
    # cat in.wav | denoise - - | denoise - out.flac
    first = subprocess.Popen([sys.executable, "-m", "audiodenoise", "denoise", "-", "-", "-q", "--model",
                              str(tiny_model_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    second = subprocess.Popen([sys.executable, "-m", "audiodenoise", "denoise", "-", str(tmp_path / "out.flac"),
                               "-q", "--model", str(tiny_model_file)], stdin=first.stdout)
    first.stdout.close()
    feeder = threading.Thread(target=lambda: (first.stdin.write(src.read_bytes()), first.stdin.close()))
    feeder.start()
    assert second.wait(timeout=300) == 0 and first.wait(timeout=300) == 0
    feeder.join()
    info = sf.info(str(tmp_path / "out.flac"))
    assert (info.format, info.samplerate, info.channels, info.frames) == ("FLAC", 22050, 2, 50715)
