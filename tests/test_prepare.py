import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import make_corpus, speech_like, write_audio

from audiodenoise.dataset import PreparedDataset
from audiodenoise.errors import DatasetError
from audiodenoise.features import FeatureConfig
from audiodenoise.mixing import rms
from audiodenoise.prepare import PrepareConfig, held_out_noise, prepare, read_valid_pairs, speech_range_db
from audiodenoise.store import INT16_SCALE

SMALL = PrepareConfig(segment_seconds=1.0, files_per_shard=3, valid_fraction=0.3)
QUIET = dict(progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def dataset(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "dataset"
    summary = prepare([corpus[0]], [corpus[1]], out, config=SMALL, **QUIET)
    return out, summary


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_stores_waveforms_validation_pairs_and_summary(dataset, corpus):
    out, summary = dataset
    data = PreparedDataset(out)
    assert summary["speech_files_train"] + summary["speech_files_valid"] == 6
    assert summary["speech_files_train"] > 0 and summary["valid_pairs"] > 0
    assert summary["noise_files"] == 2  # hiss.wav and the stereo 44.1 kHz ogg; silent and broken skipped
    skipped = {s["skipped"].rsplit("/", 1)[-1]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"silent.wav", "broken.wav"}
    assert "not a readable audio file" in skipped["broken.wav"]
    # the stored speech is the corpus file, resampled (here: already 16 kHz), trimmed and peak-normalised
    first = data.speech.files[0]
    stored = data.speech.file_signal(0)
    original, rate = sf.read(first["file"], dtype="float32")
    assert rate == 16000 and stored.size <= original.size
    assert abs(np.abs(stored).max() - 0.9) < 1e-3
    assert abs(first["rms"] - rms(stored)) < 1e-4
    pairs = read_valid_pairs(out)
    assert len(pairs) == summary["valid_pairs"] == len(data.valid())
    for pair in pairs:
        noisy, clean = sf.read(pair["noisy"])[0], sf.read(pair["clean"])[0]
        measured = 20 * np.log10(rms(clean) / rms(noisy - clean))
        assert abs(measured - pair["snr_db"]) < 0.05 and -5 <= pair["snr_db"] <= 20
        assert np.abs(noisy).max() <= 0.95 + 1e-4
    assert json.loads((out / "summary.json").read_text())["valid_pairs"] == summary["valid_pairs"]


def test_validation_is_held_out_by_speaker(dataset):
    out, _ = dataset
    data = PreparedDataset(out)
    from audiodenoise.store import WaveStore

    valid = WaveStore(out / "valid_speech", n_shards=json.loads((out / "dataset.json").read_text())["shards"]["speech"])
    train_groups = {f["group"] for f in data.speech.files}
    valid_groups = {f["group"] for f in valid.files}
    assert train_groups and valid_groups and not train_groups & valid_groups


def test_same_seed_gives_identical_dataset(dataset, corpus, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    prepare([corpus[0]], [corpus[1]], again, config=SMALL, **QUIET)
    ours = {k: v for k, v in _files(out).items() if k != "dataset.json"}
    theirs = {k: v for k, v in _files(again).items() if k != "dataset.json"}
    assert ours == theirs
    other = tmp_path / "seed1"
    prepare([corpus[0]], [corpus[1]], other, config=PrepareConfig.from_dict({**SMALL.to_dict(), "seed": 1}), **QUIET)
    assert (other / "valid" / "pairs.csv").read_bytes() != (out / "valid" / "pairs.csv").read_bytes()


def test_rerun_reuses_and_damaged_or_interrupted_runs_are_repaired(corpus, tmp_path):
    out = tmp_path / "ds"
    prepare([corpus[0]], [corpus[1]], out, config=SMALL, **QUIET)
    first = _files(out)
    logs = []
    prepare([corpus[0]], [corpus[1]], out, config=SMALL, progress=False, log=logs.append)
    assert not any("to do" in m for m in logs)  # nothing to do
    # interrupted (an index never written), truncated, and deleted shards
    (out / "speech" / "00001.jsonl").unlink()
    (out / "noise" / "00000.npy").write_bytes((out / "noise" / "00000.npy").read_bytes()[:200])
    (out / "valid_speech" / "00000.npy").unlink()
    with pytest.raises(DatasetError, match="speech/00001.jsonl: missing; the dataset is damaged, rerun"):
        PreparedDataset(out)
    prepare([corpus[0]], [corpus[1]], out, config=SMALL, progress=False, log=logs.append)
    assert any("(2 to do)" in m and "(1 to do)" in m for m in logs)
    assert _files(out) == first


def test_clear_errors_and_nothing_left_behind(corpus, tmp_path):
    clean, noise = corpus
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        prepare([empty], [noise], tmp_path / "a", config=SMALL, **QUIET)
    with pytest.raises(DatasetError, match="noise folder not found"):
        prepare([clean], [tmp_path / "nowhere"], tmp_path / "a", config=SMALL, **QUIET)
    silent = tmp_path / "silent"
    silent.mkdir()
    write_audio(silent / "zero.wav", np.zeros((1, 16000), np.float32), 16000)
    with pytest.raises(DatasetError, match="no usable"):
        prepare([clean], [silent], tmp_path / "b", config=SMALL, **QUIET)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # the corrected rerun into the same folder works
    prepare([clean], [noise], tmp_path / "b", config=SMALL, **QUIET)
    with pytest.raises(DatasetError, match="another feature configuration|other settings"):
        prepare([clean], [noise], tmp_path / "b", config=SMALL,
                features=FeatureConfig(n_fft=256, win_length=256, hop_length=64), **QUIET)
    with pytest.raises(DatasetError, match="other settings"):
        prepare([clean], [noise], tmp_path / "b", config=PrepareConfig.from_dict({**SMALL.to_dict(), "seed": 5}),
                **QUIET)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        prepare([clean], [noise], tmp_path / "file", config=SMALL, **QUIET)
    short = tmp_path / "short"
    short.mkdir()
    write_audio(short / "2-1-1.wav", speech_like(16000, 0.3), 16000)  # speaker 2 hashes to the training split
    with pytest.raises(DatasetError, match="less than one 1 s segment of usable training speech"):
        prepare([short], [noise], tmp_path / "c", config=SMALL, **QUIET)


def test_a_failed_run_with_other_settings_does_not_block_the_corrected_one(corpus, tmp_path):
    clean, noise = corpus
    out = tmp_path / "ds"
    out.mkdir()  # the user's folder: kept, and so are finished shards, but no dataset.json until the end
    bad = tmp_path / "bad_noise"
    bad.mkdir()
    write_audio(bad / "zero.wav", np.zeros((1, 16000), np.float32), 16000)
    with pytest.raises(DatasetError):
        prepare([clean], [bad], out, config=SMALL, **QUIET)
    assert out.is_dir() and not (out / "dataset.json").exists()
    prepare([clean], [noise], out, config=PrepareConfig.from_dict({**SMALL.to_dict(), "seed": 3}), **QUIET)
    assert PreparedDataset(out).valid()


def test_noisy_floor_files_are_dropped_and_reported(corpus, tmp_path):
    clean = tmp_path / "clean"
    shutil.copytree(corpus[0], clean)
    rng = np.random.default_rng(1)
    speech = speech_like(16000, 3.0, seed=7)
    hissy = speech + 0.05 * rms(speech) * 10 * rng.standard_normal(speech.shape).astype(np.float32)
    write_audio(clean / "900-1-1.flac", hissy / np.abs(hissy).max() * 0.5, 16000)
    _, range_db = speech_range_db(hissy[0], 16000)
    assert range_db < 20
    summary = prepare([clean], [corpus[1]], tmp_path / "ds", config=SMALL, **QUIET)
    reasons = [s["reason"] for s in summary["skipped"] if s["skipped"].endswith("900-1-1.flac")]
    assert summary["dropped_noisy_floor"] == 1 and reasons[0].startswith("noise floor only")
    kept = prepare([clean], [corpus[1]], tmp_path / "ds2",
                   config=PrepareConfig.from_dict({**SMALL.to_dict(), "min_speech_range_db": 0}), **QUIET)
    assert kept["dropped_noisy_floor"] == 0


def test_store_round_trips_int16(dataset):
    out, _ = dataset
    data = PreparedDataset(out)
    for i in range(len(data.speech)):
        x = data.speech.file_signal(i)
        assert x.dtype == np.float32 and np.all(np.abs(x) <= 1.0)
        assert np.allclose(x * INT16_SCALE, np.round(x * INT16_SCALE), atol=1e-3)


def test_out_inside_the_corpus_is_refused(corpus):
    from audiodenoise.errors import OutputError

    clean, noise = corpus
    with pytest.raises(OutputError):
        prepare([clean], [noise], clean / "dataset", config=SMALL, **QUIET)
    assert not (clean / "dataset").exists()


def test_a_corpus_whose_only_speaker_is_held_out_says_so(tmp_path, corpus):
    clean = tmp_path / "clean"
    clean.mkdir()
    write_audio(clean / "1-1-1.flac", speech_like(16000, 3.0, seed=1), 16000)
    with pytest.raises(DatasetError, match="all usable speech fell in the validation split"):
        prepare([clean], [corpus[1]], tmp_path / "ds",
                config=PrepareConfig.from_dict({**SMALL.to_dict(), "valid_fraction": 0.999}), **QUIET)


def _tone_noise_corpus(root, n):
    """``n`` noise files, each a pure tone at its own frequency (clear of mains-hum harmonics)."""
    folder = root / "tones"
    folder.mkdir()
    t = np.arange(int(16000 * 1.5)) / 16000
    freqs = {}
    for i in range(n):
        f = 1017.0 + 153.0 * i
        name = f"tone{chr(ord('a') + i)}.wav"  # no take numbers: each file is its own group
        write_audio(folder / name, (0.3 * np.sin(2 * np.pi * f * t))[None].astype(np.float32), 16000)
        freqs[name] = f
    return folder, freqs


def test_validation_pairs_mix_in_held_out_noise_only(corpus, tmp_path):
    noise, freqs = _tone_noise_corpus(tmp_path, 12)
    config = PrepareConfig.from_dict({**SMALL.to_dict(), "valid_noise_fraction": 0.3})
    out = tmp_path / "ds"
    summary = prepare([corpus[0]], [noise], out, config=config, **QUIET)
    n_shards = json.loads((out / "dataset.json").read_text())["shards"]["noise"]
    from audiodenoise.store import WaveStore

    train = {f["file"].rsplit("/", 1)[-1] for f in PreparedDataset(out).noise.files}
    held = {f["file"].rsplit("/", 1)[-1] for f in WaveStore(out / "valid_noise", n_shards=n_shards).files}
    assert held and train and not held & train and held | train == set(freqs)
    assert summary["noise_files"] == len(train) and summary["noise_files_valid"] == len(held)
    matched = set()
    for pair in read_valid_pairs(out):
        noisy, clean = sf.read(pair["noisy"])[0], sf.read(pair["clean"])[0]
        spectrum = np.abs(np.fft.rfft(noisy - clean)) ** 2
        hz = np.fft.rfftfreq(noisy.size, 1 / 16000)
        for name, f in freqs.items():
            if spectrum[np.abs(hz - f) < 8].sum() > 0.5 * spectrum.sum():
                matched.add(name)
    assert matched and matched <= held  # pairs draw on the held-out files, never on a training one


def test_takes_of_one_sound_stay_on_one_side_of_the_noise_split():
    from pathlib import Path

    from audiodenoise.prepare import noise_group

    assert noise_group(Path("/a/sfx/door_slam3.wav")) == noise_group(Path("/b/sfx/door_slam12.ogg"))
    assert noise_group(Path("/a/sfx/door-slam 2.wav")) != noise_group(Path("/a/other/door-slam 2.wav"))
    assert noise_group(Path("/a/sfx/42.wav")) == "noise:sfx/42"
    files = [Path(f"/c/sfx/hit{i}.wav") for i in range(20)] + [Path(f"/c/amb/wind{chr(97 + i)}.wav") for i in range(20)]
    held = held_out_noise(files, PrepareConfig(valid_noise_fraction=0.5))
    assert held and len({f in held for f in files[:20]}) == 1  # all hit takes held out, or none


def test_too_few_noise_files_hold_none_out_and_say_so(corpus, tmp_path):
    noise, freqs = _tone_noise_corpus(tmp_path, 9)
    messages = []
    config = PrepareConfig.from_dict({**SMALL.to_dict(), "valid_noise_fraction": 0.5})
    summary = prepare([corpus[0]], [noise], tmp_path / "ds", config=config, progress=False, log=messages.append)
    assert summary["noise_files"] == 9 and summary["noise_files_valid"] == 0
    assert any("too few to hold any out" in m for m in messages)
