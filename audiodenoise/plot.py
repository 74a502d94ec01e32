"""Before/after spectrogram pictures (``denoise --plot``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import audio, outputs
from .errors import AudioError, OutputError

# longer files are shown from their start: a picture of hours is unreadable
PLOT_MAX_SECONDS = 60.0


def plot_before_after(noisy: str | os.PathLike, denoised: str | os.PathLike, png: str | os.PathLike) -> None:
    """Write the spectrograms of ``noisy`` and ``denoised`` (first channel) to ``png``.

    A shared dB colour scale, time in seconds, frequency in kHz.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for label, path in (("noisy input", noisy), ("denoised", denoised)):
        meta = audio.info(path)
        frames = min(meta.frames, int(PLOT_MAX_SECONDS * meta.sample_rate))
        _, block = next(audio.read_blocks(path, frames, meta=meta))
        panels.append((label, block[0], meta.sample_rate))
    n_fft = 1024 if panels[0][2] > 24000 else 512
    specs = [(label, _db_spectrogram(x, n_fft), sr) for label, x, sr in panels]
    vmax = max(float(s.max()) for _, s, _ in specs)
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, constrained_layout=True)
    for ax, (label, spec, sr) in zip(axes, specs, strict=True):
        seconds = spec.shape[1] * (n_fft // 4) / sr
        image = ax.imshow(
            spec, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 90, vmax=vmax,
            extent=(0.0, seconds, 0.0, sr / 2000.0),
        )
        ax.set_title(f"{label}: {Path(str(noisy if label.startswith('noisy') else denoised)).name}")
        ax.set_ylabel("frequency (kHz)")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=axes, label="level (dB)")
    png = Path(png)
    try:
        png.parent.mkdir(parents=True, exist_ok=True)
        with outputs.atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=100, format=plot_format(png))
    except OSError as exc:
        raise AudioError(f"{png}: cannot write plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)


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


def _db_spectrogram(x: np.ndarray, n_fft: int) -> np.ndarray:
    hop = n_fft // 4
    window = np.hanning(n_fft).astype(np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * window, axis=1)).T
    return 20 * np.log10(spec + 1e-10)
