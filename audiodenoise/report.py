"""An evaluation report: its per-system and per-group summaries, and the report as a Markdown table,
JSON and CSV.

The rows themselves are gathered by :func:`audiodenoise.evaluate.evaluate`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import outputs
from .metrics import DECOMPOSITION, METRICS, mean_ci
from .pairs import SNR_GROUPS

TABLE_HEADER = (
    "| system | PESQ-WB | STOI | SI-SDR dB | PESQ low / mid / high | SI-SDR low / mid / high | RTF |\n"
    "|---|---|---|---|---|---|---|"
)
DECOMPOSITION_HEADER = ("noise removed dB (low / mid / high)", "speech distortion dB (low / mid / high)")
# a folder that --overwrite may replace holds an index.html with this mark (outputs.check_output_folder)
PAGE_MARK = '<meta name="generator" content="audiodenoise evaluate">'


def summarize(rows: list[dict], name: str) -> dict[str, Any]:
    """Means with 95 % confidence intervals of one system over ``rows``.

    Returns ``{"noisy": {metric: ci}, "processed": {metric: ci}, "delta": {metric: ci},
    "noise_removed_db": ci, "speech_distortion_db": ci}`` where ``ci`` is
    :func:`~audiodenoise.metrics.mean_ci`'s ``{"mean", "ci95", "n"}`` (None
    when nothing was measured). ``delta`` is over the pairs the system scored:
    its score minus the noisy input's, pair by pair.
    """
    per_file = [(r["noisy"], r["systems"][name]) for r in rows]
    scored = [(noisy, s["processed"]) for noisy, s in per_file if s["processed"] is not None]
    return {
        "noisy": {m: mean_ci(noisy[m] for noisy, _ in per_file) for m in METRICS},
        "processed": {m: mean_ci(out[m] for _, out in scored) for m in METRICS},
        "delta": {m: mean_ci(out[m] - noisy[m] for noisy, out in scored) for m in METRICS},
        **{key: mean_ci(s[key] for _, s in per_file) for key in DECOMPOSITION},
    }


def system_summary(name: str, system, rows: list[dict], timing: dict | None) -> dict[str, Any]:
    """The report's summary of one system over the file ``rows``: counts, failures, timing, means, groups.

    ``system`` is a :class:`~audiodenoise.api.Denoiser` or the path of a folder
    of denoised files; ``timing`` the denoiser's (None for a folder).
    """
    per_file = [r["systems"][name] for r in rows]
    failures = [{"id": r["id"], "reason": s["error"]} for r, s in zip(rows, per_file, strict=True)
                if s["error"] is not None]
    is_folder = isinstance(system, (str, os.PathLike))
    return {
        "name": name,
        "kind": "folder" if is_folder else "model",
        "denoised_dir": str(system) if is_folder else None,
        "n_scored": sum(s["processed"] is not None for s in per_file),
        "n_failures": len(failures),
        "failures": failures,
        "rtf": timing["rtf"] if timing else None,
        "timing": timing,
        "means": {"noisy": mean_scores([r["noisy"] for r in rows]),
                  "processed": mean_scores([s["processed"] for s in per_file])},
        "stats": summarize(rows, name),
        "groups": group_means(rows, name),
    }


def group_means(rows: list[dict], name: str | None) -> dict[str, Any]:
    """Per SNR group: its SNRs, pair count and mean scores of the noisy input and of system ``name``.

    Empty when no row has a group (no pairs file); ``name`` None scores only the noisy input.
    """
    if not any(r["group"] for r in rows):
        return {}
    groups = {}
    for group in SNR_GROUPS:
        members = [r for r in rows if r["group"] == group]
        groups[group] = {
            "snr_db": sorted({r["snr_db"] for r in members}),
            "n_pairs": len(members),
            "noisy": mean_scores([r["noisy"] for r in members]),
            "processed": mean_scores([r["systems"][name]["processed"] for r in members]) if name else None,
        }
        if name:
            groups[group]["stats"] = summarize(members, name)
    return groups


def mean_scores(scores: list[dict | None]) -> dict[str, Any] | None:
    """Mean of each metric over the scored pairs (None entries skipped) with their count ``n``; None if none."""
    scores = [s for s in scores if s is not None]
    if not scores:
        return None
    means: dict[str, Any] = {m: float(np.mean([s[m] for s in scores])) for m in METRICS}
    means["n"] = len(scores)
    return means


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table shaped like ``PEERS.md``: noisy-input row, then each system's.

    Where a system has the noise-removed / speech-distortion figures (this
    project's models), two more columns give them over all pairs and per group.
    """
    decomposed = any(s["stats"]["noise_removed_db"] for s in report.get("systems", []))
    header = TABLE_HEADER
    if decomposed:
        top, rule = TABLE_HEADER.split("\n")
        columns = "".join(f" {h} |" for h in DECOMPOSITION_HEADER)
        header = top[: -len(" RTF |")] + columns + " RTF |\n" + rule + "---|---|"
    lines = [header, _table_row("noisy input (no processing)", report["means"]["noisy"], report["groups"], "noisy",
                                rtf=None, decomposition=["-", "-"] if decomposed else [])]
    for system in report.get("systems", []):
        extra = [_decomposition_cell(system, key) for key in DECOMPOSITION] if decomposed else []
        lines.append(_table_row(system["name"], system["means"]["processed"], system["groups"], "processed",
                                rtf=system["rtf"], decomposition=extra))
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _decomposition_cell(system: dict, key: str) -> str:
    overall = system["stats"][key]
    if overall is None:
        return "-"
    cell = _fmt(overall["mean"], 1)
    if system["groups"]:
        by_group = [(system["groups"][g]["stats"][key] or {}).get("mean") for g in SNR_GROUPS]
        cell += " (" + " / ".join(_fmt(v, 1) for v in by_group) + ")"
    return cell


def _table_row(label: str, means: dict | None, groups: dict, key: str, *, rtf: float | None,
               decomposition: list[str]) -> str:
    def fmt(scores: dict | None, metric: str, digits: int) -> str:
        return "-" if scores is None else _fmt(scores[metric], digits)

    def by_group(metric: str, digits: int) -> str:
        if not groups:
            return "-"
        return " / ".join(fmt(groups[g][key], metric, digits) for g in SNR_GROUPS)

    cells = [
        label.replace("|", "\\|"),
        fmt(means, "pesq_wb", 2),
        fmt(means, "stoi", 3),
        fmt(means, "si_sdr", 1),
        by_group("pesq_wb", 2),
        by_group("si_sdr", 1),
        *decomposition,
        "-" if rtf is None else f"{rtf:.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


# -- files ---------------------------------------------------------------------


def write_report(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``report`` as JSON through a temp file renamed into place (non-finite numbers become null)."""
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    outputs.write_text(path, json.dumps(_finite(public), indent=2) + "\n", parents=True)


def csv_rows(report: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per pair: id, SNR, group, seconds, the noisy scores, then each system's columns."""
    names = [s["name"] for s in report.get("systems", [])]
    columns = ["id", "snr_db", "group", "seconds", *(f"noisy.{m}" for m in METRICS)]
    for name in names:
        columns += [f"{name}.{m}" for m in (*METRICS, *DECOMPOSITION, "lag_samples", "error")]
    rows = []
    for r in report["files"]:
        row: dict[str, Any] = {"id": r["id"], "snr_db": r["snr_db"], "group": r["group"], "seconds": r["seconds"]}
        row.update({f"noisy.{m}": r["noisy"][m] for m in METRICS})
        for name in names:
            s = r["systems"][name]
            row.update({f"{name}.{m}": (s["processed"] or {}).get(m) for m in METRICS})
            row.update({f"{name}.{k}": s[k] for k in (*DECOMPOSITION, "lag_samples", "error")})
        rows.append({k: _finite(v) for k, v in row.items()})
    return columns, rows


def write_csv(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Write :func:`csv_rows` to ``path`` atomically (empty cells for missing values)."""
    columns, rows = csv_rows(report)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    outputs.write_text(path, buffer.getvalue(), parents=True)


def replace_folder(tmp_dir: Path, path: Path) -> None:
    """Move the finished folder ``tmp_dir`` to ``path``, replacing a previous page there."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / path.name)
    try:
        os.replace(tmp_dir, path)
    except OSError:
        if old is not None:  # put the previous page back
            os.replace(old / path.name, path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
