"""Noise removed / speech distortion: ``Denoiser.apply_mask`` and what ``evaluate`` reports, on known masks."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import make_model, passthrough_model, speech_like, write_audio

from audiodenoise.api import Denoiser
from audiodenoise.errors import AudioError
from audiodenoise.evaluate import decomposition, evaluate, format_table, mean_ci, write_csv, write_report
from audiodenoise.features import FeatureConfig

SR = 16000
SNRS = (-5, 0, 5, 15)


def constant_mask_model(value: float):
    """A model whose mask is ``value`` in every bin, whatever the input."""
    model = make_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(math.log(value / (1 - value)))
    return model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("decomp")
    (root / "noisy").mkdir()
    (root / "clean").mkdir()
    rows = ["id,snr_db"]
    for i, snr_db in enumerate(SNRS):
        clean = speech_like(SR, 2.0, seed=i)
        noise = np.random.default_rng(i).standard_normal(clean.shape).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
        write_audio(root / "clean" / f"p{i}.flac", clean, SR)
        write_audio(root / "noisy" / f"p{i}.flac", np.clip(clean + noise, -1, 1), SR)
        rows.append(f"p{i},{snr_db}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root


def _denoiser(model, **kwargs) -> Denoiser:
    return Denoiser(model, FeatureConfig(), device="cpu", **kwargs)


# -- the arithmetic ----------------------------------------------------------------


def test_decomposition_of_known_scalings():
    rng = np.random.default_rng(0)
    clean, noise = rng.standard_normal(1000), rng.standard_normal(1000)
    parts = decomposition(clean, noise, 0.5 * clean, 0.01 * noise)
    assert parts["noise_removed_db"] == pytest.approx(40.0, abs=1e-9)
    assert parts["speech_distortion_db"] == pytest.approx(10 * math.log10(0.25), abs=1e-9)
    untouched = decomposition(clean, noise, clean, noise)
    assert untouched["noise_removed_db"] == pytest.approx(0.0, abs=1e-9)
    assert untouched["speech_distortion_db"] < -100


def test_mean_ci_uses_students_t():
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["n"] == 3
    assert ci["ci95"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) * s / sqrt(n)
    assert math.isnan(mean_ci([5.0])["ci95"])
    assert mean_ci([None, None]) is None


# -- apply_mask --------------------------------------------------------------------------


@pytest.mark.parametrize(("sample_rate", "channels", "chunk_seconds"), [(16000, 1, 20.0), (44100, 2, 20.0),
                                                                         (16000, 1, 0.7), (48000, 10, 1.0)])
def test_masked_parts_add_up_to_the_output(sample_rate, channels, chunk_seconds):
    """The mask is applied to the noisy STFT, so filtering the two parts separately sums to the output."""
    clean = speech_like(sample_rate, 2.5, seed=1, channels=channels)
    noise = 0.05 * np.random.default_rng(2).standard_normal(clean.shape).astype(np.float32)
    noisy = clean + noise
    denoiser = _denoiser(make_model(), limiter=False, chunk_seconds=chunk_seconds)
    out = denoiser.denoise(noisy, sample_rate)
    masked_clean = denoiser.apply_mask(noisy, clean, sample_rate)
    masked_noise = denoiser.apply_mask(noisy, noise, sample_rate)
    assert masked_clean.shape == clean.shape
    np.testing.assert_allclose(masked_clean + masked_noise, out, atol=2e-5)
    np.testing.assert_allclose(denoiser.apply_mask(noisy, noisy, sample_rate), out, atol=1e-6)
    assert not np.allclose(masked_noise, noise, atol=1e-3)  # the random model does change it


def test_apply_mask_of_a_constant_mask_scales_the_signal():
    x = speech_like(SR, 1.5, seed=3)[0]
    y = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32) * 0.1
    np.testing.assert_allclose(_denoiser(constant_mask_model(0.1)).apply_mask(x, y, SR), 0.1 * y, atol=1e-6)


def test_apply_mask_refuses_signals_of_two_shapes():
    x = speech_like(SR, 1.0)
    with pytest.raises(AudioError, match="one shape"):
        _denoiser(make_model()).apply_mask(x, x[:, :-5], SR)


# -- in the report -----------------------------------------------------------------------


def test_evaluate_reports_20_db_removed_for_a_constant_mask_of_0_1(dataset, tmp_path):
    report = evaluate(dataset / "noisy", dataset / "clean", denoiser=_denoiser(constant_mask_model(0.1)),
                      pairs_csv=dataset / "pairs.csv", progress=False, name="mask 0.1")
    expected_distortion = 10 * math.log10(0.81)  # (0.1 - 1)^2
    for row in report["files"]:
        assert row["systems"]["mask 0.1"]["noise_removed_db"] == pytest.approx(20.0, abs=0.01)
        assert row["systems"]["mask 0.1"]["speech_distortion_db"] == pytest.approx(expected_distortion, abs=0.01)
    stats = report["systems"][0]["stats"]
    assert stats["noise_removed_db"]["mean"] == pytest.approx(20.0, abs=0.01)
    assert stats["noise_removed_db"]["n"] == len(SNRS)
    for group in ("low", "mid", "high"):
        group_stats = report["groups"][group]["stats"]
        assert group_stats["noise_removed_db"]["mean"] == pytest.approx(20.0, abs=0.01)
        assert group_stats["speech_distortion_db"]["mean"] == pytest.approx(expected_distortion, abs=0.01)
    table = format_table(report)
    assert "noise removed dB" in table.splitlines()[0]
    assert "| 20.0 (20.0 / 20.0 / 20.0) | -0.9 (-0.9 / -0.9 / -0.9) |" in table
    write_report(report, tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["systems"][0]["stats"]["speech_distortion_db"]["mean"] == pytest.approx(expected_distortion, 0.01)
    write_csv(report, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["mask 0.1.noise_removed_db"]) for r in rows] == pytest.approx([20.0] * len(SNRS), abs=0.01)


def test_evaluate_reports_nothing_removed_for_a_pass_through(dataset):
    report = evaluate(dataset / "noisy", dataset / "clean", denoiser=_denoiser(passthrough_model()),
                      pairs_csv=dataset / "pairs.csv", progress=False, name="pass")
    stats = report["systems"][0]["stats"]
    assert stats["noise_removed_db"]["mean"] == pytest.approx(0.0, abs=0.01)
    assert stats["speech_distortion_db"]["mean"] < -60


def test_folders_and_decompose_false_have_no_decomposition(dataset):
    report = evaluate(dataset / "noisy", dataset / "clean", denoised_dir=dataset / "noisy", progress=False)
    assert report["systems"][0]["stats"]["noise_removed_db"] is None
    assert "noise removed" not in format_table(report)
    report = evaluate(dataset / "noisy", dataset / "clean", denoiser=_denoiser(make_model()), progress=False,
                      decompose=False)
    assert all(r["systems"][report["system"]]["noise_removed_db"] is None for r in report["files"])
