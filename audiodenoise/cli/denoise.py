"""``denoise IN OUT``: the inference command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..api import Denoiser
from ._common import EXIT_USAGE, fail, run_guarded, version_callback

PROG = "denoise"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def load_denoiser(model: Optional[Path], *, device: str, atten_lim_db: Optional[float], limiter: bool) -> Denoiser:
    """The shipped model, or the model file at ``model``."""
    options = dict(device=device, atten_lim_db=atten_lim_db, limiter=limiter)
    if model is None:
        return Denoiser.from_pretrained(**options)
    return Denoiser.from_file(model, **options)


@app.command(help="Denoise speech in an audio file: denoise IN OUT.")
def denoise(
    paths: Annotated[list[Path], typer.Argument(help="Input file and output file.", show_default=False)],
    model: Annotated[
        Optional[Path], typer.Option("--model", "-m", help="Model file from `audiodenoise train` (default: shipped).")
    ] = None,
    atten_lim_db: Annotated[
        Optional[float],
        typer.Option("--atten-lim", "-a", help="Remove at most this many dB of noise (default: no limit).", min=0),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    limiter: Annotated[bool, typer.Option(help="Soft-limit the output so it never clips.")] = True,
    plot: Annotated[
        Optional[Path], typer.Option(help="Write before/after spectrograms to this PNG.", dir_okay=False)
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", "-f", help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if len(paths) != 2:
        raise fail(PROG, f"expected an input and an output path, got {len(paths)} path(s)", code=EXIT_USAGE)
    src, dst = paths

    def work() -> None:
        denoiser = load_denoiser(model, device=device, atten_lim_db=atten_lim_db, limiter=limiter)
        result = denoiser.denoise_file(src, dst, overwrite=overwrite, progress=not quiet)
        if plot is not None:
            from ..plot import plot_before_after

            plot_before_after(src, dst, plot)
        if not quiet:
            print(f"wrote {result.dst} ({result.duration:.1f} s, {result.sample_rate} Hz, {result.channels} ch)",
                  file=sys.stderr)

    run_guarded(PROG, work, verbose=verbose)


def main() -> None:
    app(prog_name=PROG)
