"""Denoising a whole file or a stream of blocks in bounded memory: :class:`~audiodenoise.api.Denoiser`'s
``denoise_file`` and ``denoise_blocks`` (bound there as methods, so ``denoiser`` is ``self``).

A file is read in chunks and written to a temp file beside its output, then
renamed (:class:`~audiodenoise.audio.AtomicWriter`); a lossy output whose
decoded peaks go above full scale is made again at a lower gain. A progress
bar counts seconds of audio. Both drive :mod:`audiodenoise.chunking` with the
Denoiser's chunking interface: :meth:`~audiodenoise.api.Denoiser.chunk_plan` and
:meth:`~audiodenoise.api.Denoiser.chunk_fn`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import audio, outputs
from .audio import AtomicWriter
from .chunking import process_chunked, process_stream
from .errors import AudioError

# seconds of audio above which a progress bar is worth showing
PROGRESS_MIN_SECONDS = 5.0
# lossy outputs made at most this many times to keep their decoded peaks at or below full scale
LOSSY_ATTEMPTS = 4


@dataclass(frozen=True)
class DenoiseResult:
    """What :meth:`~audiodenoise.api.Denoiser.denoise_file` did."""

    src: str
    dst: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def denoise_file(
    denoiser,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = False,
    subtype: str | None = None,
) -> DenoiseResult:
    """Denoise ``src`` into ``dst`` in bounded memory.

    The output is written to a temp file beside ``dst`` and renamed when
    complete: a failure or Ctrl-C leaves no partial file, and ``src`` is
    only ever read.
    """
    src, dst = Path(src), Path(dst)
    meta = audio.info(src)
    outputs.check_output(dst, overwrite=overwrite, inputs=[src])
    fmt, out_subtype = audio.output_format(dst, like=meta)
    if subtype is not None:
        out_subtype = subtype
    outputs.make_parent(dst)
    integer_output = not out_subtype.startswith(("FLOAT", "DOUBLE"))
    lossy = denoiser.limiter and fmt in audio.LOSSY_FORMATS
    # a lossy codec's output peaks above its input's: the limiter bends at a lower ceiling, and
    # the decoded temp file is checked before it is renamed; if it still goes above full scale,
    # the file is made again at a gain that leaves the measured overshoot room
    limit = {"ceiling": audio.LOSSY_CEILING, "gain": 1.0} if lossy else {}
    bar = progress_bar(meta, enabled=progress)
    try:
        for _ in range(LOSSY_ATTEMPTS):
            try:
                with audio.open_sound(src) as fh, AtomicWriter(
                    dst, sample_rate=meta.sample_rate, channels=meta.channels, format=fmt, subtype=out_subtype,
                    check=audio.check_decoded_peak if lossy else None,
                ) as writer:
                    process_chunked(
                        lambda a, b: audio.read_segment(fh, a, b, name=str(src)),
                        denoiser.chunk_fn(meta.sample_rate, integer_output=integer_output, **limit),
                        writer.write,
                        meta.frames,
                        on_progress=bar.update if bar else None,
                        **denoiser.chunk_plan(meta.sample_rate),
                    )
                break
            except audio.Overshoot as over:
                limit["gain"] *= audio.LOSSY_TARGET_PEAK / over.peak
                if bar is not None:
                    bar.reset()
        else:
            raise AudioError(f"{dst}: the {fmt} encoder kept peaks above full scale; write a lossless format")
    finally:
        if bar is not None:
            bar.refresh()  # the final count is always shown, however fast the file went
            bar.close()
    return DenoiseResult(str(src), str(dst), meta.sample_rate, meta.channels, meta.frames)


def denoise_blocks(
    denoiser, blocks, sample_rate: int, write: Callable[[np.ndarray], None], *, integer_output: bool = False
) -> int:
    """Denoise a signal of unknown length (a pipe) read forward in blocks, in bounded memory.

    ``blocks`` yields ``float32 [channels, n]``; ``write`` receives the
    denoised signal in order, the same samples ``denoiser.denoise`` gives for
    the whole signal. ``integer_output``: hard-clip to [-1, 1] even
    without the limiter. Returns the number of samples.
    """
    audio.check_sample_rate(sample_rate)
    fn = denoiser.chunk_fn(sample_rate, integer_output=integer_output)
    return process_stream(blocks, fn, write, **denoiser.chunk_plan(sample_rate))


def progress_bar(meta: audio.AudioInfo, *, enabled: bool):
    """A tqdm bar over ``meta``'s audio in seconds, or None when off or the file is short."""
    if not enabled or meta.duration < PROGRESS_MIN_SECONDS:
        return None
    from tqdm import tqdm

    # counted in samples, shown in seconds: the count ends exactly at the total (a total rounded to
    # 0.01 s fell short of the summed chunk seconds at 44.1 kHz: a clamping warning and a negative ETA)
    return tqdm(
        total=meta.frames,
        unit="s",
        unit_scale=1.0 / meta.sample_rate,
        desc=Path(meta.path).name,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}, {rate_fmt}]",
        leave=False,
    )
