"""What every command shares: error reporting and exit codes.

Exit codes: 0 every input succeeded, 1 an error (one line on stderr), 2 a
usage error, 130 interrupted, 141 the reader of stdout went away (``| head``).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import typer
from typer.core import TyperCommand

from .. import __version__
from ..errors import AudioDenoiseError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell tool killed by it


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
        sys.stdout.flush()  # a closed pipe shows here, where it is handled, not at interpreter exit
    except AudioDenoiseError as exc:
        if verbose:
            traceback.print_exc()
        raise fail(prog, str(exc)) from None
    except KeyboardInterrupt:
        raise fail(prog, "interrupted; no partial output was left", code=EXIT_INTERRUPTED) from None
    except BrokenPipeError:  # `audiodenoise info | head -1`: the reader has what it wanted; stop quietly
        _silence_stdout()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
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


DEVICE_METAVAR = "auto|cpu|cuda"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(value: str) -> str:
    """Option callback: ``--device`` is auto, cpu, cuda or cuda:N, else a usage error (exit 2)."""
    if not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value


PRETRAINED = "pretrained"


def model_file(value: Path | None) -> Path | None:
    """Option callback for a model path: a folder holding ``model.safetensors`` (a run folder, the
    repository's ``pretrained/``) means that file, and ``pretrained``, where no such path exists, the
    shipped model; anything else is taken as given (the loader reports a missing or bad file)."""
    if value is None:
        return None
    from ..runs import MODEL_FILE

    if value.is_dir() and (value / MODEL_FILE).is_file():
        return value / MODEL_FILE
    if str(value) == PRETRAINED and not value.exists():
        from ..shipped import pretrained_path

        return pretrained_path()
    return value


def check_settings(values: list[str] | None) -> list[tuple[str, object]]:
    """Option callback: each ``--set`` KEY=VALUE parsed into a (key, value) override, else a usage error (exit 2)."""
    from ..errors import ConfigError
    from ..train_config import parse_setting

    try:
        return [parse_setting(value) for value in values or ()]
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass
    finally:
        os.close(devnull)


def _sigterm_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def version_callback(value: bool) -> None:
    if value:
        print(f"audiodenoise {__version__}")
        raise typer.Exit()


# typer's own placeholders, e.g. "<list[Path]>", "<float range>", "<str>": the type they stand for
_TYPER_PLACEHOLDER = re.compile(r" <(?:list\[)?([A-Za-z]+)[^>]*>$")
_PLAIN_METAVARS = {"int": "N", "float": "NUM", "path": "PATH", "file": "FILE", "directory": "DIR", "str": "TEXT"}


class PlainHelpCommand(TyperCommand):
    """``--help`` in the plain style of click and argparse: ``denoise [OPTIONS] PATH...``, ``--step N``.

    Recent typer versions print ``{PATH}...`` in the usage line and type
    placeholders such as ``<list[Path]>`` or ``<float range>`` next to
    arguments and options that have no metavar; this shows the metavar (or the
    argument's name in capitals) and a plain word for the type instead.
    """

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            left, help_text = record
            if param.param_type_name == "argument":
                args.append((_argument_name(param), help_text.replace("  [required]", "").replace("[required]", "")))
            elif param.param_type_name == "option":
                plain = _TYPER_PLACEHOLDER.sub(lambda m: " " + _PLAIN_METAVARS.get(m[1].lower(), m[1].upper()), left)
                opts.append((plain, help_text))
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


def _argument_name(param) -> str:
    name = param.metavar or param.name.upper()
    return name + "..." if param.nargs != 1 else name
