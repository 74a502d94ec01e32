"""What happened in a batch: each file's outcome, the counts, the JSON/CSV report and the progress bar."""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import outputs
from .errors import ConfigError, OutputError

REPORT_FIELDS = ("input", "output", "status", "reason", "audio_seconds", "seconds")

OK = "ok"
SKIPPED = "skipped"
FAILED = "failed"
INTERRUPTED = "interrupted"


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


def check_report_path(path: str | os.PathLike, *, overwrite: bool = False, inputs=()) -> Path:
    """Raise unless ``path`` can be a ``.json`` or ``.csv`` report (its folder may be made).

    :class:`ConfigError` for a wrong extension; :class:`OutputError` (see
    :func:`~audiodenoise.outputs.check_output`) for an existing file without
    ``overwrite``, an input, a folder, a FIFO or an unwritable place.
    """
    path = Path(path)
    if path.suffix.lower() not in (".json", ".csv"):
        raise ConfigError(f"{path}: report must end in .json or .csv")
    return outputs.check_output(path, overwrite=overwrite, inputs=inputs, what="report")


class ReportWriter:
    """A JSON or CSV report, streamed to a temp file and renamed into place by :meth:`close`.

    JSON: ``{"files": [row, ...], "summary": {...}}``; CSV: one row per file
    with the columns :data:`REPORT_FIELDS`.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.path = check_report_path(path, overwrite=overwrite)
        self.csv = self.path.suffix.lower() == ".csv"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write the report ({exc.strerror or exc})") from None
        # ".tmp", not an audio output's ".part": a report in an output folder is not swept
        self._tmp = outputs.make_temp(self.path)
        # file names that are not UTF-8 go back out as the bytes they were
        self._fh = open(self._tmp, "w", newline="" if self.csv else None, encoding="utf-8", errors="surrogateescape")
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
        outputs.commit(self._tmp, self.path)

    def discard(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


class ProgressBar:
    """A batch's tqdm bar on stderr: files with an outcome, audio seconds denoised per second, a line per failure.

    ``count`` returns the number of files. With ``background`` (a folder walk)
    it runs in a thread while the work goes on and the total appears once
    known; otherwise it runs when the bar opens. The bar opens on the first
    result, so an empty batch shows none. ``start`` is the batch's
    :func:`time.perf_counter` at its start.
    """

    def __init__(self, count: Callable[[], int], *, background: bool, start: float) -> None:
        self._count_files = count
        self._background = background
        self._start = start
        self._total: list[int] = []
        self._bar = None
        if background:
            threading.Thread(target=self._count, daemon=True).start()

    def update(self, result: FileResult, summary: BatchSummary) -> None:
        """Count ``result`` (already added to ``summary``)."""
        if self._bar is None:
            self._open()
        if result.status == FAILED:
            self._bar.write(f"{result.src}: {result.reason}", file=sys.stderr)
        if self._total and self._bar.total is None:
            self._bar.total = self._total[0]
        rate = summary.audio_seconds / max(time.perf_counter() - self._start, 1e-9)
        self._bar.set_postfix_str(f"{rate:.1f} audio s/s", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _open(self) -> None:
        from tqdm import tqdm

        total = None if self._background else self._count_files()
        self._bar = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True, desc="denoise")

    def _count(self) -> None:
        try:
            self._total.append(self._count_files())
        except Exception:  # the bar just shows no total
            pass
