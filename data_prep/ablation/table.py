"""The ablation table of finished run folders, as markdown for the model card.

    python data_prep/ablation/table.py runs/ladder-v01 runs/ladder-fresh ... [--eval RUN=EVAL.json ...]

One row per run: steps reached, training minutes (``log.csv``'s clock, validation included; it restarts
at a ``--resume``, so a resumed run's minutes are those since its last start), the best
validation loss of the raw and of the EMA weights (in the run's own loss and precision), and, where an
``audiodenoise evaluate -o EVAL.json`` of the run's exported model is given, PESQ-WB / STOI / SI-SDR on
those pairs, noise removed and speech distortion (low / mid / high SNR), and the share of high-SNR
files whose SI-SDR rose above the input's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

HEADER = ("| run | steps | minutes | valid loss raw | valid loss EMA | PESQ / STOI / SI-SDR | "
          "noise removed dB (low / mid / high) | speech distortion dB (low / mid / high) | high SNR > input |")


def run_row(run: Path, report: dict | None = None) -> str:
    """One markdown row for the run folder ``run`` (and its evaluate report, if any)."""
    with open(run / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{run}: log.csv has no epochs yet")

    def best(key: str) -> str:
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")]
        values = [v for v in values if math.isfinite(v)]
        return f"{min(values):.5f}" if values else "-"

    cells = [run.name, rows[-1]["step"], f"{float(rows[-1]['seconds']) / 60:.0f}", best("valid_loss"),
             best("valid_loss_ema")]
    cells += _report_cells(report) if report else ["-"] * 4
    return "| " + " | ".join(cells) + " |"


def _report_cells(report: dict) -> list[str]:
    system = report["systems"][0]
    means = system["stats"]["processed"]
    scores = f"{means['pesq_wb']['mean']:.2f} / {means['stoi']['mean']:.3f} / {means['si_sdr']['mean']:.1f}"

    def by_group(key: str) -> str:
        overall = system["stats"][key]
        if not overall:
            return "-"
        groups = [(system["groups"].get(g, {}).get("stats", {}).get(key) or {}).get("mean") for g in
                  ("low", "mid", "high")]
        return f"{overall['mean']:.1f} ({' / '.join('-' if v is None else f'{v:.1f}' for v in groups)})"

    high = [f for f in report["files"] if f["group"] == "high" and f["systems"][system["name"]]["processed"]]
    better = sum(f["systems"][system["name"]]["processed"]["si_sdr"] > f["noisy"]["si_sdr"] for f in high)
    share = f"{100 * better / len(high):.0f} % of {len(high)}" if high else "-"
    return [scores, by_group("noise_removed_db"), by_group("speech_distortion_db"), share]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of `audiodenoise train`")
    parser.add_argument("--eval", action="append", default=[], metavar="RUN=EVAL.json",
                        help="an `audiodenoise evaluate -o` report of that run's model (repeatable)")
    args = parser.parse_args(argv)
    reports = {}
    for item in args.eval:
        name, _, path = item.partition("=")
        reports[Path(name).name] = json.loads(Path(path).read_text())
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for run in args.runs:
        print(run_row(run, reports.get(run.name)))


if __name__ == "__main__":
    main()
