"""What every command shares: error reporting and exit codes.

Exit codes: 0 every input succeeded, 1 an error (one line on stderr), 2 a
usage error, 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable

import typer

from .. import __version__
from ..errors import AudioDenoiseError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(prog: str, message: str, *, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``prog: error: message`` on stderr; return the Exit to raise."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def run_guarded(prog: str, fn: Callable[[], int | None], *, verbose: bool) -> None:
    """Run ``fn``; map errors to one line on stderr and an exit code.

    SIGTERM is handled like Ctrl-C (exit 130, temp files removed) instead of
    killing the process with a temp file left beside the output.
    """
    old_sigterm = old_sigint = None
    if threading.current_thread() is threading.main_thread():
        old_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # the entry point's early handler, say
            old_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = fn()
    except AudioDenoiseError as exc:
        if verbose:
            traceback.print_exc()
        raise fail(prog, str(exc)) from None
    except KeyboardInterrupt:
        raise fail(prog, "interrupted; no partial output was left", code=EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug: say so in one line, traceback on request
        if verbose:
            traceback.print_exc()
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise fail(prog, f"internal error ({detail}); rerun with --verbose for a traceback") from None
    finally:
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)
        if old_sigint is not None:
            signal.signal(signal.SIGINT, old_sigint)
    if code:
        raise typer.Exit(code)


def _sigterm_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def version_callback(value: bool) -> None:
    if value:
        print(f"audiodenoise {__version__}")
        raise typer.Exit()
