"""Worker processes need a main script guarded by ``if __name__ == "__main__":``.

Workers are started with forkserver or spawn (never plain fork: torch's
threads do not survive it). Both import the main script again in each worker,
under the name ``__mp_main__``. A script that calls ``run_batch(..., jobs=4)``
or ``evaluate(..., jobs=2)`` at its top level, unguarded, would then run the
whole job again in every worker: the summary printed five times, or a
``BrokenProcessPool`` traceback. :func:`check_main_guard` refuses that case
with a clear error before any worker starts, and refuses a call made while a
worker is importing the script.
"""

from __future__ import annotations

import ast
import multiprocessing
import sys
from pathlib import Path

from .errors import ConfigError


def check_main_guard(what: str) -> None:
    """Raise :class:`ConfigError` if worker processes would run the calling script again.

    ``what`` names the call in the message, e.g. ``"run_batch(jobs=4)"``.
    """
    importing = ConfigError(_message(what, "a worker process is importing the script again"))
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # set while spawn prepares a worker
        raise importing
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "__mp_main__":
            raise importing
        if frame.f_code.co_name == "<module>" and frame.f_globals is getattr(sys.modules.get("__main__"),
                                                                             "__dict__", None):
            script = frame.f_globals.get("__file__")
            if script and not _is_guarded(Path(script), frame.f_lineno):
                raise ConfigError(_message(what, f"{Path(script).name}, line {frame.f_lineno}, calls it "
                                                 "at the top level"))
            return
        frame = frame.f_back


def _message(what: str, where: str) -> str:
    return (f"{what} starts worker processes, which import the main script again, but {where}; "
            'put the call under `if __name__ == "__main__":` (see the README) or pass jobs=1')


def _is_guarded(script: Path, line: int) -> bool:
    """Whether ``line`` of ``script`` lies inside an ``if __name__ == "__main__":`` block (True if unknown)."""
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return True  # cannot tell: do not refuse
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _tests_main(node.test) and node.body:
            if node.body[0].lineno <= line <= (node.body[-1].end_lineno or node.body[-1].lineno):
                return True
    return False


def _tests_main(test: ast.expr) -> bool:
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    strings = {n.value for n in ast.walk(test) if isinstance(n, ast.Constant)}
    return "__name__" in names and "__main__" in strings
