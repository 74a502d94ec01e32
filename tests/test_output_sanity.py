"""Output sanity: no clipping introduced, no DC, no denormals, and clean speech comes back nearly unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_model, passthrough_model, speech_like, write_audio
from typer.testing import CliRunner

from audiodenoise.api import Denoiser, pretrained_path
from audiodenoise.checkpoint import save_model
from audiodenoise.cli.denoise import app
from audiodenoise.evaluate import si_sdr
from audiodenoise.features import FeatureConfig

LIBRISPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech" / "librispeech-train-clean-100"
CLEAN_SI_SDR_DB = 20.0


@pytest.fixture(scope="module")
def boosting_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("boost") / "boost.safetensors"
    save_model(path, passthrough_model(), FeatureConfig())
    return path


def _full_scale_square(sample_rate: int, seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    return np.stack([np.sign(np.sin(2 * np.pi * (150 + 70 * ch) * t + 0.3)) for ch in range(channels)]).astype(
        np.float32
    )


def _denoise_file(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args] + ["-q"])
    assert result.exit_code == 0, result.stderr


# -- no clipping ------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_full_scale_input_never_clips_with_the_limiter(tmp_path, boosting_model_file, subtype):
    src = write_audio(tmp_path / "in.wav", _full_scale_square(16000, 1.0), 16000, subtype)
    _denoise_file(src, tmp_path / "out.wav", "--model", boosting_model_file)
    out, _ = sf.read(str(tmp_path / "out.wav"), dtype="float64")
    assert sf.info(str(tmp_path / "out.wav")).subtype == subtype
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    if subtype.startswith("PCM"):  # below the top code: the limiter, not the integer range, kept it in
        assert np.abs(out).max() < 1.0


def _clipped_speech(sample_rate: int, seconds: float) -> np.ndarray:
    return np.clip(speech_like(sample_rate, seconds, channels=2, seed=5) * 6, -1.0, 1.0)


def _clipped_noise(sample_rate: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rng.standard_normal((1, round(sample_rate * seconds))) * 2, -1.0, 1.0).astype(np.float32)


# without the headroom and the decode check, these decoded at peaks of 1.07-3.1
@pytest.mark.parametrize("ext, sample_rate", [("mp3", 16000), ("mp3", 44100), ("ogg", 48000), ("opus", 48000)])
@pytest.mark.parametrize("signal", [_clipped_speech, _full_scale_square, _clipped_noise],
                         ids=["clipped speech", "square", "clipped white noise"])
def test_lossy_outputs_decode_at_or_below_full_scale_with_the_limiter(tmp_path, boosting_model_file, ext,
                                                                      sample_rate, signal):
    src = write_audio(tmp_path / "in.wav", signal(sample_rate, 2.0), sample_rate, "PCM_16")
    dst = tmp_path / f"out.{ext}"
    _denoise_file(src, dst, "--model", boosting_model_file)
    out, _ = sf.read(str(dst), dtype="float32")
    assert np.abs(out).max() <= 1.0
    assert np.abs(out).max() > 0.25  # not silenced to get there (Opus at 48 kHz needed -6 dB on clipped speech)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.wav", dst.name])


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_without_limiter_integer_output_is_hard_clipped_not_wrapped(tmp_path, boosting_model_file, subtype):
    wav = _full_scale_square(16000, 1.0)
    src = write_audio(tmp_path / "in.wav", wav, 16000, subtype)
    _denoise_file(src, tmp_path / "out.wav", "--model", boosting_model_file, "--no-limiter")
    out, _ = sf.read(str(tmp_path / "out.wav"), dtype="float64", always_2d=True)
    # what the model gave, before writing: it overshoots full scale at every edge of the square wave
    loaded, _ = sf.read(str(src), dtype="float32", always_2d=True)
    raw = Denoiser(passthrough_model(), FeatureConfig(), device="cpu", limiter=False).denoise(loaded.T, 16000).T
    assert (np.abs(raw) > 1.0).sum() > 100
    lsb = 2.0 ** (1 - int(subtype[4:]))
    assert np.abs(out - np.clip(raw, -1.0, 1.0)).max() <= 2 * lsb  # clipped: a wrapped sample would be off by ~2
    assert np.all(np.sign(out[np.abs(raw) > 0.5]) == np.sign(raw[np.abs(raw) > 0.5]))


def test_without_limiter_float_output_keeps_the_overshoot(tmp_path, boosting_model_file):
    # a float file can hold it, and --no-limiter asked for the model's output as it is
    src = write_audio(tmp_path / "in.wav", _full_scale_square(16000, 1.0), 16000, "FLOAT")
    _denoise_file(src, tmp_path / "out.wav", "--model", boosting_model_file, "--no-limiter")
    out, _ = sf.read(str(tmp_path / "out.wav"), dtype="float64")
    assert np.isfinite(out).all() and np.abs(out).max() > 1.0


# -- no DC, no denormals ----------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [16000, 44100, 48000])
@pytest.mark.parametrize("which", ["tiny", "boosting"])
def test_no_dc_offset_is_introduced(sample_rate, which):
    rng = np.random.default_rng(sample_rate)
    wav = speech_like(sample_rate, 2.0, channels=2, seed=3) + 0.05 * rng.standard_normal((2, 2 * sample_rate))
    wav = (wav - wav.mean(axis=1, keepdims=True)).astype(np.float32)
    model = make_model() if which == "tiny" else passthrough_model()
    out = Denoiser(model, FeatureConfig(), device="cpu", chunk_seconds=0.5).denoise(wav, sample_rate)
    assert np.abs(out.mean(axis=1)).max() < 1e-3
    assert np.abs(out.astype(np.float64).mean(axis=1)).max() < 1e-3 * np.abs(out).max()


def _quiet_signals(sample_rate: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    n = sample_rate  # 1 s
    decay = np.exp(-np.arange(n) / (n / 120))  # a tone fading from 0.5 far into the denormal range
    return {
        "fading-tone": (0.5 * decay * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate))[None],
        "noise-at-1e-20": 1e-20 * rng.standard_normal((2, n)),
        "noise-at-1e-36": 1e-36 * rng.standard_normal((1, n)),
        "speech-then-denormals": np.concatenate(
            [speech_like(sample_rate, 0.5), 1e-40 * np.ones((1, n - sample_rate // 2))], axis=1),
    }


@pytest.mark.parametrize("name", ["fading-tone", "noise-at-1e-20", "noise-at-1e-36", "speech-then-denormals"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_denormals_in_the_output(name, dtype):
    sample_rate = 48000  # resampled to the model's 16 kHz and back: more places to make denormals
    wav = _quiet_signals(sample_rate)[name].astype(dtype)
    for model in (make_model(), passthrough_model()):
        out = Denoiser(model, FeatureConfig(), device="cpu", chunk_seconds=0.5).denoise(wav, sample_rate)
        nonzero = np.abs(out)[out != 0]
        assert nonzero.size == 0 or nonzero.min() > 1e-30, nonzero.min()


def test_no_denormals_in_a_float_file(tmp_path, boosting_model_file):
    wav = _quiet_signals(48000)["speech-then-denormals"].astype(np.float32)
    src = write_audio(tmp_path / "in.wav", wav, 48000, "FLOAT")
    _denoise_file(src, tmp_path / "out.wav", "--model", boosting_model_file)
    out, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    nonzero = np.abs(out)[out != 0]
    assert nonzero.size and nonzero.min() > 1e-30


# -- clean speech is kept (the shipped model) -------------------------------------------------------
# test_pretrained.py::test_clean_speech_is_kept does this on shared/eval/fullband; here a LibriSpeech file


@pytest.fixture(scope="module")
def shipped() -> Denoiser:
    if not pretrained_path().is_file():
        pytest.skip("shipped model not built yet")
    return Denoiser.from_pretrained(device="cpu")


# the shipped model (stage 17b) measures 28.2 dB here (stage 17 31.7, stage 16 29.3, stage 14 33.4, stage 13 28.0,
# stage 11 20.0, v0.1 16.9); strict since stage 12
def test_clean_librispeech_speech_is_nearly_unchanged(shipped):
    files = sorted(LIBRISPEECH.glob("*.flac")) if LIBRISPEECH.is_dir() else []
    if not files:
        pytest.skip(f"no LibriSpeech files under {LIBRISPEECH}")
    wav, sample_rate = sf.read(str(files[0]), dtype="float32", always_2d=True)
    out = shipped.denoise(wav.T, sample_rate)
    score = si_sdr(wav[:, 0], out[0])
    assert score > CLEAN_SI_SDR_DB, f"{files[0].name}: SI-SDR {score:.1f} dB"
