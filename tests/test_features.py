"""features: exact analyze -> synthesize round trip, rate scaling, config round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import speech_like

from audiodenoise.errors import ConfigError
from audiodenoise.features import FeatureConfig, analyze, magnitude, synthesize


@pytest.mark.parametrize("length", [1, 100, 511, 512, 513, 4000, 16000 + 37])
def test_analyze_synthesize_round_trip_is_exact(length):
    config = FeatureConfig()
    wav = torch.from_numpy(speech_like(16000, length / 16000, seed=length)[0, :length].copy())
    wav[: min(length, 3)] = torch.tensor([0.9, -0.9, 0.5])[: min(length, 3)]  # non-zero even when tiny
    log_mag, spec = analyze(wav, config=config)
    assert log_mag.shape == spec.shape == (config.n_freqs, 1 + length // config.hop_length)
    out = synthesize(magnitude(log_mag, config=config), spec, config=config, length=length)
    assert out.shape == wav.shape
    assert (out - wav).abs().max().item() < 1e-5


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000, 192000])
def test_round_trip_is_exact_at_other_rates_and_channels(sample_rate):
    config = FeatureConfig().for_rate(sample_rate)
    wav = torch.from_numpy(speech_like(sample_rate, 0.3, channels=3, seed=1))
    log_mag, spec = analyze(wav, config=config)
    assert log_mag.shape[:2] == (3, config.n_freqs)
    out = synthesize(magnitude(log_mag, config=config), spec, config=config, length=wav.shape[-1])
    assert out.shape == wav.shape
    assert (out - wav).abs().max().item() < 1e-5


def test_synthesize_uses_the_noisy_phase_and_a_new_magnitude():
    config = FeatureConfig()
    wav = torch.from_numpy(speech_like(16000, 0.5)[0])
    log_mag, spec = analyze(wav, config=config)
    half = synthesize(0.5 * magnitude(log_mag, config=config), spec, config=config, length=wav.shape[-1])
    assert (half - 0.5 * wav).abs().max().item() < 1e-5


@pytest.mark.parametrize("sample_rate", [8000, 11025, 22050, 32000, 44100, 48000, 96000, 192000])
def test_for_rate_keeps_frame_and_hop_duration(sample_rate):
    base = FeatureConfig()
    scaled = base.for_rate(sample_rate)
    assert scaled.sample_rate == sample_rate
    assert scaled.n_fft % 2 == 0
    # within one sample (two for n_fft, which is kept even) of the 16 kHz durations
    assert abs(scaled.n_fft / sample_rate - base.n_fft / base.sample_rate) <= 2 / sample_rate
    assert abs(scaled.win_length / sample_rate - base.win_length / base.sample_rate) <= 2 / sample_rate
    assert abs(scaled.hop_length / sample_rate - base.hop_length / base.sample_rate) <= 1 / sample_rate
    # bins keep their spacing in Hz
    assert scaled.sample_rate / scaled.n_fft == pytest.approx(base.sample_rate / base.n_fft, rel=5e-3)
    assert scaled.log_eps == base.log_eps


def test_for_rate_at_the_model_rate_is_the_same_config():
    assert FeatureConfig().for_rate(16000) == FeatureConfig()


def test_config_dict_round_trip():
    config = FeatureConfig(sample_rate=24000, n_fft=768, hop_length=192, win_length=640, log_eps=1e-6)
    data = config.to_dict()
    assert data == {"sample_rate": 24000, "n_fft": 768, "hop_length": 192, "win_length": 640, "log_eps": 1e-6}
    assert FeatureConfig.from_dict(data) == config


def test_config_rejects_unknown_keys():
    data = {**FeatureConfig().to_dict(), "n_mels": 80, "center": False}
    with pytest.raises(ConfigError, match="unknown key.*center, n_mels"):
        FeatureConfig.from_dict(data)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"hop_length": 0}, "hop_length"),
        ({"win_length": 1024}, "win_length"),
        ({"log_eps": 0.0}, "log_eps"),
        ({"sample_rate": 100}, "too low"),
    ],
)
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ConfigError, match=match):
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), **changes})


def test_from_dict_rejects_a_non_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        FeatureConfig.from_dict([("n_fft", 512)])


def test_log_magnitude_of_silence_is_finite():
    config = FeatureConfig()
    log_mag, spec = analyze(torch.zeros(1000), config=config)
    assert torch.isfinite(log_mag).all()
    assert np.allclose(log_mag.numpy(), np.log(config.log_eps))
    out = synthesize(magnitude(log_mag, config=config), spec, config=config, length=1000)
    assert out.abs().max().item() == 0.0
