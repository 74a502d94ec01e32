"""The training recipes in data_prep/ stay loadable and their documented commands point at real files."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model

from audiodenoise.checkpoint import load_model, save_model
from audiodenoise.features import FeatureConfig
from audiodenoise.model import DenoisingAutoencoder
from audiodenoise.training import load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "data_prep").rglob("*.toml"))


def test_the_recipes_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in RECIPES}
    assert {"data_prep/train.toml", "data_prep/ablation/scratch-fc.toml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_recipe_loads_and_builds_its_model(path):
    config = load_config(path)  # unknown keys and bad values raise ConfigError
    model = DenoisingAutoencoder(config.model)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_recipe_commands_name_existing_configs(path):
    named = re.findall(r"--config (\S+\.toml)", path.read_text())
    for name in named:
        assert (ROOT / name).is_file(), f"{path.name} documents --config {name}, which does not exist"


def _script(relative: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table():
    return _script("data_prep/ablation/table.py")


def test_the_ablation_table_reads_run_logs_and_evaluate_reports(tmp_path):
    run = tmp_path / "arm"
    run.mkdir()
    (run / "log.csv").write_text("epoch,step,valid_loss,valid_loss_ema,seconds\n1,400,0.03,nan,600\n"
                                 "2,800,0.02,0.025,1230\n3,1200,0.021,0.019,1800\n")
    ci = {"mean": 0.0}

    def stats(pesq, nr):
        return {"processed": {"pesq_wb": {"mean": pesq}, "stoi": {"mean": 0.84}, "si_sdr": {"mean": 11.04}},
                "noise_removed_db": {"mean": nr}, "speech_distortion_db": ci}

    files = [{"group": "high", "noisy": {"si_sdr": 14.0}, "systems": {"m": {"processed": {"si_sdr": s}}}}
             for s in (15.0, 13.0, 14.5, 16.0)]
    report = {"systems": [{"name": "m", "stats": stats(2.0, 9.0),
                           "groups": {"low": {"stats": stats(1.4, 12.5)}, "high": {"stats": stats(2.5, 7.0)}}}],
              "files": files}
    row = _table().run_row(run, report).strip("| ").split(" | ")
    assert row[:5] == ["arm", "1200", "30", "0.02000", "0.01900"]  # best raw and EMA, the last step and clock
    assert row[5] == "2.00 / 0.840 / 11.0"
    assert row[6] == "9.0 (12.5 / - / 7.0)"  # a group without pairs shows "-"
    assert row[8] == "75 % of 4"
    assert _table().run_row(run).endswith("| - | - | - | - |")


def test_ship_writes_the_weights_with_the_card_facts_and_a_bare_checksum(tmp_path):
    weights = tmp_path / "run.safetensors"
    model = make_model()
    save_model(weights, model, FeatureConfig(), info={"step": 600, "valid_loss": 0.014, "name": "run name"})
    out = tmp_path / "shipped" / "model.safetensors"
    out.parent.mkdir()
    digest = _script("data_prep/ship.py").ship(weights, {"name": "v9", "total_steps": 1800}, out)
    assert (out.parent / "model.safetensors.sha256").read_text() == digest + "\n"  # what pretrained_sha256 reads
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    shipped = load_model(out, sha256=digest)
    assert shipped.info == {"step": 600, "valid_loss": 0.014, "name": "v9", "total_steps": 1800}  # facts win
    for key, value in model.state_dict().items():
        assert torch.equal(value, shipped.model.state_dict()[key])


def test_the_shipped_models_facts_are_in_data_prep():
    # data_prep/shipped/ holds the facts of each model that shipped (by its name); the shipped file carries them
    from audiodenoise.shipped import pretrained_path

    info = load_model(pretrained_path()).info
    facts = [json.loads(p.read_text()) for p in sorted((ROOT / "data_prep" / "shipped").glob("*.json"))]
    matching = [f for f in facts if f["name"] == info["name"]]
    assert len(matching) == 1, f"no single facts file in data_prep/shipped/ names {info['name']!r}"
    assert {key: info[key] for key in matching[0]} == matching[0]


def test_the_gates_near_clean_pairs_are_at_the_snr_asked_for():
    at_snr = _script("data_prep/gate.py").at_snr
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((1, 16000)).astype(np.float32)
    noise = 0.01 * rng.standard_normal((1, 16000)).astype(np.float32)
    for snr in (25.0, 0.0, -5.0):
        mixed = at_snr(clean, noise, snr)
        residual = (mixed - clean).astype(np.float64)
        measured = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(residual ** 2))
        assert mixed.dtype == np.float32 and abs(measured - snr) < 0.01
    silent = at_snr(clean, np.zeros_like(noise), 25.0)
    assert np.array_equal(silent, clean) and silent is not clean  # a noise-free pair stays clean, as a copy
