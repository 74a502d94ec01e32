"""The model's mask on other STFT grids: a file's own rate, and chunk alignment between the grids.

The model works on a 16 kHz grid; a file at another rate is analysed at
16 kHz and the mask is carried over, by frequency in Hz and by time, onto the
file's own STFT (its rate, its phase), so the output keeps the file's rate and
bandwidth. Content above :data:`HIGH_BAND_START_HZ` gets the mask of the
:data:`EXTENSION_BAND_HZ` band of the same frame.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .features import FeatureConfig

# native-rate bins above HIGH_BAND_START_HZ take the mean mask of EXTENSION_BAND_HZ
EXTENSION_BAND_HZ = (6000.0, 7000.0)
HIGH_BAND_START_HZ = 7000.0


def transfer_mask(
    mask: torch.Tensor, features: FeatureConfig, native: FeatureConfig, *, n_frames: int
) -> torch.Tensor:
    """Carry a model-rate mask ``[channels, freq, frames]`` over to another STFT grid.

    Bins are matched by frequency in Hz (linear interpolation) up to
    :data:`HIGH_BAND_START_HZ`; bins above take the frame's mean mask over
    :data:`EXTENSION_BAND_HZ` (so a 48 kHz file keeps its 8-24 kHz content
    where the model judges the upper speech band to be speech). Frames are
    matched by time.
    """
    n_model_freqs = mask.shape[-2]
    model_bin_hz = features.sample_rate / features.n_fft
    native_hz = torch.arange(native.n_freqs, device=mask.device, dtype=torch.float64) * (
        native.sample_rate / native.n_fft
    )
    # frequency: fractional model bin for each native bin
    pos = (native_hz / model_bin_hz).clamp(max=n_model_freqs - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n_model_freqs - 1)
    w = (pos - lo).to(mask.dtype)[:, None]
    by_freq = mask[..., lo, :] * (1 - w) + mask[..., hi, :] * w
    band_lo, band_hi = (round(f / model_bin_hz) for f in EXTENSION_BAND_HZ)
    band_lo, band_hi = min(band_lo, n_model_freqs - 1), min(band_hi, n_model_freqs - 1)
    extension = mask[..., band_lo : band_hi + 1, :].mean(dim=-2, keepdim=True)
    high = (native_hz > HIGH_BAND_START_HZ)[:, None]
    if features.sample_rate / 2 > HIGH_BAND_START_HZ:
        by_freq = torch.where(high, extension, by_freq)
    # time: fractional model frame for each native frame
    n_model_frames = mask.shape[-1]
    t = torch.arange(n_frames, device=mask.device, dtype=torch.float64) * (
        native.hop_length / native.sample_rate * features.sample_rate / features.hop_length
    )
    t = t.clamp(max=n_model_frames - 1)
    t_lo = t.floor().long()
    t_hi = (t_lo + 1).clamp(max=n_model_frames - 1)
    tw = (t - t_lo).to(mask.dtype)
    return by_freq[..., t_lo] * (1 - tw) + by_freq[..., t_hi] * tw


def native_features(features: FeatureConfig, sample_rate: int) -> FeatureConfig:
    """The STFT grid at ``sample_rate`` that the model's mask is applied on.

    :meth:`FeatureConfig.for_rate` (same frame duration), with the hop shortened
    where needed to divide the span after which the model's frames and the
    native frames line up again (the chunk alignment). At 44.1 kHz the hop
    becomes 294 samples instead of 353, so chunks align every 40 ms rather than
    every 14 s, which would otherwise round each chunk's context up to 14 s.
    """
    if sample_rate == features.sample_rate:
        return features
    native = features.for_rate(sample_rate)
    span = sample_rate * features.hop_length
    step = span // math.gcd(span, features.sample_rate)  # samples per whole number of model hops
    hop = max(d for d in range(1, native.hop_length + 1) if step % d == 0)
    if hop == native.hop_length or 2 * hop < native.hop_length:  # already aligned, or no close divisor
        return native
    return dataclasses.replace(native, hop_length=hop)


def grid_alignment(sample_rate: int, native_hop: int, model_rate: int, model_hop: int, limit: int = 1 << 20) -> int:
    """Smallest sample count that is a whole number of native hops and of model hops.

    Falls back to the native hop alone when that number would exceed ``limit``
    (then chunk seams differ from a single pass by resampling error only).
    """
    step = native_hop
    n = step
    while n <= limit:
        if (n * model_rate) % (sample_rate * model_hop) == 0:
            return n
        n += step
    return native_hop
