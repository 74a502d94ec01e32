"""Seeded synthetic fixtures shared by the suite. Nothing comes from the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodenoise.checkpoint import save_model
from audiodenoise.features import FeatureConfig
from audiodenoise.model import DenoisingAutoencoder, ModelConfig


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread per test process: the suite runs faster on a small, busy machine."""
    torch.set_num_threads(1)


# a small model that is quick on the CPU; same design as the shipped one
TINY_MODEL = ModelConfig(channels=(32, 16), bottleneck_dilations=(1, 2))


def speech_like(sample_rate: int, seconds: float, *, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Harmonic bursts with a moving pitch, plus fricative-like noise bursts: ``float32 [channels, time]``."""
    rng = np.random.default_rng(seed)
    n = int(round(sample_rate * seconds))
    t = np.arange(n) / sample_rate
    out = np.zeros((channels, n), dtype=np.float64)
    for ch in range(channels):
        f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t + rng.random() * 6)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 20) if k * f0.max() < sample_rate / 2)
        syllables = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * t + rng.random() * 6)) ** 2
        fric = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.3 * t + rng.random() * 6) > 0.8)
        out[ch] = 0.1 * voiced * syllables + 0.05 * fric
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def write_audio(path: Path, wav: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``wav [channels, time]`` to ``path`` (format from the extension)."""
    sf.write(str(path), np.asarray(wav).T, sample_rate, subtype=subtype)
    return path


def make_model(config: ModelConfig = TINY_MODEL, seed: int = 0) -> DenoisingAutoencoder:
    """A randomly initialised model with BatchNorm statistics from real-looking input."""
    torch.manual_seed(seed)
    model = DenoisingAutoencoder(config)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, config.n_freqs, 64) * 2 - 4)
    return model.eval()


def passthrough_model() -> DenoisingAutoencoder:
    """Mask 1 everywhere: the input comes back (with the STFT's overshoot on full-scale signals)."""
    model = make_model()
    with torch.no_grad():
        model.head.bias.fill_(30.0)
    return model


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A small model file (random weights) for tests that need any valid model."""
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, make_model(), FeatureConfig(), info={"note": "test fixture"})
    return path


def make_corpus(root):
    """Six speakers (LibriSpeech-style names) of clean speech-like audio, and a noise folder."""
    clean, noise = root / "clean", root / "noise"
    (clean / "sub").mkdir(parents=True)
    noise.mkdir()
    for i in range(6):
        folder = clean / "sub" if i % 2 else clean
        write_audio(folder / f"{100 + i}-7-{i}.flac", speech_like(16000, 2.5, seed=i), 16000)
    rng = np.random.default_rng(0)
    write_audio(noise / "hiss.wav", 0.1 * rng.standard_normal((1, 16000 * 3)).astype(np.float32), 16000)
    write_audio(noise / "stereo44k.ogg", 0.1 * rng.standard_normal((2, 44100 * 2)).astype(np.float32), 44100)
    write_audio(noise / "silent.wav", np.zeros((1, 16000), np.float32), 16000)
    (noise / "broken.wav").write_text("this is not audio")
    return clean, noise


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A prepared dataset of the small corpus (one per test module that asks for it)."""
    from audiodenoise.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("train")
    clean, noise = make_corpus(root)
    out = root / "dataset"
    config = PrepareConfig(segment_seconds=1.0, files_per_shard=3, valid_fraction=0.3)
    prepare([clean], [noise], out, config=config, progress=False, log=lambda m: None)
    return out
