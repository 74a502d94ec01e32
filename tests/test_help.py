"""`--help` of every command: plain usage and metavars, and a description for every argument and option."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from audiodenoise.cli import denoise as denoise_cli
from audiodenoise.cli import main as main_cli

# typer's placeholders: "{PATH}...", "<list[Path]>", "<float range>", "<str>", "<path>"
PLACEHOLDER = re.compile(r"\{[A-Za-z_]+\}|<[a-z][^>]*>")
COMMANDS = ["denoise", "prepare", "train", "export", "evaluate", "info"]
# cli/train.py (prepare, train, export) is the lead's this session: its -q/-v options have no help yet


def _help(command: str) -> str:
    if command == "denoise":
        result = CliRunner().invoke(denoise_cli.app, ["--help"], terminal_width=120)
    else:
        result = CliRunner().invoke(main_cli.app, [command, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    return result.stdout


def _params(command: str):
    root = typer.main.get_command(denoise_cli.app if command == "denoise" else main_cli.app)
    cmd = root if command == "denoise" else root.commands[command]
    return [p for p in cmd.params if p.name != "help"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_typer_placeholders(command):
    text = _help(command)
    assert not PLACEHOLDER.findall(text), PLACEHOLDER.findall(text)
    usage = text.splitlines()[0]
    assert usage.startswith("Usage: ") and "{" not in usage
    vague = re.findall(r"--[a-z-]+ (?:TEXT|INTEGER|FLOAT)\b", text)
    assert not vague, f"{command}: click's type names as metavars: {vague}"


def test_denoise_help_names_its_arguments_plainly():
    text = _help("denoise")
    assert text.splitlines()[0].endswith("denoise [OPTIONS] PATH...")
    for shown in ("-m, --model PATH", "-a, --atten-lim DB", "--device auto|cpu|cuda", "--plot FILE.png",
                  "NAME_denoised.EXT beside it", "never overwriting"):
        assert shown in " ".join(text.split()), shown


@pytest.mark.parametrize(
    "command",
    COMMANDS,
)
def test_every_argument_and_option_has_a_description(command):
    missing = [p.name for p in _params(command) if not (p.help or "").strip()]
    assert not missing, f"{command}: no help for {missing}"
