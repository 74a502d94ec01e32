import json

import numpy as np
import pytest
import soundfile as sf
from conftest import make_corpus, speech_like, write_audio

from audiodenoise.errors import DatasetError
from audiodenoise.features import FeatureConfig
from audiodenoise.prepare import PrepareConfig, prepare

SMALL = PrepareConfig(segment_seconds=1.0, files_per_shard=3, valid_fraction=0.3, valid_audio_per_shard=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def dataset(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "dataset"
    summary = prepare([corpus[0]], [corpus[1]], out, config=SMALL, progress=False, log=lambda m: None)
    return out, summary


def test_prepare_writes_pairs_manifest_and_summary(dataset):
    out, summary = dataset
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert summary["pairs"]["train"] > 0 and summary["pairs"]["valid"] > 0
    assert len(rows) == sum(summary["pairs"].values())
    for row in rows:
        assert {"clean", "noise", "noise_offset_s", "snr_db", "gain_db", "split", "shard", "row"} <= set(row)
        assert -5 <= row["snr_db"] <= 20
    noisy = np.load(out / "shards" / "00000-noisy.npy")
    assert noisy.dtype == np.float16
    assert noisy.shape[1:] == (FeatureConfig().n_freqs, 16000 // 128 + 1)
    skipped = {s["skipped"].rsplit("/", 1)[-1]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"silent.wav", "broken.wav"}
    assert "not a readable audio file" in skipped["broken.wav"]
    assert json.loads((out / "summary.json").read_text())["pairs"] == summary["pairs"]


def test_validation_is_held_out_by_speaker(dataset):
    out, _ = dataset
    speakers = {"train": set(), "valid": set()}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        for source in row["clean"]:
            speakers[row["split"]].add(source["file"].rsplit("/", 1)[-1].split("-")[0])
    assert speakers["train"] and speakers["valid"]
    assert not speakers["train"] & speakers["valid"]
    wavs = sorted((out / "valid_audio").glob("*-noisy.wav"))
    assert wavs and all(sf.info(str(w)).samplerate == 16000 for w in wavs)


def test_same_seed_gives_identical_dataset(dataset, corpus, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    prepare([corpus[0]], [corpus[1]], again, config=SMALL, progress=False, log=lambda m: None)
    for shard in sorted((out / "shards").iterdir()):
        assert (again / "shards" / shard.name).read_bytes() == shard.read_bytes(), shard.name
    other_seed = tmp_path / "seed1"
    cfg = PrepareConfig.from_dict({**SMALL.to_dict(), "seed": 1})
    prepare([corpus[0]], [corpus[1]], other_seed, config=cfg, progress=False, log=lambda m: None)
    assert (other_seed / "shards" / "00000.jsonl").read_bytes() != (out / "shards" / "00000.jsonl").read_bytes()


def test_rerun_reuses_and_interrupted_run_resumes(corpus, tmp_path):
    out = tmp_path / "ds"
    prepare([corpus[0]], [corpus[1]], out, config=SMALL, progress=False, log=lambda m: None)
    first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "shards").iterdir()}
    logs = []
    prepare([corpus[0]], [corpus[1]], out, config=SMALL, progress=False, log=logs.append)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == {k: v[0] for k, v in first.items()}
    assert logs == []  # nothing to do
    # an interrupted run: the last shard never got its .jsonl (written last)
    (out / "shards" / "00001.jsonl").unlink()
    (out / "shards" / "00001-clean.npy").unlink()
    prepare([corpus[0]], [corpus[1]], out, config=SMALL, progress=False, log=logs.append)
    assert any("1 to do" in m for m in logs)
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == {k: v[1] for k, v in first.items()}


def test_clear_errors(corpus, tmp_path):
    clean, noise = corpus
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        prepare([empty], [noise], tmp_path / "a", config=SMALL, progress=False, log=lambda m: None)
    silent = tmp_path / "silent"
    silent.mkdir()
    write_audio(silent / "zero.wav", np.zeros((1, 16000), np.float32), 16000)
    with pytest.raises(DatasetError, match="no usable"):
        prepare([clean], [silent], tmp_path / "b", config=SMALL, progress=False, log=lambda m: None)
    out = tmp_path / "c"
    prepare([clean], [noise], out, config=SMALL, progress=False, log=lambda m: None)
    with pytest.raises(DatasetError, match="another feature configuration"):
        prepare([clean], [noise], out, config=SMALL, features=FeatureConfig(n_fft=256, win_length=256, hop_length=64),
                progress=False, log=lambda m: None)
    with pytest.raises(DatasetError, match="other settings"):
        prepare([clean], [noise], out, config=PrepareConfig.from_dict({**SMALL.to_dict(), "seed": 5}),
                progress=False, log=lambda m: None)


def test_shard_is_redone_when_its_input_files_change(corpus, tmp_path):
    import shutil

    clean = tmp_path / "clean"
    shutil.copytree(corpus[0], clean)
    out = tmp_path / "ds"
    prepare([clean], [corpus[1]], out, config=SMALL, progress=False, log=lambda m: None)
    before = (out / "shards" / "00000.jsonl").read_text()
    first_file = sorted(p for p in clean.rglob("*.flac"))[0]
    write_audio(first_file, speech_like(16000, 1.5, seed=42), 16000)  # same name, other content and size
    logs = []
    prepare([clean], [corpus[1]], out, config=SMALL, progress=False, log=logs.append)
    assert any("1 to do" in m for m in logs)
    assert (out / "shards" / "00000.jsonl").read_text() != before
