import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, make_corpus, speech_like, write_audio

from audiodenoise.api import Denoiser
from audiodenoise.checkpoint import load_model
from audiodenoise.errors import TrainingError
from audiodenoise.prepare import PrepareConfig, prepare
from audiodenoise.training import TrainConfig, batch_indices, export_checkpoint, fit, load_config

TINY_TRAIN = TrainConfig(model=TINY_MODEL, batch_size=4, epochs=2, warmup_steps=2, checkpoint_every=2,
                         valid_batches=2, valid_audio_pairs=1)
QUIET = dict(progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    clean, noise = make_corpus(root)
    out = root / "dataset"
    config = PrepareConfig(segment_seconds=1.0, files_per_shard=3, valid_fraction=0.3, valid_audio_per_shard=1)
    prepare([clean], [noise], out, config=config, progress=False, log=lambda m: None)
    return out


def weights(path):
    return load_model(path).model.state_dict()


def last_checkpoint(run):
    path = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    return path.name, torch.load(path, weights_only=True)


def test_fit_exports_a_model_and_logs(dataset, tmp_path):
    run = tmp_path / "run"
    model_path = fit(dataset, run, TINY_TRAIN, **QUIET)
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert np.isfinite(float(row["valid_loss"]))
        assert -1.0 < float(row["pesq_wb"]) <= 4.65 and 0 <= float(row["stoi"]) <= 1
    assert (run / "loss.png").stat().st_size > 1000
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == TINY_TRAIN
    denoiser = Denoiser.from_file(model_path, device="cpu")
    x = speech_like(16000, 1.0)
    assert denoiser.denoise(x, 16000).shape == x.shape
    assert load_model(model_path).info["step"] in (int(r["step"]) for r in rows)


def test_killed_run_resumes_to_the_same_result(dataset, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    fit(dataset, straight, TINY_TRAIN, **QUIET)
    fit(dataset, interrupted, TINY_TRAIN, stop_after=3, **QUIET)
    assert last_checkpoint(interrupted)[0] != last_checkpoint(straight)[0]
    fit(dataset, interrupted, resume=True, **QUIET)
    name_a, a = last_checkpoint(straight)
    name_b, b = last_checkpoint(interrupted)
    assert name_a == name_b
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])


def test_corrupt_last_checkpoint_falls_back_with_warning(dataset, tmp_path):
    run = tmp_path / "run"
    fit(dataset, run, TINY_TRAIN, stop_after=4, **QUIET)
    checkpoints = sorted((run / "checkpoints").glob("step-*.pt"))
    assert len(checkpoints) == 2
    checkpoints[-1].write_bytes(checkpoints[-1].read_bytes()[:100])
    messages = []
    fit(dataset, run, resume=True, progress=False, log=messages.append)
    assert any("unreadable" in m and checkpoints[-1].name in m for m in messages)
    assert any(f"resuming from {checkpoints[0].name}" in m for m in messages)


def test_nan_loss_stops_without_a_model(dataset, tmp_path, monkeypatch):
    import audiodenoise.training as training

    monkeypatch.setattr(training, "loss_fn", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match="loss became nan at step 1"):
        fit(dataset, tmp_path / "run", TINY_TRAIN, **QUIET)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_existing_run_needs_resume_and_init_fine_tunes(dataset, tmp_path):
    run = tmp_path / "run"
    model_path = fit(dataset, run, TINY_TRAIN, **QUIET)
    with pytest.raises(TrainingError, match="--resume"):
        fit(dataset, run, TINY_TRAIN, **QUIET)
    # --init: the architecture comes from the model file and training starts from its weights
    tuned = tmp_path / "tuned"
    tune = TrainConfig(batch_size=4, lr=1e-9, warmup_steps=1, checkpoint_every=1)
    fit(dataset, tuned, tune, init=model_path, stop_after=1, **QUIET)
    assert TrainConfig.from_dict(json.loads((tuned / "config.json").read_text())).model == TINY_MODEL
    _, state = last_checkpoint(tuned)
    for key, value in weights(model_path).items():
        if value.is_floating_point() and "running" not in key:
            assert torch.allclose(state["model"][key], value, atol=1e-6), key


def test_batch_indices_split_ranks_and_cover_each_pass():
    n, bs = 10, 2
    single = [batch_indices(s, n=n, batch_size=2 * bs, seed=0) for s in range(5)]
    ranks = [[batch_indices(s, n=n, batch_size=bs, seed=0, rank=r, world=2) for r in range(2)] for s in range(5)]
    for s in range(5):
        assert ranks[s][0] + ranks[s][1] == single[s]
    first_pass = [i for s in range(5) for i in single[s]][:n]
    assert sorted(first_pass) == list(range(n))


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('batch_size = 3\nlr = 0.01\n[model]\nchannels = [64, 32]\n')
    config = load_config(path, {"lr": 0.5, "epochs": None, "model.skip": False})
    assert (config.batch_size, config.lr, config.model.channels, config.model.skip) == (3, 0.5, (64, 32), False)
    path.write_text("batchsize = 3\n")
    with pytest.raises(Exception, match="unknown key"):
        load_config(path)


def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "audiodenoise", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_cli_prepare_train_resume_denoise_end_to_end(tmp_path):
    clean, noise = make_corpus(tmp_path)
    ds, run = tmp_path / "ds", tmp_path / "run"
    r = _cli("prepare", str(clean), "--noise", str(noise), "--out", str(ds), "--segment-seconds", "1",
             "--valid-fraction", "0.3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pairs"]["train"] > 0
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('batch_size = 4\nepochs = 2\nwarmup_steps = 1\ncheckpoint_every = 2\nvalid_audio_pairs = 1\n'
                   '[model]\nchannels = [32, 16]\nbottleneck_dilations = [1, 2]\n')
    r = _cli("train", str(ds), "--out", str(run), "--config", str(cfg), "--steps-per-epoch", "2", "--quiet",
             "--device", "cpu")
    assert r.returncode == 0, r.stderr
    r = _cli("train", str(ds), "--out", str(run), "--config", str(cfg), "--quiet")
    assert r.returncode == 1 and "--resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("train", str(ds), "--out", str(run), "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    r = _cli("export", str(run), str(tmp_path / "last.safetensors"), "--step", "3")
    assert r.returncode == 1 and "kept steps: " in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("export", str(run), str(tmp_path / "last.safetensors"))
    assert r.returncode == 0, r.stderr
    assert load_model(tmp_path / "last.safetensors").info["step"] == 4
    noisy = write_audio(tmp_path / "noisy.wav", speech_like(16000, 2.0, seed=9), 16000)
    r = subprocess.run([Path(sys.executable).parent / "denoise", "--model", str(run / "model.safetensors"),
                        str(noisy), str(tmp_path / "out.wav"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.wav").stat().st_size > 1000


def test_two_process_ddp_training(dataset, tmp_path):
    run = tmp_path / "ddp"
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('batch_size = 2\nepochs = 1\nwarmup_steps = 1\ncheckpoint_every = 2\nvalid_audio_pairs = 1\n'
                   '[model]\nchannels = [32, 16]\nbottleneck_dilations = [1, 2]\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "audiodenoise", "train", str(dataset), "--out", str(run), "--config", str(cfg), "--quiet",
           "--device", "cpu", "--steps-per-epoch", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == 1 and rows[0]["step"] == "3"  # one log, written by rank 0 only
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["step-00000002.pt", "step-00000003.pt"]
    assert load_model(run / "model.safetensors").model.config == TINY_MODEL


def test_clean_inputs_are_drawn_per_step_and_repeatable():
    from audiodenoise.training import with_clean_inputs

    noisy, clean = torch.zeros(64, 3, 5), torch.ones(64, 3, 5)
    assert with_clean_inputs(noisy, clean, 0.0, seed=0, step=0) is noisy
    assert torch.equal(with_clean_inputs(noisy, clean, 1.0, seed=0, step=0), clean)
    half = with_clean_inputs(noisy, clean, 0.5, seed=0, step=3)
    replaced = half[:, 0, 0].sum().item()
    assert 16 < replaced < 48
    assert torch.equal(half, with_clean_inputs(noisy, clean, 0.5, seed=0, step=3))
    assert not torch.equal(half, with_clean_inputs(noisy, clean, 0.5, seed=0, step=4))


def test_stop_after_then_resume_with_more_epochs(dataset, tmp_path):
    run = tmp_path / "run"
    config = TrainConfig(**{**TINY_TRAIN.__dict__, "steps_per_epoch": 2, "checkpoint_every": 100})
    fit(dataset, run, config, stop_after=3, **QUIET)
    assert last_checkpoint(run)[0] == "step-00000003.pt"  # a stop always leaves a checkpoint
    fit(dataset, run, resume=True, overrides={"epochs": 3, "clean_input_prob": 0.5}, **QUIET)
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert (saved.epochs, saved.clean_input_prob) == (3, 0.5)
    assert last_checkpoint(run)[0] == "step-00000006.pt"
    assert [int(r["step"]) for r in csv.DictReader((run / "log.csv").open())] == [2, 4, 6]


def test_export_writes_any_kept_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    fit(dataset, run, TINY_TRAIN, **QUIET)
    kept = sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.pt"))
    assert len(kept) >= 2
    for step in (kept[0], None):
        out = export_checkpoint(run, tmp_path / f"{step}.safetensors", step=step)
        chosen = step if step is not None else kept[-1]
        saved = torch.load(run / "checkpoints" / f"step-{chosen:08d}.pt", weights_only=True)["model"]
        loaded = load_model(out)
        assert loaded.info["step"] == chosen
        assert loaded.features == load_model(run / "model.safetensors").features
        for key, value in saved.items():
            assert torch.equal(loaded.model.state_dict()[key], value), key
    # the first and last checkpoints hold different weights: the step is honoured
    first, last = weights(tmp_path / f"{kept[0]}.safetensors"), weights(tmp_path / "None.safetensors")
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_export_errors(dataset, tmp_path):
    run = tmp_path / "run"
    fit(dataset, run, TINY_TRAIN, **QUIET)
    with pytest.raises(TrainingError, match="no checkpoint at step 999; kept steps: "):
        export_checkpoint(run, tmp_path / "m.safetensors", step=999)
    (tmp_path / "m.safetensors").write_bytes(b"keep")
    with pytest.raises(TrainingError, match="already exists"):
        export_checkpoint(run, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == b"keep"
    with pytest.raises(TrainingError, match="not a training run"):
        export_checkpoint(tmp_path / "nowhere", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
