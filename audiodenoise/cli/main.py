"""``audiodenoise``: denoise, prepare, train, export, evaluate and info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..api import Denoiser
from . import denoise as denoise_cmd
from . import evaluate as evaluate_cmd
from . import train as train_cmd
from ._common import PlainHelpCommand, model_file, run_guarded, version_callback

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="audiodenoise: speech denoising. `denoise IN OUT` denoises a file.",
)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


app.command("denoise", help="Denoise a file (same as the `denoise` command).", cls=PlainHelpCommand)(
    denoise_cmd.denoise
)
app.command("prepare", cls=PlainHelpCommand)(train_cmd.prepare)
app.command("train", cls=PlainHelpCommand)(train_cmd.train)
app.command("export", cls=PlainHelpCommand)(train_cmd.export)
app.command("evaluate", help="Score a model or denoised files: PESQ-WB, STOI, SI-SDR.", cls=PlainHelpCommand)(
    evaluate_cmd.evaluate
)


@app.command(help="Describe a model file (default: the shipped model): a short card, or --json for everything.",
             cls=PlainHelpCommand)
def info(
    model: Annotated[
        Path | None, typer.Argument(help="Model file or run folder.", metavar="MODEL", callback=model_file)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The full metadata as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
) -> None:
    def work() -> None:
        from ..card import format_card, model_card

        card = model_card(model)
        print(json.dumps(card, indent=2) if as_json else format_card(card))

    run_guarded("audiodenoise", work, verbose=verbose)


def main() -> None:
    app(prog_name="audiodenoise")


__all__ = ["Denoiser", "app", "main"]
