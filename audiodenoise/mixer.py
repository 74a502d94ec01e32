"""On-the-fly training mixtures: fresh (noisy, clean) pairs every step.

A mixture is a function of ``(seed, step, rank, item)`` alone (or of
``(seed, index)`` for a fixed pool), so a resumed run draws exactly the
batches an uninterrupted one would. Per item:

1. a random crop of the training speech (speed-perturbed, equalised,
   reverberated with a synthetic room: target = direct path + 50 ms of early
   reflections);
2. noise: 1..``noises_max`` stretches of real noise/music, or synthetic
   noise (random tilt, amplitude modulation, mains hum), or babble
   (3-8 other training speech crops summed), each equalised at random;
3. mixed at an SNR from a two-part distribution (by default 30 % at -5..5 dB
   and 70 % at 5..30 dB, about uniform over -5..30 dB), scaled to a random
   level; a few items are clipped, band-limited (as from an 8 / 11.025 /
   12 kHz source: input and target alike), or noise only (target silence).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import augment
from ._config import config_from_dict, config_to_dict
from .errors import ConfigError
from .mixing import SILENCE_RMS, colored_noise, rms
from .store import WaveStore


@dataclass(frozen=True)
class MixConfig:
    """How training mixtures are drawn. Probabilities are per item; levels in dBFS RMS."""

    segment_seconds: float = 4.0
    pool_size: int = 0  # 0: fresh mixtures every step; N: a fixed pool of N mixtures (the v0.1 recipe)
    # defaults: data_prep/stage16.toml's [mix], the shipped model's recipe, as the model card's measurements chose
    # it (SNR about uniform over -5..30 dB, one noise, synthetic noise kept, no reverberation)
    snr_db_low: tuple[float, float] = (-5.0, 5.0)
    snr_db_high: tuple[float, float] = (5.0, 30.0)
    low_snr_share: float = 0.3
    level_db: tuple[float, float] = (-45.0, -12.0)
    peak_max: float = 0.99
    noises_max: int = 1
    synthetic_prob: float = 0.1
    babble_prob: float = 0.1
    babble_speakers: tuple[int, int] = (3, 8)
    speed_prob: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    eq_prob: float = 0.2
    band_limit_prob: float = 0.2
    reverb_prob: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 1.0)
    clip_prob: float = 0.02
    noise_only_prob: float = 0.02
    # draw this share of the speech crops from the stored files whose path matches the glob speech_focus
    # (e.g. "*librispeech*": a many-speaker source, or the domain you care about); 0: every sample equally likely
    speech_focus: str = ""
    speech_focus_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("synthetic_prob", "babble_prob", "speed_prob", "eq_prob", "band_limit_prob", "reverb_prob",
                     "clip_prob", "noise_only_prob", "low_snr_share", "speech_focus_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"mix.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("snr_db_low", "snr_db_high", "level_db", "speed_range", "rt60_s", "babble_speakers"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"mix.{name} must be (low, high), got {getattr(self, name)}")
        if self.level_db[1] > 0 or self.speed_range[0] <= 0 or self.rt60_s[0] <= 0:
            raise ConfigError("mix.level_db must be <= 0 dBFS; speed_range and rt60_s must be positive")
        if self.noises_max < 1 or self.pool_size < 0 or not 0.5 <= self.segment_seconds <= 60:
            raise ConfigError("mix.noises_max >= 1, mix.pool_size >= 0 and mix.segment_seconds in 0.5-60 required")
        if self.speech_focus_share > 0 and not self.speech_focus:
            raise ConfigError("mix.speech_focus_share needs mix.speech_focus, a glob on the stored speech paths")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MixConfig:
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return config_from_dict(cls, data)

    @classmethod
    def legacy(cls, *, pool_size: int = 8142) -> MixConfig:
        """The v0.1 recipe: a fixed pool, one noise, SNR uniform in -5..20 dB, level -40..-15 dBFS, no augmentation."""
        return cls(pool_size=pool_size, snr_db_low=(-5.0, 20.0), snr_db_high=(-5.0, 20.0), low_snr_share=1.0,
                   level_db=(-40.0, -15.0), peak_max=0.95, noises_max=1, synthetic_prob=0.1, babble_prob=0.0,
                   speed_prob=0.0, eq_prob=0.0, band_limit_prob=0.0, reverb_prob=0.0, clip_prob=0.0,
                   noise_only_prob=0.0)

    def without(self, *levers: str) -> MixConfig:
        """This config with the named augmentations switched off (``speed``, ``eq``, ``reverb``, ...)."""
        names = {f"{lever}_prob" for lever in levers}
        unknown = names - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown augmentation(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{name: 0.0 for name in names})


class Mixer:
    """Draws training mixtures from a speech and a noise :class:`WaveStore`."""

    def __init__(self, speech: WaveStore, noise: WaveStore, config: MixConfig, *, sample_rate: int,
                 seed: int) -> None:
        self.speech, self.noise, self.config = speech, noise, config
        self.sample_rate, self.seed = sample_rate, seed
        self.length = int(round(config.segment_seconds * sample_rate))
        self.focus = speech.matching(config.speech_focus) if config.speech_focus_share > 0 else None
        if self.focus is not None and not self.focus.size:
            raise ConfigError(f"mix.speech_focus {config.speech_focus!r} matches none of the {len(speech)} training "
                              "speech files")

    def batch(self, step: int, *, batch_size: int, rank: int = 0, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(noisy, clean)``, each ``float32 [batch_size, time]``, of rank ``rank`` at ``step``."""
        items = []
        for item in range(batch_size):
            global_item = (step * world + rank) * batch_size + item
            if self.config.pool_size:
                items.append(self.item(self._pool_rng(global_item)))
            else:
                items.append(self.item(np.random.default_rng([self.seed, 1, global_item])))
        return np.stack([n for n, _ in items]), np.stack([c for _, c in items])

    def _pool_rng(self, global_item: int) -> np.random.Generator:
        size = self.config.pool_size
        epoch, position = divmod(global_item, size)
        order = np.random.default_rng([self.seed, 2, epoch]).permutation(size)
        return np.random.default_rng([self.seed, 3, int(order[position])])

    def item(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One ``(noisy, clean)`` pair, each ``float32 [time]``."""
        noisy, clean, _ = self.mix_with(self._speech(rng), rng)
        return noisy, clean

    def mix_with(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """``(noisy, clean target, snr_db)`` for the speech ``clean [time]`` (``snr_db`` is -inf for noise only)."""
        cfg, n, sr = self.config, clean.size, self.sample_rate
        dry = clean
        if rng.random() < cfg.reverb_prob:
            rir = augment.synthetic_rir(rng, rt60_s=rng.uniform(*cfg.rt60_s), sample_rate=sr)
            dry, clean = augment.reverberate(clean, rir, sample_rate=sr)
        noise = self._noise(rng, n)
        snr_db = -np.inf
        if rng.random() < cfg.noise_only_prob:
            dry = np.zeros(n, dtype=np.float32)
            clean = dry
        else:
            snr_db = self._snr(rng)
            speech_rms = rms(clean)
            noise = noise * (speech_rms / max(rms(noise), SILENCE_RMS) * 10.0 ** (-snr_db / 20.0))
        noisy = dry + noise
        if rng.random() < cfg.band_limit_prob:
            cutoff = float(rng.choice(augment.SOURCE_CUTOFFS_HZ)) if rng.random() < 0.7 else rng.uniform(3000, 7500)
            noisy = augment.band_limit(noisy, cutoff, sample_rate=sr)
            clean = augment.band_limit(clean, cutoff, sample_rate=sr)
        gain = 10.0 ** (rng.uniform(*cfg.level_db) / 20.0) / max(rms(noisy), SILENCE_RMS)
        clipping = rng.random() < cfg.clip_prob
        peak = float(np.abs(noisy).max()) * gain
        if clipping:
            gain *= rng.uniform(1.1, 2.0) / max(peak, 1e-12)
        elif peak > cfg.peak_max:
            gain *= cfg.peak_max / peak
        noisy, clean = noisy * gain, clean * gain
        if clipping:
            noisy = augment.clip(noisy)
        return noisy.astype(np.float32), clean.astype(np.float32), snr_db

    def _speech(self, rng: np.random.Generator) -> np.ndarray:
        cfg, n = self.config, self.length
        factor = rng.uniform(*cfg.speed_range) if rng.random() < cfg.speed_prob else 1.0
        length = int(np.ceil(n * factor)) + 1
        if self.focus is not None and rng.random() < cfg.speech_focus_share:
            crop = self.speech.crop(rng, length, files=self.focus)
        else:
            crop = self.speech.crop(rng, length)
        out = augment.speed(crop, factor, sample_rate=self.sample_rate)[:n]
        if out.size < n:
            out = np.concatenate([out, np.zeros(n - out.size, dtype=np.float32)])
        if rng.random() < cfg.eq_prob:
            out = augment.random_eq(out, rng, sample_rate=self.sample_rate)
        return out

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        cfg, sr = self.config, self.sample_rate
        draw = rng.random()
        if draw < cfg.synthetic_prob:
            kind = rng.random()
            if cfg.pool_size and cfg.eq_prob == 0:  # the v0.1 recipe's synthetic noise
                noise = colored_noise(str(rng.choice(("white", "pink", "brown", "hum"))), n, rng, sample_rate=sr)
            elif kind < 0.8:
                noise = augment.tilted_noise(rng, n, sample_rate=sr)
            else:
                noise = colored_noise("hum", n, rng, sample_rate=sr)
        elif draw < cfg.synthetic_prob + cfg.babble_prob:
            voices = int(rng.integers(cfg.babble_speakers[0], cfg.babble_speakers[1] + 1))
            noise = sum(self._unit(self.speech.crop(rng, n)) * rng.uniform(0.5, 1.0) for _ in range(voices))
        else:
            count = int(rng.integers(1, cfg.noises_max + 1))
            noise = sum(self._unit(self.noise.excerpt(rng, n)) * 10 ** (rng.uniform(-6, 0) / 20)
                        for _ in range(count))
        noise = np.asarray(noise, dtype=np.float32)
        if rng.random() < cfg.eq_prob:
            noise = augment.random_eq(noise, rng, sample_rate=sr)
        return noise

    def _snr(self, rng: np.random.Generator) -> float:
        cfg = self.config
        low, high = cfg.snr_db_low, cfg.snr_db_high
        return float(rng.uniform(*low) if rng.random() < cfg.low_snr_share else rng.uniform(*high))

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return x / max(rms(x), SILENCE_RMS)
