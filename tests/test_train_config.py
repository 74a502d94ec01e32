"""``train --set KEY=VALUE``: any config key from the command line."""

import json
import subprocess
import sys

import pytest

from audiodenoise.errors import ConfigError
from audiodenoise.train_config import load_config, parse_setting


@pytest.mark.parametrize("text, expected", [
    ("mix.babble_prob=0", ("mix.babble_prob", 0)),
    ("lr = 3e-4", ("lr", 3e-4)),
    ("model.bottleneck_dilations=[1, 2, 4]", ("model.bottleneck_dilations", [1, 2, 4])),
    ("model.skip=false", ("model.skip", False)),
    ("loss=compressed_mag+sisdr", ("loss", "compressed_mag+sisdr")),
    ('loss="compressed_mag"', ("loss", "compressed_mag")),
])
def test_a_setting_is_read_as_toml_or_else_as_a_string(text, expected):
    assert parse_setting(text) == expected


@pytest.mark.parametrize("text", ["mix.babble_prob", "=3", "lr=", ""])
def test_a_setting_without_key_and_value_is_refused(text):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_setting(text)


def test_settings_reach_the_config_and_unknown_keys_are_refused():
    config = load_config(None, dict(map(parse_setting, ["mix.babble_prob=0", "model.bottleneck_dilations=[1,2]",
                                                        "sisdr_weight=0.0004"])))
    assert (config.mix.babble_prob, config.model.bottleneck_dilations, config.sisdr_weight) == (0, (1, 2), 0.0004)
    for bad in ("mix.babble=0", "modle.skip=false", "learning_rate=1"):
        with pytest.raises(ConfigError, match="unknown key"):
            load_config(None, dict([parse_setting(bad)]))


def _train(*args):
    return subprocess.run([sys.executable, "-m", "audiodenoise", "train", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_set_is_recorded_in_the_run_and_its_mistakes_exit_with_one_line(dataset, tmp_path, tiny_model_file):
    run = tmp_path / "run"
    r = _train(str(dataset), "--out", str(run), "--epochs", "1", "--steps-per-epoch", "1", "--quiet",
               "--set", "batch_size=2", "--set", "mix.babble_prob=0", "--set", "model.channels=[16, 8]",
               "--set", "model.bottleneck_dilations=[1]", "--set", "valid_audio_pairs=0",
               "--set", "mix.segment_seconds=1.0", "--set", "warmup_steps=1")
    assert r.returncode == 0, r.stderr
    saved = json.loads((run / "config.json").read_text())
    assert (saved["batch_size"], saved["mix"]["babble_prob"], saved["model"]["channels"]) == (2, 0, [16, 8])
    r = _train(str(dataset), "--out", str(tmp_path / "a"), "--set", "mix.babble_prob")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
    r = _train(str(dataset), "--out", str(tmp_path / "b"), "--set", "mix.babel_prob=0")
    assert r.returncode == 1 and "unknown key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _train(str(dataset), "--out", str(tmp_path / "c"), "--init", str(tiny_model_file), "--set", "model.skip=false")
    assert r.returncode == 1 and "--grow" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
