"""Before/after spectrogram pictures (``denoise --plot``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import audio
from .errors import AudioError

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
        fig.savefig(png, dpi=100)
    except OSError as exc:
        raise AudioError(f"{png}: cannot write plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)


def _db_spectrogram(x: np.ndarray, n_fft: int) -> np.ndarray:
    hop = n_fft // 4
    window = np.hanning(n_fft).astype(np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * window, axis=1)).T
    return 20 * np.log10(spec + 1e-10)
