"""Naming a model: a file, a run folder, or `pretrained` (the shipped model), in every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import speech_like, write_audio
from typer.testing import CliRunner

from audiodenoise.api import pretrained_sha256
from audiodenoise.checkpoint import load_model
from audiodenoise.cli import denoise, main
from audiodenoise.cli._common import EXIT_BROKEN_PIPE, model_file
from audiodenoise.shipped import pretrained_path
from audiodenoise.train_config import TrainConfig


def test_a_folder_holding_model_safetensors_means_that_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(b"x")
    assert model_file(tmp_path / "run") == tmp_path / "run" / "model.safetensors"
    # a folder without one is passed on as it is, for the loader's "not a file" error
    assert model_file(tmp_path) == tmp_path
    assert model_file(None) is None


def test_pretrained_names_the_shipped_model_unless_such_a_path_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_file(tmp_path / "x" / ".." / "pretrained") != pretrained_path()  # only the bare word
    assert model_file(Path("pretrained")) == pretrained_path()
    (tmp_path / "pretrained").write_bytes(b"a file the user made")
    assert model_file(Path("pretrained")) == Path("pretrained")


def test_denoise_reads_a_run_folder_and_pretrained(tmp_path, tiny_model_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = write_audio(tmp_path / "in.wav", speech_like(16000, 0.5), 16000, "PCM_16")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(tiny_model_file.read_bytes())
    outs = {}
    for name, model in [("file", tiny_model_file), ("folder", run), ("shipped", None), ("pretrained", "pretrained")]:
        out = tmp_path / f"{name}.wav"
        args = [str(src), str(out), "-q"] + ([] if model is None else ["--model", str(model)])
        result = CliRunner().invoke(denoise.app, args)
        assert result.exit_code == 0, result.stderr
        outs[name] = sf.read(out)[0]
    np.testing.assert_array_equal(outs["folder"], outs["file"])
    np.testing.assert_array_equal(outs["pretrained"], outs["shipped"])
    assert not np.array_equal(outs["shipped"], outs["file"])  # two different models really ran


def test_info_pretrained_is_the_verified_shipped_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main.app, ["info", "pretrained", "--json"])
    assert result.exit_code == 0, result.stderr
    assert pretrained_sha256() in result.stdout


def test_a_closed_stdout_pipe_ends_quietly_with_141(tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write, as `| head` is after its lines
    try:
        result = subprocess.run([sys.executable, "-m", "audiodenoise", "info"], stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert result.returncode == EXIT_BROKEN_PIPE
    assert result.stderr == ""


def test_train_init_pretrained_fine_tunes_the_shipped_model(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("batch_size = 2\nepochs = 1\nsteps_per_epoch = 1\nwarmup_steps = 1\nvalid_audio_pairs = 0\n"
                   "[mix]\nsegment_seconds = 1.0\n")
    result = CliRunner().invoke(main.app, ["train", str(dataset), "--out", str(run), "--config", str(cfg),
                                           "--init", "pretrained", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    shipped = load_model(pretrained_path()).model.config
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())).model == shipped
    help_text = " ".join(CliRunner().invoke(main.app, ["train", "--help"]).stdout.split())
    assert "`pretrained` (the shipped model)" in help_text
