"""The README's `denoise` examples run one after the other, as a reader would paste them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import speech_like, write_audio
from typer.testing import CliRunner

from audiodenoise.cli.denoise import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[list[str]]:
    """The `denoise` lines of the code block under "## Denoise a file", comments dropped."""
    section = README.read_text().split("## Denoise a file", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)[1]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("denoise ")]


def test_the_denoise_examples_run_in_order(tmp_path, tiny_model_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples = _examples()
    assert len(examples) >= 5
    for name in {arg for args in examples for arg in args[1:] if re.fullmatch(r"(in|talk|a|b|c)\.\w+", arg)}:
        write_audio(tmp_path / name, speech_like(16000, 0.5), 16000)
    for args in examples:
        args = args[1:]
        if "--model" in args:  # a model the reader trained: the test's own
            args[args.index("--model") + 1] = str(tiny_model_file)
        else:
            args += ["--model", str(tiny_model_file)]
        args = ["cpu" if a == "cuda" else a for a in args]  # same path through the code without a GPU
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.stderr)
