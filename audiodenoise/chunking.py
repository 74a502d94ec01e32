"""Long signals in bounded memory: process chunks with context, keep their cores.

Each chunk is processed together with ``context`` samples on either side;
only its core is kept, and the cores are concatenated. When the context
covers everything one output sample depends on (the model's receptive field,
the STFT frame, the resampler's filter), the result equals processing the
whole signal at once, and an identity function returns the input exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """One step of a chunk plan, in samples of the signal."""

    read_start: int
    read_stop: int
    keep_start: int
    keep_stop: int

    @property
    def keep_offset(self) -> int:
        """Where the kept core starts inside the read segment."""
        return self.keep_start - self.read_start


def plan_chunks(total: int, *, chunk: int, context: int, align: int = 1) -> Iterator[Chunk]:
    """Cut ``total`` samples into cores of ``chunk`` samples with ``context`` either side.

    ``chunk`` and ``context`` are rounded up to multiples of ``align`` so every
    read starts on the same analysis grid as a single pass would.
    """
    if total < 0 or chunk < 1 or context < 0 or align < 1:
        raise ValueError(f"bad chunk plan: total={total} chunk={chunk} context={context} align={align}")
    chunk = align * math.ceil(chunk / align)
    context = align * math.ceil(context / align)
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        yield Chunk(max(0, start - context), min(total, stop + context), start, stop)


def process_chunked(
    read: Callable[[int, int], np.ndarray],
    fn: Callable[[np.ndarray], np.ndarray],
    write: Callable[[np.ndarray], None],
    total: int,
    *,
    chunk: int,
    context: int,
    align: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Stream ``total`` samples through ``fn`` chunk by chunk.

    Parameters
    ----------
    read : ``read(start, stop) -> [channels, stop - start]``
    fn : maps ``[channels, n]`` to ``[channels, n]``
    write : receives the kept cores ``[channels, m]`` in order
    on_progress : called with the number of samples finished after each chunk
    """
    for step in plan_chunks(total, chunk=chunk, context=context, align=align):
        segment = read(step.read_start, step.read_stop)
        out = fn(segment)
        if out.shape != segment.shape:
            raise ValueError(f"chunk function changed the shape {segment.shape} -> {out.shape}")
        begin = step.keep_offset
        write(out[:, begin : begin + step.keep_stop - step.keep_start])
        if on_progress is not None:
            on_progress(step.keep_stop - step.keep_start)


def process_array(wav: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], **plan) -> np.ndarray:
    """:func:`process_chunked` over an in-memory ``wav [channels, time]``."""
    pieces: list[np.ndarray] = []
    process_chunked(lambda a, b: wav[:, a:b], fn, pieces.append, wav.shape[1], **plan)
    if not pieces:
        return wav.copy()
    return np.concatenate(pieces, axis=1)


def process_stream(
    blocks: Iterable[np.ndarray],
    fn: Callable[[np.ndarray], np.ndarray],
    write: Callable[[np.ndarray], None],
    *,
    chunk: int,
    context: int,
    align: int = 1,
) -> int:
    """:func:`process_chunked` over a signal of unknown length, read forward in ``blocks``.

    ``blocks`` yields ``[channels, n]`` pieces in order (a pipe read block by
    block). The segments passed to ``fn`` are those :func:`plan_chunks` gives
    for the whole length, so the output is the same as :func:`process_chunked`
    over the concatenated blocks; only what the next chunk needs is held:
    at most ``chunk + 2 * context`` samples (rounded up to ``align``) plus one
    block. Returns the number of samples processed.
    """
    if chunk < 1 or context < 0 or align < 1:
        raise ValueError(f"bad chunk plan: chunk={chunk} context={context} align={align}")
    chunk = align * math.ceil(chunk / align)
    context = align * math.ceil(context / align)
    source = iter(blocks)
    pieces: list[np.ndarray] = []
    held_start = 0  # signal index of the first sample held
    read = 0  # samples read so far
    start = 0  # the next core's first sample
    ended = False
    while True:
        while not ended and read < start + chunk + context:
            block = next(source, None)
            if block is None:
                ended = True
            elif block.shape[-1]:
                pieces.append(block)
                read += block.shape[-1]
        if start >= read:
            return read
        held = np.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
        stop = min(read, start + chunk)
        read_start, read_stop = max(0, start - context), min(read, stop + context)
        segment = held[:, read_start - held_start : read_stop - held_start]
        out = fn(segment)
        if out.shape != segment.shape:
            raise ValueError(f"chunk function changed the shape {segment.shape} -> {out.shape}")
        write(out[:, start - read_start : stop - read_start])
        start = stop
        keep_from = max(0, start - context)  # what the next segment can still reach
        pieces = [held[:, keep_from - held_start :]]
        held_start = keep_from
