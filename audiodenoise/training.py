"""Training the autoencoder on a prepared dataset: ``audiodenoise train``.

Every step mixes fresh (noisy, clean) pairs from the dataset's speech and
noise (:mod:`audiodenoise.mixer`), turns them into log-magnitude spectrograms
and trains the model on them; the files of the run folder are described in
:mod:`audiodenoise.runs`. The mixtures are a function of the seed and the step
alone, so a resumed run sees exactly the batches an uninterrupted run would.
Under ``torchrun`` each rank takes its own slice of every global batch; only
rank 0 writes.

The model runs in bfloat16 autocast where the CPU has native bf16 kernels
(``precision = "auto"``); features, loss and optimizer stay in float32. An
exponential moving average of the weights (BatchNorm statistics included) is
kept beside them; each validation scores both, and the better one is exported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import load_model, save_model
from .dataset import PreparedDataset, ValidPairs
from .errors import ConfigError, TrainingError
from .features import FeatureConfig, log_magnitude, stft
from .growth import grow as grow_model
from .losses import loss_fn
from .mixer import Mixer
from .model import DenoisingAutoencoder, count_parameters
from .runs import FEATURES_FILE, MODEL_FILE, checkpoints, load_latest_checkpoint, log_epoch, save_checkpoint, write_json
from .train_config import PRECISIONS, TrainConfig, cpu_has_bf16, load_config, resolve_precision

__all__ = ["PRECISIONS", "Step", "TrainConfig", "cpu_has_bf16", "describe_export", "fit", "load_config",
           "resolve_precision", "validation_loss", "with_clean_inputs"]


# -- distributed -------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size())


# -- one step ----------------------------------------------------------------


class Step:
    """Features, forward pass and loss of one batch of waveforms (shared by training, validation, benchmarks)."""

    def __init__(self, config: TrainConfig, features: FeatureConfig, device: torch.device) -> None:
        self.config, self.features, self.device = config, features, device
        self.precision = resolve_precision(config.precision, device)

    def loss(self, model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Loss of ``model`` on waveforms ``[batch, time]``."""
        noisy_spec = stft(noisy.to(self.device), config=self.features)
        clean = clean.to(self.device)
        clean_spec = stft(clean, config=self.features)
        inputs = log_magnitude(noisy_spec, config=self.features)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            mask = model(inputs)
        return loss_fn(mask.float(), noisy_spec, clean_spec, clean, loss=self.config.loss,
                       compress_power=self.config.compress_power, features=self.features,
                       sisdr_weight=self.config.sisdr_weight)


def with_clean_inputs(noisy: np.ndarray, clean: np.ndarray, prob: float, *, seed: int, step: int,
                      rank: int = 0) -> np.ndarray:
    """Replace each item's input by its clean target with probability ``prob`` (a function of seed, step, rank).

    Teaches the model to leave clean speech alone.
    """
    if prob <= 0:
        return noisy
    swap = np.random.default_rng([seed, step, rank, 1]).random(noisy.shape[0]) < prob
    return np.where(swap[:, None], clean, noisy)


def _compiled(net: torch.nn.Module, log: Callable[[str], None]) -> torch.nn.Module:
    """``torch.compile(net)`` for the training steps; inductor's CPU backend needs a C++ compiler."""
    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        log("train: compile = true needs a C++ compiler (g++ or clang++); training uncompiled")
        return net
    return torch.compile(net)


def make_ema(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An EMA copy of ``model`` (parameters and buffers, so BatchNorm statistics too); None for ``decay`` 0."""
    if decay <= 0:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


# -- the loop ----------------------------------------------------------------


def fit(
    dataset_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overrides: dict | None = None,
    init: str | os.PathLike | None = None,
    grow: bool = False,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> Path:
    """Train; return the path of the exported model (``RUN/model.safetensors``).

    With ``resume``, the run's saved config is used, with ``overrides`` (e.g.
    more epochs) applied on top. ``stop_after`` ends the run after that step
    (writing a checkpoint there), as if it had been stopped; resume it later.
    ``init`` starts from a model file's weights and architecture; with
    ``grow``, in the config's deeper architecture instead (:mod:`.growth`).
    """
    if grow and init is None:
        raise ConfigError("--grow needs --init MODEL (the model file to grow)")
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"--stop-after must be at least 1, got {stop_after}")
    run_dir = Path(run_dir)
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if device == "cuda" else torch.device(device)
    ddp = _init_distributed(dev)
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.is_file():
            raise TrainingError(f"{run_dir}: nothing to resume (no config.json)")
        saved = json.loads(config_path.read_text())
        config = load_config(None, {**_flatten(saved), **(overrides or {})})
    else:
        config = config or TrainConfig()
        if checkpoints(run_dir):
            raise TrainingError(f"{run_dir}: holds a training run; pass --resume to continue it, or another --out")
    data = PreparedDataset(dataset_dir, in_memory=True)
    features = data.features
    valid = data.valid()
    torch.manual_seed(config.seed)
    init_model = None
    if init is not None and not resume:
        init_model = load_model(init)
        if init_model.features != features:
            raise TrainingError(f"{init}: made with another feature configuration than {dataset_dir}")
        if not grow:  # with grow, grow_model checks that the config's model is a grown copy of the file's
            config = dataclasses.replace(config, model=init_model.model.config)
    if config.model.n_freqs != features.n_freqs:
        raise TrainingError(f"model has {config.model.n_freqs} bins, the dataset {features.n_freqs}")
    model = DenoisingAutoencoder(config.model).to(dev)
    if init_model is not None and grow:
        added = grow_model(model, init_model.model)
        if ddp.main:
            blocks = sum(name.startswith("bottleneck.") for name in added)
            parts = [f"{blocks} bottleneck block(s)"] * (blocks > 0) + ["a 2-D front end"] * ("front" in added)
            log(f"train: grew {init} by {' and '.join(parts)}, starting as the identity")
    elif init_model is not None:
        model.load_state_dict(init_model.model.state_dict())
    ema = make_ema(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total_steps))
    state = {"step": 0, "best": -math.inf, "best_step": 0, "better": "ema" if ema else "model"}

    def restore(payload: dict) -> None:
        model.load_state_dict(payload["model"])
        if ema is not None:
            ema.load_state_dict(payload["ema"]) if payload.get("ema") else ema.module.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])

    if resume:
        state.update(load_latest_checkpoint(run_dir, restore, log))
        if ddp.main and overrides:
            write_json(config_path, config.to_dict())
    elif ddp.main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json(config_path, config.to_dict())
        write_json(run_dir / FEATURES_FILE, features.to_dict())
    mixer = Mixer(data.speech, data.noise, config.mix, sample_rate=features.sample_rate, seed=config.seed)
    step_fn = Step(config, features, dev)
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    eager = net
    if config.compile:
        net = _compiled(net, log)
    if ddp.main:
        mode = f"a fixed pool of {config.mix.pool_size}" if config.mix.pool_size else "fresh"
        log(f"train: {data.speech.total_samples / features.sample_rate / 3600:.2f} h of training speech, "
            f"{len(data.noise)} noise files, {len(valid)} validation pairs, {mode} mixtures; "
            f"{count_parameters(model)} parameters, {total_steps} steps ({config.steps_per_epoch} per epoch), "
            f"{step_fn.precision}{', compiled' if net is not eager else ''}, "
            f"{'EMA ' + str(config.ema_decay) if ema else 'no EMA'}, "
            f"{ddp.world} process(es) on {dev}")
        if mixer.focus is not None:
            hours = data.speech.file_lengths[mixer.focus].sum() / features.sample_rate / 3600
            log(f"train: {config.mix.speech_focus_share:.0%} of the speech crops from the {mixer.focus.size} files "
                f"({hours:.2f} h) matching {config.mix.speech_focus!r}")
        if step_fn.precision == "bf16" and dev.type == "cpu" and not cpu_has_bf16():
            log("train: warning: this CPU has no native bf16 (AVX512_BF16 or AMX), so bf16 autocast is emulated "
                "and slower than fp32; pass --precision auto or fp32")
    bar = _bar(total_steps, state["step"], progress and ddp.main)
    step = state["step"]
    timing = {"data": 0.0, "total": 0.0}
    model.train()
    while step < total_steps:
        t0 = time.perf_counter()
        noisy, clean = mixer.batch(step, batch_size=config.batch_size, rank=ddp.rank, world=ddp.world)
        noisy = with_clean_inputs(noisy, clean, config.clean_input_prob, seed=config.seed, step=step, rank=ddp.rank)
        t1 = time.perf_counter()
        loss = step_fn.loss(net, torch.from_numpy(noisy), torch.from_numpy(clean))
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {step + 1}; stopping without writing a model "
                "(lower --lr, or check the dataset for broken audio)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        timing["data"] += t1 - t0
        timing["total"] += time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        epoch_end = step % config.steps_per_epoch == 0 or step == total_steps
        if epoch_end and ddp.main:
            metrics = _epoch_end(run_dir, model, ema, valid, step_fn, state, step, config, features, log)
            metrics.update(train_loss=round(loss.item(), 6), data_share=round(timing["data"] / timing["total"], 4),
                           seconds=round(timing["total"], 1))
            log_epoch(run_dir, metrics)
            log(f"epoch {metrics['epoch']}: " + ", ".join(f"{k} {v}" for k, v in metrics.items() if k != "epoch"))
            model.train()
        stopping = stop_after is not None and step >= stop_after
        if ddp.main and (step % config.checkpoint_every == 0 or epoch_end or stopping):
            payload = {"model": model.state_dict(), "ema": ema.state_dict() if ema else {},
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "state": {**state, "step": step}, "config": json.dumps(config.to_dict())}
            save_checkpoint(run_dir, payload, step=step, keep=config.keep_checkpoints)
        if stopping:
            break
    if bar is not None:
        bar.close()
    if ddp.world > 1:
        dist.barrier()
    return run_dir / MODEL_FILE


def _epoch_end(run_dir: Path, model, ema, valid: ValidPairs, step_fn: Step, state: dict, step: int,
               config: TrainConfig, features: FeatureConfig, log) -> dict:
    """Validate the raw and the EMA weights; export the better one if it beats the best so far."""
    metrics: dict = {"epoch": math.ceil(step / config.steps_per_epoch), "step": step}
    candidates = {"model": model} | ({"ema": ema.module} if ema is not None else {})
    losses = {name: validation_loss(m, valid, step_fn, config=config) for name, m in candidates.items()}
    metrics["valid_loss"] = round(losses["model"], 6)
    if ema is not None:
        metrics["valid_loss_ema"] = round(losses["ema"], 6)
    info = {"step": step, "train_config": config.to_dict()}
    if not len(valid):
        chosen = "ema" if ema is not None else "model"
        save_model(run_dir / MODEL_FILE, candidates[chosen], features,
                   info={**info, "weights": chosen, "selected_on": "none (no validation pairs)"})
        state.update(better=chosen, best_step=step)
        metrics["exported"] = chosen
        return metrics
    chosen = min(losses, key=losses.get)
    state["better"] = chosen
    metrics.update(_audio_scores(candidates[chosen], features, valid.files[: config.valid_audio_pairs]))
    if -losses[chosen] > state["best"]:
        state.update(best=-losses[chosen], best_step=step)
        save_model(run_dir / MODEL_FILE, candidates[chosen], features,
                   info={**info, "weights": chosen, "selected_on": "validation loss", **_plain(metrics)})
        metrics["exported"] = chosen
    return metrics


@torch.no_grad()
def validation_loss(model: torch.nn.Module, valid: ValidPairs, step_fn: Step, *, config: TrainConfig) -> float:
    """Mean loss over the validation pairs (the first ``valid_batches`` batches; 0: all); NaN without pairs."""
    model.eval()
    n = len(valid)
    batches = math.ceil(n / config.batch_size)
    if config.valid_batches:
        batches = min(batches, config.valid_batches)
    losses, weights = [], []
    for b in range(batches):
        sl = slice(b * config.batch_size, min(n, (b + 1) * config.batch_size))
        losses.append(step_fn.loss(model, torch.from_numpy(valid.noisy[sl]), torch.from_numpy(valid.clean[sl])).item())
        weights.append(sl.stop - sl.start)
    model.train()
    return float(np.average(losses, weights=weights)) if losses else math.nan


def _lr_lambda(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

    return factor


def _audio_scores(model, features, pairs, device="cpu") -> dict:
    try:
        from .evaluate import score_pair
    except ImportError:
        return {}
    import soundfile as sf

    from .api import Denoiser

    model.eval()
    denoiser = Denoiser(model, features, device=str(device), limiter=False)
    scores = []
    for noisy_path, clean_path in pairs:
        noisy, rate = sf.read(noisy_path, dtype="float32")
        clean, _ = sf.read(clean_path, dtype="float64")
        try:
            scores.append(score_pair(clean, denoiser.denoise(noisy, rate).astype(np.float64)))
        except Exception as exc:  # a metric that cannot score (e.g. PESQ on silence) skips the pair
            warnings.warn(f"validation scoring skipped {Path(noisy_path).name}: {exc}", stacklevel=2)
    model.train()
    if not scores:
        return {}
    return {k: round(float(np.mean([s[k] for s in scores])), 4) for k in scores[0]}


def describe_export(path: str | os.PathLike) -> str:
    """What a run's exported model is, in words: its step, which weights, what chose it."""
    info = load_model(path).info
    return f"{info.get('weights', 'model')} weights of step {info.get('step')}, chosen on {info.get('selected_on')}"


def _flatten(data: dict) -> dict:
    """A saved config as ``load_config`` overrides (``model.X`` / ``mix.X`` keys)."""
    flat = {k: v for k, v in data.items() if k not in ("model", "mix")}
    for section in ("model", "mix"):
        flat.update({f"{section}.{k}": v for k, v in data.get(section, {}).items()})
    return flat


def _bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", desc="train")


def _plain(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
