"""A model file's card (``audiodenoise info``): what it is, how it was trained, how good it is.

The facts come from the model file's metadata (``save_model(info=...)``; the shipped model's are
written by ``data_prep/ship.py``). Keys this card reads from ``info``:
``name``, ``total_steps`` (else ``step``), ``batch``, ``hours_seen``,
``hardware``, ``licence``, ``training_data`` (a list of ``{kind, source,
hours, licence}``) and ``dev_scores`` (``{set, noisy: {pesq_wb, stoi,
si_sdr}, model: {...}, rtf}``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import __version__
from .api import Denoiser
from .checkpoint import sha256_file
from .model import count_parameters
from .shipped import PRETRAINED_FILE, pretrained_path, pretrained_sha256


def model_card(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Everything known about a model file (default: the shipped one), as JSON-able data.

    Raises
    ------
    ModelError
        The file cannot be loaded, or the shipped model fails its checksum.
    """
    shipped = path is None or Path(path).resolve() == pretrained_path().resolve()
    model_file = pretrained_path() if path is None else Path(path)
    denoiser = Denoiser.from_pretrained(device="cpu") if shipped else Denoiser.from_file(model_file, device="cpu")
    info = dict(denoiser.info)
    digest = sha256_file(model_file)
    expected = pretrained_sha256() if shipped else _expected_sha256(model_file)
    model_config, features = denoiser.model.config, denoiser.features
    context_s = (model_config.receptive_frames * features.hop_length + features.n_fft) / features.sample_rate
    return {
        "audiodenoise": __version__,
        "model_file": str(model_file),
        "shipped": shipped,
        "bytes": model_file.stat().st_size,
        "sha256": digest,
        "checksum": ("verified" if digest == expected else "MISMATCH") if expected else "no expected checksum",
        "parameters": count_parameters(denoiser.model),
        "causal": False,
        "lookahead_seconds": context_s,
        "model": model_config.to_dict(),
        "features": features.to_dict(),
        "info": info,
    }


def _expected_sha256(path: Path) -> str | None:
    """The checksum in ``PATH.sha256`` beside a model file, if there is one."""
    side = path.with_name(path.name + ".sha256")
    try:
        return side.read_text().split()[0]
    except (OSError, IndexError):
        return None


def format_card(card: dict[str, Any]) -> str:
    """A short human-readable card (under 20 lines) of :func:`model_card`'s data."""
    info, model, features = card["info"], card["model"], card["features"]
    name = info.get("name") or ("the shipped model" if card["shipped"] else Path(card["model_file"]).name)
    lines = [f"{name}  [read by audiodenoise {card['audiodenoise']}]"]
    checksum = {"verified": "verified", "MISMATCH": "DOES NOT MATCH the expected checksum"}.get(
        card["checksum"], "not verified (no expected checksum)")
    lines.append(f"file       {card['model_file']} ({card['bytes'] / 1e6:.1f} MB)")
    lines.append(f"sha256     {card['sha256'][:16]}... {checksum}")
    blocks = len(model["bottleneck_dilations"])
    front = f"{model['front_channels']}-channel 2-D front end, " if model.get("front_channels") else ""
    lines.append(f"model      convolutional denoising autoencoder, {card['parameters']:,} parameters "
                 f"({model['layout']}, {front}channels {'-'.join(map(str, model['channels']))}, {blocks} dilated "
                 f"blocks, output {model['output']})")
    hop_ms = 1000 * features["hop_length"] / features["sample_rate"]
    lines.append(f"features   {features['sample_rate'] / 1000:g} kHz, {features['n_fft']}-point STFT, hop "
                 f"{features['hop_length']} ({hop_ms:g} ms); any input rate 8-192 kHz")
    lines.append(f"latency    non-causal: each output sample uses {card['lookahead_seconds']:.2f} s of audio ahead "
                 "(files and offline use, not live streams)")
    lines.append("training   " + _training_line(info))
    data = info.get("training_data") or []
    if data:
        lines.append("data")
        lines += [f"  {d.get('kind', '?')}: {d.get('hours', '?')} h, {d.get('source', '?')} ({d.get('licence', '?')})"
                  for d in data]
    else:
        lines.append("data       not recorded in the model file")
    if info.get("licence"):
        lines.append(f"licence    {info['licence']}")
    if not (info.get("dev_scores") or {}).get("model") and all(isinstance(info.get(m), (int, float))
                                                               for m in ("pesq_wb", "stoi", "si_sdr")):
        lines.append(f"validation PESQ-WB {info['pesq_wb']:.2f}, STOI {info['stoi']:.3f}, "
                     f"SI-SDR {info['si_sdr']:.1f} dB on the run's validation pairs (training's own check)")
    lines.append("dev scores " + _scores_line(info.get("dev_scores")))
    lines.append("more       audiodenoise info --json" + ("; MODEL_CARD.md beside the model file" if card["shipped"]
                                                         else ""))
    return "\n".join(lines)


def _training_line(info: dict[str, Any]) -> str:
    steps = info.get("total_steps")
    if steps is None and info.get("step") is not None:
        text = f"{info['step']:,} steps in the run that wrote it (steps of a model it was fine-tuned from not counted)"
    elif steps is None:
        return "not recorded in the model file"
    else:
        text = f"{steps:,} steps"
    if info.get("batch"):
        text += f" of {info['batch']}"
    if info.get("hours_seen") is not None:
        text += f", about {info['hours_seen']:g} h of audio seen"
    if info.get("hardware"):
        text += f" ({info['hardware']})"
    return text


def _scores_line(scores: dict[str, Any] | None) -> str:
    if not scores or not scores.get("model"):
        return "not recorded (run audiodenoise evaluate)"
    model, noisy = scores["model"], scores.get("noisy") or {}

    def pair(metric: str, label: str, digits: int, unit: str = "") -> str:
        text = f"{label} {model[metric]:.{digits}f}{unit}"
        return text + (f" (noisy {noisy[metric]:.{digits}f})" if metric in noisy else "")

    parts = [pair("pesq_wb", "PESQ-WB", 2), pair("stoi", "STOI", 3), pair("si_sdr", "SI-SDR", 1, " dB")]
    text = ", ".join(parts) + f" on {scores.get('set', 'a dev set')}"
    if scores.get("rtf") is not None:
        text += f"; RTF {scores['rtf']:g}"
    return text


__all__ = ["PRETRAINED_FILE", "format_card", "model_card"]
