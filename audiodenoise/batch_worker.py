"""The worker side of a batch: denoising one file, signal state, and the worker processes' set-up."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch

from .api import Denoiser
from .batch_plan import Task
from .batch_report import FAILED, INTERRUPTED, OK, FileResult
from .errors import AudioDenoiseError

DenoiserSource = Denoiser | Callable[[], Denoiser]


class _Interrupted(BaseException):
    """Raised inside a running file when a signal asks the batch to stop."""


class _Abort:
    """Signal state of one process (the batch's own, or a worker)."""

    def __init__(self) -> None:
        self.requested = False
        self.busy = False  # inside denoise_file: a signal raises there, so its temp file is removed
        self.signals = 0
        self.worker_pids: Callable[[], list[int]] | None = None

    def handler(self, signum, frame) -> None:
        self.signals += 1
        self.requested = True
        if self.worker_pids is not None:
            # a terminal's Ctrl-C reaches the workers already; `kill PID` does not
            forward = signal.SIGTERM if self.signals == 1 else signal.SIGKILL
            for pid in self.worker_pids():
                try:
                    os.kill(pid, forward)
                except OSError:
                    pass
        if self.busy:
            self.busy = False
            raise _Interrupted(signum)


def _install(abort: _Abort) -> dict | None:
    """Route SIGINT and SIGTERM to ``abort``; return the old handlers (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {sig: signal.signal(sig, abort.handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(old: dict | None) -> None:
    for sig, handler in (old or {}).items():
        signal.signal(sig, handler)


def _denoise_one(denoiser: Denoiser, task: Task, *, overwrite: bool, abort: _Abort) -> FileResult:
    src, dst = str(task.src), str(task.dst)
    if abort.requested:
        return FileResult(src, dst, INTERRUPTED)
    start = time.perf_counter()
    try:
        abort.busy = True
        try:
            result = denoiser.denoise_file(task.src, task.dst, overwrite=overwrite)
        finally:
            abort.busy = False
    except _Interrupted:
        return FileResult(src, dst, INTERRUPTED)
    except AudioDenoiseError as exc:
        return FileResult(src, dst, FAILED, _strip_name(str(exc), src), seconds=time.perf_counter() - start)
    except MemoryError:
        return FileResult(src, dst, FAILED, "out of memory", seconds=time.perf_counter() - start)
    except Exception as exc:  # a bug: keep going, say so, keep the traceback for --verbose
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return FileResult(
            src, dst, FAILED, f"internal error ({detail})",
            seconds=time.perf_counter() - start, detail=traceback.format_exc(),
        )
    return FileResult(src, dst, OK, audio_seconds=result.duration, seconds=time.perf_counter() - start)


def _strip_name(message: str, name: str) -> str:
    prefix = name + ": "
    return message[len(prefix):] if message.startswith(prefix) else message


# per worker process: its model and signal state
_worker: dict = {}


def _init_worker(source: DenoiserSource, batch_pid: int | None = None) -> None:
    if batch_pid is not None:
        die_with(batch_pid)
    _release_stdout()
    abort = _Abort()
    _worker["abort"] = abort
    _install(abort)
    torch.set_num_threads(1)
    _worker["denoiser"] = source() if callable(source) else source


def _work(task: Task, overwrite: bool) -> FileResult:
    return _denoise_one(_worker["denoiser"], task, overwrite=overwrite, abort=_worker["abort"])


def _mp_context():
    """forkserver (torch imported once, workers forked from it), else spawn; never fork."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _ready() -> None:
    """A no-op task: run once a worker is up."""


def _pids(pool: ProcessPoolExecutor | None) -> list[int]:
    if pool is None:
        return []
    try:
        return list(dict(pool._processes or {}))
    except (AttributeError, RuntimeError):
        return []


# -- a worker never outlives its batch ---------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def die_with(batch_pid: int) -> None:
    """End this process as soon as ``batch_pid`` (the batch's own process) is gone.

    A batch process killed outright (SIGKILL, the OOM killer) cannot stop its
    workers, and a worker ignores SIGTERM while idle (it is the batch's clean
    stop signal). On Linux the kernel sends SIGKILL when the parent dies
    (``PR_SET_PDEATHSIG``); under the forkserver that parent is the forkserver,
    not the batch, so a thread also watches the batch's process itself (a
    pidfd where there is one, else polling).
    """
    # not when the batch is the parent: the signal follows the parent *thread*, and the batch starts its
    # workers from a thread that ends long before the batch does
    if sys.platform.startswith("linux") and os.getppid() != batch_pid:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch, args=(batch_pid,), name="audiodenoise-batch-watch", daemon=True).start()


def _watch(batch_pid: int) -> None:
    try:
        fd = os.pidfd_open(batch_pid)
    except ProcessLookupError:  # gone already
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll
        fd = None
    if fd is not None:
        select.select([fd], [], [])  # readable once the process has exited
        os._exit(1)
    while _alive(batch_pid):
        time.sleep(0.5)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release_stdout() -> None:
    """Point this worker's stdout at /dev/null: a pipe reading the command's stdout must not wait for it."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, 1)
    finally:
        os.close(devnull)
