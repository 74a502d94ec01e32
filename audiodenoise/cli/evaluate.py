"""``audiodenoise evaluate``: PESQ-WB, STOI and SI-SDR of a model or a folder of outputs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import DEVICE_METAVAR, EXIT_ERROR, EXIT_USAGE, check_device, fail, run_guarded

PROG = "audiodenoise evaluate"


def evaluate(
    noisy: Annotated[Path, typer.Option("--noisy", help="Folder of noisy files.", show_default=False, metavar="DIR")],
    clean: Annotated[
        Path,
        typer.Option("--clean", help="Folder of clean references, named like the noisy files.", show_default=False,
                     metavar="DIR"),
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Model file to evaluate (default: the shipped model).", metavar="PATH"),
    ] = None,
    denoised: Annotated[
        Path | None,
        typer.Option("--denoised", help="Score this folder of already-denoised files instead of running a model.",
                     metavar="DIR"),
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option("--pairs", help="CSV with id and snr_db columns (default: NOISY/../pairs.csv if it exists).",
                     metavar="FILE.csv"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the full JSON report here.", metavar="FILE.json")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Processes scoring pairs in parallel.", min=1, metavar="N")
    ] = 1,
    device: Annotated[
        str,
        typer.Option(help="Device the model runs on: auto, cpu or cuda.", metavar=DEVICE_METAVAR,
                     callback=check_device),
    ] = "cpu",
    atten_lim_db: Annotated[
        float | None,
        typer.Option("--atten-lim", "-a", help="Attenuation limit in dB for the model (as in denoise).", min=0,
                     metavar="DB"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Label of the system's row in the table.", metavar="TEXT")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
) -> None:
    """Score denoised speech against clean references (PESQ-WB, STOI, SI-SDR), next to the noisy input's scores."""
    if model is not None and denoised is not None:
        raise fail(PROG, "pass --model or --denoised, not both", code=EXIT_USAGE)

    def work() -> int:
        from .. import evaluate as ev
        from .denoise import load_denoiser

        pairs_csv = pairs if pairs is not None else ev.default_pairs_csv(noisy)
        denoiser = None
        label = name
        if denoised is None:
            denoiser = load_denoiser(model, device=device, atten_lim_db=atten_lim_db, limiter=True)
            label = label or f"audiodenoise ({model.name if model is not None else 'shipped model'})"
        report = ev.evaluate(
            noisy, clean, denoiser=denoiser, denoised_dir=denoised, pairs_csv=pairs_csv,
            jobs=jobs, progress=not quiet, name=label,
        )
        if out is not None:
            ev.write_report(report, out)
        if not quiet:
            for kind, ids in report["unmatched"].items():
                if ids:
                    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
                    print(f"{PROG}: warning: {len(ids)} name(s) {kind.replace('_', ' ')}, not scored: {shown}",
                          file=sys.stderr)
            if out is not None:
                print(f"wrote {out}", file=sys.stderr)
        print(ev.format_table(report))
        if report["n_failures"]:
            first = report["failures"][0]
            print(f"{PROG}: error: {report['n_failures']} of {report['n_pairs']} pairs failed and are left out of "
                  f"the system's means (first: {first['id']}: {first['reason']})", file=sys.stderr)
            return EXIT_ERROR
        return 0

    run_guarded(PROG, work, verbose=verbose)
