"""What a batch does: the inputs (a folder walk or a list of files) and the output each one maps to.

The walk is lazy (one folder listing at a time) and sorted by name within each
folder. Entries that look like audio but cannot be read as files (a dangling
symlink, a FIFO, a device) become tasks that fail with the reason, so they
show in the summary and the report.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import audio
from .errors import AudioError, ConfigError

# files a folder walk picks up when no --glob is given
AUDIO_EXTENSIONS = frozenset(audio._FORMATS)


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
            elif not is_file and self._selected(entry_rel, entry.name, default=False):
                # named like audio but not a file to read: say so rather than leave it out unseen
                reason = audio.not_a_regular_file(entry.path)
                yield Task(Path(entry.path), self._output(self.out_dir / entry_rel), error=reason)
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
