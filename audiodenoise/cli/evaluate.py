"""``audiodenoise evaluate``: PESQ-WB, STOI and SI-SDR of a model or a folder of outputs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import outputs
from ._common import DEVICE_METAVAR, EXIT_ERROR, EXIT_USAGE, check_device, fail, model_file, run_guarded

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
        typer.Option("--model", "-m", help="Model file or run folder to evaluate (default: the shipped model).",
                     metavar="PATH", callback=model_file),
    ] = None,
    denoised: Annotated[
        list[str] | None,
        typer.Option("--denoised", metavar="[NAME=]DIR",
                     help="Score this folder of already-denoised files (any tool's). Repeatable; NAME labels its "
                          "row. Without --model, no model runs."),
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
    name: Annotated[
        str | None, typer.Option(help="Label of the model's (or the one folder's) row.", metavar="NAME")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", metavar="DIR", help="Write a listening page: DIR/index.html + media, opens from disk.",
                     file_okay=False),
    ] = None,
    listen: Annotated[
        int, typer.Option("--listen", metavar="N", min=0,
                          help="Pairs with players and spectrograms on the page: worst, best, random.")
    ] = 6,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", metavar="FILE", help="Write one row per pair as CSV.", dir_okay=False)
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", "-f", help="Replace existing outputs: --out, --csv, an --html page.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
) -> None:
    """Score denoised speech against clean references (PESQ-WB, STOI, SI-SDR), next to the noisy input's scores.

    For this project's models it also reports the dB of noise removed and of speech distortion. --html writes a
    page with the summary, the SNR groups, a sortable per-pair table and players with spectrograms.
    """
    folders = _parse_denoised(denoised or [])
    if name is not None and model is None and len(folders) > 1:
        raise fail(PROG, "--name labels one system; give each folder its NAME=DIR instead", code=EXIT_USAGE)

    def work() -> int:
        from .. import evaluate as ev
        from ..report import PAGE_MARK
        from .denoise import load_denoiser

        pairs_csv = pairs if pairs is not None else ev.default_pairs_csv(noisy)
        inputs = [noisy, clean, *(d for _, d in folders), *(p for p in (pairs_csv, model) if p is not None)]
        files = _input_files(ev, noisy, clean, *(d for _, d in folders), pairs_csv, model)
        if out is not None:  # before any work: never an input, never an existing file without --overwrite
            outputs.check_output(out, overwrite=overwrite, inputs=files, what="report")
        if html is not None:
            outputs.check_output_folder(html, overwrite=overwrite, inputs=inputs, mark=PAGE_MARK)
        if csv_path is not None:
            outputs.check_output(csv_path, overwrite=overwrite, inputs=files, what="CSV")
        systems: list = []
        if model is not None or not folders:
            denoiser = load_denoiser(model, device=device, atten_lim_db=atten_lim_db, limiter=True)
            systems.append((name or f"audiodenoise ({model.name if model is not None else 'shipped model'})",
                            denoiser))
        for label, folder in folders:
            if label is None:
                label = name if model is None and name else f"denoised: {folder}"
            systems.append((label, folder))
        report = ev.evaluate_systems(noisy, clean, systems, pairs_csv=pairs_csv, jobs=jobs, progress=not quiet,
                                     keep_outputs=html is not None and listen > 0)
        if out is not None:
            ev.write_report(report, out)
        if csv_path is not None:
            ev.write_csv(report, csv_path)
        if html is not None:
            from ..page import write_page

            index = write_page(report, html, listen=listen)
            if not quiet:
                print(f"wrote {index}", file=sys.stderr)
        if not quiet:
            for kind, ids in report["unmatched"].items():
                if ids:
                    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
                    print(f"{PROG}: warning: {len(ids)} name(s) {kind.replace('_', ' ')}, not scored: {shown}",
                          file=sys.stderr)
            for path in (out, csv_path):
                if path is not None:
                    print(f"wrote {path}", file=sys.stderr)
        print(ev.format_table(report))
        code = 0
        for system in report["systems"]:
            if system["n_failures"]:
                first = system["failures"][0]
                print(f"{PROG}: error: {system['name']}: {system['n_failures']} of {report['n_pairs']} pairs failed "
                      f"and are left out of its means (first: {first['id']}: {first['reason']})", file=sys.stderr)
                code = EXIT_ERROR
        return code

    run_guarded(PROG, work, verbose=verbose)


def _parse_denoised(values: list[str]) -> list[tuple[str | None, Path]]:
    """``--denoised DIR`` or ``--denoised NAME=DIR``: (label or None, folder). A path holding ``=`` that exists wins."""
    folders: list[tuple[str | None, Path]] = []
    for value in values:
        label, sep, rest = value.partition("=")
        if sep and label and rest and not Path(value).exists():
            folders.append((label, Path(rest)))
        elif not value:
            raise fail(PROG, "--denoised needs a folder: --denoised DIR or --denoised NAME=DIR", code=EXIT_USAGE)
        else:
            folders.append((None, Path(value)))
    return folders


def _input_files(ev, *paths: Path | None) -> list[Path]:
    """The files an evaluation reads (audio directly in the given folders, the pairs CSV, the model)."""
    files: list[Path] = []
    for path in paths:
        if path is None:
            continue
        if path.is_dir():
            files.extend(ev.audio_files(path, role="input").values())
        else:
            files.append(path)
    return files
