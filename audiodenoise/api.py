"""The Python API: :class:`Denoiser`.

>>> from audiodenoise import Denoiser
>>> denoiser = Denoiser.from_pretrained()
>>> clean = denoiser.denoise(noisy, sample_rate=44100)   # numpy or torch, [channels, time] or [time]
>>> wav, rate = soundfile.read("in.wav"); clean = denoiser.denoise(wav, rate, channels_last=True)
>>> denoiser.denoise_file("in.wav", "out.wav")

The model works on a 16 kHz log-magnitude grid; a file at any other rate is
analysed at 16 kHz and the model's mask is carried over to the file's own STFT
(its own rate, its own phase), so the output keeps the input's rate, length,
channels and full bandwidth. Content above 8 kHz gets the mask of the
6-7 kHz band of the same frame.

Files and streams are driven by :mod:`audiodenoise.file_denoising`; the shipped
model is found by :mod:`audiodenoise.shipped` and the device by
:mod:`audiodenoise.devices` (their public names are re-exported here).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch

from . import audio, file_denoising, shipped
from .checkpoint import LoadedModel, load_model
from .chunking import process_array
from .devices import resolve_device
from .errors import AudioError, ConfigError, ModelError
from .features import FeatureConfig, analyze, istft, stft
from .file_denoising import DenoiseResult
from .grids import grid_alignment, native_features, transfer_mask
from .model import DenoisingAutoencoder
from .shipped import PRETRAINED_FILE, PRETRAINED_PACKAGE, pretrained_path, pretrained_sha256

__all__ = [
    "PRETRAINED_FILE", "PRETRAINED_PACKAGE", "DenoiseResult", "Denoiser", "pretrained_path", "pretrained_sha256",
    "resolve_device",
]

# input below the model's rate: the model sees the level of the bin at this share of the input's
# bandwidth (below the resampler's roll-off) carried across the empty bins above it
BANDWIDTH_MARGIN = 0.95
# extra context beyond the model's receptive field: resampler filters and STFT edges
CONTEXT_MARGIN_SECONDS = 0.25
# channels denoised together: bounds the STFT/model working memory of many-channel files
# (a 30 kB WAV header claiming 1024 channels at 192 kHz took 900 MB at once, 290 MB in groups of 8)
CHANNEL_GROUP = 8
# float input peaking above this is refused: integer PCM stored as float (peak 32767), not audio at full scale 1.0
MAX_FLOAT_PEAK = 16.0
# a 2-D signal with more rows than columns and more rows than this is taken for [time, channels] and refused
MAX_CHANNELS_FIRST = 64


class Denoiser:
    """Denoise signals and files with a trained model.

    Parameters
    ----------
    model : the autoencoder (put in eval mode here)
    features : the feature configuration it was trained with
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``
    atten_lim_db : most attenuation applied to any bin, in dB (None: no limit);
        like DeepFilterNet's ``--atten-lim``, a low value keeps more of the
        background
    limiter : soft-limit the output below full scale so it never clips
    chunk_seconds : length of the pieces long signals are processed in
    band_carry : for input below the model's rate, show the model the level of
        the top occupied bin carried across the empty bins above it. ``None``
        (default): only for a model not trained on band-limited inputs (its
        recipe's ``mix.band_limit_prob`` is 0 or not recorded); a model that
        was reads the empty bins as they are
    """

    def __init__(
        self,
        model: DenoisingAutoencoder,
        features: FeatureConfig,
        *,
        device: str = "auto",
        atten_lim_db: float | None = None,
        limiter: bool = True,
        chunk_seconds: float = 20.0,
        info: dict | None = None,
        band_carry: bool | None = None,
    ) -> None:
        if atten_lim_db is not None and not (math.isfinite(atten_lim_db) and atten_lim_db >= 0):
            raise ConfigError(f"atten_lim_db must be a non-negative number of dB, got {atten_lim_db}")
        if not chunk_seconds > 0:
            raise ConfigError(f"chunk_seconds must be positive, got {chunk_seconds}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.features = features
        self.atten_lim_db = atten_lim_db
        self.limiter = limiter
        self.chunk_seconds = chunk_seconds
        self.info = info or {}
        self.band_carry = not trained_band_limited(self.info) if band_carry is None else bool(band_carry)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, sha256: str | None = None, **kwargs) -> Denoiser:
        """Load a model file written by ``audiodenoise train`` (or :func:`~audiodenoise.checkpoint.save_model`)."""
        loaded: LoadedModel = load_model(path, sha256=sha256)
        return cls(loaded.model, loaded.features, info=loaded.info, **kwargs)

    @classmethod
    def from_pretrained(cls, **kwargs) -> Denoiser:
        """The model shipped with the package, its checksum verified."""
        path = shipped.pretrained_path()
        if not path.is_file():
            raise ModelError(f"{path}: the shipped model is missing from this installation")
        return cls.from_file(path, sha256=shipped.pretrained_sha256(), **kwargs)

    # -- signals -------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """The model's own rate in Hz; :meth:`denoise` takes any rate from 8 to 192 kHz."""
        return self.features.sample_rate

    def denoise(self, wav, sample_rate: int, *, channels_last: bool = False):
        """Denoise a signal.

        Parameters
        ----------
        wav : ndarray or Tensor, [channels, time] or [time]; [time, channels]
            (what ``soundfile.read`` returns) with ``channels_last=True``.
            A 2-D signal with more rows than columns and more than
            :data:`MAX_CHANNELS_FIRST` rows is refused as a likely
            [time, channels] array. Float samples are at full scale
            1.0; a peak above :data:`MAX_FLOAT_PEAK` is refused as likely
            integer PCM stored as float.
        sample_rate : int, 8000 to 192000
        channels_last : ``wav`` is [time, channels]; the output is too

        Returns
        -------
        The same type, shape and (floating) dtype as ``wav``.
        """
        if channels_last:
            if getattr(wav, "ndim", None) != 2:
                raise AudioError(f"channels_last=True expects a [time, channels] signal, got shape {tuple(wav.shape)}")
            return self.denoise(wav.T, sample_rate).T
        is_torch = isinstance(wav, torch.Tensor)
        if is_torch:
            # numpy has no bfloat16: widen any torch float to float32 (the output gets wav's dtype back)
            array = (wav.detach().float() if wav.is_floating_point() else wav.detach()).cpu().numpy()
        else:
            array = np.asarray(wav)
        if array.ndim not in (1, 2):
            raise AudioError(f"expected a signal shaped [time] or [channels, time], got shape {array.shape}")
        if array.dtype.kind not in "fiu":
            raise AudioError(f"expected a numeric signal, got dtype {array.dtype}")
        if array.dtype.kind in "iu":
            raise AudioError(f"expected float samples in [-1, 1], got integer dtype {array.dtype}; scale it first")
        audio.check_signal(array)  # before the cast: 1e300 in float64 is not "infinite"
        data = np.atleast_2d(array).astype(np.float32)
        if data.shape[0] == 0:
            raise AudioError(f"signal has no channels (shape {array.shape})")
        if data.shape[1] == 0:
            raise AudioError("signal holds no samples")
        if data.shape[0] > max(data.shape[1], MAX_CHANNELS_FIRST):
            raise AudioError(
                f"signal of shape {array.shape} has more channels than samples: it looks like "
                "[time, channels] (soundfile's layout); pass x.T or channels_last=True"
            )
        peak = float(np.abs(array).max())
        if peak > MAX_FLOAT_PEAK:
            raise AudioError(
                f"peak {peak:.6g} is far beyond full scale (1.0): looks like integer PCM stored as float; "
                "divide by 32768 (16-bit) or 2147483648 (32-bit)"
            )
        if not float(sample_rate).is_integer():
            raise AudioError(f"sample rate must be a whole number of Hz, got {sample_rate!r}")
        audio.check_sample_rate(int(sample_rate))
        out = process_array(data, self.chunk_fn(int(sample_rate)), **self.chunk_plan(int(sample_rate)))
        out = out.reshape(array.shape)
        if is_torch:
            return torch.from_numpy(out).to(device=wav.device, dtype=wav.dtype)
        return out.astype(array.dtype, copy=False)

    def apply_mask(self, wav_for_mask, wav_to_filter, sample_rate: int) -> np.ndarray:
        """Filter ``wav_to_filter`` with the mask the model computes from ``wav_for_mask``.

        The output of :meth:`denoise` is this mask times the noisy STFT, so it is
        linear in the filtered signal: with ``noisy = clean + noise``,
        ``apply_mask(noisy, clean) + apply_mask(noisy, noise)`` is the denoised
        output before the limiter. No limiter is applied here.

        Parameters
        ----------
        wav_for_mask, wav_to_filter : ndarray, same shape, [channels, time] or [time]
        sample_rate : int

        Returns
        -------
        float32 ndarray shaped like ``wav_to_filter``
        """
        source = np.atleast_2d(np.asarray(wav_for_mask, dtype=np.float32))
        target = np.atleast_2d(np.asarray(wav_to_filter, dtype=np.float32))
        if source.shape != target.shape or source.ndim != 2 or source.shape[1] == 0:
            raise AudioError(f"expected two non-empty signals of one shape, got {source.shape} and {target.shape}")
        audio.check_sample_rate(int(sample_rate))
        n = source.shape[0]

        def fn(segment: np.ndarray) -> np.ndarray:  # [mask source; target] stacked by channel
            out = self._denoise_segment(segment[:n], int(sample_rate), target=segment[n:])
            return np.concatenate([segment[:n], out])

        stacked = np.concatenate([source, target])
        out = process_array(stacked, fn, **self.chunk_plan(int(sample_rate)))[n:]
        return out.reshape(np.shape(wav_to_filter))

    def denoise_batch(self, batch, sample_rate: int, *, channels_last: bool = False):
        """Denoise several signals at one rate.

        Parameters
        ----------
        batch : ndarray or Tensor [batch, channels, time], or a list of
            signals as :meth:`denoise` takes them (lengths may differ)
        sample_rate : int, 8000 to 192000
        channels_last : the signals are [time, channels] ([batch, time, channels])

        Returns
        -------
        The same type and shape: an array or tensor, or a list.
        """
        if isinstance(batch, (list, tuple)):
            return [self.denoise(wav, sample_rate, channels_last=channels_last) for wav in batch]
        if isinstance(batch, (torch.Tensor, np.ndarray)):
            if batch.ndim != 3:
                raise AudioError(f"expected a batch shaped [batch, channels, time], got shape {tuple(batch.shape)}")
            outs = [self.denoise(wav, sample_rate, channels_last=channels_last) for wav in batch]
            if isinstance(batch, torch.Tensor):
                return torch.stack(outs) if outs else batch.clone()
            return np.stack(outs) if outs else batch.copy()
        raise AudioError(f"expected a batch array, tensor or list of signals, got {type(batch).__name__}")

    # -- files -----------------------------------------------------------------

    # the file and stream drivers live in audiodenoise.file_denoising; bound here as methods
    denoise_file = file_denoising.denoise_file
    denoise_blocks = file_denoising.denoise_blocks

    # -- the chunking interface ------------------------------------------------
    # what the drivers in audiodenoise.file_denoising (files, and the pipes of audiodenoise.streams)
    # build on: a plan and a per-chunk function for audiodenoise.chunking

    def chunk_plan(self, sample_rate: int) -> dict:
        """Chunk plan in samples at ``sample_rate``: chunk, context and grid alignment.

        Returns ``{"chunk": int, "context": int, "align": int}``, the keyword
        arguments of :func:`~audiodenoise.chunking.process_array`,
        ``process_chunked`` and ``process_stream``.
        """
        model_rate = self.features.sample_rate
        native = native_features(self.features, sample_rate)
        rf_seconds = (
            self.model.config.receptive_frames * self.features.hop_length + self.features.n_fft
        ) / model_rate
        context = math.ceil((rf_seconds + CONTEXT_MARGIN_SECONDS) * sample_rate)
        return {
            "chunk": max(1, round(self.chunk_seconds * sample_rate)),
            "context": context,
            "align": grid_alignment(sample_rate, native.hop_length, model_rate, self.features.hop_length),
        }

    def chunk_fn(
        self, sample_rate: int, *, integer_output: bool = False, ceiling: float = audio.LIMIT_CEILING,
        gain: float = 1.0,
    ) -> Callable[[np.ndarray], np.ndarray]:
        """The function the chunker applies to each ``segment [channels, n]`` at ``sample_rate``.

        It denoises the segment in one pass, refuses NaN or infinite output
        (:class:`~audiodenoise.errors.ModelError`) and, with the limiter,
        soft-limits below ``ceiling`` and then scales by ``gain`` (a lossy
        output made again at a lower level); without it, ``integer_output``
        hard-clips to [-1, 1].
        """
        knee = min(audio.LIMIT_KNEE, ceiling * audio.LIMIT_KNEE / audio.LIMIT_CEILING)

        def fn(segment: np.ndarray) -> np.ndarray:
            out = self._denoise_segment(segment, sample_rate)
            if not np.isfinite(out).all():  # last guard: never write NaN (weights are checked on load)
                raise ModelError("the model produced NaN or infinite samples; its weights may be broken")
            if self.limiter:
                out = audio.soft_limit(out, knee=knee, ceiling=ceiling)
                if gain != 1.0:
                    out = out * np.float32(gain)
            elif integer_output:
                out = np.clip(out, -1.0, 1.0)
            return out

        return fn

    # -- internals -------------------------------------------------------------

    @torch.inference_mode()
    def _denoise_segment(self, segment: np.ndarray, sample_rate: int, target: np.ndarray | None = None) -> np.ndarray:
        """Denoise ``segment [channels, n]`` at ``sample_rate`` in one pass.

        With ``target`` (same shape), the mask computed from ``segment`` is
        applied to ``target`` instead.
        """
        if segment.shape[0] > CHANNEL_GROUP:  # channels are independent: a few at a time
            groups = range(0, segment.shape[0], CHANNEL_GROUP)
            return np.concatenate([
                self._denoise_segment(segment[i : i + CHANNEL_GROUP], sample_rate,
                                      None if target is None else target[i : i + CHANNEL_GROUP])
                for i in groups
            ])
        model_rate = self.features.sample_rate
        length = segment.shape[1]
        native = native_features(self.features, sample_rate)
        if length < native.n_fft:
            # shorter than one frame (a whole file that short): a few samples at 192 kHz
            # resample to none at 16 kHz, so process one zero-padded frame and cut it back
            segment = np.pad(segment, ((0, 0), (0, native.n_fft - length)))
            if target is not None:
                target = np.pad(target, ((0, 0), (0, native.n_fft - length)))
        at_model_rate = audio.resample(segment, sample_rate, model_rate)
        band_limited = {"bandwidth_hz": sample_rate / 2} if sample_rate < model_rate else {}
        mask = self.mask(torch.from_numpy(at_model_rate).to(self.device), **band_limited)
        wav = torch.from_numpy(segment if target is None else np.ascontiguousarray(target)).to(self.device)
        spec = stft(wav, config=native)  # native is self.features at the model's own rate
        if sample_rate != model_rate:
            mask = transfer_mask(mask, self.features, native, n_frames=spec.shape[-1])
        out = istft(spec * mask, config=native, length=segment.shape[1])
        out = out[:, :length].cpu().numpy()
        out[np.abs(out) < 1e-30] = 0.0  # no denormals
        return out

    def mask(self, wav: torch.Tensor, *, bandwidth_hz: float | None = None) -> torch.Tensor:
        """Mask over the model-rate STFT of ``wav [channels, time]``: ``[channels, freq, frames]``.

        ``bandwidth_hz``: the input's own bandwidth (half its rate) when that is
        below the model's. The bins above it are empty after resampling; a model
        that never saw that removes most of the speech below, so with
        :attr:`band_carry` it is shown the level of the top occupied bin carried
        across them.
        """
        log_mag, _ = analyze(wav, config=self.features)
        if self.band_carry and bandwidth_hz is not None and bandwidth_hz < self.features.sample_rate / 2:
            top = int(BANDWIDTH_MARGIN * bandwidth_hz * self.features.n_fft / self.features.sample_rate)
            log_mag = log_mag.clone()
            log_mag[..., top:, :] = log_mag[..., top - 1 : top, :]
        out = self.model(log_mag)
        if self.model.config.output == "mask":
            mask = out
        else:
            mask = (torch.exp(out - log_mag)).clamp(0.0, 1.0)
        if self.atten_lim_db is not None:
            mask = mask.clamp_min(10.0 ** (-self.atten_lim_db / 20.0))
        return mask


def trained_band_limited(info: dict) -> bool:
    """Whether a model file's recipe (``info["train_config"]``) mixed in band-limited inputs."""
    mix = (info.get("train_config") or {}).get("mix") or {}
    return float(mix.get("band_limit_prob") or 0.0) > 0.0
