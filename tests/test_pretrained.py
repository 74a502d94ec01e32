"""The shipped model: checksum, full bandwidth, clean speech kept, and loading from an installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import passthrough_model

from audiodenoise.api import Denoiser, pretrained_path, pretrained_sha256
from audiodenoise.checkpoint import load_model, sha256_file
from audiodenoise.errors import ModelError
from audiodenoise.evaluate import si_sdr
from audiodenoise.features import FeatureConfig

REPO = Path(__file__).resolve().parents[1]
FULLBAND = Path(__file__).resolve().parents[2] / "shared" / "eval" / "fullband"
SPLIT_HZ = 8000.0


@pytest.fixture(scope="module")
def shipped() -> Denoiser:
    if not pretrained_path().is_file():
        pytest.skip("shipped model not built yet")
    return Denoiser.from_pretrained(device="cpu")


def _fullband_files() -> list[Path]:
    return sorted(FULLBAND.glob("*.wav")) if FULLBAND.is_dir() else []


def _band_energies_db(wav: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Energy (dB) at or below and above :data:`SPLIT_HZ` of ``wav [channels, time]``."""
    spectrum = np.abs(np.fft.rfft(wav.astype(np.float64), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(wav.shape[-1], 1 / sample_rate)
    low = spectrum[..., freqs <= SPLIT_HZ].sum()
    high = spectrum[..., freqs > SPLIT_HZ].sum()
    return 10 * np.log10(low), 10 * np.log10(high)


def test_shipped_model_loads_with_its_checksum(shipped):
    path = pretrained_path()
    digest = pretrained_sha256()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert sha256_file(path) == digest
    assert shipped.features.sample_rate == 16000
    assert shipped.model.config.n_freqs == shipped.features.n_freqs


def test_the_default_architecture_is_the_shipped_one(shipped):
    # issue 11: the measured winner is the default ModelConfig, so `train` without a [model] table builds it
    from audiodenoise.model import ModelConfig
    from audiodenoise.training import TrainConfig

    assert shipped.model.config == ModelConfig() == TrainConfig().model


def test_from_pretrained_verifies_the_checksum(shipped, monkeypatch):
    import audiodenoise.shipped as shipped

    monkeypatch.setattr(shipped, "pretrained_sha256", lambda: "0" * 64)
    with pytest.raises(ModelError, match="checksum mismatch"):
        Denoiser.from_pretrained(device="cpu")


def test_a_corrupted_copy_fails_the_checksum(shipped, tmp_path):
    data = bytearray(pretrained_path().read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the weights
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model(copy, sha256=pretrained_sha256())
    with pytest.raises(ModelError, match="checksum mismatch"):
        Denoiser.from_file(copy, sha256=pretrained_sha256(), device="cpu")


# Targets from pretrained/MODEL_CARD.md, met by the shipped v0.2 model (stage 6) on both clips: clean
# speech SI-SDR > 20 dB (female 34.9 dB, male 20.3; v0.1 21.4 / 14.5), and each band within 1 dB.
CLIPS = ["speech-female.wav", "speech-male.wav"]


@pytest.mark.parametrize("name", CLIPS)
def test_full_bandwidth_is_kept(shipped, name):
    path = FULLBAND / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    wav, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.T
    assert sample_rate > 2 * SPLIT_HZ
    out = shipped.denoise(wav, sample_rate)
    low_in, high_in = _band_energies_db(wav, sample_rate)
    low_out, high_out = _band_energies_db(out, sample_rate)
    assert abs(high_out - high_in) <= 1.0, f"above 8 kHz: {high_out - high_in:+.2f} dB"
    assert abs(low_out - low_in) <= 1.0, f"0-8 kHz: {low_out - low_in:+.2f} dB"


@pytest.mark.parametrize("name", CLIPS)
def test_clean_speech_is_kept(shipped, name):
    path = FULLBAND / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    wav, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    out = shipped.denoise(wav.T, sample_rate)
    assert si_sdr(wav[:, 0], out[0]) > 20.0


def test_bundled_example_denoises(shipped, tmp_path):
    example = pretrained_path().with_name("example-noisy.flac")
    if not example.is_file():
        pytest.skip("no bundled example yet")
    result = shipped.denoise_file(example, tmp_path / "out.flac")
    info = sf.info(str(example))
    assert (result.frames, result.sample_rate, result.channels) == (info.frames, info.samplerate, info.channels)
    out, _ = sf.read(str(tmp_path / "out.flac"), always_2d=True)
    noisy, _ = sf.read(str(example), always_2d=True)
    assert np.isfinite(out).all()
    # a denoiser removes energy from a noisy recording
    assert np.sum(out**2) < np.sum(noisy**2)


def _copy_source(dst: Path) -> Path:
    """The files a wheel is built from, copied so the build leaves nothing in the repository."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("audiodenoise", "pretrained"):
        shutil.copytree(REPO / name, dst / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dst / name)
    if not (dst / "README.md").exists():  # pyproject names it as the long description
        (dst / "README.md").write_text("audiodenoise\n")
    return dst


def test_shipped_model_loads_from_an_installed_wheel(shipped, tmp_path):
    source = _copy_source(tmp_path / "source")
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(dist)],
                   check=True, cwd=tmp_path, capture_output=True, timeout=300)
    wheels = list(dist.glob("audiodenoise-*.whl"))
    assert len(wheels) == 1
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheels[0])],
                   check=True, cwd=tmp_path, capture_output=True, timeout=300)
    assert (site / "audiodenoise" / "pretrained" / "model.safetensors").is_file()

    script = textwrap.dedent(
        """
        import audiodenoise, numpy as np
        from audiodenoise.api import Denoiser, pretrained_path
        denoiser = Denoiser.from_pretrained(device="cpu")
        out = denoiser.denoise(np.zeros((2, 4410), np.float32) + 0.01, 44100)
        assert out.shape == (2, 4410)
        from audiodenoise.card import model_card
        assert model_card()["info"]["total_steps"] == 58920  # the card's facts travel in the wheel
        print(audiodenoise.__file__)
        print(pretrained_path())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    package_file, model_path = (Path(line) for line in result.stdout.split())
    assert site in package_file.parents
    assert site in model_path.parents
    assert sha256_file(model_path) == sha256_file(pretrained_path())


@pytest.mark.parametrize("name", ["speech-female.wav", "speech-male.wav"])
def test_the_pipeline_keeps_content_above_the_model_nyquist(name):
    """With a mask of 1, a 44.1 kHz file comes back with its 8-22 kHz content: no low-pass at 8 kHz."""
    path = FULLBAND / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    wav, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    out = Denoiser(passthrough_model(), FeatureConfig(), device="cpu").denoise(wav.T, sample_rate)
    low_in, high_in = _band_energies_db(wav.T, sample_rate)
    low_out, high_out = _band_energies_db(out, sample_rate)
    assert abs(high_out - high_in) <= 0.1 and abs(low_out - low_in) <= 0.1


@pytest.mark.parametrize("case, checksum", [("missing", None), ("empty", b""), ("garbage", b"not a checksum\n")])
def test_a_missing_or_broken_checksum_file_is_one_clear_error(tmp_path, monkeypatch, case, checksum):
    # an installation whose package data lost the checksum file (one package name per case: imports are cached)
    package = tmp_path / f"broken_install_{case}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copyfile(pretrained_path(), package / "model.safetensors")
    if checksum is not None:
        (package / "model.safetensors.sha256").write_bytes(checksum)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("audiodenoise.shipped.PRETRAINED_PACKAGE", package.name)
    with pytest.raises(ModelError, match="model.safetensors.sha256: .*reinstall audiodenoise"):
        Denoiser.from_pretrained(device="cpu")
