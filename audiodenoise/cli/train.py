"""``audiodenoise prepare`` and ``audiodenoise train``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import DEVICE_METAVAR, check_device, check_settings, model_file, run_guarded

PROG = "audiodenoise"


def prepare(
    clean: Annotated[list[Path], typer.Argument(help="Folders (or files) of clean speech.", show_default=False)],
    noise: Annotated[list[Path], typer.Option("--noise", "-n", help="Noise folder or file (repeat the option).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write (or resume).")],
    segment_seconds: Annotated[float | None, typer.Option(help="Segment length [4].")] = None,
    snr_min: Annotated[float | None, typer.Option(help="Lowest SNR of the validation pairs, dB [-5].")] = None,
    snr_max: Annotated[float | None, typer.Option(help="Highest SNR of the validation pairs, dB [20].")] = None,
    mixes: Annotated[int | None, typer.Option(help="Validation pairs made from each held-out segment [2].")] = None,
    valid_fraction: Annotated[float | None, typer.Option(help="Share of speakers/files held out [0.05].")] = None,
    valid_noise_fraction: Annotated[float | None, typer.Option(
        help="Share of noise files held out for the validation pairs (none below 10 files) [0.1].")] = None,
    min_speech_range_db: Annotated[float | None, typer.Option(
        help="Drop clean files whose noise floor is less than this many dB below the speech [20].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [0].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
) -> None:
    """Store clean speech and noise for on-the-fly mixing, and make the fixed validation pairs."""
    from ..prepare import PrepareConfig
    from ..prepare import prepare as run_prepare

    def work() -> None:
        overrides = dict(segment_seconds=segment_seconds, snr_db_min=snr_min, snr_db_max=snr_max,
                         mixes_per_segment=mixes, valid_fraction=valid_fraction, seed=seed,
                         valid_noise_fraction=valid_noise_fraction,
                         min_speech_range_db=min_speech_range_db)
        config = PrepareConfig.from_dict({**PrepareConfig().to_dict(), **{k: v for k, v in overrides.items()
                                                                          if v is not None}})
        summary = run_prepare(clean, noise, out, config=config, progress=not quiet,
                              log=(lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr)))
        skipped = summary.get("skipped", [])
        print(json.dumps({k: v for k, v in summary.items() if k != "skipped"} | {"skipped_files": len(skipped)},
                         indent=2))
        for item in skipped[:20]:
            reason = item["reason"] if item["skipped"] in item["reason"] else f"{item['skipped']}: {item['reason']}"
            print(f"  skipped: {reason}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more (see {out}/summary.json)", file=sys.stderr)

    run_guarded(PROG, work, verbose=verbose)


def train(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder from `audiodenoise prepare`.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, logs, model).")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out where it stopped (options given here override its config).")
    ] = False,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop after this step (checkpointed); continue later with --resume.")
    ] = None,
    init: Annotated[
        Path | None, typer.Option(metavar="MODEL", callback=model_file, help=(
            "Start from this model (fine-tuning): a model file, a run folder, or `pretrained` (the shipped model)."))
    ] = None,
    grow: Annotated[bool, typer.Option(
        help="With --init: build the config's grown model (bottleneck blocks appended, or a 2-D front end added "
             "with model.front_channels) instead of the file's; the new parts start as the identity.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Epochs [10].")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(help="Steps per epoch (0: one pass) [0].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per step and process [16].")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate [2e-3].")] = None,
    loss: Annotated[str | None, typer.Option(
        metavar="LOSS",
        help="compressed_mag, compressed_mag+complex, compressed_mag+sisdr, log_mag_l1 or compressed_mag+log "
             "[compressed_mag].")] = None,
    clean_input_prob: Annotated[
        float | None, typer.Option(help="Share of items whose input is the clean target [0.1].")
    ] = None,
    precision: Annotated[str | None, typer.Option(
        metavar="auto|fp32|bf16",
        help="auto (bf16 where the CPU has native bf16, else fp32), fp32 or bf16 [auto].")] = None,
    compile_steps: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="Run the training steps through torch.compile [no].")] = None,
    ema_decay: Annotated[float | None, typer.Option(help="Weight EMA decay, 0 for none [0.999].")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints [500].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [0].")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", callback=check_settings,
        help="Any config key, model.X and mix.X included (repeat the option): "
             "--set mix.babble_prob=0 --set model.bottleneck_dilations=[1,2,4].")] = None,
    device: Annotated[str, typer.Option(
        metavar=DEVICE_METAVAR, help="auto, cpu, cuda or cuda:N.", callback=check_device)] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads per process.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
) -> None:
    """Train the denoising autoencoder; also under `torchrun --nproc_per_node=N -m audiodenoise train`."""
    import torch

    from ..devices import resolve_device
    from ..errors import ConfigError
    from ..train_config import load_config
    from ..training import describe_export, fit

    def work() -> None:
        if threads:
            torch.set_num_threads(threads)
        overrides = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, loss=loss,
                         checkpoint_every=checkpoint_every, seed=seed, clean_input_prob=clean_input_prob,
                         precision=precision, ema_decay=ema_decay, compile=compile_steps)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        overrides.update(settings or ())  # check_settings has parsed them into (key, value) pairs
        if init is not None and not grow and not resume and any(k.startswith("model.") for k in overrides):
            raise ConfigError("--set model.X with --init: the model file's architecture is used; "
                              "add --grow to build a deeper one")
        if resume and config is not None:
            raise ConfigError("--resume uses the run's saved config; give changes as options, not --config")
        cfg = None if resume else load_config(config, overrides)
        model = fit(dataset, out, cfg, resume=resume, overrides=overrides, init=init, grow=grow,
                    device=resolve_device(device).type, progress=not quiet, stop_after=stop_after)
        if not quiet:
            if model.is_file():
                print(f"model: {model} ({describe_export(model)})", file=sys.stderr)
            else:
                print(f"no model file yet: the run stopped before its first epoch ended; continue it with "
                      f"`audiodenoise train {dataset} --out {out} --resume`, or write a checkpoint with "
                      f"`audiodenoise export {out} MODEL.safetensors`", file=sys.stderr)

    run_guarded(PROG, work, verbose=verbose)


def export(
    run: Annotated[Path, typer.Argument(help="Run folder of `audiodenoise train`.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="Model file to write (.safetensors).", show_default=False)],
    step: Annotated[int | None, typer.Option(help="Checkpoint step (default: the latest).")] = None,
    weights: Annotated[str, typer.Option(
        metavar="best|ema|model",
        help="best (EMA or raw, whichever validated better at that step), ema or model.")] = "best",
    overwrite: Annotated[bool, typer.Option("--overwrite", "-f", help="Replace an existing file.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
) -> None:
    """Write one checkpoint of a training run as a model file for `denoise --model`."""
    from ..errors import ConfigError
    from ..runs import export_checkpoint

    def work() -> None:
        if weights not in ("best", "ema", "model"):
            raise ConfigError(f"--weights must be best, ema or model, got {weights!r}")
        path = export_checkpoint(run, out, step=step, weights=weights, overwrite=overwrite)
        print(f"wrote {path}", file=sys.stderr)

    run_guarded(PROG, work, verbose=verbose)
