"""Pictures: before/after spectrograms (``denoise --plot``) and the listening page's spectrograms.

Spectrograms are in dBFS: 0 dB is the level of a full-scale sine, so pictures
of different files share one scale. Above 16 kHz the frequency axis is
logarithmic, so speech does not sit in the bottom fifth of the picture.
librosa (``amplitude_to_db``, ``display.specshow``) and matplotlib are
imported on first use only: ``denoise`` without ``--plot`` never loads them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from . import audio, outputs
from .errors import AudioDenoiseError, OutputError

# longer files are shown from their start: a picture of hours is unreadable
PLOT_MAX_SECONDS = 60.0
# colour scale of every spectrogram, dBFS
DB_RANGE = (-100.0, 0.0)
DB_LABEL = "level (dBFS, 0 dB = full-scale sine)"
# rates above this get a logarithmic frequency axis
LINEAR_AXIS_MAX_RATE = 16000


def _libraries():
    """librosa (+ its display module) and pyplot with the file-only backend; a clear error without them."""
    try:
        import librosa
        import librosa.display
        import matplotlib
    except ImportError as exc:
        raise AudioDenoiseError(
            f"pictures need librosa and matplotlib ({exc.name} is missing): pip install 'audiodenoise[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return librosa, plt


def stft_params(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop_length)`` of the pictures: about 32 ms frames, 75 % overlap."""
    n_fft = 512 if sample_rate <= 24000 else 1024 if sample_rate <= 48000 else 2048
    return n_fft, n_fft // 4


def spectrogram_dbfs(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """dBFS spectrogram ``[freq, frames]`` of ``x [time]`` (Hann window, see :func:`stft_params`).

    0 dB is the peak bin of a full-scale sine (amplitude 1): with a periodic
    Hann window of ``n_fft`` samples that bin's magnitude is ``n_fft / 4``.
    """
    librosa, _ = _libraries()
    n_fft, hop = stft_params(sample_rate)
    x = np.asarray(x, dtype=np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    magnitude = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, window="hann", center=True))
    full_scale = n_fft / 4
    db = librosa.amplitude_to_db(magnitude, ref=full_scale, amin=full_scale * 10 ** (DB_RANGE[0] / 20), top_db=None)
    return np.maximum(db, DB_RANGE[0])  # the floor exactly: float32 rounding of amin lands at -100.00001


def _show(ax, db: np.ndarray, sample_rate: int, *, x_axis: str | None = "time"):
    librosa, _ = _libraries()
    n_fft, hop = stft_params(sample_rate)
    return librosa.display.specshow(
        db, sr=sample_rate, hop_length=hop, n_fft=n_fft, x_axis=x_axis,
        y_axis="log" if sample_rate > LINEAR_AXIS_MAX_RATE else "hz", cmap="magma",
        vmin=DB_RANGE[0], vmax=DB_RANGE[1], ax=ax,
    )


def plot_before_after(noisy: str | os.PathLike, denoised: str | os.PathLike, png: str | os.PathLike) -> None:
    """Write spectrograms of ``noisy``, ``denoised`` and what was removed (their difference) to ``png``.

    First channel, first :data:`PLOT_MAX_SECONDS` seconds; dBFS colour scale
    (:data:`DB_RANGE`); a logarithmic frequency axis above 16 kHz.
    """
    _, plt = _libraries()
    signals = []
    for path in (noisy, denoised):
        meta = audio.info(path)
        frames = min(meta.frames, int(PLOT_MAX_SECONDS * meta.sample_rate))
        _, block = next(audio.read_blocks(path, max(frames, 1), meta=meta))
        signals.append((block[0].astype(np.float64), meta.sample_rate))
    (x, sample_rate), (y, y_rate) = signals
    if y_rate != sample_rate:
        y = audio.resample(y[None], y_rate, sample_rate)[0]
    n = min(len(x), len(y))
    panels = [
        (f"noisy input: {Path(noisy).name}", x),
        (f"denoised: {Path(denoised).name}", y),
        ("removed (noisy minus denoised)", x[:n] - y[:n]),
    ]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, constrained_layout=True)
    try:
        for ax, (title, signal) in zip(axes, panels, strict=True):
            image = _show(ax, spectrogram_dbfs(signal, sample_rate), sample_rate, x_axis="time")
            ax.set_title(title)
            ax.label_outer()
        fig.colorbar(image, ax=axes, label=DB_LABEL)
        save_figure(fig, png, dpi=100)
    finally:
        plt.close(fig)


def spectrogram_png(x: np.ndarray, sample_rate: int, png: str | os.PathLike, *, title: str | None = None) -> None:
    """A small spectrogram picture of ``x [time]`` for the listening page (dBFS scale of :data:`DB_RANGE`)."""
    _, plt = _libraries()
    fig, ax = plt.subplots(figsize=(3.6, 1.8), constrained_layout=True)
    try:
        _show(ax, spectrogram_dbfs(x, sample_rate), sample_rate, x_axis="time")
        ax.set_xlabel("")
        ax.set_ylabel("Hz", fontsize=7)
        ax.tick_params(labelsize=7)
        if title:
            ax.set_title(title, fontsize=8)
        save_figure(fig, png, dpi=80)
    finally:
        plt.close(fig)


def colour_bar_png(png: str | os.PathLike) -> None:
    """The page's colour scale on its own: :data:`DB_RANGE`, labelled :data:`DB_LABEL`."""
    _, plt = _libraries()
    import matplotlib as mpl

    fig, ax = plt.subplots(figsize=(4.0, 0.6), constrained_layout=True)
    try:
        norm = mpl.colors.Normalize(*DB_RANGE)
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap="magma"), cax=ax, orientation="horizontal",
                     label=DB_LABEL)
        save_figure(fig, png, dpi=80)
    finally:
        plt.close(fig)


def save_figure(fig, png: str | os.PathLike, *, dpi: int) -> None:
    """Save ``fig`` in the format ``png``'s extension names, through a temp file renamed into place."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=plot_format(png), dpi=dpi)
    outputs.write_bytes(png, buffer.getvalue(), parents=True)


def plot_format(path: str | os.PathLike) -> str:
    """The picture format ``path``'s extension asks for; :class:`OutputError` if matplotlib cannot write it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    ext = Path(path).suffix.lower().lstrip(".")
    known = FigureCanvasAgg.get_supported_filetypes()
    if ext not in known:
        raise OutputError(f"{outputs.display(path)}: cannot write a plot as {ext or '(no extension)'!r}; "
                          f"use one of {', '.join(sorted(known))}")
    return ext


def check_plot_path(path: str | os.PathLike, *, overwrite: bool = False, inputs=(), planned=()) -> Path:
    """Raise :class:`OutputError` unless a plot can be written to ``path`` (format and place)."""
    plot_format(path)
    return outputs.check_output(path, overwrite=overwrite, inputs=inputs, planned=planned, what="plot")
