import numpy as np
import pytest
from conftest import speech_like

from audiodenoise.errors import AudioError
from audiodenoise.mixing import colored_noise, mix_at_snr, noise_excerpt, rms


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
def test_mix_hits_the_asked_snr(snr_db):
    rng = np.random.default_rng(1)
    clean = speech_like(16000, 2.0)[0]
    noise = rng.standard_normal(clean.size).astype(np.float32)
    noisy, scaled = mix_at_snr(clean, noise, snr_db)
    measured = 20 * np.log10(rms(clean) / rms(noisy - clean))
    assert abs(measured - snr_db) < 0.1
    np.testing.assert_allclose(noisy - clean, scaled, atol=1e-6)


def test_mix_at_1000_db_returns_clean():
    clean = speech_like(16000, 1.0)[0]
    noisy, _ = mix_at_snr(clean, np.ones_like(clean), 1000.0)
    np.testing.assert_allclose(noisy, clean, atol=1e-7)


def test_silent_noise_is_refused():
    with pytest.raises(AudioError, match="silence"):
        mix_at_snr(np.ones(100, np.float32), np.zeros(100, np.float32), 0.0)


def test_noise_excerpt_loops_short_noise():
    rng = np.random.default_rng(0)
    noise = np.arange(10, dtype=np.float32)
    excerpt, offset = noise_excerpt(noise, 25, rng)
    assert excerpt.size == 25
    np.testing.assert_array_equal(excerpt, np.tile(noise, 4)[offset : offset + 25])
    long_excerpt, long_offset = noise_excerpt(np.arange(100.0), 10, rng)
    np.testing.assert_array_equal(long_excerpt, np.arange(100.0)[long_offset : long_offset + 10])


def _low_high_ratio(x, sample_rate=16000):
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / sample_rate)
    return spec[(freqs > 50) & (freqs < 500)].mean() / spec[(freqs > 4000) & (freqs < 7000)].mean()


def test_colored_noise_slopes():
    rng = np.random.default_rng(0)
    ratios = {k: _low_high_ratio(colored_noise(k, 32000, rng, sample_rate=16000)) for k in ("white", "pink", "brown")}
    assert 0.5 < ratios["white"] < 2
    assert ratios["pink"] > 5 * ratios["white"]
    assert ratios["brown"] > 5 * ratios["pink"]
    hum = colored_noise("hum", 16000, rng, sample_rate=16000)
    power = np.abs(np.fft.rfft(hum)) ** 2  # 1 s: bin k is k Hz
    harmonics = [k for base in (50, 60) for k in range(base, 8 * base, base)]
    assert int(np.argmax(power)) in harmonics
    assert power[harmonics].sum() > 0.9 * power.sum()
