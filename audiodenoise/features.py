"""Log-magnitude spectrogram analysis and synthesis with the noisy phase.

The model sees ``log(|STFT| + log_eps)`` on a fixed grid (``FeatureConfig``,
by default 16 kHz, 512-point FFT, hop 128). Synthesis takes a (denoised)
magnitude and the phase of the original STFT and returns exactly ``length``
samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ._config import config_from_dict, config_to_dict
from .errors import ConfigError


@dataclass(frozen=True)
class FeatureConfig:
    """STFT settings of the model's input.

    Sizes are in samples at ``sample_rate``, with librosa's names.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 128
    win_length: int = 512
    log_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.sample_rate < 1000:
            raise ConfigError(f"sample_rate {self.sample_rate} Hz is too low")
        if not 0 < self.hop_length <= self.win_length <= self.n_fft:
            raise ConfigError(
                f"need 0 < hop_length <= win_length <= n_fft, got "
                f"{self.hop_length}, {self.win_length}, {self.n_fft}"
            )
        if self.log_eps <= 0:
            raise ConfigError(f"log_eps must be positive, got {self.log_eps}")

    @property
    def n_freqs(self) -> int:
        """Number of frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        return config_from_dict(cls, data)

    def for_rate(self, sample_rate: int) -> FeatureConfig:
        """The same time/frequency resolution at another sample rate.

        Frame length and hop keep their duration in seconds (rounded to whole
        samples, ``n_fft`` kept even) so that bins keep their spacing in Hz.
        """
        scale = sample_rate / self.sample_rate
        n_fft = max(2, 2 * round(self.n_fft * scale / 2))
        win_length = min(n_fft, max(2, round(self.win_length * scale)))
        hop_length = max(1, min(win_length, round(self.hop_length * scale)))
        return dataclasses.replace(
            self, sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length
        )


def _window(config: FeatureConfig, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(config.win_length, dtype=like.dtype, device=like.device)


def stft(wav: torch.Tensor, *, config: FeatureConfig) -> torch.Tensor:
    """Complex STFT.

    Parameters
    ----------
    wav : Tensor [..., time]

    Returns
    -------
    Tensor [..., freq, frames], complex
    """
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1])
    spec = torch.stft(
        flat,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=_window(config, flat),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, *, config: FeatureConfig, length: int) -> torch.Tensor:
    """Inverse of :func:`stft`, exactly ``length`` samples.

    Parameters
    ----------
    spec : Tensor [..., freq, frames], complex

    Returns
    -------
    Tensor [..., length]
    """
    shape = spec.shape
    flat = spec.reshape(-1, *shape[-2:])
    wav = torch.istft(
        flat,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=_window(config, flat.real),
        center=True,
        length=length,
    )
    return wav.reshape(*shape[:-2], length)


def log_magnitude(spec_or_mag: torch.Tensor, *, config: FeatureConfig) -> torch.Tensor:
    """``log(|x| + log_eps)`` of a complex spectrogram or a magnitude."""
    mag = spec_or_mag.abs()
    return torch.log(mag + config.log_eps)


def magnitude(log_mag: torch.Tensor, *, config: FeatureConfig) -> torch.Tensor:
    """Inverse of :func:`log_magnitude`: ``exp(log_mag) - log_eps``, exactly zero at the floor.

    Below ``log_eps * 1e-6`` the log feature cannot tell a magnitude from zero
    (float32 resolution near ``log(log_eps)``), and ``exp(log(eps)) - eps`` is
    a rounding residue whose size depends on the CPU's vector maths; such
    magnitudes are returned as zero, so silence resynthesises as silence.
    """
    mag = torch.exp(log_mag) - config.log_eps
    return torch.where(mag > config.log_eps * 1e-6, mag, torch.zeros((), dtype=mag.dtype))


def analyze(wav: torch.Tensor, *, config: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-magnitude spectrogram and the complex STFT it came from.

    Parameters
    ----------
    wav : Tensor [..., time]

    Returns
    -------
    log_mag : Tensor [..., freq, frames]
    spec : Tensor [..., freq, frames], complex (carries the phase)
    """
    spec = stft(wav, config=config)
    return log_magnitude(spec, config=config), spec


def synthesize(
    mag: torch.Tensor, noisy_spec: torch.Tensor, *, config: FeatureConfig, length: int
) -> torch.Tensor:
    """Waveform from a magnitude and the phase of ``noisy_spec``.

    Parameters
    ----------
    mag : Tensor [..., freq, frames], real, non-negative
    noisy_spec : Tensor [..., freq, frames], complex
    length : int, samples of the output

    Returns
    -------
    Tensor [..., length]
    """
    phase = torch.polar(torch.ones_like(mag), torch.angle(noisy_spec))
    return istft(mag * phase, config=config, length=length)
