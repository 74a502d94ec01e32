"""data_prep/ablation/reverb_pairs.py: reverberant validation pairs keep their SNR, never clip, and repeat per seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from audiodenoise import augment

SCRIPT = Path(__file__).resolve().parents[1] / "data_prep" / "ablation" / "reverb_pairs.py"
SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def reverb_pairs():
    spec = importlib.util.spec_from_file_location("reverb_pairs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pair(snr_db: float, level: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    clean = (level * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    noise = rng.standard_normal(t.size).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return clean + noise, clean


def test_the_pair_keeps_its_snr_and_gets_the_mixers_early_reflection_target(reverb_pairs):
    noisy, clean = _pair(10.0, 0.05)
    noisy_rev, early = reverb_pairs.reverberant_pair(noisy, clean, np.random.default_rng(3), sample_rate=SAMPLE_RATE)
    # the same room drawn the same way as the script draws it
    rng = np.random.default_rng(3)
    rir = augment.synthetic_rir(rng, rt60_s=rng.uniform(*reverb_pairs.RT60_S), sample_rate=SAMPLE_RATE)
    wet, expected_early = augment.reverberate(clean, rir, sample_rate=SAMPLE_RATE)
    np.testing.assert_allclose(early, expected_early, atol=1e-6)
    noise = noisy_rev - wet
    snr_db = 10 * np.log10(np.sum(wet.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))
    assert snr_db == pytest.approx(10.0, abs=0.05)
    assert not np.allclose(noisy_rev, noisy, atol=1e-3)  # the room changed the input


def test_a_loud_pair_is_scaled_down_together_instead_of_clipping(reverb_pairs):
    noisy, clean = _pair(5.0, 0.9)
    quiet_in, quiet_ref = reverb_pairs.reverberant_pair(noisy / 100, clean / 100, np.random.default_rng(4),
                                                        sample_rate=SAMPLE_RATE)
    loud_in, loud_ref = reverb_pairs.reverberant_pair(noisy, clean, np.random.default_rng(4), sample_rate=SAMPLE_RATE)
    assert np.max(np.abs(loud_in)) == pytest.approx(reverb_pairs.PEAK_MAX, rel=1e-5)
    scale = np.max(np.abs(loud_in)) / np.max(np.abs(quiet_in))
    np.testing.assert_allclose(loud_ref, quiet_ref * scale, atol=1e-5)  # input and reference by the same factor


def test_the_same_seed_gives_the_same_rooms(reverb_pairs):
    noisy, clean = _pair(0.0, 0.1)
    first = reverb_pairs.reverberant_pair(noisy, clean, np.random.default_rng(7), sample_rate=SAMPLE_RATE)
    again = reverb_pairs.reverberant_pair(noisy, clean, np.random.default_rng(7), sample_rate=SAMPLE_RATE)
    other = reverb_pairs.reverberant_pair(noisy, clean, np.random.default_rng(8), sample_rate=SAMPLE_RATE)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.allclose(first[0], other[0])
