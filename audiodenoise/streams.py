"""Audio on pipes: ``denoise - OUT``, ``denoise IN -``, ``cat in.wav | denoise - - | ...``.

A stream is read forward in blocks and written as it is denoised, so memory
stays bounded however long it is (see :func:`~audiodenoise.chunking.process_stream`).
WAV and FLAC travel on pipes: WAV is read by libsndfile's own pipe reader and
written with a "length unknown" header (as ffmpeg does); FLAC is read and
written by libsndfile through forward-only file objects.
Only audio goes to standard output; messages go to standard error.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from . import audio, outputs
from .errors import AudioError
from .file_denoising import DenoiseResult

STDIO = "-"
STREAM_FORMATS = ("wav", "flac")
BLOCK_FRAMES = 1 << 15  # frames read from a pipe at a time
_COPY_BYTES = 1 << 16
_STDIN, _STDOUT = "stdin", "stdout"
# WAV data sizes at or above this mean "length unknown" (streaming writers leave 0xFFFFFFFF)
_UNKNOWN_BYTES = 0x7FFF0000
_WAV_TAGS = {"PCM_U8": (1, 8), "PCM_16": (1, 16), "PCM_24": (1, 24), "PCM_32": (1, 32), "FLOAT": (3, 32),
             "DOUBLE": (3, 64)}


def is_stdio(path: str | os.PathLike) -> bool:
    """True for ``-``, the name of standard input or output."""
    return str(path) == STDIO


@dataclass(frozen=True)
class StreamInfo:
    """What the header of a stream on standard input says."""

    sample_rate: int
    channels: int
    format: str
    subtype: str


class InputStream:
    """A WAV or FLAC stream read forward in blocks (standard input by default)."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        raw = stream if stream is not None else sys.stdin.buffer
        magic = _read_exactly(raw, 4)
        self._pump: threading.Thread | None = None
        try:
            if magic == b"fLaC":  # libsndfile's FLAC reader seeks: give it a file that only goes forward
                self._fh = _ForwardSoundFile(_ForwardReader(raw, magic))
            elif magic in (b"RIFF", b"RF64"):  # libsndfile reads WAV from a pipe without seeking
                read_fd, write_fd = os.pipe()
                self._pump = _start_pump(magic, raw, write_fd)
                self._fh = sf.SoundFile(read_fd, closefd=True)
            elif not magic:
                raise AudioError(f"{_STDIN}: no audio on standard input (empty stream)")
            else:
                raise AudioError(f"{_STDIN}: not a WAV or FLAC stream; only WAV and FLAC can be piped")
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{_STDIN}: not a readable audio stream ({audio._reason(exc)})") from None
        fh = self._fh
        audio.check_sample_rate(fh.samplerate, name=_STDIN)
        if fh.channels < 1:
            raise AudioError(f"{_STDIN}: has no channels")
        self.info = StreamInfo(fh.samplerate, fh.channels, fh.format, fh.subtype)
        self._declared = _declared_frames(fh)
        self.frames = 0

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """Yield ``float32 [channels, n]`` blocks until the stream ends."""
        while True:
            try:
                data = self._fh.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"{_STDIN}: read failed at sample {self.frames} ({audio._reason(exc)})") from None
            if not len(data):
                break
            wav = np.ascontiguousarray(data.T)
            audio.check_signal(wav, name=_STDIN)
            self.frames += wav.shape[1]
            yield wav
        if self.frames == 0:
            raise AudioError(f"{_STDIN}: holds no samples")
        if self._declared is not None and self.frames < self._declared:
            raise AudioError(f"{_STDIN}: stream is truncated (header says {self._declared} samples, "
                             f"it ended after {self.frames})")

    def close(self) -> None:
        self._fh.close()
        if self._pump is not None:
            self._pump.join()

    def __enter__(self) -> InputStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OutputStream:
    """Write WAV or FLAC to standard output (or ``stream``) as blocks arrive."""

    def __init__(self, *, sample_rate: int, channels: int, format: str, subtype: str,
                 stream: BinaryIO | None = None) -> None:
        self._out = stream if stream is not None else sys.stdout.buffer
        self.format, self.subtype = format, subtype
        self._error: list[BaseException] = []
        if format == "WAV":
            self._write_bytes(_wav_header(sample_rate, channels, subtype))
            self._raw = dict(samplerate=sample_rate, channels=channels, format="RAW", subtype=subtype,
                             endian="LITTLE")
            self._fh = None
        else:  # libsndfile's FLAC encoder, writing forward into the output
            self._fh = sf.SoundFile(_ForwardWriter(self._write_bytes), "w", samplerate=sample_rate,
                                    channels=channels, format=format, subtype=subtype)

    def write(self, block: np.ndarray) -> None:
        """Append ``block [channels, n]``."""
        self._check()
        if self._fh is not None:
            self._fh.write(np.ascontiguousarray(block.T))
            return
        buffer = io.BytesIO()
        with sf.SoundFile(buffer, "w", **self._raw) as raw:  # libsndfile's sample conversion, as in a file
            raw.write(np.ascontiguousarray(block.T))
        self._write_bytes(buffer.getvalue())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        try:
            self._out.flush()
        except OSError as exc:
            self._error.append(exc)
        self._check()

    def _write_bytes(self, data: bytes) -> None:
        try:
            self._out.write(data)
        except OSError as exc:
            self._error.append(exc)
            self._check()

    def _check(self) -> None:
        if self._error:
            exc = self._error[0]
            reason = "the reading end of the pipe was closed" if isinstance(exc, BrokenPipeError) else str(exc)
            raise AudioError(f"{_STDOUT}: write failed ({reason})")


def denoise_stream(denoiser, src: str | os.PathLike, dst: str | os.PathLike, *, format: str | None = None,
                   overwrite: bool = False, stdin: BinaryIO | None = None,
                   stdout: BinaryIO | None = None):
    """Denoise ``src`` into ``dst`` where either is ``-`` (standard input or output), in bounded memory.

    Standard input holds WAV or FLAC. Standard output gets ``format``
    (``wav``, the default, or ``flac``), in the input's sample format where
    that format holds it. A file output is checked by
    :func:`~audiodenoise.outputs.check_output` before anything is read and
    written atomically, as by :meth:`~audiodenoise.api.Denoiser.denoise_file`
    (:class:`~audiodenoise.errors.OutputError` when refused). Returns its
    :class:`~audiodenoise.file_denoising.DenoiseResult`.
    """
    if format is not None and not is_stdio(dst):
        raise AudioError(f"{dst}: --format applies to standard output (-); a file's format follows its extension")
    if not is_stdio(dst):  # the one output rule, checked before anything is read
        dst = outputs.check_output(dst, overwrite=overwrite, inputs=[] if is_stdio(src) else [src])
    if is_stdio(src):
        source = InputStream(stdin)
        rate, channels, like = source.info.sample_rate, source.info.channels, source.info.subtype
        blocks = source.blocks()
    else:
        meta = audio.info(src)
        source = None
        rate, channels, like = meta.sample_rate, meta.channels, meta.subtype
        blocks = (block for _, block in audio.read_blocks(src, BLOCK_FRAMES, meta=meta))
    try:
        if is_stdio(dst):
            fmt, subtype = output_subtype(format or "wav", like)
            out = OutputStream(sample_rate=rate, channels=channels, format=fmt, subtype=subtype, stream=stdout)
            frames = denoiser.denoise_blocks(blocks, rate, out.write, integer_output=not subtype.startswith(
                ("FLOAT", "DOUBLE")))
            out.close()
        else:
            like_info = audio.AudioInfo(_STDIN, rate, channels, 1, "WAV", like)
            fmt, subtype = audio.output_format(dst, like=like_info)
            outputs.make_parent(dst)  # as a file input's output: missing folders are created
            with audio.AtomicWriter(dst, sample_rate=rate, channels=channels, format=fmt, subtype=subtype) as writer:
                frames = denoiser.denoise_blocks(blocks, rate, writer.write, integer_output=not subtype.startswith(
                    ("FLOAT", "DOUBLE")))
    finally:
        if source is not None:
            source.close()
    return DenoiseResult(str(src), str(dst), rate, channels, frames)


def output_subtype(format: str, like_subtype: str | None) -> tuple[str, str]:
    """libsndfile ``(format, subtype)`` for a stream in ``format`` (wav or flac), keeping ``like_subtype`` if it can."""
    fmt = format.strip().lstrip(".").lower()
    if fmt not in STREAM_FORMATS:
        raise AudioError(f"{_STDOUT}: format {format!r} cannot be piped; use one of {', '.join(STREAM_FORMATS)}")
    like = audio.AudioInfo(_STDIN, 16000, 1, 1, "WAV", like_subtype) if like_subtype else None
    major, subtype = audio.output_format(Path("x." + fmt), like=like)
    if major == "WAV" and subtype not in _WAV_TAGS:
        subtype = "PCM_16"
    return major, subtype


def _wav_header(sample_rate: int, channels: int, subtype: str) -> bytes:
    """A WAV header whose sizes say "length unknown" (0xFFFFFFFF), for a stream."""
    tag, bits = _WAV_TAGS[subtype]
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, sample_rate, sample_rate * block_align, block_align, bits)
    unknown = struct.pack("<I", 0xFFFFFFFF)
    return b"RIFF" + unknown + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + unknown


def _declared_frames(fh: sf.SoundFile) -> int | None:
    """The length a header declares, or None when it says "unknown" (streaming writers)."""
    if fh.format in ("WAV", "WAVEX", "RF64"):
        width = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
        size = fh.frames * fh.channels * width.get(fh.subtype, 2)
        return fh.frames if 0 < size < _UNKNOWN_BYTES else None
    return fh.frames if 0 < fh.frames < (1 << 62) else None


def _read_exactly(raw: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = raw.read(n - len(data))
        if not more:
            break
        data += more
    return data


def _start_pump(prefix: bytes, raw: BinaryIO, write_fd: int) -> threading.Thread:
    """Copy ``prefix`` and then ``raw`` into ``write_fd`` in the background, block by block."""

    def pump() -> None:
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(prefix)
                while chunk := raw.read(_COPY_BYTES):
                    pipe.write(chunk)
        except OSError:  # the reader stopped (an error already being reported)
            pass

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


class _ForwardReader:
    """A forward-only file over a pipe: libsndfile may seek back into the first bytes, and ask the length."""

    HEAD_BYTES = 1 << 16

    def __init__(self, raw: BinaryIO, prefix: bytes) -> None:
        self._raw = raw
        self._head = bytearray(prefix)  # the first HEAD_BYTES of the stream, kept for seeks back
        self._fed = len(prefix)  # bytes taken from the pipe (prefix included)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        if self._pos < len(self._head):
            take = self._head[self._pos : self._pos + n] if n >= 0 else self._head[self._pos :]
            out += take
            self._pos += len(take)
            n = n - len(take) if n >= 0 else n
        if n != 0 and self._pos == self._fed:
            data = self._raw.read(n if n > 0 else -1) or b""
            if len(self._head) == self._fed:
                self._head += data[: max(0, self.HEAD_BYTES - len(self._head))]
            self._fed += len(data)
            self._pos += len(data)
            out += data
        return bytes(out)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:  # the length of a pipe is not known: say it is long (the caller seeks back)
            self._pos = 1 << 62
            return self._pos
        target = offset if whence == 0 else self._pos + offset
        if target <= len(self._head) or target == self._fed:
            self._pos = target
        elif target >= self._fed and self._pos == self._fed:
            while self._fed < target and self.read(min(_COPY_BYTES, target - self._fed)):
                pass
        else:
            raise OSError(f"cannot seek back to byte {target} of a pipe")
        return self._pos

    def write(self, data) -> int:
        raise OSError("read-only stream")

    def flush(self) -> None:
        pass


class _ForwardWriter:
    """A write-only file that only goes forward, for libsndfile's FLAC encoder on a pipe.

    At the end the encoder seeks back to fill in the stream's length and
    checksum, and writes them whether or not the seek worked. On a pipe that
    would append those bytes to the stream and break it, so writes after a
    seek away from the end are dropped: the header keeps "length unknown",
    which FLAC allows for streams.
    """

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._end = 0  # bytes passed on
        self._pos = 0  # where the encoder believes it is

    def write(self, data) -> int:
        if self._pos == self._end:
            self._write(bytes(data))
            self._end += len(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: self._end + offset}[whence]
        return self._pos

    def read(self, n: int = -1) -> bytes:
        return b""

    def flush(self) -> None:
        pass


class _ForwardSoundFile(sf.SoundFile):
    """soundfile seeks after every read of a seekable file; a pipe is not one."""

    def seekable(self) -> bool:
        return False
