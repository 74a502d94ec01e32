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

import csv
import dataclasses
import functools
import itertools
import json
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import audio
from .api import Denoiser
from .errors import AudioDenoiseError, AudioError, ConfigError
from .processes import check_main_guard

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
# files a folder walk picks up when no --glob is given
AUDIO_EXTENSIONS = frozenset(audio._FORMATS)
REPORT_FIELDS = ("input", "output", "status", "reason", "audio_seconds", "seconds")

OK = "ok"
SKIPPED = "skipped"
FAILED = "failed"
INTERRUPTED = "interrupted"

# AtomicWriter's temp files: ".NAME.<8 random chars>.part<suffix of NAME>"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.part(?P<suffix>\.[^.]*)?")

DenoiserSource = Denoiser | Callable[[], Denoiser]


def default_jobs() -> int:
    """Worker processes used when none are asked for: usable CPUs, at most :data:`MAX_DEFAULT_JOBS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_JOBS, cpus))


# -- what to do -------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One input and the output it maps to; ``error`` is set when it cannot be done."""

    src: Path
    dst: Path
    error: str | None = None


@dataclass(frozen=True)
class BatchPlan:
    """Inputs and where their outputs go. Build with :meth:`from_folder` or :meth:`from_files`.

    Patterns (``globs`` choose files, ``excludes`` drop files and folders) are
    shell-style and case-sensitive. One without a ``/`` matches a name at any
    depth (``*.wav``, ``drafts``); one with a ``/`` matches the path relative
    to the input folder (``interviews/*.flac``), where ``**`` spans any number
    of folders (``**/take?.wav``). Without ``globs`` a folder walk takes files
    with a known audio extension (:data:`AUDIO_EXTENSIONS`, any case). Hidden
    files and folders (names starting with a dot, such as macOS ``._`` files)
    are never walked into.
    """

    sources: tuple[Path, ...]
    out_dir: Path
    folder: bool
    globs: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    format: str | None = None
    suffix: str | None = None  # set: each file's output is NAME<suffix>.EXT beside it (out_dir unused)

    @classmethod
    def from_folder(
        cls,
        in_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        *,
        globs: Iterable[str] = (),
        excludes: Iterable[str] = (),
        format: str | None = None,
    ) -> BatchPlan:
        """Every matching file under ``in_dir``, recursively, mirrored under ``out_dir``.

        Raises
        ------
        ConfigError
            ``in_dir`` is not a folder, ``out_dir`` is an existing file, is
            ``in_dir`` or contains it, a bad pattern or an unknown format.
        """
        in_dir, out_dir = Path(in_dir), Path(out_dir)
        if not in_dir.exists():
            raise ConfigError(f"{in_dir}: folder not found")
        if not in_dir.is_dir():
            raise ConfigError(f"{in_dir}: is not a folder")
        _check_out_dir(out_dir)
        real_in, real_out = in_dir.resolve(), out_dir.resolve()
        if real_in == real_out:
            raise ConfigError(f"{out_dir}: is the input folder; choose another output folder")
        if real_out in real_in.parents:
            raise ConfigError(f"{out_dir}: contains the input folder {in_dir}; choose an output folder outside it")
        return cls((in_dir,), out_dir, True, _patterns(globs), _patterns(excludes), normalize_format(format))

    @classmethod
    def from_files(
        cls,
        files: Iterable[str | os.PathLike],
        out_dir: str | os.PathLike,
        *,
        globs: Iterable[str] = (),
        excludes: Iterable[str] = (),
        format: str | None = None,
    ) -> BatchPlan:
        """Each file to ``out_dir/<its name>``; patterns, if any, match the names.

        A missing or unreadable file fails on its own when the batch runs;
        a folder among ``files`` is a :class:`ConfigError`.
        """
        sources = tuple(Path(f) for f in files)
        if not sources:
            raise ConfigError("no input files given")
        for src in sources:
            if src.is_dir():
                raise ConfigError(f"{src}: is a folder; give one folder and an output folder to denoise a folder")
        out_dir = Path(out_dir)
        _check_out_dir(out_dir)
        return cls(sources, out_dir, False, _patterns(globs), _patterns(excludes), normalize_format(format))

    @classmethod
    def beside(
        cls,
        files: Iterable[str | os.PathLike],
        *,
        suffix: str,
        globs: Iterable[str] = (),
        excludes: Iterable[str] = (),
        format: str | None = None,
    ) -> BatchPlan:
        """Each file to ``NAME<suffix>.EXT`` in its own folder (``--format`` changes ``EXT``)."""
        plan = cls.from_files(files, ".", globs=globs, excludes=excludes, format=format)
        return dataclasses.replace(plan, suffix=suffix)

    # -- the walk ------------------------------------------------------------------

    def tasks(self) -> Iterator[Task]:
        """The inputs in a stable order (sorted by name within each folder), lazily."""
        if self.folder:
            root = self.sources[0]
            yield from self._walk(root, "", frozenset({root.resolve()}), self.out_dir.resolve())
            return
        seen: dict[Path, Path] = {}
        inputs = {src.absolute() for src in self.sources}
        for src in self.sources:
            if (self.globs or self.excludes) and not self._selected(src.name, src.name, default=True):
                continue
            if self.suffix:
                dst = self._output(src.with_name(src.stem + self.suffix + src.suffix))
                if dst.absolute() in inputs:
                    yield Task(src, dst, error=f"output {dst} is also an input; it is never overwritten")
                    continue
            else:
                dst = self._output(self.out_dir / src.name)
            first = seen.setdefault(dst, src)
            if first is not src:
                yield Task(src, dst, error=f"output {dst} would also be written from {first}; rename one of them")
                continue
            yield Task(src, dst)

    def count(self) -> int:
        """How many tasks :meth:`tasks` yields (walks the inputs once more)."""
        return sum(1 for _ in self.tasks())

    def nothing_found(self) -> str:
        """Message for a plan that yields no task."""
        where = self.sources[0] if self.folder else "the given files"
        if self.globs:
            wanted = "files matching " + " or ".join(self.globs)
        else:
            wanted = "audio files (" + ", ".join(sorted(AUDIO_EXTENSIONS)) + "; use --glob for others)"
        extra = " outside the excluded ones" if self.excludes else ""
        return f"{where}: no {wanted}{extra}"

    def _walk(self, folder: Path, rel: str, ancestors: frozenset[Path], out_real: Path) -> Iterator[Task]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Task(folder, self.out_dir / rel, error=f"cannot list folder ({exc.strerror or exc})")
            return
        outputs: dict[str, str] = {}  # output name -> input name, for clashes made by --format
        for entry in entries:
            if entry.name.startswith("."):
                continue
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_dir:
                if any(_matches(p, entry_rel, entry.name) for p in self.excludes):
                    continue
                real = Path(entry.path).resolve()
                if real == out_real or real in ancestors:  # the output folder inside the input; a link loop
                    continue
                yield from self._walk(Path(entry.path), entry_rel, ancestors | {real}, out_real)
            elif is_file and self._selected(entry_rel, entry.name, default=False):
                dst = self._output(self.out_dir / entry_rel)
                first = outputs.setdefault(dst.name, entry.name)
                if first != entry.name:
                    yield Task(Path(entry.path), dst, error=f"output {dst} would also be written from {first}")
                    continue
                yield Task(Path(entry.path), dst)

    def _selected(self, rel: str, name: str, *, default: bool) -> bool:
        if self.globs:
            chosen = any(_matches(p, rel, name) for p in self.globs)
        else:
            chosen = default or os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS
        return chosen and not any(_matches(p, rel, name) for p in self.excludes)

    def _output(self, path: Path) -> Path:
        return path.with_suffix("." + self.format) if self.format else path


def normalize_format(format: str | None) -> str | None:
    """``"FLAC"``/``".flac"`` -> ``"flac"``; :class:`ConfigError` for a format that cannot be written."""
    if format is None:
        return None
    ext = format.strip().lstrip(".").lower()
    try:
        audio.output_format(Path("x." + ext))
    except AudioError:
        known = ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))
        raise ConfigError(f"unknown output format {format!r}; use one of {known}") from None
    return ext


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder; the output must be a folder")


def _patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    out = []
    for pattern in patterns:
        cleaned = pattern.strip()
        while cleaned.startswith("./"):
            cleaned = cleaned[2:]
        cleaned = cleaned.strip("/")
        if not cleaned:
            raise ConfigError(f"empty pattern {pattern!r}")
        _pattern_regex(cleaned)
        out.append(cleaned)
    return tuple(out)


def _matches(pattern: str, rel: str, name: str) -> bool:
    return _pattern_regex(pattern).fullmatch(rel if "/" in pattern else name) is not None


@functools.lru_cache(maxsize=256)
def _pattern_regex(pattern: str) -> re.Pattern:
    """Shell pattern -> regex: ``*``, ``?`` and ``[...]`` stay inside one path part, ``**`` spans parts."""
    parts = pattern.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
        else:
            out.append(_part_regex(part) + ("" if last else "/"))
    return re.compile("".join(out))


def _part_regex(part: str) -> str:
    out, i, n = [], 0, len(part)
    while i < n:
        c = part[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1 if i < n and part[i] in "!^" else i
            j = j + 1 if j < n and part[j] == "]" else j
            j = part.find("]", j)
            if j < 0:
                out.append(re.escape(c))
                continue
            body = part[i:j].replace("\\", "\\\\")
            i = j + 1
            out.append("[^/" + body[1:] + "]" if body[0] in "!^" else "[" + body + "]")
        else:
            out.append(re.escape(c))
    return "".join(out)


# -- what happened ------------------------------------------------------------------


@dataclass(frozen=True)
class FileResult:
    """The outcome for one input: ``status`` is ``ok``, ``skipped``, ``failed`` or ``interrupted``."""

    src: str
    dst: str
    status: str
    reason: str | None = None
    audio_seconds: float | None = None  # length of the input (when it was read)
    seconds: float | None = None  # time spent on it
    detail: str | None = None  # traceback of an internal error

    def row(self) -> dict:
        """The report row."""
        return {
            "input": self.src,
            "output": self.dst,
            "status": self.status,
            "reason": self.reason,
            "audio_seconds": None if self.audio_seconds is None else round(self.audio_seconds, 3),
            "seconds": None if self.seconds is None else round(self.seconds, 3),
        }


@dataclass
class BatchSummary:
    """Counts over a batch; :attr:`failures` lists the failed files."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    stopped: bool = False  # a signal stopped the batch before every input was done
    audio_seconds: float = 0.0  # of the denoised files
    elapsed_seconds: float = 0.0
    failures: list[FileResult] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Files with an outcome."""
        return self.ok + self.failed + self.skipped

    def add(self, result: FileResult) -> None:
        if result.status == OK:
            self.ok += 1
            self.audio_seconds += result.audio_seconds or 0.0
        elif result.status == SKIPPED:
            self.skipped += 1
        elif result.status == FAILED:
            self.failed += 1
            self.failures.append(result)

    def describe(self) -> str:
        """``118 of 120 files denoised, 2 failed, 0 skipped (already done)`` and a line per failure."""
        counts = f"{self.failed} failed, {self.skipped} skipped (already done)"
        if self.stopped:
            head = (
                f"interrupted: {self.ok} files denoised, {counts}; "
                "run the same command again to finish the rest"
            )
        else:
            head = f"{self.ok} of {self.total} files denoised, {counts}"
        return "\n".join([head] + [f"  {r.src}: {r.reason}" for r in self.failures])

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "interrupted": self.stopped,
            "audio_seconds": round(self.audio_seconds, 3),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


def check_report_path(path: str | os.PathLike) -> Path:
    """Raise :class:`ConfigError` unless ``path`` can be a ``.json`` or ``.csv`` report (its folder may be made)."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".csv"):
        raise ConfigError(f"{path}: report must end in .json or .csv")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a report file path")
    folder = next((p for p in path.parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"{path}: {folder} is not a folder")
    return path


class ReportWriter:
    """A JSON or CSV report, streamed to a temp file and renamed into place by :meth:`close`.

    JSON: ``{"files": [row, ...], "summary": {...}}``; CSV: one row per file
    with the columns :data:`REPORT_FIELDS`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_report_path(path)
        self.csv = self.path.suffix.lower() == ".csv"
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # ".tmp", not AtomicWriter's ".part.EXT": a report in an output folder is not swept
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot write the report ({exc.strerror or exc})") from None
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "w", newline="" if self.csv else None, encoding="utf-8")
        self._rows = 0
        if self.csv:
            self._csv = csv.DictWriter(self._fh, fieldnames=REPORT_FIELDS)
            self._csv.writeheader()
        else:
            self._fh.write('{\n  "files": [')

    def add(self, result: FileResult) -> None:
        row = result.row()
        if self.csv:
            self._csv.writerow({k: "" if v is None else v for k, v in row.items()})
        else:
            self._fh.write(("," if self._rows else "") + "\n    " + json.dumps(row))
        self._rows += 1

    def close(self, summary: BatchSummary) -> None:
        if not self.csv:
            self._fh.write("\n  ],\n  \"summary\": " + json.dumps(summary.to_dict()) + "\n}\n")
        self._fh.close()
        os.chmod(self._tmp, 0o666 & ~_umask())
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sweep_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files that :class:`~audiodenoise.audio.AtomicWriter` left in ``folder`` (not recursive).

    Only names of the form ``.NAME.XXXXXXXX.partSUFFIX`` (``SUFFIX`` being
    NAME's own extension) are touched. A process killed outright (SIGKILL,
    out of memory) can leave one behind; a batch removes them from its output
    folders before and after it runs.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.fullmatch(entry.name)
        if m is None or not m.group("name").endswith(m.group("suffix") or ""):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


# -- running ---------------------------------------------------------------------------


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


def _init_worker(source: DenoiserSource) -> None:
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
    writer = ReportWriter(report) if report is not None else None
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
        self.bar = None
        self.progress = progress
        self._total: list[int] = []
        self._start = 0.0

    def run(self) -> BatchSummary:
        self._start = time.perf_counter()
        old = _install(self.abort)
        try:
            if self.progress and self.plan.folder:  # the bar's total, while the work goes on
                threading.Thread(target=self._count, daemon=True).start()
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
        if task.dst.exists():
            try:
                same = task.src.exists() and os.path.samefile(task.src, task.dst)
            except OSError:
                same = False
            if same:
                return FileResult(str(task.src), str(task.dst), FAILED, "output path is the input file")
            if not self.overwrite:
                return FileResult(str(task.src), str(task.dst), SKIPPED)
        return None

    def _emit(self, result: FileResult) -> None:
        if result.status == INTERRUPTED:
            return
        self.summary.add(result)
        if self.report is not None:
            self.report.add(result)
        if self.progress and self.bar is None:  # opened on the first result: an empty batch shows none
            self._open_bar()
        if self.bar is not None:
            if result.status == FAILED:
                self.bar.write(f"{result.src}: {result.reason}", file=sys.stderr)
            if self._total and self.bar.total is None:
                self.bar.total = self._total[0]
            rate = self.summary.audio_seconds / max(time.perf_counter() - self._start, 1e-9)
            self.bar.set_postfix_str(f"{rate:.1f} audio s/s", refresh=False)
            self.bar.update(1)

    def _open_bar(self) -> None:
        from tqdm import tqdm

        total = None if self.plan.folder else self.plan.count()
        self.bar = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True, desc="denoise")

    def _count(self) -> None:
        try:
            self._total.append(self.plan.count())
        except Exception:  # the bar just shows no total
            pass

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
            max_workers=self.jobs, mp_context=ctx, initializer=_init_worker, initargs=(self.source,)
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


def _ready() -> None:
    """A no-op task: run once a worker is up."""


def _pids(pool: ProcessPoolExecutor | None) -> list[int]:
    if pool is None:
        return []
    try:
        return list(dict(pool._processes or {}))
    except (AttributeError, RuntimeError):
        return []
