"""``audiodenoise info``: a short card by default, the full metadata with --json."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from conftest import TINY_MODEL, make_model
from typer.testing import CliRunner

from audiodenoise.api import pretrained_sha256
from audiodenoise.card import model_card
from audiodenoise.checkpoint import save_model
from audiodenoise.cli.main import app
from audiodenoise.features import FeatureConfig
from audiodenoise.shipped import PRETRAINED_FILE, pretrained_path


def _info(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["info", *map(str, args)])
    return result.exit_code, result.output


def test_shipped_model_card_answers_what_it_is_and_how_good_in_under_20_lines():
    code, text = _info()
    assert code == 0, text
    lines = text.strip().splitlines()
    assert len(lines) < 20
    assert "1,848,199 parameters" in text
    assert "58,920 steps" in text and "1047 h of audio seen" in text  # not the last stage's "step 3600"
    assert "non-causal" in text and "1.58 s" in text
    assert "CC BY 4.0" in text and "GPL" in text  # training data licences
    assert "PESQ-WB 1.79 (noisy 1.44)" in text and "SI-SDR 9.0 dB (noisy 5.0)" in text
    assert f"{pretrained_sha256()[:16]}... verified" in text


def test_json_is_the_full_metadata():
    code, text = _info("--json")
    assert code == 0, text
    card = json.loads(text)
    assert card["sha256"] == pretrained_sha256() and card["checksum"] == "verified"
    assert card["info"]["total_steps"] == 58920 and card["info"]["step"] == 3600  # the run's own keys kept
    assert card["info"]["train_config"]["lr"] == 0.0001 and card["info"]["weights"] == "model"
    assert card["model"]["channels"] == [256, 128] and card["features"]["n_fft"] == 512


def test_a_trained_model_file_shows_its_own_metadata(tmp_path):
    path = tmp_path / "mine.safetensors"
    info = {"name": "my model", "total_steps": 1200, "hours_seen": 21.5,
            "training_data": [{"kind": "speech", "source": "my corpus", "hours": 2.0, "licence": "CC0"}],
            "dev_scores": {"set": "my dev", "noisy": {"pesq_wb": 1.4, "stoi": 0.8, "si_sdr": 5.0},
                           "model": {"pesq_wb": 1.9, "stoi": 0.85, "si_sdr": 9.0}}}
    save_model(path, make_model(), FeatureConfig(), info=info)
    code, text = _info(path)
    assert code == 0, text
    assert text.startswith("my model")
    assert "1,200 steps, about 21.5 h of audio seen" in text
    assert "speech: 2.0 h, my corpus (CC0)" in text
    assert "PESQ-WB 1.90 (noisy 1.40)" in text and "on my dev" in text
    assert "not verified (no expected checksum)" in text
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "mine.safetensors.sha256").write_text(digest + "  mine.safetensors\n")
    assert f"{digest[:16]}... verified" in _info(path)[1]
    (tmp_path / "mine.safetensors.sha256").write_text("0" * 64 + "\n")
    assert "DOES NOT MATCH" in _info(path)[1]


def test_the_card_names_a_2d_front_end_only_where_there_is_one(tmp_path):
    path = tmp_path / "front.safetensors"
    save_model(path, make_model(dataclasses.replace(TINY_MODEL, front_channels=4)), FeatureConfig(), info={})
    assert "(freq_channels, 4-channel 2-D front end, channels 32-16, 2 dilated blocks" in _info(path)[1]
    assert "front end" not in _info()[1]


def test_a_run_export_shows_its_step_and_validation_scores(tmp_path):
    path = tmp_path / "run.safetensors"
    save_model(path, make_model(), FeatureConfig(),
               info={"step": 1600, "pesq_wb": 1.91, "stoi": 0.823, "si_sdr": 10.27, "valid_loss": 0.014})
    code, text = _info(path)
    assert code == 0, text
    assert "1,600 steps in the run that wrote it" in text
    assert "validation PESQ-WB 1.91, STOI 0.823, SI-SDR 10.3 dB" in text


def test_a_model_file_without_card_facts_says_so(tiny_model_file):
    code, text = _info(tiny_model_file)
    assert code == 0, text
    assert "training   not recorded in the model file" in text
    assert "dev scores not recorded" in text


def test_a_missing_model_file_is_one_line_and_exit_1(tmp_path):
    code, text = _info(tmp_path / "nope.safetensors")
    assert code == 1 and "not found" in text and text.count("\n") == 1


def test_the_shipped_model_is_found_through_audiodenoise_shipped(tmp_path, monkeypatch):
    # one source of truth for where the shipped model lives: patching audiodenoise.shipped moves the card too
    package = tmp_path / "relocated_install"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in (PRETRAINED_FILE, PRETRAINED_FILE + ".sha256"):
        shutil.copyfile(pretrained_path().with_name(name), package / name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("audiodenoise.shipped.PRETRAINED_PACKAGE", package.name)
    card = model_card()
    assert card["shipped"] and Path(card["model_file"]).parent == package
    assert card["checksum"] == "verified" and card["info"]["total_steps"] == 58920
