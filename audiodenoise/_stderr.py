"""What native libraries print on file descriptor 2, caught instead of shown.

libmpg123 (libsndfile's MP3 decoder) writes lines such as ``Note: Illegal
Audio-MPEG-Header`` and ``error: dequantization failed!`` straight to the
process's stderr, past ``--quiet``. Around an MP3 open or read, fd 2 points at
a temp file, and what was written becomes the reason of a clear error (or is
dropped when the library recovered).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
# "[src/libmpg123/layer3.c:INT123_do_layer3():1804] error: dequantization failed!" -> "dequantization failed!"
_SOURCE_PREFIX = re.compile(r"^\[[^\]]*\]\s*(error:\s*)?")


class Captured:
    """The text written on fd 2 inside :func:`capture`, once the block has ended."""

    text = ""

    def errors(self) -> list[str]:
        """The lines that report damage ("error:", "Illegal ..."), without the source-location prefix."""
        out = []
        for line in self.text.splitlines():
            if "error" in line.lower() or "illegal" in line.lower():
                out.append(_SOURCE_PREFIX.sub("", line.strip()).removeprefix("Note: "))
        return out

    def reason(self) -> str | None:
        """The first damage report, and how many there were; None if there was none."""
        found = self.errors()
        if not found:
            return None
        more = f" and {len(found) - 1} more decoder error(s)" if len(found) > 1 else ""
        return f"{found[0]}{more}"


@contextmanager
def capture() -> Iterator[Captured]:
    """Point fd 2 at a temp file for the block; yield a :class:`Captured` filled in when it ends."""
    result = Captured()
    with _LOCK:
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        try:
            sink = tempfile.TemporaryFile()
            saved = os.dup(2)
        except OSError:  # no temp space or descriptors: let the library print
            yield result
            return
        try:
            os.dup2(sink.fileno(), 2)
            try:
                yield result
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            sink.seek(0)
            result.text = sink.read(1 << 16).decode("utf-8", "replace")
            sink.close()
