import numpy as np
import pytest

from audiodenoise import augment

SR = 16000


def _sine(freq, seconds=1.0):
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / SR)[np.argmax(spec)]


def _band_db(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return 10 * np.log10(spec[(freqs >= lo) & (freqs < hi)].sum() + 1e-20)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_pitch_and_length_together(factor):
    out = augment.speed(_sine(1000.0), factor, sample_rate=SR)
    assert abs(out.size - SR / factor) <= 2
    assert abs(_peak_hz(out) - 1000.0 * factor) < 3
    assert augment.speed(_sine(1000.0), 1.0, sample_rate=SR).size == SR


@pytest.mark.parametrize("cutoff", augment.SOURCE_CUTOFFS_HZ)
def test_band_limit_empties_the_band_above_the_source_nyquist(cutoff):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SR).astype(np.float32)
    out = augment.band_limit(noise, cutoff, sample_rate=SR)
    assert out.size == noise.size
    assert _band_db(out, cutoff * 1.05, SR / 2) - _band_db(out, 0, cutoff) < -50
    tone = _sine(1000.0)
    passed = augment.band_limit(tone, cutoff, sample_rate=SR)
    core = slice(1000, -1000)
    assert abs(_band_db(passed[core], 900, 1100) - _band_db(tone[core], 900, 1100)) < 0.1


def test_random_eq_is_bounded_and_repeatable():
    noise = np.random.default_rng(1).standard_normal(4 * SR).astype(np.float32)
    a = augment.random_eq(noise, np.random.default_rng(5), sample_rate=SR, n_filters=1, max_gain_db=12.0)
    b = augment.random_eq(noise, np.random.default_rng(5), sample_rate=SR, n_filters=1, max_gain_db=12.0)
    assert np.array_equal(a, b) and not np.allclose(a, noise)
    # one biquad of at most 12 dB: the band levels move by at most about 12 dB
    edges = np.geomspace(100, 7500, 12)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        assert abs(_band_db(a, lo, hi) - _band_db(noise, lo, hi)) < 13.5


def test_synthetic_rir_decays_by_60_db_in_rt60():
    rir = augment.synthetic_rir(np.random.default_rng(2), rt60_s=0.5, sample_rate=SR)
    assert rir[0] == 1.0 and rir.size == SR // 2
    tail = rir[1:] ** 2
    first, last = tail[int(0.01 * SR) : int(0.1 * SR)].mean(), tail[int(0.35 * SR) : int(0.45 * SR)].mean()
    # 0.34 s apart: 60 dB * 0.34 / 0.5 = 40.8 dB
    assert abs(10 * np.log10(first / last) - 40.8) < 4


def test_reverberate_returns_full_and_early_responses():
    rir = augment.synthetic_rir(np.random.default_rng(3), rt60_s=0.4, sample_rate=SR)
    impulse = np.zeros(SR, dtype=np.float32)
    impulse[0] = 1.0
    wet, early = augment.reverberate(impulse, rir, sample_rate=SR)
    early_taps = int(augment.EARLY_REFLECTIONS_S * SR)
    assert np.allclose(wet[: rir.size], rir, atol=1e-5)
    assert np.allclose(early[:early_taps], rir[:early_taps], atol=1e-5)
    assert np.allclose(early[early_taps:], 0, atol=1e-5)


def test_tilted_noise_and_clip():
    rng = np.random.default_rng(4)
    noise = augment.tilted_noise(rng, SR, sample_rate=SR)
    assert noise.shape == (SR,) and noise.dtype == np.float32 and np.isfinite(noise).all() and noise.std() > 0
    env = augment.amplitude_modulation(rng, SR, sample_rate=SR)
    assert env.min() >= 0 and env.max() <= 1
    assert np.abs(augment.clip(3 * noise / np.abs(noise).max())).max() == 1.0
