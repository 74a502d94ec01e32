"""Noisy/clean pairs of an evaluation set: matched by file name, with their SNR groups."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError

# SNR groups of the protocol: low = -5 and 0 dB, mid = 5 dB, high = 10 and 15 dB.
# Other SNRs fall into the group whose range holds them (boundaries half-way).
SNR_GROUPS: dict[str, tuple[float, float]] = {
    "low": (-math.inf, 2.5),
    "mid": (2.5, 7.5),
    "high": (7.5, math.inf),
}
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".caf", ".w64", ".rf64", ".au"}
)


@dataclass(frozen=True)
class Pair:
    """One noisy/clean pair and where its output comes from."""

    id: str
    noisy: Path
    clean: Path
    snr_db: float | None


def audio_files(folder: str | os.PathLike, *, role: str) -> dict[str, Path]:
    """Audio files directly in ``folder`` by stem (hidden files skipped)."""
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"{folder}: {role} folder not found")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: is a file, expected the {role} folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            raise DatasetError(f"{folder}: two {role} files share the name {path.stem!r} ({found[path.stem].name}, "
                               f"{path.name}); keep one")
        found[path.stem] = path
    return found


def default_pairs_csv(noisy_dir: str | os.PathLike) -> Path | None:
    """``noisy_dir/../pairs.csv`` if it exists (the dev set's layout)."""
    path = Path(noisy_dir).parent / "pairs.csv"
    return path if path.is_file() else None


def read_pairs_csv(path: str | os.PathLike) -> dict[str, float | None]:
    """``id -> snr_db`` from a pairs file (columns ``id`` and optionally ``snr_db``)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if "id" not in columns:
                raise DatasetError(f"{path}: no `id` column (columns: {', '.join(columns) or 'none'})")
            snrs: dict[str, float | None] = {}
            for line, row in enumerate(reader, start=2):
                value = (row.get("snr_db") or "").strip()
                try:
                    snrs[row["id"]] = float(value) if value else None
                except ValueError:
                    raise DatasetError(f"{path}: line {line}: snr_db {value!r} is not a number") from None
                if snrs[row["id"]] is not None and not math.isfinite(snrs[row["id"]]):
                    raise DatasetError(f"{path}: line {line}: snr_db {value!r} is not finite")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read pairs file ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:  # a binary file given as --pairs
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise DatasetError(f"{path}: not a CSV pairs file ({reason})") from None
    return snrs


def match_pairs(
    noisy_dir: str | os.PathLike, clean_dir: str | os.PathLike, *, pairs_csv: str | os.PathLike | None = None
) -> tuple[list[Pair], dict[str, list[str]]]:
    """Pairs matched by file name (stem) between the two folders, and the names left over."""
    noisy = audio_files(noisy_dir, role="noisy")
    clean = audio_files(clean_dir, role="clean")
    common = sorted(set(noisy) & set(clean))
    if not common:
        raise DatasetError(
            f"no file names in common between {noisy_dir} ({len(noisy)} audio files) and {clean_dir} "
            f"({len(clean)} audio files); pairs are matched by name, e.g. noisy/ID.flac with clean/ID.flac"
        )
    snrs = read_pairs_csv(pairs_csv) if pairs_csv is not None else {}
    pairs = [Pair(i, noisy[i], clean[i], snrs.get(i)) for i in common]
    unmatched = {
        "noisy_only": sorted(set(noisy) - set(clean)),
        "clean_only": sorted(set(clean) - set(noisy)),
        "pairs_csv_only": sorted(set(snrs) - set(common)),
    }
    return pairs, unmatched


def snr_group(snr_db: float | None) -> str | None:
    """``low``, ``mid`` or ``high`` (see :data:`SNR_GROUPS`); None when unknown."""
    if snr_db is None:
        return None
    for name, (lo, hi) in SNR_GROUPS.items():
        if lo <= snr_db < hi:
            return name
    return None
