"""``denoise IN OUT``, ``denoise IN_DIR OUT_DIR``, ``denoise FILE... -o OUT_DIR``: the inference command."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import audio, batch, outputs, streams
from ..api import Denoiser
from ..errors import ConfigError, OutputError
from ..shipped import pretrained_path
from ._common import (
    DEVICE_METAVAR,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PlainHelpCommand,
    check_device,
    fail,
    model_file,
    run_guarded,
    version_callback,
)

PROG = "denoise"
BESIDE_SUFFIX = "_denoised"  # denoise FILE...: NAME_denoised.EXT beside each input

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def load_denoiser(model: Path | None, *, device: str, atten_lim_db: float | None, limiter: bool) -> Denoiser:
    """The shipped model, or the model file at ``model``."""
    options = dict(device=device, atten_lim_db=atten_lim_db, limiter=limiter)
    if _shipped(model):
        return Denoiser.from_pretrained(**options)
    return Denoiser.from_file(model, **options)


def denoiser_factory(model: Path | None, *, device: str, atten_lim_db: float | None, limiter: bool):
    """A picklable function that loads the denoiser (each batch worker calls it once)."""
    options = dict(device=device, atten_lim_db=atten_lim_db, limiter=limiter)
    if _shipped(model):
        return functools.partial(Denoiser.from_pretrained, **options)
    return functools.partial(Denoiser.from_file, model, **options)


def _shipped(model: Path | None) -> bool:
    """No --model, or `--model pretrained`: the shipped model, loaded with its checksum verified."""
    return model is None or model == pretrained_path()


HELP = f"""Denoise speech in audio files.

denoise IN OUT: one file (the output format follows OUT's extension).

denoise FILE, or three or more files: each to NAME_denoised.EXT beside it
(never overwriting an existing file; two paths are always IN OUT).

denoise - OUT, denoise IN -, denoise - -: read standard input or write
standard output (WAV or FLAC on the pipe; --format wav|flac for the output,
default wav), block by block in bounded memory; only audio goes to stdout.

denoise IN_DIR OUT_DIR: every audio file under IN_DIR, recursively, to the
same path under OUT_DIR. denoise FILE... -o OUT_DIR: each file to OUT_DIR.
Outputs that exist are skipped (--overwrite redoes them), so after Ctrl-C or
a failure the same command finishes the rest. Exit code 1 if any file failed.
Default --jobs: usable CPUs, at most {batch.MAX_DEFAULT_JOBS}.
"""


@app.command(help=HELP, cls=PlainHelpCommand)
def denoise(
    paths: Annotated[
        list[Path],
        typer.Argument(help="IN OUT, IN_DIR OUT_DIR, FILE..., or input files with -o; - is stdin/stdout.",
                       show_default=False, metavar="PATH"),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Folder for the outputs of the given files.", metavar="OUT_DIR"),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Model file or run folder of `audiodenoise train` (default: shipped).",
                     metavar="PATH", callback=model_file),
    ] = None,
    atten_lim_db: Annotated[
        float | None,
        typer.Option("--atten-lim", "-a", help="Remove at most this many dB of noise (default: no limit).", min=0,
                     metavar="DB"),
    ] = None,
    device: Annotated[
        str,
        typer.Option(help="Where the model runs: auto, cpu or cuda.", metavar=DEVICE_METAVAR, callback=check_device),
    ] = "auto",
    limiter: Annotated[bool, typer.Option(help="Soft-limit the output so it never clips.")] = True,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write spectrograms of the input, the output and what was removed to this PNG: first "
                          "channel, first 60 s, dBFS (needs the plot extra).", dir_okay=False, metavar="FILE.png"),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", help="Worker processes for a batch (default: usable CPUs, at most 4).", min=1,
                     metavar="N"),
    ] = None,
    glob: Annotated[
        list[str] | None,
        typer.Option(help="Only files matching this pattern (repeatable), e.g. '*.wav', 'take?/**/*.flac'.",
                     metavar="PATTERN"),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Skip files and folders matching this pattern (repeatable).", metavar="PATTERN"),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option("--format", help="Output format of a batch, e.g. flac or wav (default: the input's), or of "
                     "stdout: wav or flac (default: wav).", metavar="EXT"),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write a report of every file to FILE.json or FILE.csv.", dir_okay=False, metavar="FILE"),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", "-f", help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    piped = [p for p in paths if streams.is_stdio(p)]
    if piped and (output_dir is not None or len(paths) != 2):
        raise fail(PROG, "- (standard input or output) works only as IN or OUT of denoise IN OUT", code=EXIT_USAGE)
    beside = output_dir is None and len(paths) != 2 and not any(p.is_dir() for p in paths)
    if output_dir is not None or (len(paths) == 2 and paths[0].is_dir()) or (beside and len(paths) > 2):
        if plot is not None:
            raise fail(PROG, "--plot works on a single file (denoise IN OUT)", code=EXIT_USAGE)
        patterns = dict(globs=glob or (), excludes=exclude or (), format=format)
        try:
            if beside:  # FILE FILE FILE...: each beside itself
                plan = batch.BatchPlan.beside(paths, suffix=BESIDE_SUFFIX, **patterns)
            elif output_dir is None:  # IN_DIR OUT_DIR
                plan = batch.BatchPlan.from_folder(paths[0], paths[1], **patterns)
            elif len(paths) == 1 and paths[0].is_dir():  # IN_DIR -o OUT_DIR
                plan = batch.BatchPlan.from_folder(paths[0], output_dir, **patterns)
            else:  # FILE... -o OUT_DIR
                plan = batch.BatchPlan.from_files(paths, output_dir, **patterns)
            if report is not None:
                batch.check_report_path(report, overwrite=overwrite,
                                        inputs=() if plan.folder else plan.sources)
        except (ConfigError, OutputError) as exc:
            raise fail(PROG, str(exc), code=EXIT_USAGE) from None
        factory = denoiser_factory(model, device=device, atten_lim_db=atten_lim_db, limiter=limiter)
        run_guarded(
            PROG,
            lambda: _run_batch(plan, factory, jobs=jobs, overwrite=overwrite, report=report, quiet=quiet,
                               verbose=verbose),
            verbose=verbose,
        )
        return
    to_stdout = len(paths) == 2 and streams.is_stdio(paths[1])
    batch_only = [name for name, value in (("--jobs", jobs), ("--glob", glob), ("--exclude", exclude),
                                           ("--format", None if to_stdout else format), ("--report", report))
                  if value]
    if len(paths) not in (1, 2):
        raise fail(PROG, f"expected an input and an output path, got {len(paths)} path(s) "
                   "(for several files: denoise FILE... -o OUT_DIR)", code=EXIT_USAGE)
    if batch_only:
        raise fail(PROG, f"{', '.join(batch_only)} apply to a folder or to -o OUT_DIR, not to one file",
                   code=EXIT_USAGE)
    if piped and plot is not None:
        raise fail(PROG, "--plot needs files, not standard input or output", code=EXIT_USAGE)
    src, dst = (paths[0], beside_path(paths[0])) if len(paths) == 1 else paths
    new_folders = [] if streams.is_stdio(dst) else audio.missing_folders(dst)

    def work() -> None:
        # every output is checked before any work, so a bad --plot never leaves a written output behind
        if not streams.is_stdio(dst):
            outputs.check_output(dst, overwrite=overwrite, inputs=[] if streams.is_stdio(src) else [src])
        if plot is not None:
            from ..plot import check_plot_path

            check_plot_path(plot, overwrite=overwrite, inputs=[src], planned=[dst])
        denoiser = load_denoiser(model, device=device, atten_lim_db=atten_lim_db, limiter=limiter)
        try:
            if piped:
                result = streams.denoise_stream(denoiser, src, dst, format=format, overwrite=overwrite)
            else:
                result = denoiser.denoise_file(src, dst, overwrite=overwrite, progress=not quiet)
        except BaseException:  # nothing left behind: not even the folders made for the output
            audio.remove_empty_folders(new_folders)
            raise
        if plot is not None:
            from ..plot import plot_before_after

            plot_before_after(src, dst, plot)
        if not quiet:
            print(f"wrote {outputs.display(result.dst)} ({result.duration:.1f} s, {result.sample_rate} Hz, "
                  f"{result.channels} ch)", file=sys.stderr)

    run_guarded(PROG, work, verbose=verbose)


def beside_path(src: Path) -> Path:
    """Where ``denoise FILE`` writes: ``NAME_denoised.EXT`` in FILE's folder."""
    return src.with_name(f"{src.stem}{BESIDE_SUFFIX}{src.suffix}")


def _run_batch(plan: batch.BatchPlan, factory, *, jobs, overwrite, report, quiet, verbose) -> int:
    summary = batch.run_batch(plan, factory, jobs=jobs, overwrite=overwrite, progress=not quiet, report=report)
    if summary.total == 0 and not summary.stopped:
        print(f"{PROG}: error: {plan.nothing_found()}", file=sys.stderr)
        return EXIT_ERROR
    if not quiet or summary.failed or summary.stopped:
        print(summary.describe(), file=sys.stderr)
    if verbose:
        for failure in summary.failures:
            if failure.detail:
                print(f"{failure.src}:\n{failure.detail}", file=sys.stderr)
    if summary.stopped:
        return EXIT_INTERRUPTED
    return EXIT_ERROR if summary.failed else 0


def main() -> None:
    app(prog_name=PROG)
