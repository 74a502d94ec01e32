"""The Python API: Denoiser.denoise on numpy and torch, its errors, and the attenuation limit."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_model, speech_like, write_audio

import audiodenoise
from audiodenoise import api, shipped
from audiodenoise.api import Denoiser
from audiodenoise.errors import AudioDenoiseError, AudioError, ConfigError, ModelError
from audiodenoise.features import FeatureConfig


@pytest.fixture(scope="module")
def denoiser() -> Denoiser:
    return Denoiser(make_model(), FeatureConfig(), device="cpu")


def _mute_model():
    """A model whose mask is ~0 everywhere: it removes everything it is allowed to."""
    model = make_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-30.0)
    return model


def _energy_db(x) -> float:
    return 10 * np.log10(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def test_public_api():
    assert audiodenoise.Denoiser is Denoiser
    assert callable(audiodenoise.load_model)
    assert isinstance(audiodenoise.__version__, str)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1600,), (1, 1600), (2, 1600)])
def test_numpy_in_numpy_out(denoiser, dtype, shape):
    wav = speech_like(16000, 0.1, channels=2)[: (shape[0] if len(shape) == 2 else 1)].reshape(shape).astype(dtype)
    before = wav.copy()
    out = denoiser.denoise(wav, 16000)
    assert isinstance(out, np.ndarray)
    assert out.shape == wav.shape and out.dtype == wav.dtype
    assert np.isfinite(out).all() and not np.array_equal(out, wav)
    assert np.array_equal(wav, before)  # the input is not modified


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1600,), (2, 1600)])
def test_torch_in_torch_out(denoiser, dtype, shape):
    wav = torch.from_numpy(speech_like(16000, 0.1, channels=2)).reshape(-1)[: int(np.prod(shape))].reshape(shape)
    wav = wav.to(dtype).requires_grad_(dtype in (torch.float32, torch.float64))
    out = denoiser.denoise(wav, 16000)
    assert isinstance(out, torch.Tensor)
    assert out.shape == wav.shape and out.dtype == wav.dtype and out.device == wav.device
    assert torch.isfinite(out.float()).all()


def test_numpy_and_torch_give_the_same_result(denoiser):
    wav = speech_like(22050, 0.3, channels=2)
    a = denoiser.denoise(wav, 22050)
    b = denoiser.denoise(torch.from_numpy(wav), 22050).numpy()
    assert np.array_equal(a, b)


def test_one_dimensional_input_equals_one_channel(denoiser):
    wav = speech_like(48000, 0.2)
    assert np.array_equal(denoiser.denoise(wav[0], 48000), denoiser.denoise(wav, 48000)[0])


def test_every_channel_is_denoised_on_its_own(denoiser):
    wav = speech_like(44100, 0.3, channels=3, seed=4)
    together = denoiser.denoise(wav, 44100)
    for ch in range(3):
        alone = denoiser.denoise(wav[ch], 44100)
        assert np.abs(together[ch] - alone).max() < 1e-5
        assert np.abs(together[ch] - wav[ch]).max() > 1e-3


@pytest.mark.parametrize(
    ("wav", "match"),
    [
        (np.zeros(1000, dtype=np.int16), "integer dtype int16; scale it first"),
        (torch.zeros(1000, dtype=torch.int32), "integer dtype int32"),
        (np.zeros((2, 2, 1000), dtype=np.float32), r"\[time\] or \[channels, time\], got shape \(2, 2, 1000\)"),
        (np.zeros(0, dtype=np.float32), "holds no samples"),
        (np.zeros((2, 0), dtype=np.float32), "holds no samples"),
        (np.zeros((0, 1000), dtype=np.float32), "no channels"),
        (np.array(["a", "b"]), "expected a numeric signal"),
        (np.array([0.0, np.nan, 0.0], dtype=np.float32), "NaN or infinite"),
        (np.array([[0.0, 0.0], [np.inf, 0.0]], dtype=np.float64), "NaN or infinite"),
    ],
)
def test_bad_signals_raise_a_clear_error(denoiser, wav, match):
    with pytest.raises(AudioError, match=match) as info:
        denoiser.denoise(wav, 16000)
    assert isinstance(info.value, AudioDenoiseError)


@pytest.mark.parametrize(
    ("sample_rate", "match"),
    [
        (4000, "sample rate 4000 Hz is outside the supported 8000-192000 Hz"),
        (400000, "sample rate 400000 Hz is outside the supported 8000-192000 Hz"),
        (0, "sample rate 0 Hz"),
        (16000.5, "whole number of Hz, got 16000.5"),
    ],
)
def test_bad_sample_rate_raises_a_clear_error(denoiser, sample_rate, match):
    with pytest.raises(AudioError, match=match):
        denoiser.denoise(np.zeros(1000, np.float32), sample_rate)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 192000])
@pytest.mark.parametrize("length", [1, 3, 100])
def test_shorter_than_one_frame(denoiser, sample_rate, length):
    wav = np.full((2, length), 0.1, dtype=np.float32)
    out = denoiser.denoise(wav, sample_rate)
    assert out.shape == wav.shape and np.isfinite(out).all()


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_digital_silence_gives_exact_zeros(denoiser, sample_rate):
    out = denoiser.denoise(np.zeros((2, sample_rate // 2), np.float32), sample_rate)
    assert not out.any()


def test_full_scale_clipping_stays_in_range():
    wav = np.sign(np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)  # +-1 square wave
    boosting = make_model()
    with torch.no_grad():
        boosting.head.bias.fill_(30.0)  # mask 1: Gibbs overshoot of the square wave goes above 1
    out = Denoiser(boosting, FeatureConfig(), device="cpu").denoise(wav, 16000)
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    raw = Denoiser(boosting, FeatureConfig(), device="cpu", limiter=False).denoise(wav, 16000)
    assert np.abs(raw).max() > 1.0  # so the limiter is what kept it in range


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_attenuation_limit_is_a_floor_on_the_mask(sample_rate):
    noise = (0.1 * np.random.default_rng(0).standard_normal((1, sample_rate))).astype(np.float32)
    model = _mute_model()
    unlimited = Denoiser(model, FeatureConfig(), device="cpu").denoise(noise, sample_rate)
    assert _energy_db(unlimited) - _energy_db(noise) < -40  # the model would remove everything
    for limit_db in (6.0, 20.0):
        limited = Denoiser(model, FeatureConfig(), device="cpu", atten_lim_db=limit_db).denoise(noise, sample_rate)
        change_db = _energy_db(limited) - _energy_db(noise)
        assert -limit_db - 0.5 <= change_db <= -limit_db + 0.5, (limit_db, change_db)


def test_attenuation_limit_zero_is_a_pass_through():
    noise = (0.1 * np.random.default_rng(1).standard_normal((2, 8000))).astype(np.float32)
    out = Denoiser(_mute_model(), FeatureConfig(), device="cpu", atten_lim_db=0.0).denoise(noise, 16000)
    assert np.abs(out - noise).max() < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"atten_lim_db": -3.0}, "atten_lim_db must be a non-negative number of dB, got -3.0"),
        ({"atten_lim_db": float("nan")}, "atten_lim_db"),
        ({"chunk_seconds": 0.0}, "chunk_seconds must be positive"),
        ({"device": "gpu"}, "device must be auto, cpu or cuda, got 'gpu'"),
    ],
)
def test_bad_options_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Denoiser(make_model(), FeatureConfig(), **{"device": "cpu", **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        Denoiser(make_model(), FeatureConfig(), device="cuda")
    assert Denoiser(make_model(), FeatureConfig(), device="auto").device.type == "cpu"


def test_missing_shipped_model_is_a_model_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "pretrained_path", lambda: tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match="shipped model is missing"):
        Denoiser.from_pretrained(device="cpu")


def test_from_file_passes_options_and_info(tiny_model_file):
    denoiser = Denoiser.from_file(tiny_model_file, device="cpu", atten_lim_db=12.0, chunk_seconds=3.0)
    assert denoiser.atten_lim_db == 12.0 and denoiser.chunk_seconds == 3.0
    assert denoiser.info == {"note": "test fixture"}
    assert denoiser.features == FeatureConfig()


def test_denoise_file_equals_denoise_on_the_signal(tmp_path, denoiser):
    wav = speech_like(48000, 0.5, channels=2)
    src = write_audio(tmp_path / "in.wav", wav, 48000, "FLOAT")
    result = denoiser.denoise_file(src, tmp_path / "out.wav")
    assert (result.sample_rate, result.channels, result.frames) == (48000, 2, wav.shape[1])
    assert result.duration == pytest.approx(0.5)
    out, rate = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert rate == 48000
    assert np.abs(out.T - denoiser.denoise(wav, 48000)).max() < 1e-6


def test_soundfile_layout_is_refused_with_a_hint_and_accepted_with_channels_last(denoiser, tmp_path):
    path = write_audio(tmp_path / "stereo.wav", speech_like(16000, 0.5, channels=2, seed=3), 16000)
    wav, rate = sf.read(str(path), dtype="float32")  # [time, channels]
    assert wav.shape == (8000, 2)
    with pytest.raises(AudioError, match=r"looks like \[time, channels\].*x\.T or channels_last=True"):
        denoiser.denoise(wav, rate)
    out = denoiser.denoise(wav, rate, channels_last=True)
    assert out.shape == wav.shape
    assert np.array_equal(out, denoiser.denoise(np.ascontiguousarray(wav.T), rate).T)
    tensor_out = denoiser.denoise(torch.from_numpy(wav), rate, channels_last=True)
    assert np.array_equal(tensor_out.numpy(), out)
    with pytest.raises(AudioError, match="channels_last=True expects a \\[time, channels\\]"):
        denoiser.denoise(wav[:, 0], rate, channels_last=True)


@pytest.mark.parametrize("scale", [32767.0, 2.0**31])
def test_integer_scale_float_input_is_refused(denoiser, scale):
    wav = np.round(speech_like(16000, 0.2) * scale)  # int PCM values stored as float
    with pytest.raises(AudioError, match="looks like integer PCM stored as float; divide by 32768"):
        denoiser.denoise(wav, 16000)
    assert denoiser.denoise(wav / scale, 16000).shape == wav.shape  # scaled, it is fine


def test_overshoot_below_the_integer_scale_limit_is_denoised(denoiser):
    wav = speech_like(16000, 0.2) * (0.9 * api.MAX_FLOAT_PEAK / 0.5)  # float mixes may exceed 1.0
    assert np.isfinite(denoiser.denoise(wav, 16000)).all()


def test_sample_rate_is_the_models_own_rate():
    features = FeatureConfig()
    assert Denoiser(make_model(), features, device="cpu").sample_rate == features.sample_rate == 16000
    assert Denoiser.from_pretrained(device="cpu").sample_rate == 16000


def test_batch_call_equals_one_call_per_signal(denoiser):
    batch = np.stack([speech_like(22050, 0.2, channels=2, seed=s) for s in range(3)])  # [batch, channels, time]
    out = denoiser.denoise_batch(batch, 22050)
    assert isinstance(out, np.ndarray) and out.shape == batch.shape and out.dtype == batch.dtype
    for item, result in zip(batch, out, strict=True):
        assert np.array_equal(result, denoiser.denoise(item, 22050))
    tensor_out = denoiser.denoise_batch(torch.from_numpy(batch), 22050)
    assert isinstance(tensor_out, torch.Tensor) and np.array_equal(tensor_out.numpy(), out)
    ragged = [speech_like(22050, 0.1), speech_like(22050, 0.3, seed=1)[0]]  # lengths and ranks differ
    listed = denoiser.denoise_batch(ragged, 22050)
    assert isinstance(listed, list) and [x.shape for x in listed] == [(1, 2205), (6615,)]
    assert np.array_equal(listed[1], denoiser.denoise(ragged[1], 22050))
    last = denoiser.denoise_batch(np.ascontiguousarray(batch.transpose(0, 2, 1)), 22050, channels_last=True)
    assert np.array_equal(last, out.transpose(0, 2, 1))
    with pytest.raises(AudioError, match=r"\[batch, channels, time\]"):
        denoiser.denoise_batch(batch[0], 22050)


def recording_model(monkeypatch):
    """A model that keeps every log-magnitude input it is shown, and that list."""
    model = make_model()
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda log_mag: seen.append(log_mag.clone()) or forward(log_mag))
    return model, seen


def test_band_limited_input_shows_the_model_its_top_band_carried_across_the_empty_bins(monkeypatch):
    model, seen = recording_model(monkeypatch)
    denoiser = Denoiser(model, FeatureConfig(), device="cpu")
    wav = speech_like(8000, 0.5)
    denoiser.denoise(wav, 8000)
    log_mag = seen[-1]  # [channels, freq, frames] at 16 kHz: 31.25 Hz bins
    top = int(api.BANDWIDTH_MARGIN * 4000 / 31.25)
    assert torch.equal(log_mag[..., top:, :], log_mag[..., top - 1 : top, :].expand_as(log_mag[..., top:, :]))
    assert not torch.equal(log_mag[..., top - 2, :], log_mag[..., top - 1, :])  # below: the signal itself


BAND_LIMITED_RECIPE = {"train_config": {"mix": {"band_limit_prob": 0.1}}}


@pytest.mark.parametrize(("info", "band_carry", "carried"), [
    (BAND_LIMITED_RECIPE, None, False),  # trained on band-limited inputs: the empty bins as they are
    ({"train_config": {"mix": {"band_limit_prob": 0.0}}}, None, True),
    (BAND_LIMITED_RECIPE, True, True),  # the option overrides the recipe
    ({}, False, False),
])
def test_band_carry_follows_the_models_recipe_unless_asked(monkeypatch, info, band_carry, carried):
    model, seen = recording_model(monkeypatch)
    denoiser = Denoiser(model, FeatureConfig(), device="cpu", info=info, band_carry=band_carry)
    assert denoiser.band_carry is carried
    wav = torch.from_numpy(speech_like(16000, 0.5, seed=3))
    denoiser.mask(wav, bandwidth_hz=4000)
    plain, _ = api.analyze(wav, config=denoiser.features)
    assert torch.equal(seen[-1], plain) is not carried


def test_the_shipped_model_reads_band_limited_input_as_it_is():
    # stage 9 (and 10) was trained with 10 % band-limited mixes; on ten dev pairs at 8 / 11.025 / 12 kHz the carry
    # cost it SI-SDR (6.26 / 7.05 / 7.06 dB without it, 5.83 / 6.35 / 6.35 with it: input 7.46 / 5.86 / 5.42)
    assert Denoiser.from_pretrained(device="cpu").band_carry is False


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_full_band_input_is_not_touched_by_the_bandwidth_carry(denoiser, sample_rate):
    wav = torch.from_numpy(speech_like(16000, 0.5, seed=7))
    assert torch.equal(denoiser.mask(wav, bandwidth_hz=sample_rate / 2), denoiser.mask(wav))
