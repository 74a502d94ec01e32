"""Pictures: dBFS scale, frequency axis by rate, the removed-noise panel."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import speech_like, write_audio

import audiodenoise.plot as plot

pytest.importorskip("librosa")


def _captured(monkeypatch) -> list:
    figures = []
    real = plot.save_figure

    def capture(fig, png, *, dpi):
        figures.append(fig)
        real(fig, png, dpi=dpi)

    monkeypatch.setattr(plot, "save_figure", capture)
    return figures


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_full_scale_sine_is_0_dbfs(sample_rate):
    n_fft, _ = plot.stft_params(sample_rate)
    freq = 40 * sample_rate / n_fft  # on a bin centre
    t = np.arange(sample_rate) / sample_rate
    for amplitude, expected in ((1.0, 0.0), (0.1, -20.0)):
        db = plot.spectrogram_dbfs(amplitude * np.sin(2 * np.pi * freq * t), sample_rate)
        assert db[:, 5:-5].max() == pytest.approx(expected, abs=0.1)
    assert plot.spectrogram_dbfs(np.zeros(4000), sample_rate).min() == plot.DB_RANGE[0]


@pytest.mark.parametrize(("sample_rate", "yscale"), [(16000, "linear"), (44100, "symlog")])
def test_before_after_has_three_panels_in_dbfs(tmp_path, monkeypatch, sample_rate, yscale):
    figures = _captured(monkeypatch)
    noisy = speech_like(sample_rate, 1.0) + 0.01
    src = write_audio(tmp_path / "noisy.wav", noisy, sample_rate, "FLOAT")
    dst = write_audio(tmp_path / "denoised.wav", 0.5 * noisy, sample_rate, "FLOAT")
    png = tmp_path / "p.png"
    plot.plot_before_after(src, dst, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    panels, colour_bar = fig.axes[:3], fig.axes[3]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["noisy input", "denoised",
                                                               "removed (noisy minus denoised)"]
    assert all(ax.get_yscale() == yscale for ax in panels)
    assert "dBFS" in colour_bar.get_ylabel() and "full-scale sine" in colour_bar.get_ylabel()
    assert not list(tmp_path.glob(".*"))  # written through a temp file


def test_plot_help_says_what_it_shows():
    from typer.testing import CliRunner

    from audiodenoise.cli.main import app

    text = " ".join(CliRunner().invoke(app, ["denoise", "--help"], terminal_width=200).output.split())
    assert "first channel, first 60 s, dBFS" in text
