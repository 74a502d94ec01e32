"""Signal augmentations for on-the-fly training mixtures.

Each function takes and returns ``float32 [time]`` arrays at ``sample_rate``
and draws its randomness from the generator it is given, so a mixture is a
function of its seed alone (see :mod:`audiodenoise.mixer`).
"""

from __future__ import annotations

import numpy as np
import soxr
from scipy import signal as sps

# cut-offs of band-limited sources: telephone (8 kHz), 11.025 kHz and 12 kHz audio
SOURCE_CUTOFFS_HZ = (4000.0, 5512.5, 6000.0)
EARLY_REFLECTIONS_S = 0.05


def speed(x: np.ndarray, factor: float, *, sample_rate: int) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch and tempo change together, as ``sox speed``).

    The result has ``round(len(x) / factor)`` samples.
    """
    if factor == 1.0:
        return x
    out = soxr.resample(x.astype(np.float32), sample_rate * factor, sample_rate, quality="MQ")
    return np.asarray(out, dtype=np.float32)


def band_limit(x: np.ndarray, cutoff_hz: float, *, sample_rate: int) -> np.ndarray:
    """What survives a trip through a source sampled at ``2 * cutoff_hz``: resample down and back up."""
    low_rate = 2.0 * cutoff_hz
    if low_rate >= sample_rate:
        return x
    down = soxr.resample(x.astype(np.float32), sample_rate, low_rate, quality="HQ")
    up = np.asarray(soxr.resample(down, low_rate, sample_rate, quality="HQ"), dtype=np.float32)
    return _fit_length(up, x.size)


def random_eq(x: np.ndarray, rng: np.random.Generator, *, sample_rate: int, n_filters: int = 3,
              max_gain_db: float = 12.0) -> np.ndarray:
    """Random peaking / shelving biquads (RBJ cookbook), gains within ``±max_gain_db``."""
    out = x.astype(np.float64)
    for _ in range(n_filters):
        kind = rng.choice(("peak", "low_shelf", "high_shelf"))
        freq = float(np.exp(rng.uniform(np.log(60.0), np.log(0.45 * sample_rate))))
        gain_db = float(rng.uniform(-max_gain_db, max_gain_db))
        q = float(rng.uniform(0.5, 2.0))
        b, a = _biquad(str(kind), freq, gain_db, q, sample_rate)
        out = sps.lfilter(b, a, out)
    return out.astype(np.float32)


def _biquad(kind: str, freq: float, gain_db: float, q: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * freq / sample_rate
    cos, alpha = np.cos(w0), np.sin(w0) / (2.0 * q)
    if kind == "peak":
        b = [1 + alpha * amp, -2 * cos, 1 - alpha * amp]
        a = [1 + alpha / amp, -2 * cos, 1 - alpha / amp]
    else:
        sq = 2.0 * np.sqrt(amp) * alpha
        sign = 1.0 if kind == "low_shelf" else -1.0
        b = [amp * ((amp + 1) - sign * (amp - 1) * cos + sq), sign * 2 * amp * ((amp - 1) - sign * (amp + 1) * cos),
             amp * ((amp + 1) - sign * (amp - 1) * cos - sq)]
        a = [(amp + 1) + sign * (amp - 1) * cos + sq, -sign * 2 * ((amp - 1) + sign * (amp + 1) * cos),
             (amp + 1) + sign * (amp - 1) * cos - sq]
    b, a = np.asarray(b), np.asarray(a)
    return b / a[0], a / a[0]


def synthetic_rir(rng: np.random.Generator, *, rt60_s: float, sample_rate: int) -> np.ndarray:
    """A synthetic room impulse response: a direct path then exponentially decaying noise.

    Returns ``float32 [taps]``, direct path at index 0 with value 1. The energy
    decays by 60 dB in ``rt60_s``; reflections start after a 2-8 ms gap.
    """
    taps = int(min(rt60_s, 1.2) * sample_rate)
    t = np.arange(taps) / sample_rate
    decay = np.exp(-6.9078 * t / rt60_s)  # 60 dB in amplitude^2 over rt60: exp(-ln(1000) t / rt60)
    tail = rng.standard_normal(taps) * decay
    gap = int(rng.uniform(0.002, 0.008) * sample_rate)
    tail[:gap] = 0.0
    # direct-to-reverberant ratio drawn in -3..12 dB
    drr_db = rng.uniform(-3.0, 12.0)
    tail *= np.sqrt(1.0 / max(np.sum(tail**2), 1e-12)) * 10 ** (-drr_db / 20)
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray, *, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(reverberant, early)``: ``x`` through the whole ``rir`` and through its first 50 ms.

    ``early`` (direct path and early reflections) is the training target for
    reverberant inputs, as in the DNS challenge: the model removes the late
    tail along with the noise but does not have to undo the room's colour.
    """
    early_taps = int(EARLY_REFLECTIONS_S * sample_rate)
    wet = sps.fftconvolve(x, rir)[: x.size]
    early = sps.fftconvolve(x, rir[:early_taps])[: x.size]
    return wet.astype(np.float32), early.astype(np.float32)


def tilted_noise(rng: np.random.Generator, length: int, *, sample_rate: int) -> np.ndarray:
    """Stationary noise with a random spectral tilt (power ∝ f^-β, β in -1..2), often amplitude-modulated."""
    beta = rng.uniform(-1.0, 2.0)
    spec = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    spec[1:] *= (freqs[1:] / 1000.0) ** (-beta / 2.0)
    spec[0] = 0.0
    out = np.fft.irfft(spec, n=length)
    if rng.random() < 0.5:
        out *= amplitude_modulation(rng, length, sample_rate=sample_rate)
    return out.astype(np.float32)


def amplitude_modulation(rng: np.random.Generator, length: int, *, sample_rate: int) -> np.ndarray:
    """A slow random envelope: a sine of 0.3-8 Hz, depth 0.2-1 (1 = fully gated)."""
    rate = rng.uniform(0.3, 8.0)
    depth = rng.uniform(0.2, 1.0)
    t = np.arange(length) / sample_rate
    return (1.0 - depth * 0.5 * (1.0 + np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))).astype(np.float32)


def clip(x: np.ndarray, *, ceiling: float = 1.0) -> np.ndarray:
    """Hard clipping at ``±ceiling``, as an overdriven recording."""
    return np.clip(x, -ceiling, ceiling)


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
    if x.size >= length:
        return x[:length]
    return np.concatenate([x, np.zeros(length - x.size, dtype=x.dtype)])
