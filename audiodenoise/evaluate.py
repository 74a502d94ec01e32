"""PESQ-WB, STOI and SI-SDR over noisy/clean pairs, by the protocol of the dev set.

The protocol (``shared/eval/README.md``), so that figures are comparable with
the peers' table:

1. Read the output and the clean reference as float64, mix down to mono,
   resample to 16 kHz with soxr if needed.
2. Align the output to the reference: the integer lag within +-100 ms that
   maximises the absolute cross-correlation; shift, then cut or zero-pad to the
   reference's length.
3. Score: ``pesq(16000, ref, out, "wb")``, ``stoi(ref, out, 16000,
   extended=False)``, SI-SDR in dB.
4. Mean over all pairs and per SNR group (low -5/0 dB, mid 5 dB, high 10/15 dB);
   a pair whose output is missing or not finite is a failure, counted and
   reported.

The unprocessed noisy input is scored the same way, as if it were an output.

>>> from audiodenoise import Denoiser
>>> from audiodenoise.evaluate import evaluate, format_table
>>> report = evaluate("dev/noisy", "dev/clean", denoiser=Denoiser.from_pretrained(), pairs_csv="dev/pairs.csv")
>>> print(format_table(report))
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from . import audio
from .errors import AudioDenoiseError, AudioError, ConfigError, DatasetError
from .processes import check_main_guard

SAMPLE_RATE = 16000
MAX_LAG_SECONDS = 0.1
METRICS = ("pesq_wb", "stoi", "si_sdr")
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
_EPS = 1e-12


# -- metrics -------------------------------------------------------------------


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB.

    Both signals are made zero-mean; the projection of ``est`` on ``ref`` is
    the target, the rest is the error.

    Parameters
    ----------
    ref, est : ndarray [time], same length
    """
    ref = np.asarray(ref, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    if ref.shape != est.shape or ref.ndim != 1:
        raise ValueError(f"expected two 1-D signals of one length, got {ref.shape} and {est.shape}")
    ref = ref - ref.mean()
    est = est - est.mean()
    scale = np.dot(est, ref) / (np.dot(ref, ref) + _EPS)
    target = scale * ref
    error = est - target
    return float(10.0 * np.log10((np.dot(target, target) + _EPS) / (np.dot(error, error) + _EPS)))


def align(
    ref: np.ndarray, out: np.ndarray, sample_rate: int, max_lag_s: float = MAX_LAG_SECONDS
) -> tuple[np.ndarray, int]:
    """Undo a pure delay of ``out`` against ``ref``.

    Finds the integer lag within ``+-max_lag_s`` that maximises the absolute
    cross-correlation (FFT), shifts ``out`` by it, then cuts or zero-pads it to
    the length of ``ref``. Ties go to the smallest lag.

    Parameters
    ----------
    ref, out : ndarray [time]
    sample_rate : int

    Returns
    -------
    aligned : ndarray [len(ref)]
    lag : int, samples by which ``out`` was late (negative: early)
    """
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    max_lag = int(round(max_lag_s * sample_rate))
    n_fft = 1 << int(math.ceil(math.log2(max(2, len(ref) + len(out)))))
    # corr[k] = sum_n out[n + k] * ref[n]; negative k wrap to the end
    corr = np.fft.irfft(np.fft.rfft(out, n_fft) * np.conj(np.fft.rfft(ref, n_fft)), n_fft)
    lags = np.arange(-max_lag, max_lag + 1)
    lags = lags[np.argsort(np.abs(lags), kind="stable")]  # 0, -1, 1, -2, 2, ...
    lag = int(lags[np.argmax(np.abs(corr[lags % n_fft]))])
    shifted = out[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), out])
    shifted = shifted[: len(ref)]
    return np.pad(shifted, (0, len(ref) - len(shifted))), lag


def prepare(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Float64, mono, 16 kHz: ``wav [time] or [channels, time]`` -> ``[time]``."""
    data = np.asarray(wav, dtype=np.float64)
    if data.ndim == 2:
        data = data.mean(axis=0)
    elif data.ndim != 1:
        raise AudioError(f"expected a signal shaped [time] or [channels, time], got shape {data.shape}")
    if sample_rate != SAMPLE_RATE:
        data = soxr.resample(data, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(data)


def read_scoring(path: str | os.PathLike) -> np.ndarray:
    """A file as the protocol reads it: float64, mono, 16 kHz, ``[time]``."""
    meta = audio.info(path)
    try:
        data, sample_rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from None
    return prepare(data.T, meta.sample_rate)


def score_pair(ref, out, *, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """PESQ-WB, STOI and SI-SDR of ``out`` against ``ref``, by the protocol.

    Parameters
    ----------
    ref, out : ndarray [time] or [channels, time] at ``sample_rate``, or paths
        of audio files (read at their own rates)
    sample_rate : rate of array inputs

    Returns
    -------
    ``{"pesq_wb": ..., "stoi": ..., "si_sdr": ...}``

    Raises
    ------
    AudioError
        ``out`` is empty, not finite, or cannot be scored (e.g. silent).
    """
    return _score(_as_scoring(ref, sample_rate), _as_scoring(out, sample_rate))[0]


def _as_scoring(x, sample_rate: int) -> np.ndarray:
    if isinstance(x, (str, os.PathLike)):
        return read_scoring(x)
    return prepare(x, sample_rate)


def _score(ref: np.ndarray, out: np.ndarray, *, name: str = "output") -> tuple[dict[str, float], int]:
    """Scores of 16 kHz mono float64 ``out`` against ``ref``, and the lag removed."""
    pesq, stoi = _metric_functions()
    if out.size == 0:
        raise AudioError(f"{name}: holds no samples")
    if not np.isfinite(out).all():
        raise AudioError(f"{name}: holds NaN or infinite samples")
    aligned, lag = align(ref, out, SAMPLE_RATE)
    if not np.any(aligned):
        raise AudioError(f"{name}: is silent after alignment; PESQ cannot score it")
    try:
        pesq_wb = float(pesq(SAMPLE_RATE, ref, aligned, "wb"))
    except (RuntimeError, ValueError) as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise AudioError(f"{name}: PESQ cannot score it ({detail})") from None
    scores = {
        "pesq_wb": pesq_wb,
        "stoi": float(stoi(ref, aligned, SAMPLE_RATE, extended=False)),
        "si_sdr": si_sdr(ref, aligned),
    }
    return scores, lag


def _metric_functions():
    try:
        from pesq import pesq
        from pystoi import stoi
    except ImportError as exc:
        raise AudioDenoiseError(
            f"evaluation needs the `eval` extra ({exc.name} is missing): pip install 'audiodenoise[eval]'"
        ) from None
    return pesq, stoi


# -- pairs ---------------------------------------------------------------------


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


# -- evaluation ------------------------------------------------------------------


def evaluate(
    noisy_dir: str | os.PathLike,
    clean_dir: str | os.PathLike,
    *,
    denoiser=None,
    denoised_dir: str | os.PathLike | None = None,
    pairs_csv: str | os.PathLike | None = None,
    jobs: int = 1,
    progress: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """Score a denoiser (or a folder of denoised files) and the noisy input against clean references.

    Parameters
    ----------
    noisy_dir, clean_dir : folders of audio files; pairs are matched by file
        name without extension
    denoiser : :class:`~audiodenoise.api.Denoiser` run on each noisy file, or
    denoised_dir : folder of already-denoised files named like the noisy ones;
        with neither, only the noisy input is scored
    pairs_csv : file with ``id`` and ``snr_db`` columns, for the SNR groups
    jobs : processes scoring pairs in parallel (the denoiser runs in this one)
    progress : progress bars on stderr
    name : label of the system in the report

    Returns
    -------
    A JSON-able report: ``files`` (a row per pair), ``means``, ``groups``,
    ``failures``, ``rtf`` and the settings. See :func:`format_table`.
    """
    if denoiser is not None and denoised_dir is not None:
        raise ConfigError("pass a denoiser or a folder of denoised files, not both")
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive whole number, got {jobs!r}")
    if jobs > 1:
        check_main_guard(f"evaluate(jobs={jobs})")
    _metric_functions()  # fail before any work if the extra is missing
    pairs, unmatched = match_pairs(noisy_dir, clean_dir, pairs_csv=pairs_csv)
    denoised = audio_files(denoised_dir, role="denoised") if denoised_dir is not None else {}

    outputs: dict[str, Any] = {}  # id -> Path, ndarray, or an error message
    rtf = None
    timing: dict[str, Any] = {}
    if denoiser is not None:
        outputs, timing = _run_denoiser(denoiser, pairs, progress=progress)
        rtf = timing["rtf"]
    elif denoised_dir is not None:
        for pair in pairs:
            outputs[pair.id] = denoised.get(pair.id, f"{Path(denoised_dir) / pair.id}.*: denoised file not found")

    tasks = [(pair.id, str(pair.clean), str(pair.noisy), outputs.get(pair.id)) for pair in pairs]
    results = _score_all(tasks, jobs=jobs, progress=progress)
    scored = denoiser is not None or denoised_dir is not None

    rows = []
    for pair in pairs:
        result = results[pair.id]
        rows.append({
            "id": pair.id,
            "snr_db": pair.snr_db,
            "group": snr_group(pair.snr_db),
            "seconds": result["seconds"],
            "noisy": result["noisy"],
            "processed": result["processed"],
            "lag_samples": result["lag"],
            "error": result["error"],
        })
    failures = [{"id": r["id"], "reason": r["error"]} for r in rows if scored and r["error"] is not None]
    if scored:
        system = name or (denoiser_name(denoiser) if denoiser is not None else f"denoised: {denoised_dir}")
    else:
        system = None
    report = {
        "protocol": "shared/eval/README.md: float64 mono 16 kHz, aligned within +-100 ms, "
                    "PESQ-WB (pesq), STOI (pystoi, extended=False), SI-SDR",
        "noisy_dir": str(noisy_dir),
        "clean_dir": str(clean_dir),
        "denoised_dir": str(denoised_dir) if denoised_dir is not None else None,
        "pairs_csv": str(pairs_csv) if pairs_csv is not None else None,
        "system": system,
        "n_pairs": len(rows),
        "n_scored": sum(r["processed"] is not None for r in rows) if scored else 0,
        "n_failures": len(failures),
        "failures": failures,
        "unmatched": unmatched,
        "seconds": sum(r["seconds"] for r in rows),
        "rtf": rtf,
        "timing": timing or None,
        "means": _means(rows, scored=scored),
        "groups": _group_means(rows, scored=scored) if any(r["group"] for r in rows) else {},
        "files": rows,
    }
    return report


def denoiser_name(denoiser) -> str:
    """A label for a :class:`~audiodenoise.api.Denoiser` in reports."""
    return "audiodenoise" + (f" ({denoiser.info['name']})" if denoiser.info.get("name") else "")


def _run_denoiser(denoiser, pairs: list[Pair], *, progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Denoise every noisy file in this process; outputs and the real-time factor."""
    import torch

    outputs: dict[str, Any] = {}
    # one untimed call first, so lazy initialisation is not charged to the first file
    denoiser.denoise(np.zeros((1, SAMPLE_RATE // 2), dtype=np.float32), SAMPLE_RATE)
    busy = 0.0
    audio_seconds = 0.0
    for pair in _bar(pairs, enabled=progress, desc="denoise", unit="file"):
        try:
            wav, sample_rate = audio.load(pair.noisy)
        except AudioDenoiseError as exc:
            raise DatasetError(f"pair {pair.id}: {exc}") from None
        start = time.perf_counter()
        try:
            out = denoiser.denoise(wav, sample_rate)
        except AudioDenoiseError as exc:
            outputs[pair.id] = f"denoiser failed: {exc}"
            continue
        busy += time.perf_counter() - start
        audio_seconds += wav.shape[1] / sample_rate
        outputs[pair.id] = prepare(out, sample_rate)
    timing = {
        "denoise_seconds": busy,
        "audio_seconds": audio_seconds,
        "rtf": busy / audio_seconds if audio_seconds > 0 else None,
        "device": str(denoiser.device),
        "torch_threads": torch.get_num_threads(),
    }
    return outputs, timing


def _score_all(tasks: list[tuple], *, jobs: int, progress: bool) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    if jobs == 1 or len(tasks) == 1:
        for task in _bar(tasks, enabled=progress, desc="score", unit="pair"):
            results[task[0]] = _score_task(*task)
        return results
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=_pool_context()) as pool:
        futures = [pool.submit(_score_task, *task) for task in tasks]
        for future in _bar(as_completed(futures), enabled=progress, desc="score", unit="pair", total=len(futures)):
            result = future.result()
            results[result["id"]] = result
    return results


def _pool_context():
    """Workers forked from a clean server that has imported this module once.

    Not plain fork: the parent may hold torch's threads, which do not survive a
    fork well. Not spawn alone: each worker would import torch again.
    """
    if "forkserver" in get_all_start_methods():
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return get_context("spawn")


def _score_task(pair_id: str, clean: str, noisy: str, output) -> dict[str, Any]:
    """Score one pair: the noisy input always, the output when there is one.

    ``output`` is a path, a prepared 16 kHz array, an error message (a failure
    found earlier) or None (no system).
    """
    try:
        ref = read_scoring(clean)
        if not np.isfinite(ref).all():
            raise AudioError(f"{clean}: holds NaN or infinite samples")
        noisy_wav = read_scoring(noisy)
        noisy_scores, noisy_lag = _score(ref, noisy_wav, name=noisy)
    except AudioDenoiseError as exc:
        raise DatasetError(f"pair {pair_id}: {exc}") from None
    result = {"id": pair_id, "seconds": len(ref) / SAMPLE_RATE, "noisy": noisy_scores,
              "processed": None, "lag": None, "error": None}
    if output is None:
        return result
    if isinstance(output, str):
        result["error"] = output
        return result
    try:
        out = read_scoring(output) if isinstance(output, Path) else output
        if np.array_equal(out, noisy_wav):  # same samples, same scores: skip the slow part
            result["processed"], result["lag"] = dict(noisy_scores), noisy_lag
        else:
            name = str(output) if isinstance(output, Path) else pair_id
            result["processed"], result["lag"] = _score(ref, out, name=name)
    except AudioDenoiseError as exc:
        result["error"] = str(exc)
    return result


def _mean_scores(rows: list[dict], key: str) -> dict[str, Any] | None:
    scores = [r[key] for r in rows if r[key] is not None]
    if not scores:
        return None
    means: dict[str, Any] = {m: float(np.mean([s[m] for s in scores])) for m in METRICS}
    means["n"] = len(scores)
    return means


def _means(rows: list[dict], *, scored: bool) -> dict[str, Any]:
    return {"noisy": _mean_scores(rows, "noisy"), "processed": _mean_scores(rows, "processed") if scored else None}


def _group_means(rows: list[dict], *, scored: bool) -> dict[str, Any]:
    groups = {}
    for group in SNR_GROUPS:
        members = [r for r in rows if r["group"] == group]
        groups[group] = {
            "snr_db": sorted({r["snr_db"] for r in members}),
            "n_pairs": len(members),
            **_means(members, scored=scored),
        }
    return groups


def _bar(iterable, *, enabled: bool, desc: str, unit: str, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, leave=False)


# -- output --------------------------------------------------------------------------

TABLE_HEADER = (
    "| system | PESQ-WB | STOI | SI-SDR dB | PESQ low / mid / high | SI-SDR low / mid / high | RTF |\n"
    "|---|---|---|---|---|---|---|"
)


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table shaped like ``PEERS.md``: noisy-input row, then the system's."""
    lines = [TABLE_HEADER, _table_row("noisy input (no processing)", report, "noisy", rtf=None)]
    if report["system"] is not None:
        lines.append(_table_row(report["system"], report, "processed", rtf=report["rtf"]))
    return "\n".join(lines)


def _table_row(label: str, report: dict[str, Any], key: str, *, rtf: float | None) -> str:
    means = report["means"][key]

    def fmt(scores: dict | None, metric: str, digits: int) -> str:
        return "-" if scores is None else f"{scores[metric]:.{digits}f}"

    def by_group(metric: str, digits: int) -> str:
        if not report["groups"]:
            return "-"
        return " / ".join(fmt(report["groups"][g][key], metric, digits) for g in SNR_GROUPS)

    cells = [
        label.replace("|", "\\|"),
        fmt(means, "pesq_wb", 2),
        fmt(means, "stoi", 3),
        fmt(means, "si_sdr", 1),
        by_group("pesq_wb", 2),
        by_group("si_sdr", 1),
        "-" if rtf is None else f"{rtf:.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


def write_report(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``report`` as JSON through a temp file renamed into place (non-finite numbers become null)."""
    path = Path(path)
    text = json.dumps(_finite(report), indent=2) + "\n"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise AudioDenoiseError(f"{path}: cannot write report ({exc.strerror or exc})") from None


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
