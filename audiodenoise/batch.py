"""Batch mode: denoise a folder tree or a list of files with worker processes.

>>> from audiodenoise import Denoiser
>>> from audiodenoise.batch import BatchPlan, run_batch
>>> plan = BatchPlan.from_folder("raw/", "clean/", format="flac")
>>> summary = run_batch(plan, Denoiser.from_pretrained, jobs=4)
>>> print(summary.describe())

- Inputs are walked lazily (one folder listing at a time) and at most
  ``IN_FLIGHT_PER_JOB * jobs`` files are in flight, so memory stays flat for
  any number of files.
- Each worker process loads the model once and runs one torch thread.
  ``jobs=1`` runs in this process, and so does a batch too small to be worth
  starting workers for; while the workers start, this process denoises the
  first files itself. It too runs one torch thread, so every ``jobs`` value
  gives byte-identical outputs.
- Outputs are written through a temp file and renamed
  (:class:`~audiodenoise.audio.AtomicWriter`): an output that exists is
  complete, so a rerun skips it and finishes the rest.
- A file that fails is reported and the batch goes on.
- SIGINT / SIGTERM stop the batch: nothing new is started, running files are
  abandoned (their temp files removed) and the results so far are returned
  with :attr:`BatchSummary.stopped` set. A second signal kills the workers.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from . import audio, outputs
from .api import Denoiser
from .batch_plan import AUDIO_EXTENSIONS, BatchPlan, Task, normalize_format
from .batch_report import (
    FAILED,
    INTERRUPTED,
    OK,
    REPORT_FIELDS,
    SKIPPED,
    BatchSummary,
    FileResult,
    ProgressBar,
    ReportWriter,
    check_report_path,
)
from .batch_worker import (
    DenoiserSource,
    _Abort,
    _denoise_one,
    _init_worker,
    _install,
    _Interrupted,
    _mp_context,
    _pids,
    _ready,
    _restore,
    _strip_name,
    _work,
)
from .errors import AudioDenoiseError, ConfigError, OutputError
from .outputs import sweep_audio_temp_files as sweep_temp_files
from .processes import check_main_guard

__all__ = [
    "AUDIO_EXTENSIONS", "FAILED", "INTERRUPTED", "MAX_DEFAULT_JOBS", "OK", "REPORT_FIELDS", "SKIPPED",
    "BatchPlan", "BatchSummary", "DenoiserSource", "FileResult", "ReportWriter", "Task",
    "check_report_path", "default_jobs", "normalize_format", "run_batch", "sweep_temp_files",
]

# default jobs: one per usable CPU, at most this many (each worker holds its own
# torch runtime and model, a few hundred MB; beyond 4 the disk often limits)
MAX_DEFAULT_JOBS = 4
# files queued per worker, so a worker never waits for the next one
IN_FLIGHT_PER_JOB = 2
# Worker processes take seconds to start (each worker pool imports torch once). A batch of at most
# this much audio in at most 4 * jobs files is not worth it and runs in the batch's own process;
# a bigger one starts the workers in the background and meanwhile denoises files up to
# WARMUP_MAX_SECONDS long itself.
SMALL_BATCH_SECONDS = 30.0
WARMUP_MAX_SECONDS = 60.0


def default_jobs() -> int:
    """Worker processes used when none are asked for: usable CPUs, at most :data:`MAX_DEFAULT_JOBS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_JOBS, cpus))


def run_batch(
    plan: BatchPlan,
    denoiser: DenoiserSource,
    *,
    jobs: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    report: str | os.PathLike | None = None,
) -> BatchSummary:
    """Denoise every task of ``plan``; return what happened.

    Parameters
    ----------
    plan : the inputs and their outputs
    denoiser : a :class:`~audiodenoise.api.Denoiser`, or a picklable function
        returning one (e.g. ``functools.partial(Denoiser.from_file, path)``),
        which each worker calls once; a Denoiser is pickled to the workers
    jobs : worker processes (default :func:`default_jobs`); 1 runs here
    overwrite : redo outputs that exist (else they are skipped)
    progress : a progress bar on stderr (files, audio seconds per second,
        ETA) and a line per failure as it happens
    report : write a JSON or CSV report of every file here

    A failed file never stops the batch. A SIGINT or SIGTERM (when called from
    the main thread) stops it cleanly: see the module docstring.
    """
    jobs = default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    if jobs > 1:
        check_main_guard(f"run_batch(jobs={jobs})")
    writer = ReportWriter(report, overwrite=overwrite) if report is not None else None
    try:
        local = denoiser() if callable(denoiser) else denoiser  # also checks the model before any worker starts
        runner = _Runner(plan, local, denoiser, jobs=jobs, overwrite=overwrite, progress=progress, report=writer)
        summary = runner.run()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is not None:
        writer.close(summary)
    return summary


class _Runner:
    def __init__(
        self,
        plan: BatchPlan,
        local: Denoiser,
        source: DenoiserSource,
        *,
        jobs: int,
        overwrite: bool,
        progress: bool,
        report: ReportWriter | None,
    ) -> None:
        self.plan = plan
        self.local = local
        self.source = source
        self.jobs = jobs
        self.overwrite = overwrite
        self.report = report
        self.summary = BatchSummary()
        self.abort = _Abort()
        self.swept: set[Path] = set()
        self.bar: ProgressBar | None = None
        self.progress = progress
        self._start = 0.0

    def run(self) -> BatchSummary:
        self._start = time.perf_counter()
        old = _install(self.abort)
        try:
            if self.progress:
                self.bar = ProgressBar(self.plan.count, background=self.plan.folder, start=self._start)
            if self.jobs == 1:
                self._run_here(self.plan.tasks())
            else:
                self._run_workers()
        finally:
            _restore(old)
            for folder in self.swept:
                sweep_temp_files(folder)
            if self.bar is not None:
                self.bar.close()
        self.summary.stopped = self.abort.requested
        self.summary.elapsed_seconds = time.perf_counter() - self._start
        return self.summary

    # -- bookkeeping -----------------------------------------------------------------

    def _precheck(self, task: Task) -> FileResult | None:
        """The outcome decided without denoising (skip, a planning error), else None."""
        if task.error is not None:
            return FileResult(str(task.src), str(task.dst), FAILED, task.error)
        folder = task.dst.parent
        if folder not in self.swept:  # before this batch writes there
            self.swept.add(folder)
            sweep_temp_files(folder)
        if os.path.lexists(task.dst):
            try:  # never the input; never a folder, FIFO or device, even to skip it as done
                outputs.check_output(task.dst, overwrite=True, inputs=[task.src])
            except OutputError as exc:
                return FileResult(str(task.src), str(task.dst), FAILED, _strip_name(str(exc), str(task.dst)))
            if not self.overwrite:
                return FileResult(str(task.src), str(task.dst), SKIPPED)
        return None

    def _emit(self, result: FileResult) -> None:
        if result.status == INTERRUPTED:
            return
        self.summary.add(result)
        if self.report is not None:
            self.report.add(result)
        if self.bar is not None:
            self.bar.update(result, self.summary)

    # -- in this process -----------------------------------------------------------------

    def _run_here(self, tasks: Iterable[Task]) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for task in tasks:
                if self.abort.requested:
                    break
                result = self._precheck(task)
                if result is None:
                    result = _denoise_one(self.local, task, overwrite=self.overwrite, abort=self.abort)
                self._emit(result)
        finally:
            torch.set_num_threads(threads)

    # -- in worker processes -----------------------------------------------------------------

    def _new_pool(self, ctx) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.jobs, mp_context=ctx, initializer=_init_worker, initargs=(self.source, os.getpid())
        )

    def _start_pool(self, ctx) -> tuple[dict, threading.Event]:
        """Start the workers in a thread (submitting blocks while they start); the Event is set when they are up."""
        box: dict = {}
        ready = threading.Event()

        def start() -> None:
            try:
                box["pool"] = pool = self._new_pool(ctx)
                wait([pool.submit(_ready) for _ in range(self.jobs)])
            except BaseException:  # a broken pool shows again on the first real submit
                pass
            finally:
                ready.set()

        threading.Thread(target=start, name="audiodenoise-workers", daemon=True).start()
        self.abort.worker_pids = lambda: _pids(box.get("pool"))
        return box, ready

    def _warm_up(self, tasks: Iterator[Task], ready: threading.Event) -> Task | None:
        """Denoise short files here until the workers are up; return a task left for them, if any."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            while not ready.is_set() and not self.abort.requested:
                task = next(tasks, None)
                if task is None:
                    return None
                result = self._precheck(task)
                if result is None:
                    if _duration(task.src) > WARMUP_MAX_SECONDS:
                        return task
                    result = _denoise_one(self.local, task, overwrite=self.overwrite, abort=self.abort)
                self._emit(result)
        finally:
            torch.set_num_threads(threads)
        return None

    def _run_workers(self) -> None:
        tasks = iter(self.plan.tasks())
        head: list[Task] = []
        seconds = 0.0
        for task in tasks:
            result = self._precheck(task)
            if result is not None:
                self._emit(result)
                continue
            head.append(task)
            seconds += _duration(task.src)
            if len(head) > 4 * self.jobs or seconds > SMALL_BATCH_SECONDS:
                break
        else:  # the whole batch is small
            self._run_here(head)
            return
        tasks = itertools.chain(head, tasks)
        ctx = _mp_context()
        box, ready = self._start_pool(ctx)
        left = self._warm_up(tasks, ready)
        while not ready.wait(0.1):
            pass
        pool: ProcessPoolExecutor | None = box.get("pool")
        if left is not None:
            tasks = itertools.chain([left], tasks)
        pending: dict[Future, Task] = {}
        retry: deque[Task] = deque()
        crashed_once: set[Path] = set()
        exhausted = False
        limit = self.jobs * IN_FLIGHT_PER_JOB

        def collect(fut: Future, task: Task) -> bool:
            """Record a finished future; True when its pool is broken."""
            exc = fut.exception()
            if exc is None:
                self._emit(fut.result())
            elif isinstance(exc, BrokenProcessPool):
                if self.abort.requested:
                    pass
                elif task.src in crashed_once:
                    self._emit(FileResult(
                        str(task.src), str(task.dst), FAILED,
                        "a worker process died while denoising this file (out of memory, or a crash in a "
                        "native library); run again to retry",
                    ))
                else:  # perhaps another file in flight killed it: try again, alone
                    crashed_once.add(task.src)
                    retry.append(task)
                return True
            elif not isinstance(exc, _Interrupted):
                detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self._emit(FileResult(str(task.src), str(task.dst), FAILED, f"internal error ({detail})"))
            return False

        try:
            while True:
                broken = False
                while not self.abort.requested and len(pending) < limit:
                    if retry or any(t.src in crashed_once for t in pending.values()):
                        # after a crash, its suspects run one at a time so only the culprit fails
                        if pending or not retry:
                            break
                        task = retry.popleft()
                    elif exhausted:
                        break
                    else:
                        task = next(tasks, None)
                        if task is None:
                            exhausted = True
                            break
                        result = self._precheck(task)
                        if result is not None:
                            self._emit(result)
                            continue
                    if pool is None:
                        pool = box["pool"] = self._new_pool(ctx)
                    try:
                        pending[pool.submit(_work, task, self.overwrite)] = task
                    except BrokenProcessPool:
                        retry.appendleft(task)
                        broken = True
                        break
                if not pending and not broken:
                    break  # all done, or stopped
                if not broken:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        broken |= collect(fut, pending.pop(fut))
                if broken:  # every file in flight in this pool is lost: collect them, start a new pool
                    for fut in wait(pending).done:
                        collect(fut, pending.pop(fut))
                    pool.shutdown(wait=True)
                    pool = None
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            self.abort.worker_pids = None


def _duration(path: Path) -> float:
    """Seconds of audio in ``path`` from its header; 0 when it cannot be read (it fails at once)."""
    try:
        return audio.info(path).duration
    except AudioDenoiseError:
        return 0.0

