"""Scores of one output against its clean reference, by the protocol of the dev set.

PESQ-WB, STOI and SI-SDR after reading (float64, mono, 16 kHz) and aligning
the output (see :mod:`audiodenoise.evaluate` for the protocol), plus the
noise-removed / speech-distortion decomposition of a mask, and the mean with
its confidence interval that reports print.
"""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf
import soxr

from . import audio
from .errors import AudioDenoiseError, AudioError

SAMPLE_RATE = 16000
MAX_LAG_SECONDS = 0.1
METRICS = ("pesq_wb", "stoi", "si_sdr")
# what a mask does to the two parts of a pair (noisy = clean + noise), in dB
DECOMPOSITION = ("noise_removed_db", "speech_distortion_db")
_EPS = 1e-12


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB.

    Both signals are made zero-mean; the projection of ``est`` on ``ref`` is
    the target, the rest is the error.

    Parameters
    ----------
    ref, est : ndarray [time], same length
    """
    ref = np.asarray(ref, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    if ref.shape != est.shape or ref.ndim != 1:
        raise ValueError(f"expected two 1-D signals of one length, got {ref.shape} and {est.shape}")
    ref = ref - ref.mean()
    est = est - est.mean()
    scale = np.dot(est, ref) / (np.dot(ref, ref) + _EPS)
    target = scale * ref
    error = est - target
    return float(10.0 * np.log10((np.dot(target, target) + _EPS) / (np.dot(error, error) + _EPS)))


def align(
    ref: np.ndarray, out: np.ndarray, sample_rate: int, max_lag_s: float = MAX_LAG_SECONDS
) -> tuple[np.ndarray, int]:
    """Undo a pure delay of ``out`` against ``ref``.

    Finds the integer lag within ``+-max_lag_s`` that maximises the absolute
    cross-correlation (FFT), shifts ``out`` by it, then cuts or zero-pads it to
    the length of ``ref``. Ties go to the smallest lag.

    Parameters
    ----------
    ref, out : ndarray [time]
    sample_rate : int

    Returns
    -------
    aligned : ndarray [len(ref)]
    lag : int, samples by which ``out`` was late (negative: early)
    """
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    max_lag = int(round(max_lag_s * sample_rate))
    n_fft = 1 << int(math.ceil(math.log2(max(2, len(ref) + len(out)))))
    # corr[k] = sum_n out[n + k] * ref[n]; negative k wrap to the end
    corr = np.fft.irfft(np.fft.rfft(out, n_fft) * np.conj(np.fft.rfft(ref, n_fft)), n_fft)
    lags = np.arange(-max_lag, max_lag + 1)
    lags = lags[np.argsort(np.abs(lags), kind="stable")]  # 0, -1, 1, -2, 2, ...
    lag = int(lags[np.argmax(np.abs(corr[lags % n_fft]))])
    shifted = out[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), out])
    shifted = shifted[: len(ref)]
    return np.pad(shifted, (0, len(ref) - len(shifted))), lag


def prepare(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Float64, mono, 16 kHz: ``wav [time] or [channels, time]`` -> ``[time]``."""
    data = np.asarray(wav, dtype=np.float64)
    if data.ndim == 2:
        data = data.mean(axis=0)
    elif data.ndim != 1:
        raise AudioError(f"expected a signal shaped [time] or [channels, time], got shape {data.shape}")
    if sample_rate != SAMPLE_RATE:
        data = soxr.resample(data, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(data)


def read_scoring(path: str | os.PathLike) -> np.ndarray:
    """A file as the protocol reads it: float64, mono, 16 kHz, ``[time]``."""
    meta = audio.info(path)
    try:
        with audio.open_sound(path) as fh:
            data = fh.read(dtype="float64", always_2d=True)
        audio.check_signal(data, name=str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from None
    return prepare(data.T, meta.sample_rate)


def score_pair(ref, out, *, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """PESQ-WB, STOI and SI-SDR of ``out`` against ``ref``, by the protocol.

    Parameters
    ----------
    ref, out : ndarray [time] or [channels, time] at ``sample_rate``, or paths
        of audio files (read at their own rates)
    sample_rate : rate of array inputs

    Returns
    -------
    ``{"pesq_wb": ..., "stoi": ..., "si_sdr": ...}``

    Raises
    ------
    AudioError
        ``out`` is empty, not finite, or cannot be scored (e.g. silent).
    """
    return _score(_as_scoring(ref, sample_rate), _as_scoring(out, sample_rate))[0]


def _as_scoring(x, sample_rate: int) -> np.ndarray:
    if isinstance(x, (str, os.PathLike)):
        return read_scoring(x)
    return prepare(x, sample_rate)


def _score(ref: np.ndarray, out: np.ndarray, *, name: str = "output") -> tuple[dict[str, float], int]:
    """Scores of 16 kHz mono float64 ``out`` against ``ref``, and the lag removed."""
    pesq, stoi = _metric_functions()
    if out.size == 0:
        raise AudioError(f"{name}: holds no samples")
    if not np.isfinite(out).all():
        raise AudioError(f"{name}: holds NaN or infinite samples")
    aligned, lag = align(ref, out, SAMPLE_RATE)
    if not np.any(aligned):
        raise AudioError(f"{name}: is silent after alignment; PESQ cannot score it")
    try:
        pesq_wb = float(pesq(SAMPLE_RATE, ref, aligned, "wb"))
    except (RuntimeError, ValueError) as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise AudioError(f"{name}: PESQ cannot score it ({detail})") from None
    scores = {
        "pesq_wb": pesq_wb,
        "stoi": float(stoi(ref, aligned, SAMPLE_RATE, extended=False)),
        "si_sdr": si_sdr(ref, aligned),
    }
    return scores, lag


def _metric_functions():
    try:
        from pesq import pesq
        from pystoi import stoi
    except ImportError as exc:
        raise AudioDenoiseError(
            f"evaluation needs the `eval` extra ({exc.name} is missing): pip install 'audiodenoise[eval]'"
        ) from None
    return pesq, stoi


def decomposition(
    clean: np.ndarray, noise: np.ndarray, masked_clean: np.ndarray, masked_noise: np.ndarray
) -> dict[str, float]:
    """How much of the noise a mask removed and how much it distorted the speech.

    ``noisy = clean + noise``; ``masked_*`` are the two parts filtered by the
    mask computed from ``noisy``. Energies are sums of squares over the pair:

    - ``noise_removed_db = 10 log10(E[noise] / E[masked_noise])`` (0 dB: all
      noise kept; higher is better);
    - ``speech_distortion_db = 10 log10(E[masked_clean - clean] / E[clean])``
      (very negative: speech untouched; a mask of 0.1 gives ``10 log10(0.81)``).

    Parameters
    ----------
    clean, noise, masked_clean, masked_noise : ndarray [time], one length
    """
    clean, noise, masked_clean, masked_noise = (
        np.asarray(x, dtype=np.float64) for x in (clean, noise, masked_clean, masked_noise)
    )
    if not clean.shape == noise.shape == masked_clean.shape == masked_noise.shape:
        raise ValueError("expected four signals of one shape")

    def energy(x: np.ndarray) -> float:
        return float(np.dot(x, x))

    return {
        "noise_removed_db": 10.0 * math.log10((energy(noise) + _EPS) / (energy(masked_noise) + _EPS)),
        "speech_distortion_db": 10.0 * math.log10((energy(masked_clean - clean) + _EPS) / (energy(clean) + _EPS)),
    }


def mean_ci(values) -> dict[str, float] | None:
    """Mean, 95 % confidence half-width (Student's t) and n of ``values``; None when empty.

    With one value the half-width is NaN (no spread to measure).
    """
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if data.size == 0:
        return None
    mean = float(data.mean())
    if data.size < 2:
        return {"mean": mean, "ci95": math.nan, "n": 1}
    return {"mean": mean, "ci95": _t95(data.size - 1) * float(data.std(ddof=1)) / math.sqrt(data.size),
            "n": int(data.size)}


def _t95(dof: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``dof`` degrees of freedom."""
    try:
        from scipy.stats import t
    except ImportError:  # scipy comes with the eval extra (pystoi); the normal quantile otherwise
        return 1.959964
    return float(t.ppf(0.975, dof))
