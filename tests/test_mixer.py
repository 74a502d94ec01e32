import dataclasses

import numpy as np
import pytest
from conftest import make_corpus

from audiodenoise.dataset import PreparedDataset
from audiodenoise.errors import ConfigError
from audiodenoise.mixer import MixConfig, Mixer
from audiodenoise.mixing import rms
from audiodenoise.prepare import PrepareConfig, prepare
from audiodenoise.store import INT16_SCALE

OFF = MixConfig(segment_seconds=1.0).without("synthetic", "babble", "speed", "eq", "band_limit", "reverb", "clip",
                                             "noise_only")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    clean, noise = make_corpus(root)
    prepare([clean], [noise], root / "ds", config=PrepareConfig(segment_seconds=1.0, valid_fraction=0.3),
            progress=False, log=lambda m: None)
    return PreparedDataset(root / "ds")


def mixer(data, config=OFF, seed=0):
    return Mixer(data.speech, data.noise, config, sample_rate=16000, seed=seed)


def test_batches_are_a_function_of_seed_and_step(data):
    m = mixer(data, MixConfig(segment_seconds=1.0))
    noisy, clean = m.batch(3, batch_size=4)
    assert noisy.shape == clean.shape == (4, 16000) and noisy.dtype == np.float32
    again = mixer(data, MixConfig(segment_seconds=1.0)).batch(3, batch_size=4)
    assert np.array_equal(noisy, again[0]) and np.array_equal(clean, again[1])
    assert not np.array_equal(noisy, m.batch(4, batch_size=4)[0])
    assert not np.array_equal(noisy, mixer(data, MixConfig(segment_seconds=1.0), seed=1).batch(3, batch_size=4)[0])
    # two ranks of two items each hold the four items of one rank of four
    ranks = [m.batch(3, batch_size=2, rank=r, world=2)[0] for r in range(2)]
    assert np.array_equal(np.concatenate(ranks), noisy)


def test_snr_and_levels_are_what_was_drawn(data):
    m = mixer(data)
    rng = np.random.default_rng(0)
    for _ in range(20):
        speech = m._speech(rng)
        noisy, clean, snr_db = m.mix_with(speech, rng)
        assert abs(20 * np.log10(rms(clean) / rms(noisy - clean)) - snr_db) < 0.01
        assert -10 <= snr_db <= 30
        level = 20 * np.log10(rms(noisy))
        assert np.abs(noisy).max() <= OFF.peak_max + 1e-6
        assert OFF.level_db[0] - 0.01 <= level <= OFF.level_db[1] + 0.01 or np.isclose(np.abs(noisy).max(),
                                                                                         OFF.peak_max)


def test_low_snrs_get_their_share(data):
    cfg = MixConfig()
    m = mixer(data, cfg)
    rng = np.random.default_rng(1)
    snrs = np.array([m._snr(rng) for _ in range(4000)])
    assert abs(np.mean(snrs < cfg.snr_db_low[1]) - cfg.low_snr_share) < 0.03
    assert snrs.min() >= cfg.snr_db_low[0] and snrs.max() <= cfg.snr_db_high[1]
    (low, high), share = cfg.snr_db_low, cfg.low_snr_share
    assert abs(np.mean(snrs < 0) - share * (0 - low) / (high - low)) < 0.03  # uniform within the low part


def test_noise_only_band_limited_clipped_and_reverberant_items(data):
    only = mixer(data, dataclasses.replace(OFF, noise_only_prob=1.0))
    noisy, clean = only.batch(0, batch_size=3)
    assert np.all(clean == 0) and np.all(rms(n) > 0 for n in noisy)
    limited = mixer(data, dataclasses.replace(OFF, band_limit_prob=1.0))
    noisy, clean = limited.batch(0, batch_size=4)
    for x in (*noisy, *clean):
        spec = np.abs(np.fft.rfft(x)) ** 2
        high = spec[np.fft.rfftfreq(x.size, 1 / 16000) > 7700].sum()
        assert high / spec.sum() < 1e-5
    clipped = mixer(data, dataclasses.replace(OFF, clip_prob=1.0))
    noisy, clean = clipped.batch(0, batch_size=3)
    assert np.abs(noisy).max() == 1.0 and np.abs(clean).max() > 1.0
    quiet_noise = dataclasses.replace(OFF, reverb_prob=1.0, snr_db_low=(120.0, 120.0), snr_db_high=(120.0, 120.0))
    noisy, clean = mixer(data, quiet_noise).batch(0, batch_size=3)
    # the input is the whole reverberant speech, the target its direct path and early reflections
    for n, c in zip(noisy, clean, strict=True):
        assert rms(n - c) > 0.05 * rms(c)
        assert np.corrcoef(n, c)[0, 1] > 0.5


def test_fixed_pool_repeats_each_mixture_once_per_pass(data):
    m = mixer(data, dataclasses.replace(MixConfig.legacy(pool_size=6), segment_seconds=1.0))
    first = np.concatenate([m.batch(s, batch_size=3)[0] for s in (0, 1)])
    second = np.concatenate([m.batch(s, batch_size=3)[0] for s in (2, 3)])
    key = sorted(x.tobytes() for x in first)
    assert key == sorted(x.tobytes() for x in second)
    assert len(set(key)) == 6
    assert not np.array_equal(first, second)  # a new order each pass


def test_config_checks():
    with pytest.raises(ConfigError, match="speed_prob"):
        MixConfig(speed_prob=1.5)
    with pytest.raises(ConfigError, match="unknown augmentation"):
        MixConfig().without("wobble")
    assert MixConfig.from_dict(MixConfig().to_dict()) == MixConfig()


def _origin(store, crop):
    """(file index, offset in file) where ``crop`` starts in the stored streams (None if nowhere)."""
    wanted = np.round(crop * INT16_SCALE).astype(np.int64)
    for index, row in enumerate(store.files):
        stream = np.asarray(store.streams[row["shard"]], dtype=np.int64)
        for start in np.flatnonzero(stream[row["offset"] : row["offset"] + row["length"]] == wanted[0]):
            begin = row["offset"] + int(start)
            if np.array_equal(stream[begin : begin + wanted.size], wanted):
                return index, int(start)
    return None


def test_speech_focus_crops_start_in_the_matching_files(data):
    store = data.speech
    focus = store.matching("*/sub/*")
    assert 0 < focus.size < len(store)
    assert all("/sub/" in store.files[i]["file"] for i in focus)
    rng = np.random.default_rng(5)
    focused = [_origin(store, store.crop(rng, 400, files=focus)) for _ in range(30)]
    assert all(o is not None and o[0] in set(focus.tolist()) for o in focused)
    anywhere = [_origin(store, store.crop(rng, 400)) for _ in range(30)]
    assert any(o is not None and o[0] not in set(focus.tolist()) for o in anywhere)


def test_speech_focus_share_sets_how_often_the_focus_is_drawn(data, monkeypatch):
    calls = []
    crop = data.speech.crop

    def spy(rng, length, files=None):
        calls.append(files is not None)
        return crop(rng, length, files=files)

    monkeypatch.setattr(data.speech, "crop", spy)
    config = dataclasses.replace(OFF, speech_focus="*/sub/*", speech_focus_share=0.5)
    mixer(data, config).batch(0, batch_size=200)
    assert len(calls) == 200 and 70 <= sum(calls) <= 130


def test_speech_focus_off_keeps_the_mixture_stream(data):
    config = dataclasses.replace(OFF, speech_focus="*/sub/*", speech_focus_share=0.0)
    plain = mixer(data, OFF).batch(3, batch_size=4)
    for a, b in zip(plain, mixer(data, config).batch(3, batch_size=4), strict=True):
        np.testing.assert_array_equal(a, b)
    focused = dataclasses.replace(OFF, speech_focus="*/sub/*", speech_focus_share=1.0)
    assert not np.array_equal(plain[1], mixer(data, focused).batch(3, batch_size=4)[1])


def test_speech_focus_checks(data):
    with pytest.raises(ConfigError, match="needs mix.speech_focus"):
        MixConfig(speech_focus_share=0.5)
    with pytest.raises(ConfigError, match="matches none of the"):
        mixer(data, dataclasses.replace(OFF, speech_focus="*nothing-here*", speech_focus_share=0.5))
    with pytest.raises(ConfigError, match="speech_focus_share"):
        MixConfig(speech_focus="*", speech_focus_share=2.0)
