"""Is an audio file whole? What libsndfile reads without complaint from a cut or lying file.

A WAV whose data chunk claims more bytes than the file holds, and an Ogg file
cut inside a page, read as shorter files; these functions say why they are
not whole (or None).
"""

from __future__ import annotations

import re
from pathlib import Path

import soundfile as sf

# libsndfile's log line for a WAV whose data chunk claims more bytes than the file holds
_WAV_DATA_SHORT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_WAV_RIFF_SIZE = re.compile(r"^RIFF\s*:\s*(\d+)(\s*\(should be \d+\))?", re.MULTILINE)
# data sizes at or above this are the "length unknown" markers streaming writers leave in the header
# (when the RIFF size is one too)
_WAV_SIZE_UNKNOWN = 0x7FFF0000
_OGG_TAIL_BYTES = 1 << 17  # an Ogg page is at most 65,307 bytes


def wav_truncation(fh: sf.SoundFile) -> str | None:
    """Why an open WAV file is truncated, from libsndfile's header log; None if it is whole."""
    if fh.format not in ("WAV", "WAVEX"):
        return None
    match = _WAV_DATA_SHORT.search(fh.extra_info)
    if match is None:
        return None
    declared, present = int(match[1]), int(match[2])
    if declared <= present:
        return None
    if declared >= _WAV_SIZE_UNKNOWN and _riff_size_is_a_placeholder(fh.extra_info):
        return None  # a streaming writer's "length unknown": it could not fill in either size
    return f"header says {declared} bytes of audio data, the file holds {present}"


def _riff_size_is_a_placeholder(extra_info: str) -> bool:
    """Whether the RIFF size, like the data size, is a "length unknown" value rather than the file's length.

    A writer that could not seek back to fill in the data size (a pipe) could
    not fill in the RIFF size either. A RIFF size that is the file's true
    length, next to a data size of 2 GB, is a false header.
    """
    match = _WAV_RIFF_SIZE.search(extra_info)
    if match is None:
        return True
    return match[2] is not None or int(match[1]) >= _WAV_SIZE_UNKNOWN


def ogg_truncation(path: Path, fh: sf.SoundFile) -> str | None:
    """Why an Ogg file (Vorbis, Opus, FLAC in Ogg) is truncated; None if it is whole.

    libsndfile reads a cut Ogg file without complaint, as a shorter one. A cut
    almost always falls inside a page; one exactly at a page boundary is not
    caught, as some encoders never set the end-of-stream flag that would tell.
    """
    if fh.format != "OGG":
        return None
    with open(path, "rb") as raw:
        raw.seek(max(0, path.stat().st_size - _OGG_TAIL_BYTES))
        tail = raw.read()
    start = tail.rfind(b"OggS")
    if start < 0 or len(tail) < start + 27:
        return "the file ends inside an Ogg page"
    n_segments = tail[start + 26]
    table = tail[start + 27 : start + 27 + n_segments]
    if len(table) < n_segments or len(tail) < start + 27 + n_segments + sum(table):
        return "the file ends inside an Ogg page"
    return None
