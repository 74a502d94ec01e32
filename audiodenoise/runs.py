"""The files of a training run folder: checkpoints, the log, the curves, exports.

Run folder::

    config.json                 the resolved TrainConfig
    features.json               the dataset's FeatureConfig
    checkpoints/step-N.pt       training state: model, EMA, optimizer, scheduler (tensors and plain values)
    log.csv, loss.png           per-epoch losses and PESQ / STOI / SI-SDR
    model.safetensors           the best model so far (or the last, without validation pairs)
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import torch

from .checkpoint import atomic_write_bytes, load_model, save_model
from .errors import OutputError, TrainingError
from .features import FeatureConfig
from .model import DenoisingAutoencoder
from .outputs import atomic_path, check_output
from .train_config import TrainConfig

CHECKPOINT_VERSION = 2
FEATURES_FILE = "features.json"
MODEL_FILE = "model.safetensors"  # the run's best model, what `--model RUN` and `--init RUN` read


def save_checkpoint(run_dir: Path, payload: dict, *, step: int, keep: int) -> Path:
    """Write ``payload`` as ``checkpoints/step-N.pt`` atomically; keep the newest ``keep``."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"version": CHECKPOINT_VERSION, **payload}, tmp)
    kept = checkpoints(run_dir)
    for old in sorted(kept)[:-keep]:
        kept[old].unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run_dir: Path, restore, log) -> dict:
    """Call ``restore(payload)`` with the newest readable checkpoint; return its ``state``."""
    kept = checkpoints(run_dir)
    if not kept:
        raise TrainingError(f"{run_dir}: no checkpoint to resume from")
    for step in sorted(kept, reverse=True):
        path = kept[step]
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            restore(payload)
        except Exception as exc:  # a corrupt or truncated checkpoint: fall back to the one before
            log(f"warning: checkpoint {path.name} is unreadable ({type(exc).__name__}); trying the previous one")
            continue
        state = dict(payload["state"])
        log(f"resuming from {path.name} (step {state['step']})")
        return state
    raise TrainingError(f"{run_dir}: every checkpoint is unreadable; cannot resume")


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """The run's kept checkpoint files by step."""
    found = {}
    for p in (Path(run_dir) / "checkpoints").glob("step-*.pt"):
        try:
            found[int(p.stem.split("-")[1])] = p
        except ValueError:
            continue
    return found


def export_checkpoint(run_dir: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None,
                      weights: str = "best", overwrite: bool = False) -> Path:
    """Write the weights of one checkpoint of a run as a model file.

    ``weights``: ``"ema"``, ``"model"`` (the raw weights) or ``"best"`` (the
    one that scored better at that checkpoint's validation; EMA when unknown).
    ``step`` defaults to the latest kept checkpoint.
    """
    run_dir, out = Path(run_dir), Path(out)
    if out.resolve().parent == (run_dir / "checkpoints").resolve():
        raise TrainingError(f"{out}: is inside the run's checkpoints folder; write the model elsewhere")
    try:
        check_output(out, overwrite=overwrite, inputs=list(checkpoints(run_dir).values()), what="model")
    except OutputError as exc:  # a folder, an existing file without overwrite, a place that cannot be written
        raise TrainingError(str(exc)) from None
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise TrainingError(f"{run_dir}: not a training run (no config.json)")
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    kept = checkpoints(run_dir)
    if not kept:
        raise TrainingError(f"{run_dir}: no checkpoint to export")
    chosen = max(kept) if step is None else step
    if chosen not in kept:
        raise TrainingError(f"{run_dir}: no checkpoint at step {step}; kept steps: "
                            + ", ".join(str(s) for s in sorted(kept)))
    try:
        payload = torch.load(kept[chosen], map_location="cpu", weights_only=True)
        model = DenoisingAutoencoder(config.model)
        which = weights
        if which == "best":
            which = payload.get("state", {}).get("better", "ema")
        ema = {k[len("module."):]: v for k, v in (payload.get("ema") or {}).items() if k.startswith("module.")}
        if which == "ema" and not ema:
            which = "model"
        model.load_state_dict(ema if which == "ema" else payload["model"])
    except Exception as exc:
        raise TrainingError(f"{kept[chosen]}: unreadable checkpoint ({type(exc).__name__})") from None
    save_model(out, model, run_features(run_dir),
               info={"step": chosen, "weights": which, "train_config": config.to_dict(),
                     "checkpoint": kept[chosen].name})
    return out


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def run_features(run_dir: Path) -> FeatureConfig:
    """The feature configuration of a run (runs from before ``features.json`` have it in their model file)."""
    path = run_dir / FEATURES_FILE
    if path.is_file():
        return FeatureConfig.from_dict(json.loads(path.read_text()))
    if (run_dir / MODEL_FILE).is_file():
        return load_model(run_dir / MODEL_FILE).features
    raise TrainingError(f"{run_dir}: no {FEATURES_FILE}; cannot tell the run's feature configuration")


def log_epoch(run_dir: Path, metrics: dict) -> None:
    """Add (or replace) the row of ``metrics["step"]`` in ``log.csv`` and redraw ``loss.png``."""
    path = run_dir / "log.csv"
    rows = list(csv.DictReader(path.open())) if path.is_file() else []
    rows = [r for r in rows if int(r["step"]) < metrics["step"]] + [{k: str(v) for k, v in metrics.items()}]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    text_rows = [",".join(keys)] + [",".join(r.get(k, "") for k in keys) for r in rows]
    atomic_write_bytes(path, ("\n".join(text_rows) + "\n").encode())
    plot_curves(run_dir / "loss.png", rows)


def plot_curves(path: Path, rows: list[dict]) -> None:
    """Training and validation loss, and validation PESQ / STOI / SI-SDR, against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> list[float]:
        return [float(r[key]) if r.get(key) not in (None, "", "nan") else math.nan for r in rows]

    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), constrained_layout=True)
    for key in ("train_loss", "valid_loss", "valid_loss_ema"):
        values = series(key)
        if any(math.isfinite(v) for v in values):
            axes[0].plot(steps, values, marker="o", label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("loss")
    for ax, key, label in zip(axes[1:], ("pesq_wb", "stoi", "si_sdr"), ("PESQ-WB", "STOI", "SI-SDR (dB)"),
                              strict=True):
        values = series(key)
        if any(math.isfinite(v) for v in values):
            ax.plot(steps, values, marker="o", label=f"{label} (8 validation pairs)")
        ax.set_title(label)
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=80)
    plt.close(fig)
