"""Console entry points (``denoise``, ``audiodenoise``, ``python -m audiodenoise``).

Importing torch takes seconds. Ctrl-C or SIGTERM in that time must end the
command the way it does later (exit 130, one line, no traceback), so the
signal handling is set up here, before anything heavy is imported. Until the
command's own handling takes over (``run_guarded``, the batch runner),
nothing has been written, so a signal just ends the process.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

EXIT_INTERRUPTED = 130


def denoise() -> None:
    """The ``denoise`` command."""
    _main("denoise", "audiodenoise.cli.denoise")


def audiodenoise() -> None:
    """The ``audiodenoise`` command."""
    _main("audiodenoise", "audiodenoise.cli.main")


def _main(prog: str, module: str) -> None:
    def interrupted(signum, frame) -> None:
        try:
            os.write(2, f"{prog}: error: interrupted; no partial output was left\n".encode())
        finally:
            os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGTERM, interrupted)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job keeps ignoring Ctrl-C
        signal.signal(signal.SIGINT, interrupted)
    try:
        command = importlib.import_module(module)
    except KeyboardInterrupt:  # a SIGINT that slipped in before the handler
        interrupted(signal.SIGINT, None)
    sys.exit(command.main())
