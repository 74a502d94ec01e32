"""Training the autoencoder on a prepared dataset: ``audiodenoise train``.

Run folder::

    config.json                 the resolved TrainConfig
    features.json               the dataset's FeatureConfig (for ``export_checkpoint``)
    checkpoints/step-N.pt       training state (tensors and plain values only)
    log.csv, loss.png           per-epoch losses and PESQ / STOI / SI-SDR
    model.safetensors           the best model so far, in the ``denoise --model`` format

The data order is a function of the seed and the step alone (pass ``p`` over
the training pairs uses permutation ``p`` of ``seed``), so a resumed run sees
exactly the batches an uninterrupted run would. Under ``torchrun`` each rank
takes its own slice of every global batch; only rank 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomllib
import torch
import torch.distributed as dist

from ._config import config_from_dict, config_to_dict
from .checkpoint import atomic_write_bytes, load_model, save_model
from .dataset import PairsDataset
from .errors import ConfigError, DatasetError, TrainingError
from .features import FeatureConfig, magnitude
from .model import DenoisingAutoencoder, ModelConfig, count_parameters

LOSSES = ("compressed_mag", "log_mag_l1", "compressed_mag+log")
CHECKPOINT_VERSION = 1
FEATURES_FILE = "features.json"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; ``model`` is the architecture."""

    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    epochs: int = 10
    steps_per_epoch: int = 0
    grad_clip: float = 5.0
    loss: str = "compressed_mag"
    compress_power: float = 0.3
    clean_input_prob: float = 0.0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    valid_batches: int = 20
    valid_audio_pairs: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("batch_size", "epochs", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.clean_input_prob <= 1:
            raise ConfigError(f"clean_input_prob must be in [0, 1], got {self.clean_input_prob}")

    def to_dict(self) -> dict:
        data = config_to_dict(self)
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        model = data.pop("model", {})
        config = config_from_dict(cls, data)
        if not isinstance(model, ModelConfig):
            model = ModelConfig.from_dict(model)
        return dataclasses.replace(config, model=model)


def load_config(path: str | os.PathLike | None, overrides: dict | None = None) -> TrainConfig:
    """A TrainConfig from a TOML (or JSON) file, with ``overrides`` on top."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key.startswith("model."):
            data.setdefault("model", {})[key[6:]] = value
        else:
            data[key] = value
    return TrainConfig.from_dict(data)


# -- distributed -------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# -- the loop ----------------------------------------------------------------


def loss_fn(out: torch.Tensor, noisy_lm: torch.Tensor, clean_lm: torch.Tensor, *, config: TrainConfig,
            features: FeatureConfig) -> torch.Tensor:
    """The training loss between the model output and the clean log-magnitude."""
    if config.model.output == "mask":
        est = out * magnitude(noisy_lm, config=features)
    else:
        est = magnitude(out, config=features)
    clean = magnitude(clean_lm, config=features)
    terms = []
    if config.loss.startswith("compressed_mag"):
        p = config.compress_power
        terms.append(torch.mean(((est + 1e-6) ** p - (clean + 1e-6) ** p) ** 2))
    if config.loss.endswith("log") or config.loss == "log_mag_l1":
        weight = 1.0 if config.loss == "log_mag_l1" else 0.01
        terms.append(weight * torch.mean(torch.abs(torch.log(est + features.log_eps) - clean_lm)))
    return sum(terms)


def batch_indices(step: int, *, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                  _cache: dict | None = None) -> list[int]:
    """Indices of the training pairs rank ``rank`` uses at ``step``."""
    cache = _cache if _cache is not None else {}
    start = (step * world + rank) * batch_size
    out = []
    for i in range(start, start + batch_size):
        p = i // n
        if p not in cache:
            cache.clear()
            cache[p] = np.random.default_rng([seed, p]).permutation(n)
        out.append(int(cache[p][i % n]))
    return out


def with_clean_inputs(
    noisy: torch.Tensor, clean: torch.Tensor, prob: float, *, seed: int, step: int, rank: int = 0
) -> torch.Tensor:
    """Replace each item's input by its clean target with probability ``prob``.

    Teaches the model to leave clean speech alone (prepared pairs never hold clean input).
    The draw depends on seed, step and rank only, so resumed runs repeat it.
    """
    if prob <= 0:
        return noisy
    keep = np.random.default_rng([seed, step, rank, 1]).random(noisy.shape[0]) >= prob
    mask = torch.from_numpy(keep).to(noisy.device)[:, None, None]
    return torch.where(mask, noisy, clean)


def fit(
    dataset_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overrides: dict | None = None,
    init: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> Path:
    """Train; return the path of the exported best model.

    With ``resume``, the run's saved config is used, with ``overrides`` (e.g.
    more epochs) applied on top. ``stop_after`` ends the run after that step
    (writing a checkpoint there), as if it had been stopped; resume it later.
    """
    run_dir = Path(run_dir)
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if device == "cuda" else torch.device(device)
    ddp = _init_distributed(dev)
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.is_file():
            raise TrainingError(f"{run_dir}: nothing to resume (no config.json)")
        config = TrainConfig.from_dict({**json.loads(config_path.read_text()), **(overrides or {})})
        if ddp.main and overrides:
            _write_json(config_path, config.to_dict())
    else:
        config = config or TrainConfig()
        if _checkpoints(run_dir):
            raise TrainingError(f"{run_dir}: holds a training run; pass --resume to continue it, or another --out")
    train_set = PairsDataset(dataset_dir, "train")
    valid_set = PairsDataset(dataset_dir, "valid")
    features = train_set.features
    if len(train_set) == 0:
        raise DatasetError(f"{dataset_dir}: no training pairs")
    torch.manual_seed(config.seed)
    model_config = config.model
    init_model = None
    if init is not None and not resume:
        init_model = load_model(init)
        if init_model.features != features:
            raise TrainingError(f"{init}: made with another feature configuration than {dataset_dir}")
        model_config = init_model.model.config
        config = dataclasses.replace(config, model=model_config)
    if model_config.n_freqs != features.n_freqs:
        raise TrainingError(f"model has {model_config.n_freqs} bins, the dataset {features.n_freqs}")
    model = DenoisingAutoencoder(model_config).to(dev)
    if init_model is not None:
        model.load_state_dict(init_model.model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = config.steps_per_epoch or math.ceil(len(train_set) / (config.batch_size * ddp.world))
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total_steps))
    state = {"step": 0, "best": -math.inf, "best_step": 0}
    if resume:
        state = _load_latest_checkpoint(run_dir, model, optimizer, scheduler, log)
    elif ddp.main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        _write_json(config_path, config.to_dict())
        _write_json(run_dir / FEATURES_FILE, features.to_dict())
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    if ddp.main:
        log(f"train: {len(train_set)} training pairs, {len(valid_set)} validation pairs, "
            f"{count_parameters(model)} parameters, {total_steps} steps ({steps_per_epoch} per epoch), "
            f"{ddp.world} process(es) on {dev}")
    bar = _bar(total_steps, state["step"], progress and ddp.main)
    cache: dict = {}
    step = state["step"]
    timing = {"data": 0.0, "total": 0.0}
    model.train()
    while step < total_steps:
        t0 = time.perf_counter()
        idx = batch_indices(step, n=len(train_set), batch_size=config.batch_size, seed=config.seed,
                            rank=ddp.rank, world=ddp.world, _cache=cache)
        noisy, clean = (t.to(dev) for t in train_set.batch(idx))
        noisy = with_clean_inputs(noisy, clean, config.clean_input_prob, seed=config.seed, step=step, rank=ddp.rank)
        t1 = time.perf_counter()
        loss = loss_fn(net(noisy), noisy, clean, config=config, features=features)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {step + 1}; stopping without writing a model "
                "(lower --lr, or check the dataset for broken pairs)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        timing["data"] += t1 - t0
        timing["total"] += time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        epoch_end = step % steps_per_epoch == 0 or step == total_steps
        if epoch_end:
            metrics = validate(model, valid_set, config=config, features=features, device=dev) if ddp.main else {}
            model.train()
            if ddp.main:
                metrics.update(epoch=step // steps_per_epoch, step=step, train_loss=round(loss.item(), 6),
                               data_share=round(timing["data"] / max(timing["total"], 1e-9), 4),
                               seconds=round(timing["total"], 1))
                _log_epoch(run_dir, metrics)
                score = metrics.get("pesq_wb", -metrics.get("valid_loss", math.inf))
                if not math.isfinite(score):
                    score = -metrics.get("valid_loss", math.inf)
                if score > state["best"]:
                    state.update(best=score, best_step=step)
                    save_model(run_dir / "model.safetensors", model, features,
                               info={"step": step, "train_config": config.to_dict(), **_plain(metrics)})
                log(f"epoch {metrics['epoch']}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()
                                                              if k not in ("epoch",)))
        stopping = stop_after is not None and step >= stop_after
        if ddp.main and (step % config.checkpoint_every == 0 or epoch_end or stopping):
            _save_checkpoint(run_dir, model, optimizer, scheduler, {**state, "step": step}, config)
        if stopping:
            break
    if bar is not None:
        bar.close()
    if ddp.world > 1:
        dist.barrier()
    return run_dir / "model.safetensors"


def _lr_lambda(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

    return factor


@torch.no_grad()
def validate(model: DenoisingAutoencoder, valid_set: PairsDataset, *, config: TrainConfig,
             features: FeatureConfig, device: torch.device) -> dict:
    """Validation loss over the first ``valid_batches`` batches, and PESQ/STOI/SI-SDR on the kept audio pairs."""
    model.eval()
    losses = []
    n = len(valid_set)
    for b in range(min(config.valid_batches, math.ceil(n / config.batch_size))):
        idx = list(range(b * config.batch_size, min(n, (b + 1) * config.batch_size)))
        noisy, clean = (t.to(device) for t in valid_set.batch(idx))
        losses.append(loss_fn(model(noisy), noisy, clean, config=config, features=features).item())
    metrics: dict = {"valid_loss": round(float(np.mean(losses)), 6) if losses else math.nan}
    pairs = valid_set.valid_audio()[: config.valid_audio_pairs]
    if pairs:
        metrics.update(_audio_scores(model, features, pairs, device))
    return metrics


def _audio_scores(model, features, pairs, device) -> dict:
    try:
        from .evaluate import score_pair
    except ImportError:
        return {}
    import soundfile as sf

    from .api import Denoiser

    denoiser = Denoiser(model, features, device=str(device), limiter=False)
    scores = []
    for noisy_path, clean_path in pairs:
        noisy, rate = sf.read(noisy_path, dtype="float32")
        clean, _ = sf.read(clean_path, dtype="float64")
        try:
            scores.append(score_pair(clean, denoiser.denoise(noisy, rate).astype(np.float64)))
        except Exception as exc:  # a metric that cannot score (e.g. PESQ on silence) skips the pair
            warnings.warn(f"validation scoring skipped {noisy_path.name}: {exc}", stacklevel=2)
    if not scores:
        return {}
    return {k: round(float(np.mean([s[k] for s in scores])), 4) for k in scores[0]}


# -- checkpoints -------------------------------------------------------------


def _save_checkpoint(run_dir: Path, model, optimizer, scheduler, state: dict, config: TrainConfig) -> None:
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": {k: float(v) if isinstance(v, float) else v for k, v in state.items()},
        "config": json.dumps(config.to_dict()),
    }
    path = folder / f"step-{state['step']:08d}.pt"
    tmp = folder / f".{path.name}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    kept = _checkpoints(run_dir)
    for old in sorted(kept)[: -config.keep_checkpoints]:
        kept[old].unlink(missing_ok=True)


def _load_latest_checkpoint(run_dir: Path, model, optimizer, scheduler, log) -> dict:
    kept = _checkpoints(run_dir)
    candidates = [kept[step] for step in sorted(kept, reverse=True)]
    if not candidates:
        raise TrainingError(f"{run_dir}: no checkpoint to resume from")
    for path in candidates:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
        except Exception as exc:  # a corrupt or truncated checkpoint: fall back to the one before
            log(f"warning: checkpoint {path.name} is unreadable ({type(exc).__name__}); trying the previous one")
            continue
        state = dict(payload["state"])
        log(f"resuming from {path.name} (step {state['step']})")
        return state
    raise TrainingError(f"{run_dir}: every checkpoint is unreadable; cannot resume")


def export_checkpoint(run_dir: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None,
                      overwrite: bool = False) -> Path:
    """Write the weights of one checkpoint of a run as a model file.

    ``fit`` exports the epoch with the best validation score; this exports any
    kept checkpoint instead (``step``; default: the latest), e.g. to compare
    checkpoints on a larger set of your own.

    Returns
    -------
    The path written.
    """
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and not overwrite:
        raise TrainingError(f"{out}: already exists; pass --overwrite to replace it")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise TrainingError(f"{run_dir}: not a training run (no config.json)")
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    kept = _checkpoints(run_dir)
    if not kept:
        raise TrainingError(f"{run_dir}: no checkpoint to export")
    chosen = max(kept) if step is None else step
    if chosen not in kept:
        raise TrainingError(f"{run_dir}: no checkpoint at step {step}; kept steps: "
                            + ", ".join(str(s) for s in sorted(kept)))
    try:
        payload = torch.load(kept[chosen], map_location="cpu", weights_only=True)
        model = DenoisingAutoencoder(config.model)
        model.load_state_dict(payload["model"])
    except Exception as exc:
        raise TrainingError(f"{kept[chosen]}: unreadable checkpoint ({type(exc).__name__})") from None
    save_model(out, model, _run_features(run_dir),
               info={"step": chosen, "train_config": config.to_dict(), "checkpoint": kept[chosen].name})
    return out


def _checkpoints(run_dir: Path) -> dict[int, Path]:
    """The run's kept checkpoint files by step."""
    return {int(p.stem.split("-")[1]): p for p in (run_dir / "checkpoints").glob("step-*.pt")}


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _run_features(run_dir: Path) -> FeatureConfig:
    """The feature configuration of a run (runs from before ``features.json`` have it in their model file)."""
    path = run_dir / FEATURES_FILE
    if path.is_file():
        return FeatureConfig.from_dict(json.loads(path.read_text()))
    if (run_dir / "model.safetensors").is_file():
        return load_model(run_dir / "model.safetensors").features
    raise TrainingError(f"{run_dir}: no {FEATURES_FILE}; cannot tell the run's feature configuration")


def _log_epoch(run_dir: Path, metrics: dict) -> None:
    path = run_dir / "log.csv"
    rows = list(csv.DictReader(path.open())) if path.is_file() else []
    rows = [r for r in rows if int(r["step"]) < metrics["step"]] + [{k: str(v) for k, v in metrics.items()}]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    text_rows = [",".join(keys)] + [",".join(r.get(k, "") for k in keys) for r in rows]
    atomic_write_bytes(path, ("\n".join(text_rows) + "\n").encode())
    _plot_curves(run_dir, rows)


def _plot_curves(run_dir: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key in ("train_loss", "valid_loss"):
        values = [float(r[key]) if r.get(key) not in (None, "", "nan") else math.nan for r in rows]
        axes[0].plot(steps, values, marker="o", label=key)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    for key in ("pesq_wb", "stoi", "si_sdr"):
        if all(r.get(key) not in (None, "") for r in rows):
            axes[1].plot(steps, [float(r[key]) for r in rows], marker="o", label=key)
    axes[1].set_xlabel("step")
    axes[1].set_title("validation scores")
    axes[1].legend()
    fig.savefig(run_dir / "loss.png", dpi=80)
    plt.close(fig)


def _bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", desc="train")


def _plain(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
