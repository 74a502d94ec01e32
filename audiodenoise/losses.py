"""Training losses between the model's estimate and the clean target.

The estimate is the mask times the noisy STFT (noisy phase), as at inference.
All terms are computed in float32, whatever precision the model ran in.

- ``compressed_mag``: MSE of power-law compressed magnitudes (``|.|^0.3``);
- ``compressed_mag+complex``: 0.7 x that + 0.3 x the MSE of the compressed
  complex spectra (the noisy phase against the clean phase, as GTCRN's and
  Braun & Tashev's phase-aware terms);
- ``compressed_mag+sisdr``: the magnitude term + ``sisdr_weight`` (0.001 by
  default) x negative SI-SDR (dB) of the waveform resynthesised with the
  noisy phase;
- ``log_mag_l1``, ``compressed_mag+log``: the v0.1 alternatives.
"""

from __future__ import annotations

import torch

from .features import FeatureConfig, istft

LOSSES = ("compressed_mag", "compressed_mag+complex", "compressed_mag+sisdr", "log_mag_l1", "compressed_mag+log")
_EPS = 1e-6


def loss_fn(mask: torch.Tensor, noisy_spec: torch.Tensor, clean_spec: torch.Tensor, clean_wav: torch.Tensor, *,
            loss: str, compress_power: float, features: FeatureConfig, sisdr_weight: float = 0.001) -> torch.Tensor:
    """The training loss.

    Parameters
    ----------
    mask : Tensor [batch, freq, frames], the model's mask (float32)
    noisy_spec, clean_spec : Tensor [batch, freq, frames], complex
    clean_wav : Tensor [batch, time], the target waveform
    """
    est_mag = mask * noisy_spec.abs()
    clean_mag = clean_spec.abs()
    p = compress_power
    mag_term = torch.mean(((est_mag + _EPS) ** p - (clean_mag + _EPS) ** p) ** 2)
    if loss == "compressed_mag":
        return mag_term
    if loss == "compressed_mag+complex":
        phase_noisy = noisy_spec / (noisy_spec.abs() + _EPS)
        phase_clean = clean_spec / (clean_mag + _EPS)
        est_c = (est_mag + _EPS) ** p * phase_noisy
        clean_c = (clean_mag + _EPS) ** p * phase_clean
        return 0.7 * mag_term + 0.3 * torch.mean(torch.abs(est_c - clean_c) ** 2)
    if loss == "compressed_mag+sisdr":
        est_wav = istft(mask * noisy_spec, config=features, length=clean_wav.shape[-1])
        return mag_term - sisdr_weight * si_sdr_db(est_wav, clean_wav)
    log_term = torch.mean(torch.abs(torch.log(est_mag + features.log_eps) - torch.log(clean_mag + features.log_eps)))
    if loss == "log_mag_l1":
        return log_term
    if loss == "compressed_mag+log":
        return mag_term + 0.01 * log_term
    raise ValueError(f"unknown loss {loss!r}")


def si_sdr_db(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean SI-SDR in dB over the items of ``[batch, time]`` whose reference is not silent."""
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    energy = (ref**2).sum(dim=-1)
    keep = energy > 1e-8
    if not bool(keep.any()):
        return est.new_zeros(())
    est, ref, energy = est[keep], ref[keep], energy[keep]
    target = ((est * ref).sum(dim=-1) / energy)[:, None] * ref
    error = est - target
    ratio = (target**2).sum(dim=-1) / ((error**2).sum(dim=-1) + 1e-8)
    return torch.mean(10 * torch.log10(ratio + 1e-8))
