"""Property tests over Denoiser.denoise: any signal gives a finite signal of its shape and dtype, or our error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model, passthrough_model
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from audiodenoise.api import Denoiser
from audiodenoise.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from audiodenoise.errors import AudioDenoiseError
from audiodenoise.features import FeatureConfig

# few examples: the suite shares a small CPU; each example runs the model on several chunks
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
CHUNK_SECONDS = 0.05  # signals up to 0.3 s span up to six chunks
COMMON_RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 192000]
KINDS = ["noise", "sine", "square", "impulse", "dc", "silence"]
# silence, below the denormal range of float32, quiet, speech level, full scale, and past full scale
# (beyond MAX_FLOAT_PEAK is the "integer_scale" flaw)
AMPLITUDES = [0.0, 1e-40, 1e-30, 1e-6, 1e-3, 0.3, 1.0, 2.0, 12.0]
NUMPY_FLOATS = ["float32", "float64", "float16"]
TORCH_FLOATS = ["float32", "float64", "float16", "bfloat16"]


@pytest.fixture(scope="module")
def denoisers() -> dict[str, Denoiser]:
    features = FeatureConfig()
    model, boosting = make_model(), passthrough_model()
    return {
        "tiny": Denoiser(model, features, device="cpu", chunk_seconds=CHUNK_SECONDS),
        "boosting": Denoiser(boosting, features, device="cpu", chunk_seconds=CHUNK_SECONDS),
        "tiny-no-limiter": Denoiser(model, features, device="cpu", chunk_seconds=CHUNK_SECONDS, limiter=False),
    }


def make_signal(kind: str, amplitude: float, channels: int, length: int, sample_rate: int, seed: int) -> np.ndarray:
    """``float64 [channels, length]`` of the given kind, peaking at ``amplitude``."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sample_rate
    if kind == "noise":
        wav = rng.uniform(-1, 1, (channels, length))
    elif kind == "sine":
        freqs = rng.uniform(50, sample_rate / 2, (channels, 1))
        wav = np.sin(2 * np.pi * freqs * t)
    elif kind == "square":
        wav = np.sign(np.sin(2 * np.pi * rng.uniform(50, 2000, (channels, 1)) * t + 0.1))
    elif kind == "impulse":
        wav = np.zeros((channels, length))
        if length:
            wav[:, rng.integers(length)] = 1.0
    elif kind == "dc":
        wav = np.ones((channels, length))
    else:
        wav = np.zeros((channels, length))
    return amplitude * wav


FLAWS = ["rate_low", "rate_high", "rate_fraction", "integer", "integer_scale", "channels_last", "empty",
         "no_channels", "3d", "nan", "inf"]


@st.composite
def signals(draw, *, flaw: str | None = None):
    """(wav as numpy or torch, sample_rate): a valid signal, or one with ``flaw`` (one of :data:`FLAWS`)."""
    rate = draw(st.one_of(st.sampled_from(COMMON_RATES), st.integers(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)))
    # from one sample (shorter than an STFT frame) to six chunks
    chunks = draw(st.sampled_from([0, 1, 2.5, 4, 6]))
    length = round(chunks * CHUNK_SECONDS * rate) + draw(st.integers(1, 600))
    channels = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(KINDS))
    amplitude = draw(st.sampled_from(AMPLITUDES))
    seed = draw(st.integers(0, 2**16))
    use_torch = draw(st.booleans())
    dtype = draw(st.sampled_from(TORCH_FLOATS if use_torch else NUMPY_FLOATS))
    wav = make_signal(kind, amplitude, channels, length, rate, seed)
    if flaw == "rate_low":
        rate = draw(st.integers(0, MIN_SAMPLE_RATE - 1))
    elif flaw == "rate_high":
        rate = draw(st.integers(MAX_SAMPLE_RATE + 1, 10**7))
    elif flaw == "rate_fraction":
        rate = rate + 0.5
    elif flaw == "integer":
        dtype = draw(st.sampled_from(["int16", "int32"]))
        wav = np.clip(wav, -1, 1) * 32767
    elif flaw == "integer_scale":  # int16 values in a float array
        wav = make_signal("noise", 32767.0, channels, length, rate, seed)
    elif flaw == "channels_last":  # soundfile's [time, channels]
        wav = make_signal(kind, amplitude, channels, max(length, 100), rate, seed).T
    elif flaw == "empty":
        wav = wav[:, :0]
    elif flaw == "no_channels":
        wav = wav[:0]
    elif flaw == "3d":
        wav = wav[None]
    elif flaw in ("nan", "inf"):
        wav[draw(st.integers(0, channels - 1)), draw(st.integers(0, length - 1))] = float(flaw)
    if wav.shape[0] == 1 and wav.ndim == 2 and flaw != "channels_last" and draw(st.booleans()):
        wav = wav[0]  # [time]
    if use_torch:
        return torch.from_numpy(wav).to(getattr(torch, dtype)), rate
    array = wav.astype(dtype)
    if array.ndim == 2 and flaw != "channels_last" and draw(st.booleans()):
        array = np.ascontiguousarray(array.T).T  # a [channels, time] view of [time, channels] memory
    return array, rate


def _chunks(wav, rate) -> str:
    """How many chunks the signal spans, for the statistics (``-s --hypothesis-show-statistics``)."""
    n = -(-wav.shape[-1] // max(1, round(CHUNK_SECONDS * rate))) if wav.ndim else 0
    return "1" if n <= 1 else "2-4" if n <= 4 else "5+"


def _as_float64(wav) -> np.ndarray:
    return wav.double().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, dtype=np.float64)


def _check_output(wav, out) -> np.ndarray:
    """Same type, shape and dtype; finite. Returns the output as float64 numpy."""
    assert type(out) is type(wav)
    assert out.shape == wav.shape and out.dtype == wav.dtype
    values = _as_float64(out)
    assert np.isfinite(values).all()
    return values


@PROPERTY_SETTINGS
@given(case=signals(), which=st.sampled_from(["tiny", "boosting", "tiny-no-limiter"]))
def test_any_valid_signal_denoises_to_a_finite_signal_of_its_shape_and_dtype(denoisers, case, which):
    wav, rate = case
    event(f"{'torch' if isinstance(wav, torch.Tensor) else 'numpy'}, {_chunks(wav, rate)} chunk(s)")
    before = wav.clone() if isinstance(wav, torch.Tensor) else wav.copy()
    out = _check_output(wav, denoisers[which].denoise(wav, rate))
    if which != "tiny-no-limiter":
        assert np.abs(out).max(initial=0.0) <= 1.0
    assert np.array_equal(_as_float64(wav), _as_float64(before))  # the caller's signal is not modified


@pytest.mark.parametrize("flaw", FLAWS)
@settings(max_examples=5, deadline=None, derandomize=True)
@given(data=st.data())
def test_any_flawed_signal_raises_our_error_with_a_one_line_message(denoisers, flaw, data):
    wav, rate = data.draw(signals(flaw=flaw))
    with pytest.raises(AudioDenoiseError) as info:  # anything else (ValueError, RuntimeError...) fails
        denoisers["tiny"].denoise(wav, rate)
    message = str(info.value)
    assert message.strip() and "\n" not in message, repr(message)


@PROPERTY_SETTINGS
@given(case=signals(), which=st.sampled_from(["tiny", "boosting"]))
def test_limited_output_never_exceeds_full_scale(denoisers, case, which):
    # the boosting model hands the input back (with STFT overshoot): only the limiter keeps it in range
    wav, rate = case
    out = _check_output(wav, denoisers[which].denoise(wav, rate))
    assert np.abs(out).max(initial=0.0) <= 1.0


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    rate=st.sampled_from(COMMON_RATES),
    channels=st.integers(1, 3),
    length=st.integers(1, 4000),
)
def test_silence_in_silence_out(denoisers, rate, channels, length):
    # whatever the model, digital silence stays exact zeros (no dither, no DC, no denormals)
    wav = np.zeros((channels, length), np.float32)
    for which in ("tiny", "boosting"):
        assert not denoisers[which].denoise(wav, rate).any()


@pytest.mark.parametrize(
    ("dtype", "peak"),
    [(np.float32, 1e9), (np.float32, 1e30), (np.float32, 3e38), (np.float64, 3e38), (np.float64, 1e300)],
)
def test_absurd_sample_values_are_finite_or_refused(denoisers, dtype, peak):
    # float files can hold any float; the maths must not overflow into NaN output
    wav = (peak * np.random.default_rng(0).uniform(-1, 1, (2, 4000))).astype(dtype)
    try:
        out = denoisers["tiny"].denoise(wav, 16000)
    except AudioDenoiseError as exc:
        assert "far beyond full scale" in str(exc)
    else:
        assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
