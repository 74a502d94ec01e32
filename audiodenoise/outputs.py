"""Every file the tool writes: checked before any work starts, then written atomically.

The rules (the README's "Guarantees" lists them with their tests):

- an output is never one of the inputs: compared by device and inode, so a symlink or a hard
  link to an input counts as the input, and by resolved path for outputs not written yet;
- an existing file is replaced only with ``overwrite``; a folder, FIFO, device or socket is never
  replaced, even with ``overwrite``;
- the nearest existing folder above the output must be a folder this process can write to;
- the name and the whole path must fit the file system's limits, the temp file's included;
- the file is written to a short temp name in the same folder (``.ad-XXXXXXXX.tmp``, or ``.part``
  for audio) and renamed into place, so the output name only ever holds a whole file; a replaced
  file keeps its permission bits.

>>> check_output("report.json", overwrite=False, inputs=["clean/a.flac"])
>>> with atomic_path("report.json") as tmp:
...     tmp.write_text("{}")
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

TEMP_PREFIX = ".ad-"
# temp names are short whatever the output's name: ".ad-" + 8 random characters + suffix
AUDIO_TEMP_SUFFIX = ".part"  # audio outputs; a batch sweeps leftovers of these from its output folders
TEMP_SUFFIX = ".tmp"  # everything else (reports, plots, models)
TEMP_NAME_BYTES = len(TEMP_PREFIX) + 8 + max(len(AUDIO_TEMP_SUFFIX), len(TEMP_SUFFIX))
# audio temp files: ".ad-XXXXXXXX.part"; and the form of earlier versions, ".NAME.XXXXXXXX.partSUFFIX"
_AUDIO_TEMP_NAME = re.compile(r"\.ad-[a-z0-9_]{8}\.part")
_OLD_AUDIO_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.part(?P<suffix>\.[^.]*)?")
_DEFAULT_NAME_MAX = 255
_DEFAULT_PATH_MAX = 4096
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}

PathLike = str | os.PathLike


def check_output(
    path: PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
    planned: Iterable[PathLike] = (),
    what: str = "output",
) -> Path:
    """Raise :class:`OutputError` unless ``path`` may be written; return it as a Path.

    Nothing is created. ``inputs`` are the files that ``path`` must not be,
    ``planned`` the other outputs of the same run; ``what`` names the output in
    messages ("report", "plot").
    """
    path = Path(path)
    shown = display(path)
    if path.name in ("", ".", ".."):
        raise OutputError(f"{shown}: is a folder, expected {_a(what)} file path")
    folder = _nearest_folder(path)
    name_max = _limit(folder, "PC_NAME_MAX", _DEFAULT_NAME_MAX)
    path_max = _limit(folder, "PC_PATH_MAX", _DEFAULT_PATH_MAX)
    name_bytes = len(os.fsencode(path.name))
    if name_bytes > name_max:
        raise OutputError(f"{shown}: file name is {name_bytes} bytes, longer than the file system's "
                          f"{name_max}-byte limit; choose a shorter name")
    absolute = os.fsencode(os.path.abspath(path))
    longest = max(len(absolute), len(os.fsencode(os.path.dirname(os.path.abspath(path)))) + 1 + TEMP_NAME_BYTES)
    if longest >= path_max:
        raise OutputError(f"{shown}: path is {len(absolute)} bytes, too long for the system's "
                          f"{path_max}-byte limit (temp file included); choose a shorter path")
    for other in inputs:
        if _same(path, Path(other)):
            raise OutputError(f"{shown}: {what} path is the input file {display(other)}; choose another {what} path")
    for other in planned:
        if _same(path, Path(other)):
            raise OutputError(f"{shown}: {what} path is also the output {display(other)}; choose another {what} path")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # not there (a file above it is reported below)
        st = None
        if os.path.islink(path):
            raise OutputError(f"{shown}: is a dangling symlink; remove it or choose another {what} path") from None
    except OSError as exc:
        raise OutputError(f"{shown}: cannot check the {what} path ({exc.strerror or exc})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{shown}: is a folder, expected {_a(what)} file path")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{shown}: exists and is {file_kind(st.st_mode)}, not a regular file; "
                              f"choose another {what} path")
        if not overwrite:
            raise OutputError(f"{shown}: already exists; pass --overwrite to replace it")
    if folder is None or not folder.is_dir():
        blocker = folder if folder is not None else path.parent
        raise OutputError(f"{shown}: {display(blocker)} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{shown}: cannot write to {display(folder)} (permission denied)")
    return path


def make_parent(path: PathLike) -> None:
    """Create the missing folders above ``path`` (once :func:`check_output` has allowed it)."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{display(path)}: cannot create the folder {display(folder)} "
                          f"({exc.strerror or exc})") from None


def check_output_dir(path: PathLike, *, inputs: Iterable[PathLike] = (), what: str = "output folder") -> Path:
    """Raise :class:`OutputError` unless ``path`` can be a folder the tool writes into (made if missing).

    Refused: an existing file, FIFO or device; one of the ``inputs`` folders,
    a folder inside one (a rerun would read it back) or one that contains one;
    a place under a file or that cannot be written; a path or name over the
    system's limits. For ``prepare --out``, ``train --out`` and ``export``'s
    folder checks.
    """
    path = Path(path)
    shown = display(path)
    folder = _nearest_folder(path / "x")
    name_max = _limit(folder, "PC_NAME_MAX", _DEFAULT_NAME_MAX)
    path_max = _limit(folder, "PC_PATH_MAX", _DEFAULT_PATH_MAX)
    too_long = next((part for part in path.parts if len(os.fsencode(part)) > name_max), None)
    if too_long is not None:
        raise OutputError(f"{shown}: a folder name is {len(os.fsencode(too_long))} bytes, longer than the file "
                          f"system's {name_max}-byte limit")
    if len(os.fsencode(os.path.abspath(path))) + 1 + _DEFAULT_NAME_MAX >= path_max:
        raise OutputError(f"{shown}: path is too long for the system's {path_max}-byte limit; choose a shorter one")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:
        raise OutputError(f"{shown}: cannot check the {what} ({exc.strerror or exc})") from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)
        raise OutputError(f"{shown}: exists and is {kind}; the {what} must be a folder")
    real = Path(os.path.realpath(path))
    for other in inputs:
        other_real = Path(os.path.realpath(other))
        if real == other_real:
            raise OutputError(f"{shown}: is the input folder {display(other)}; choose another {what}")
        if other_real in real.parents:
            raise OutputError(f"{shown}: is inside the input folder {display(other)}; choose a {what} outside it")
        if real in other_real.parents:
            raise OutputError(f"{shown}: contains the input folder {display(other)}; choose a {what} outside it")
    if st is None:
        if folder is None or not folder.is_dir():
            raise OutputError(f"{shown}: {display(folder or path.parent)} is not a folder")
        base = folder
    else:
        base = path
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{shown}: cannot write to {display(base)} (permission denied)")
    return path


def check_output_folder(path: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike] = (), mark: str,
                        what: str = "page") -> Path:
    """Raise :class:`OutputError` unless ``path`` may be a folder the tool replaces whole (``evaluate --html``).

    Never an input nor a folder that holds one; never a file. An existing
    folder may be replaced only if it is empty or, with ``overwrite``, a
    folder this tool wrote before: its ``index.html`` carries ``mark`` in its
    first 4 kB. Nothing is created.
    """
    path = Path(path)
    shown = display(path)
    target = path.resolve()
    for item in inputs:
        src = Path(item).resolve()
        if target == src or target in src.parents:
            how = "an input" if target == src else f"a folder holding the input {display(item)}"
            raise OutputError(f"{shown}: is {how}; choose another output path")
    if not path.exists():
        return path
    if not path.is_dir():
        raise OutputError(f"{shown}: is a file, expected a folder for the {what}")
    if not any(path.iterdir()):
        return path
    index = path / "index.html"
    if not (index.is_file() and mark in index.read_text(errors="replace")[:4096]):
        raise OutputError(f"{shown}: is a folder that holds other files; choose a new or empty folder")
    if not overwrite:
        raise OutputError(f"{shown}: already exists; pass --overwrite to replace it")
    return path


def make_temp(path: PathLike, *, suffix: str = TEMP_SUFFIX) -> Path:
    """An empty temp file (mode 0600) beside ``path``, named ``.ad-XXXXXXXX<suffix>``."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{display(path)}: output folder {display(folder)} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    except OSError as exc:
        raise OutputError(f"{display(path)}: cannot write to {display(folder)} ({exc.strerror or exc})") from None
    try:
        os.close(fd)
        return Path(tmp)
    except BaseException:  # Ctrl-C between creating and returning it: nobody else knows its name
        os.unlink(tmp)
        raise


def commit(tmp: PathLike, path: PathLike, *, fsync: bool = False) -> None:
    """Rename the finished ``tmp`` onto ``path``, with the mode of the file it replaces (else a new file's).

    The temp file is removed if that fails. A ``path`` that became a folder or a
    non-regular file meanwhile is not replaced.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            mode = new_file_mode()
        else:
            if not stat.S_ISREG(st.st_mode):
                raise OutputError(f"{display(path)}: is no longer a regular file; nothing was replaced")
            mode = stat.S_IMODE(st.st_mode)
        os.chmod(tmp, mode)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{display(path)}: cannot rename the output into place ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: PathLike, *, suffix: str = TEMP_SUFFIX, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write; on success it is renamed onto ``path``, on any error removed."""
    tmp = make_temp(path, suffix=suffix)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, path, fsync=fsync)


def write_bytes(path: PathLike, data: bytes, *, fsync: bool = False, parents: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (no checks: call :func:`check_output` first).

    ``parents``: make the missing folders above ``path`` first.
    """
    if parents:
        make_parent(path)
    with atomic_path(path, fsync=fsync) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"{display(path)}: write failed ({exc.strerror or exc})") from None


def write_text(path: PathLike, text: str, *, fsync: bool = False, parents: bool = False) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`write_bytes`)."""
    write_bytes(path, text.encode("utf-8", "surrogateescape"), fsync=fsync, parents=parents)


def sweep_audio_temp_files(folder: PathLike) -> list[Path]:
    """Remove the temp files of audio outputs left in ``folder`` (not recursive); return them.

    Only ``.ad-XXXXXXXX.part`` files (and the ``.NAME.XXXXXXXX.partSUFFIX`` form
    of earlier versions) are touched. A process killed outright (SIGKILL, out of
    memory) can leave one behind; a batch removes them from its output folders
    before and after it runs.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _AUDIO_TEMP_NAME.fullmatch(entry.name):
            m = _OLD_AUDIO_TEMP_NAME.fullmatch(entry.name)
            if m is None or not m.group("name").endswith(m.group("suffix") or ""):
                continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def new_file_mode() -> int:
    """Permission bits of a newly created file under the current umask (``0o666 & ~umask``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def display(path: PathLike, *, limit: int = 160) -> str:
    """``path`` for a one-line message: undecodable bytes shown as ``\\xNN``, very long paths shortened."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    if len(text) > limit:
        keep = (limit - 5) // 2
        text = f"{text[:keep]}[...]{text[-keep:]}"
    return text


def file_kind(mode: int) -> str:
    """"a FIFO", "a character device", ... for a ``st_mode`` that is not a regular file."""
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _same(path: Path, other: Path) -> bool:
    try:
        if os.path.samefile(path, other):
            return True
    except (OSError, ValueError):
        pass
    try:
        return path.resolve() == other.resolve()
    except (OSError, RuntimeError):
        return False


def _nearest_folder(path: Path) -> Path | None:
    """The deepest existing entry above ``path`` (normally a folder), or None."""
    folder = Path(os.path.abspath(path)).parent
    while True:
        try:
            if folder.exists():
                return folder
        except OSError:
            pass
        if folder == folder.parent:
            return None
        folder = folder.parent


def _limit(folder: Path | None, name: str, default: int) -> int:
    try:
        return int(os.pathconf(folder or "/", name))
    except (OSError, ValueError):
        return default
