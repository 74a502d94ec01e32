"""Audio files in and out: validation, block reading, atomic writing, resampling.

Signals are ``float32`` arrays shaped ``[channels, time]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from . import _stderr, outputs, wholeness
from .errors import AudioError

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
# how far above 1.0 the soft limiter lets no sample go, and where it starts bending
LIMIT_CEILING = 0.999
LIMIT_KNEE = 0.9
# lossy outputs (MP3, Ogg Vorbis/Opus): the decoded signal peaks above the encoded one (1.07-1.08 on
# denoised speech at a 0.999 ceiling, up to 3x on clipped white noise), so the limiter bends at
# -1 dBFS, and a decoded peak above LOSSY_MAX_PEAK makes the file again at a lower gain
LOSSY_FORMATS = frozenset({"MP3", "OGG"})
LOSSY_CEILING = 0.89
LOSSY_MAX_PEAK = 1.0
LOSSY_TARGET_PEAK = 0.97
# float samples beyond this are not audio (the STFT of 3e38 overflows to NaN); 1e12 leaves room for
# float files written in integer scale (+-2**31)
MAX_SAMPLE_MAGNITUDE = 1e12

# subtypes that may be carried into another container; codecs (VORBIS, OPUS, MPEG) belong to theirs
_PORTABLE_SUBTYPES = ("PCM_", "FLOAT", "DOUBLE", "ULAW", "ALAW")
_DEEP_SUBTYPES = {"PCM_24", "PCM_32", "FLOAT", "DOUBLE"}

# extension -> libsndfile major format, for the formats people use
_FORMATS = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".opus": "OGG",
    ".mp3": "MP3",
    ".aiff": "AIFF",
    ".aif": "AIFF",
    ".caf": "CAF",
    ".w64": "W64",
    ".rf64": "RF64",
    ".au": "AU",
}


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`info` learns from a file's header."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def info(path: str | os.PathLike) -> AudioInfo:
    """Header of an audio file, checked.

    Raises
    ------
    AudioError
        Missing file, a folder, an empty or unreadable file, no samples, or a
        sample rate outside 8-192 kHz.
    """
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{name}: {not_a_regular_file(p) or 'file not found'}")
    if p.is_dir():
        raise AudioError(f"{name}: is a folder, expected an audio file")
    if not p.is_file():  # a FIFO or a device: opening it could block, and it is not a file
        raise AudioError(f"{name}: {not_a_regular_file(p)}")
    if p.stat().st_size == 0:
        raise AudioError(f"{name}: file is empty")
    try:
        with _stderr.capture() as noise, open_sound(p) as fh:
            result = AudioInfo(name, fh.samplerate, fh.channels, fh.frames, fh.format, fh.subtype)
            truncated = wholeness.wav_truncation(fh) or wholeness.ogg_truncation(p, fh)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        # libsndfile says "File does not exist or is not a regular file" when the MPEG decoder gives up
        decoder = noise.reason()
        reason = f"MPEG decoder: {decoder}" if decoder else _reason(exc)
        raise AudioError(f"{name}: not a readable audio file ({reason})") from None
    if result.format == "MP3" and noise.reason():
        raise AudioError(f"{name}: damaged MPEG audio ({noise.reason()})")
    if truncated:
        raise AudioError(f"{name}: file is truncated ({truncated})")
    if result.channels < 1:
        raise AudioError(f"{name}: has no channels")
    if result.frames <= 0:
        raise AudioError(f"{name}: holds no samples")
    check_sample_rate(result.sample_rate, name=name)
    return result


def open_sound(path: str | os.PathLike, mode: str = "r", **kwargs) -> sf.SoundFile:
    """``soundfile.SoundFile`` on ``path`` given as bytes, so file names that are not UTF-8 work."""
    return sf.SoundFile(os.fsencode(path), mode, **kwargs)


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an audio file (a dangling symlink, a FIFO, a device, missing); None if it can."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"is a dangling symlink (to {os.readlink(path)}), no file to read"
        return "file not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return f"is {outputs.file_kind(mode)}, not a regular file"


def check_sample_rate(sample_rate: int, *, name: str = "input") -> None:
    """Raise :class:`AudioError` if ``sample_rate`` is outside 8-192 kHz."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {sample_rate} Hz is outside the supported "
            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )


def check_signal(wav: np.ndarray, *, name: str = "input") -> None:
    """Raise :class:`AudioError` if ``wav`` holds NaN, infinite or absurdly large samples."""
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: holds NaN or infinite samples")
    peak = float(np.abs(wav).max(initial=0.0))
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise AudioError(f"{name}: holds samples of magnitude {peak:.3g}, far beyond full scale (1.0); rescale it")


def load(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Whole file as ``float32 [channels, time]`` and its sample rate."""
    meta = info(path)
    blocks = [block for _, block in read_blocks(path, meta.frames, meta=meta)]
    return np.concatenate(blocks, axis=1), meta.sample_rate


def read_segment(fh: sf.SoundFile, start: int, stop: int, *, name: str) -> np.ndarray:
    """Samples ``[start, stop)`` of an open file as ``float32 [channels, time]``.

    A file that ends early (truncated) or holds non-finite samples raises
    :class:`AudioError`.
    """
    mpeg = fh.format == "MP3"
    try:
        with _stderr.capture() if mpeg else contextlib.nullcontext() as noise:
            fh.seek(start)
            data = fh.read(stop - start, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{name}: read failed at sample {start} ({_reason(exc)})") from None
    if mpeg and noise.reason():
        # libmpg123 resyncs past damaged frames and goes on; what it decodes there is not the recording
        raise AudioError(f"{name}: damaged MPEG audio in samples {start}-{stop} ({noise.reason()})")
    if data.shape[0] != stop - start:
        if mpeg:  # an MP3 has no length to be cut short of: the decoder lost its way
            raise AudioError(f"{name}: damaged or cut MPEG audio (the header says {fh.frames} samples, "
                             f"decoding stopped at {start + data.shape[0]})")
        raise AudioError(
            f"{name}: file is truncated (header says {fh.frames} samples, "
            f"reading stopped at {start + data.shape[0]})"
        )
    wav = np.ascontiguousarray(data.T)
    if fh.subtype == "DOUBLE" and not np.isfinite(wav).all():
        # 1e300 is finite in the file but infinite as float32: name what the file holds
        fh.seek(start)
        check_signal(np.ascontiguousarray(fh.read(stop - start, dtype="float64", always_2d=True).T), name=name)
    check_signal(wav, name=name)
    return wav


def read_blocks(
    path: str | os.PathLike, block_frames: int, *, meta: AudioInfo | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block [channels, n])`` through a whole file."""
    meta = meta or info(path)
    with open_sound(path) as fh:
        for start in range(0, meta.frames, block_frames):
            yield start, read_segment(fh, start, min(meta.frames, start + block_frames), name=meta.path)


def output_format(path: str | os.PathLike, *, like: AudioInfo | None = None) -> tuple[str, str]:
    """libsndfile ``(format, subtype)`` for writing ``path``.

    The format follows the extension; the input's subtype is kept where that
    format can hold it, else the format's default is used.
    """
    ext = Path(path).suffix.lower()
    fmt = _FORMATS.get(ext)
    if fmt is None:
        known = ", ".join(sorted(_FORMATS))
        raise AudioError(f"{path}: unknown output extension {ext or '(none)'!r}; use one of {known}")
    subtype = sf.default_subtype(fmt)
    if ext == ".opus":
        subtype = "OPUS"
    elif (
        like is not None
        and (like.format == fmt or like.subtype.startswith(_PORTABLE_SUBTYPES))
        and sf.check_format(fmt, like.subtype)
    ):
        subtype = like.subtype
    elif like is not None and like.subtype in _DEEP_SUBTYPES:
        # 32-bit or float input to a format that cannot hold it (FLAC): the deepest integer PCM it can
        subtype = next((s for s in ("PCM_24", "PCM_16") if sf.check_format(fmt, s)), subtype)
    return fmt, subtype


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    missing = []
    folder = Path(path).absolute().parent
    while folder != folder.parent:
        try:
            if folder.exists():
                break
        except OSError:  # e.g. a path too long to look up: the output check names the problem
            return []
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


class AtomicWriter:
    """Write an audio file through a temp file that is renamed on success.

    Use as a context manager; on any exception (or Ctrl-C) the temp file is
    removed and ``path`` is left as it was.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        sample_rate: int,
        channels: int,
        format: str,
        subtype: str,
        check: Callable[[Path], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.check = check  # runs on the finished temp file; raising keeps the old output
        self.sample_rate = sample_rate
        self.channels = channels
        self.format = format
        self.subtype = subtype
        self._tmp: Path | None = None
        self._fh: sf.SoundFile | None = None

    def __enter__(self) -> AtomicWriter:
        self._tmp = outputs.make_temp(self.path, suffix=outputs.AUDIO_TEMP_SUFFIX)
        try:
            self._fh = open_sound(
                self._tmp, "w", samplerate=self.sample_rate, channels=self.channels, format=self.format,
                subtype=self.subtype,
            )
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            self._tmp.unlink(missing_ok=True)
            raise AudioError(f"{self.path}: cannot write {self.format}/{self.subtype} ({_reason(exc)})") from None
        except BaseException:  # Ctrl-C while the file is being opened: the with block never starts
            self._tmp.unlink(missing_ok=True)
            raise
        return self

    def write(self, block: np.ndarray) -> None:
        """Append ``block [channels, n]``."""
        assert self._fh is not None
        try:
            self._fh.write(np.ascontiguousarray(block.T))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioError(f"{self.path}: write failed ({self._write_reason(exc)})") from None

    def _write_reason(self, exc: BaseException) -> str:
        """libsndfile reports a full disk as "System error."; say what it is."""
        reason = _reason(exc)
        if not isinstance(exc, OSError):
            try:
                if shutil.disk_usage(self.path.parent).free < (1 << 20):
                    return f"no space left on device; {reason}"
            except OSError:
                pass
        return reason

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._fh is not None and self._tmp is not None
        try:
            self._fh.close()
        except (sf.LibsndfileError, RuntimeError, OSError) as close_exc:
            if exc_type is None:
                self._tmp.unlink(missing_ok=True)
                raise AudioError(f"{self.path}: write failed ({self._write_reason(close_exc)})") from None
        except BaseException:  # Ctrl-C while the last block is flushed
            self._tmp.unlink(missing_ok=True)
            raise
        if exc_type is not None:
            self._tmp.unlink(missing_ok=True)
            return
        if self.check is not None:
            try:
                self.check(self._tmp)
            except BaseException:
                self._tmp.unlink(missing_ok=True)
                raise
        outputs.commit(self._tmp, self.path)  # keeps the mode of a file it replaces


class Overshoot(Exception):
    """A written lossy file decodes with a peak above :data:`LOSSY_MAX_PEAK`."""

    def __init__(self, peak: float) -> None:
        super().__init__(f"decoded peak {peak:.4f}")
        self.peak = peak


def check_decoded_peak(path: str | os.PathLike, *, block_frames: int = 1 << 18) -> None:
    """Decode ``path`` block by block; raise :class:`Overshoot` if any sample exceeds :data:`LOSSY_MAX_PEAK`."""
    peak = 0.0
    with _stderr.capture(), open_sound(path) as fh:
        for block in fh.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
            peak = max(peak, float(np.abs(block).max(initial=0.0)))
    if peak > LOSSY_MAX_PEAK:
        raise Overshoot(peak)


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample ``wav [channels, time]`` with soxr (high quality)."""
    if from_rate == to_rate:
        return wav
    out = soxr.resample(np.ascontiguousarray(wav.T), from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def soft_limit(wav: np.ndarray, *, knee: float = LIMIT_KNEE, ceiling: float = LIMIT_CEILING) -> np.ndarray:
    """Memoryless soft limiter: samples below ``knee`` pass unchanged, none exceed ``ceiling``.

    Applied sample by sample, so it gives the same result in chunks or at once.
    """
    mag = np.abs(wav)
    over = mag > knee
    if not over.any():
        return wav
    out = wav.copy()
    room = ceiling - knee
    out[over] = np.sign(wav[over]) * (knee + room * np.tanh((mag[over] - knee) / room))
    return out


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[-1] if text else type(exc).__name__
    return reason.split(": ", 1)[-1] if reason.startswith("Error opening") else reason
