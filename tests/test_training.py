import csv
import dataclasses
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
from audiodenoise.dataset import PreparedDataset
from audiodenoise.errors import TrainingError
from audiodenoise.mixer import MixConfig, Mixer
from audiodenoise.model import DenoisingAutoencoder
from audiodenoise.prepare import PrepareConfig, prepare
from audiodenoise.runs import export_checkpoint
from audiodenoise.training import TrainConfig, fit, load_config

TINY_TRAIN = TrainConfig(model=TINY_MODEL, mix=MixConfig(segment_seconds=1.0), batch_size=4, epochs=2,
                         steps_per_epoch=3, warmup_steps=2, checkpoint_every=2, valid_batches=2, valid_audio_pairs=1,
                         precision="fp32", ema_decay=0.9)
QUIET = dict(progress=False, log=lambda m: None)


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
    for key, value in a["ema"].items():
        assert torch.equal(value, b["ema"][key]), key
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
    tune = TrainConfig(mix=MixConfig(segment_seconds=1.0), batch_size=4, lr=1e-9, warmup_steps=1, checkpoint_every=1,
                       ema_decay=0.0)
    fit(dataset, tuned, tune, init=model_path, stop_after=1, **QUIET)
    assert TrainConfig.from_dict(json.loads((tuned / "config.json").read_text())).model == TINY_MODEL
    _, state = last_checkpoint(tuned)
    for key, value in weights(model_path).items():
        if value.is_floating_point() and "running" not in key:
            assert torch.allclose(state["model"][key], value, atol=1e-6), key


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
    assert json.loads(r.stdout)["valid_pairs"] > 0
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('batch_size = 4\nepochs = 2\nwarmup_steps = 1\ncheckpoint_every = 2\nvalid_audio_pairs = 1\n'
                   '[model]\nchannels = [32, 16]\nbottleneck_dilations = [1, 2]\n[mix]\nsegment_seconds = 1.0\n')
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
                   '[model]\nchannels = [32, 16]\nbottleneck_dilations = [1, 2]\n[mix]\nsegment_seconds = 1.0\n')
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

    noisy, clean = np.zeros((64, 5), np.float32), np.ones((64, 5), np.float32)
    assert with_clean_inputs(noisy, clean, 0.0, seed=0, step=0) is noisy
    assert np.array_equal(with_clean_inputs(noisy, clean, 1.0, seed=0, step=0), clean)
    half = with_clean_inputs(noisy, clean, 0.5, seed=0, step=3)
    assert 16 < half[:, 0].sum() < 48
    assert np.array_equal(half, with_clean_inputs(noisy, clean, 0.5, seed=0, step=3))
    assert not np.array_equal(half, with_clean_inputs(noisy, clean, 0.5, seed=0, step=4))


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
        out = export_checkpoint(run, tmp_path / f"{step}.safetensors", step=step, weights="model")
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


def test_bf16_and_fp32_runs_reach_the_same_validation_loss(dataset, tmp_path):
    from audiodenoise.training import Step, resolve_precision

    data = PreparedDataset(dataset)
    noisy, clean = Mixer(data.speech, data.noise, TINY_TRAIN.mix, sample_rate=16000, seed=0).batch(0, batch_size=4)
    grads = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = DenoisingAutoencoder(TINY_MODEL)
        step = Step(dataclasses.replace(TINY_TRAIN, precision=precision), data.features, torch.device("cpu"))
        assert step.precision == precision
        step.loss(model, torch.from_numpy(noisy), torch.from_numpy(clean)).backward()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.nn.functional.cosine_similarity(grads["fp32"], grads["bf16"], dim=0) > 0.99
    losses = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        fit(dataset, run, dataclasses.replace(TINY_TRAIN, precision=precision, epochs=1, steps_per_epoch=8), **QUIET)
        losses[precision] = float(list(csv.DictReader((run / "log.csv").open()))[-1]["valid_loss"])
    assert abs(losses["bf16"] - losses["fp32"]) < 0.05 * losses["fp32"]
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")


@pytest.mark.parametrize("native", [False, True])
def test_forced_bf16_warns_only_where_the_cpu_emulates_it(dataset, tmp_path, monkeypatch, native):
    monkeypatch.setattr("audiodenoise.training.cpu_has_bf16", lambda: native)
    messages = []
    fit(dataset, tmp_path / "run", dataclasses.replace(TINY_TRAIN, precision="bf16"), stop_after=1, progress=False,
        log=messages.append)
    warned = [m for m in messages if "no native bf16" in m]
    assert len(warned) == (0 if native else 1)
    assert all("--precision auto or fp32" in m for m in warned)


def test_ema_is_validated_and_the_better_weights_exported(dataset, tmp_path):
    run = tmp_path / "run"
    fit(dataset, run, TINY_TRAIN, **QUIET)
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert all(np.isfinite(float(r["valid_loss_ema"])) for r in rows)
    _, payload = last_checkpoint(run)
    ema = {k[len("module."):]: v for k, v in payload["ema"].items() if k.startswith("module.")}
    assert set(ema) == set(payload["model"])  # parameters and BatchNorm buffers
    assert any(not torch.equal(ema[k], payload["model"][k]) for k in ema if ema[k].is_floating_point())
    for which, state in (("ema", ema), ("model", payload["model"])):
        out = export_checkpoint(run, tmp_path / f"{which}.safetensors", weights=which)
        assert load_model(out).info["weights"] == which
        for key, value in weights(out).items():
            assert torch.equal(value, state[key]), key
    best = export_checkpoint(run, tmp_path / "best.safetensors")
    assert load_model(best).info["weights"] == payload["state"]["better"]
    exported = load_model(run / "model.safetensors").info
    best_row = min(rows, key=lambda r: min(float(r["valid_loss"]), float(r["valid_loss_ema"])))
    assert exported["step"] == int(best_row["step"]) and exported["selected_on"] == "validation loss"


@pytest.mark.parametrize("loss", ["compressed_mag+complex", "compressed_mag+sisdr"])
def test_phase_aware_losses_train(dataset, tmp_path, loss):
    run = tmp_path / "run"
    fit(dataset, run, dataclasses.replace(TINY_TRAIN, loss=loss, epochs=1), **QUIET)
    assert np.isfinite(float(list(csv.DictReader((run / "log.csv").open()))[-1]["valid_loss"]))


def test_losses_are_zero_for_a_perfect_mask():
    from audiodenoise.features import FeatureConfig, stft
    from audiodenoise.losses import LOSSES, loss_fn, si_sdr_db

    features = FeatureConfig()
    clean = torch.from_numpy(speech_like(16000, 1.0)[None, 0])
    spec = stft(clean, config=features)
    ones = torch.ones(spec.shape)
    for name in LOSSES:
        value = loss_fn(ones, spec, spec, clean, loss=name, compress_power=0.3, features=features)
        if name == "compressed_mag+sisdr":
            assert value < -0.05  # the SI-SDR term rewards the exact waveform
        else:
            assert value < 1e-6, name
        assert loss_fn(0.5 * ones, spec, spec, clean, loss=name, compress_power=0.3, features=features) > value
    assert si_sdr_db(clean, clean) > 60
    assert si_sdr_db(torch.zeros(1, 100), torch.zeros(1, 100)) == 0  # silent targets are left out


def test_sisdr_weight_scales_the_sisdr_term():
    from audiodenoise.errors import ConfigError
    from audiodenoise.features import FeatureConfig, istft, stft
    from audiodenoise.losses import loss_fn, si_sdr_db

    features = FeatureConfig()
    clean = torch.from_numpy(speech_like(16000, 1.0)[None, 0])
    noisy = clean + 0.1 * torch.from_numpy(np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32))
    noisy_spec, clean_spec = stft(noisy, config=features), stft(clean, config=features)
    mask = torch.full(noisy_spec.shape, 0.8)

    def loss(name, **kw):
        return loss_fn(mask, noisy_spec, clean_spec, clean, loss=name, compress_power=0.3, features=features, **kw)

    si_sdr = si_sdr_db(istft(mask * noisy_spec, config=features, length=clean.shape[-1]), clean)
    mag = loss("compressed_mag")
    assert torch.isclose(loss("compressed_mag+sisdr", sisdr_weight=0.0), mag)
    assert torch.isclose(loss("compressed_mag+sisdr", sisdr_weight=0.0004), mag - 0.0004 * si_sdr)
    assert torch.isclose(loss("compressed_mag+sisdr"), mag - 0.001 * si_sdr)  # the default weight
    with pytest.raises(ConfigError, match="sisdr_weight must be at least 0"):
        TrainConfig(sisdr_weight=-1.0)


def test_a_corpus_without_validation_pairs_still_ends_with_a_model(tmp_path):
    clean, noise = tmp_path / "clean", tmp_path / "noise"
    clean.mkdir()
    noise.mkdir()
    # one speaker (whose hash puts it in the training split): nothing to hold out
    write_audio(clean / "2-1-1.flac", speech_like(16000, 4.0, seed=1), 16000)
    write_audio(noise / "hiss.wav", 0.1 * np.random.default_rng(0).standard_normal((1, 32000)).astype(np.float32),
                16000)
    messages = []
    prepare([clean], [noise], tmp_path / "ds", config=PrepareConfig(segment_seconds=1.0), progress=False,
            log=messages.append)
    assert any("only 0 validation pairs" in m and "--valid-fraction" in m for m in messages)
    path = fit(tmp_path / "ds", tmp_path / "run", dataclasses.replace(TINY_TRAIN, epochs=1), **QUIET)
    info = load_model(path).info
    assert info["weights"] == "ema" and info["selected_on"].startswith("none")
    r = _cli("train", str(tmp_path / "ds"), "--out", str(tmp_path / "run2"), "--steps-per-epoch", "1", "--epochs",
             "1", "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    assert "No artists" not in r.stderr
    named = [w for w in r.stderr.split() if w.endswith(".safetensors")]
    assert named and all(Path(w).is_file() for w in named)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_stop_after_must_be_positive(dataset, tmp_path, value):
    r = _cli("train", str(dataset), "--out", str(tmp_path / "run"), "--stop-after", value)
    assert r.returncode != 0 and "--stop-after must be at least 1" in r.stderr
    assert not (tmp_path / "run").exists()


def test_export_never_replaces_a_checkpoint_and_refuses_a_folder(dataset, tmp_path):
    run = tmp_path / "run"
    fit(dataset, run, TINY_TRAIN, **QUIET)
    newest = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    before = newest.read_bytes()
    with pytest.raises(TrainingError, match="checkpoints folder"):
        export_checkpoint(run, newest, overwrite=True)
    assert newest.read_bytes() == before
    with pytest.raises(TrainingError, match="is a folder"):
        export_checkpoint(run, tmp_path, overwrite=True)
    r = _cli("export", str(run), str(tmp_path))
    assert r.returncode == 1 and "is a folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_training_steps_match_eager_ones(dataset, tmp_path):
    losses, messages = {}, []
    for compiled in (False, True):
        run = tmp_path / f"compiled-{compiled}"
        fit(dataset, run, dataclasses.replace(TINY_TRAIN, compile=compiled, epochs=1, steps_per_epoch=4),
            progress=False, log=messages.append)
        losses[compiled] = float(list(csv.DictReader((run / "log.csv").open()))[-1]["valid_loss"])
        assert load_model(run / "model.safetensors").info["step"] == 4
    assert any(", compiled," in m for m in messages)
    assert abs(losses[True] - losses[False]) < 0.01 * losses[False]


def test_compile_without_a_cpp_compiler_trains_uncompiled_and_says_so(dataset, tmp_path, monkeypatch):
    import audiodenoise.training as training

    monkeypatch.setattr(training.shutil, "which", lambda name: None)
    messages = []
    fit(dataset, tmp_path / "run", dataclasses.replace(TINY_TRAIN, compile=True, epochs=1, steps_per_epoch=2),
        progress=False, log=messages.append)
    assert any("needs a C++ compiler" in m for m in messages)
    assert not any(", compiled," in m for m in messages)
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_speech_focus_is_logged_and_kept_in_the_run_config(dataset, tmp_path):
    config = dataclasses.replace(TINY_TRAIN, epochs=1, steps_per_epoch=2,
                                 mix=MixConfig(segment_seconds=1.0, speech_focus="*/sub/*", speech_focus_share=0.5))
    lines = []
    fit(dataset, tmp_path / "run", config, progress=False, log=lines.append)
    said = [line for line in lines if "of the speech crops" in line]
    assert len(said) == 1 and "50% of the speech crops" in said[0] and "'*/sub/*'" in said[0]
    files = int(said[0].split(" files ")[0].split()[-1])
    assert 0 < files < len(PreparedDataset(dataset).speech)
    saved = TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    assert saved.mix.speech_focus == "*/sub/*" and saved.mix.speech_focus_share == 0.5
