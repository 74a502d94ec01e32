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
For this project's own models the report also splits each pair into its clean
and noise parts and says how much noise the mask removed and how much speech
it distorted (:func:`~audiodenoise.metrics.decomposition`).

This module runs the systems and gathers the report; the scores are in
:mod:`audiodenoise.metrics`, the pairs in :mod:`audiodenoise.pairs`, the summaries, table,
JSON and CSV in :mod:`audiodenoise.report` and the listening page in
:mod:`audiodenoise.page`. Their public names are importable from here too.

>>> from audiodenoise import Denoiser
>>> from audiodenoise.evaluate import evaluate, format_table
>>> report = evaluate("dev/noisy", "dev/clean", denoiser=Denoiser.from_pretrained(), pairs_csv="dev/pairs.csv")
>>> print(format_table(report))
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np

from . import audio
from .errors import AudioDenoiseError, AudioError, ConfigError, DatasetError
from .metrics import (  # noqa: F401  (public API)
    DECOMPOSITION,
    MAX_LAG_SECONDS,
    METRICS,
    SAMPLE_RATE,
    _metric_functions,
    _score,
    align,
    decomposition,
    mean_ci,
    prepare,
    read_scoring,
    score_pair,
    si_sdr,
)
from .pairs import (  # noqa: F401  (public API)
    AUDIO_EXTENSIONS,
    SNR_GROUPS,
    Pair,
    audio_files,
    default_pairs_csv,
    match_pairs,
    read_pairs_csv,
    snr_group,
)
from .processes import check_main_guard
from .report import (  # noqa: F401  (public API)
    TABLE_HEADER,
    format_table,
    group_means,
    mean_scores,
    summarize,
    system_summary,
    write_csv,
    write_report,
)

PROTOCOL = ("shared/eval/README.md: float64 mono 16 kHz, aligned within +-100 ms, "
            "PESQ-WB (pesq), STOI (pystoi, extended=False), SI-SDR")


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
    decompose: bool = True,
    keep_outputs: bool = False,
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
    decompose : for a denoiser, also measure the noise it removes and the
        speech it distorts (two more passes of the model per pair)
    keep_outputs : see :func:`evaluate_systems`

    Returns
    -------
    A JSON-able report: ``files`` (a row per pair), ``means``, ``groups``,
    ``failures``, ``rtf``, ``systems`` and the settings. See :func:`format_table`.
    """
    if denoiser is not None and denoised_dir is not None:
        raise ConfigError("pass a denoiser or a folder of denoised files, not both")
    systems: list[tuple[str, Any]] = []
    if denoiser is not None:
        systems.append((name or denoiser_name(denoiser), denoiser))
    elif denoised_dir is not None:
        systems.append((name or f"denoised: {denoised_dir}", Path(denoised_dir)))
    return evaluate_systems(noisy_dir, clean_dir, systems, pairs_csv=pairs_csv, jobs=jobs, progress=progress,
                            decompose=decompose, keep_outputs=keep_outputs)


def evaluate_systems(
    noisy_dir: str | os.PathLike,
    clean_dir: str | os.PathLike,
    systems: list[tuple[str, Any]],
    *,
    pairs_csv: str | os.PathLike | None = None,
    jobs: int = 1,
    progress: bool = True,
    decompose: bool = True,
    keep_outputs: bool = False,
) -> dict[str, Any]:
    """Score several systems on the same pairs; the noisy input is scored once.

    Parameters
    ----------
    systems : ``[(name, system), ...]``, each system a
        :class:`~audiodenoise.api.Denoiser` or the path of a folder of
        denoised files; the first one's figures are also the report's
        top-level ``system``, ``means``, ``groups`` and per-file ``processed``
    keep_outputs : keep the scored signals (16 kHz mono float64) in memory for
        a listening page: ``report["_signals"][id] = {"clean", "noisy", name: ...}``
        (not JSON; :func:`write_report` leaves it out)

    Returns
    -------
    The report of :func:`evaluate`, with ``systems`` (one summary per system)
    and each file row's ``systems`` (that pair's scores per system).
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive whole number, got {jobs!r}")
    names = [n for n, _ in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"two systems share a name ({', '.join(names)}); give each its own NAME=DIR")
    if jobs > 1:
        check_main_guard(f"evaluate(jobs={jobs})")
    _metric_functions()  # fail before any work if the extra is missing
    pairs, unmatched = match_pairs(noisy_dir, clean_dir, pairs_csv=pairs_csv)
    folders = {n: audio_files(s, role="denoised") for n, s in systems if isinstance(s, (str, os.PathLike))}

    outputs: dict[str, dict[str, Any]] = {}  # name -> id -> Path, ndarray, or an error message
    timings: dict[str, Any] = {}
    parts: dict[str, dict[str, dict[str, float]]] = {}  # name -> id -> decomposition
    for sys_name, system in systems:
        if isinstance(system, (str, os.PathLike)):
            found = folders[sys_name]
            outputs[sys_name] = {p.id: found.get(p.id, f"{Path(system) / p.id}.*: denoised file not found")
                                 for p in pairs}
        else:
            outputs[sys_name], timings[sys_name], parts[sys_name] = _run_denoiser(
                system, pairs, progress=progress, decompose=decompose)

    tasks = [((0, pair.id), str(pair.clean), str(pair.noisy), None, True, keep_outputs) for pair in pairs]
    for index, sys_name in enumerate(names, start=1):
        tasks += [((index, p.id), str(p.clean), str(p.noisy), outputs[sys_name][p.id], False, False) for p in pairs]
    results = _score_all(tasks, jobs=jobs, progress=progress)

    rows = []
    signals: dict[str, dict[str, np.ndarray]] = {}
    for pair in pairs:
        base = results[(0, pair.id)]
        row = {"id": pair.id, "snr_db": pair.snr_db, "group": snr_group(pair.snr_db), "seconds": base["seconds"],
               "noisy": base["noisy"], "systems": {}}
        if keep_outputs:
            signals[pair.id] = base["signals"]
        for index, sys_name in enumerate(names, start=1):
            result = results[(index, pair.id)]
            processed = dict(base["noisy"]) if result["same_as_noisy"] else result["processed"]
            lag = base["lag"] if result["same_as_noisy"] else result["lag"]
            row["systems"][sys_name] = {"processed": processed, "lag_samples": lag, "error": result["error"],
                                        **parts.get(sys_name, {}).get(pair.id, dict.fromkeys(DECOMPOSITION))}
            if keep_outputs and processed is not None:
                out = outputs[sys_name][pair.id]
                signals[pair.id][sys_name] = out if isinstance(out, np.ndarray) else read_scoring(out)
        first = row["systems"][names[0]] if names else {"processed": None, "lag_samples": None, "error": None}
        row.update(processed=first["processed"], lag_samples=first["lag_samples"], error=first["error"])
        rows.append(row)

    summaries = [system_summary(n, s, rows, timings.get(n)) for n, s in systems]
    first = summaries[0] if summaries else None
    report = {
        "protocol": PROTOCOL,
        "noisy_dir": str(noisy_dir),
        "clean_dir": str(clean_dir),
        "denoised_dir": first["denoised_dir"] if first else None,
        "pairs_csv": str(pairs_csv) if pairs_csv is not None else None,
        "system": first["name"] if first else None,
        "n_pairs": len(rows),
        "n_scored": first["n_scored"] if first else 0,
        "n_failures": first["n_failures"] if first else 0,
        "failures": first["failures"] if first else [],
        "unmatched": unmatched,
        "seconds": sum(r["seconds"] for r in rows),
        "rtf": first["rtf"] if first else None,
        "timing": first["timing"] if first else None,
        "means": first["means"] if first else {"noisy": mean_scores([r["noisy"] for r in rows]), "processed": None},
        "groups": first["groups"] if first else group_means(rows, None),
        "systems": summaries,
        "files": rows,
    }
    if keep_outputs:
        report["_signals"] = signals
    return report


def denoiser_name(denoiser) -> str:
    """A label for a :class:`~audiodenoise.api.Denoiser` in reports."""
    return "audiodenoise" + (f" ({denoiser.info['name']})" if denoiser.info.get("name") else "")


def _run_denoiser(denoiser, pairs: list[Pair], *, progress: bool, decompose: bool):
    """Denoise every noisy file in this process: outputs, timing and the per-pair decomposition."""
    import torch

    outputs: dict[str, Any] = {}
    parts: dict[str, dict[str, float]] = {}
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
        if decompose:
            parts[pair.id] = _decompose(denoiser, pair)
    timing = {
        "denoise_seconds": busy,
        "audio_seconds": audio_seconds,
        "rtf": busy / audio_seconds if audio_seconds > 0 else None,
        "device": str(denoiser.device),
        "torch_threads": torch.get_num_threads(),
    }
    return outputs, timing, parts


def _decompose(denoiser, pair: Pair) -> dict[str, float]:
    """The mask of the (aligned) noisy scoring signal applied to its clean and noise parts.

    Works on the protocol's 16 kHz mono signals: ``noise = aligned noisy - clean``
    exactly, so the two filtered parts add up to the output before the limiter.
    """
    try:
        clean = read_scoring(pair.clean)
        noisy, _ = align(clean, read_scoring(pair.noisy), SAMPLE_RATE)
        noise = noisy - clean
        masked_clean = denoiser.apply_mask(noisy, clean, SAMPLE_RATE)
        masked_noise = denoiser.apply_mask(noisy, noise, SAMPLE_RATE)
    except AudioDenoiseError as exc:
        raise DatasetError(f"pair {pair.id}: {exc}") from None
    return decomposition(clean, noise, masked_clean, masked_noise)


def _score_all(tasks: list[tuple], *, jobs: int, progress: bool) -> dict[Any, dict[str, Any]]:
    results: dict[Any, dict[str, Any]] = {}
    if jobs == 1 or len(tasks) == 1:
        for task in _bar(tasks, enabled=progress, desc="score", unit="pair"):
            results[task[0]] = _score_task(*task)
        return results
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=_pool_context()) as pool:
        futures = [pool.submit(_score_task, *task) for task in tasks]
        for future in _bar(as_completed(futures), enabled=progress, desc="score", unit="pair", total=len(futures)):
            result = future.result()
            results[result["key"]] = result
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


def _score_task(key, clean: str, noisy: str, output, score_noisy: bool, keep: bool) -> dict[str, Any]:
    """Score one pair: the noisy input (``score_noisy``) or an output.

    ``output`` is a path, a prepared 16 kHz array, an error message (a failure
    found earlier) or None (no system). An output with the noisy input's exact
    samples is not scored again (``same_as_noisy``).
    """
    pair_id = key[1]
    try:
        ref = read_scoring(clean)
        if not np.isfinite(ref).all():
            raise AudioError(f"{clean}: holds NaN or infinite samples")
        noisy_wav = read_scoring(noisy)
        noisy_scores, noisy_lag = _score(ref, noisy_wav, name=noisy) if score_noisy else (None, None)
    except AudioDenoiseError as exc:
        raise DatasetError(f"pair {pair_id}: {exc}") from None
    result = {"key": key, "seconds": len(ref) / SAMPLE_RATE, "noisy": noisy_scores, "lag": noisy_lag,
              "processed": None, "error": None, "same_as_noisy": False}
    if keep:
        result["signals"] = {"clean": ref, "noisy": noisy_wav}
    if output is None:
        return result
    result["lag"] = None
    if isinstance(output, str):
        result["error"] = output
        return result
    try:
        out = read_scoring(output) if isinstance(output, Path) else output
        if np.array_equal(out, noisy_wav):  # same samples, same scores: skip the slow part
            result["same_as_noisy"] = True
        else:
            name = str(output) if isinstance(output, Path) else pair_id
            result["processed"], result["lag"] = _score(ref, out, name=name)
    except AudioDenoiseError as exc:
        result["error"] = str(exc)
    return result


def _bar(iterable, *, enabled: bool, desc: str, unit: str, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, leave=False)
