"""Mixing clean speech with noise at a chosen SNR and level.

SNR is speech RMS over noise RMS on the pair's whole length, as in the
evaluation protocol (``../shared/eval/README.md``).
"""

from __future__ import annotations

import numpy as np

from .errors import AudioError

# below this RMS a signal counts as digital silence
SILENCE_RMS = 1e-5


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x``."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``noise`` so that ``rms(clean) / rms(noise)`` is ``snr_db``; return ``(noisy, scaled_noise)``.

    Parameters
    ----------
    clean, noise : ndarray [time], same length
    """
    if clean.shape != noise.shape:
        raise AudioError(f"clean and noise shapes differ: {clean.shape} vs {noise.shape}")
    speech, noise_rms = rms(clean), rms(noise)
    if noise_rms < SILENCE_RMS:
        raise AudioError("noise is digital silence; cannot mix at an SNR")
    scaled = noise * (speech / noise_rms * 10.0 ** (-snr_db / 20.0))
    return clean + scaled, scaled


def noise_excerpt(noise: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A random stretch of ``length`` samples of ``noise`` (looped if shorter); returns it and its offset."""
    if noise.size == 0:
        raise AudioError("empty noise signal")
    if noise.size >= length:
        offset = int(rng.integers(0, noise.size - length + 1))
        return noise[offset : offset + length], offset
    offset = int(rng.integers(0, noise.size))
    reps = int(np.ceil((length + offset) / noise.size))
    return np.tile(noise, reps)[offset : offset + length], offset


def colored_noise(kind: str, length: int, rng: np.random.Generator, *, sample_rate: int) -> np.ndarray:
    """Synthetic stationary noise: ``white``, ``pink``, ``brown`` or ``hum`` (50/60 Hz mains with harmonics)."""
    if kind == "hum":
        t = np.arange(length) / sample_rate
        base = rng.choice([50.0, 60.0])
        out = sum(
            rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) for k in range(1, 8)
        )
        return (out + 0.01 * rng.standard_normal(length)).astype(np.float32)
    white = rng.standard_normal(length)
    if kind == "white":
        return white.astype(np.float32)
    exponent = {"pink": 0.5, "brown": 1.0}.get(kind)
    if exponent is None:
        raise AudioError(f"unknown noise kind {kind!r}")
    spec = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    spec[1:] /= freqs[1:] ** exponent
    spec[0] = 0
    return np.fft.irfft(spec, n=length).astype(np.float32)
