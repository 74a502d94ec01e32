"""Make a trained model file the shipped one: its weights, with the card's facts in its own metadata.

    python data_prep/ship.py WEIGHTS FACTS.json [--out pretrained/model.safetensors]

WEIGHTS is a model file (a run's ``model.safetensors`` or an ``audiodenoise export``). FACTS.json holds
the keys ``audiodenoise info`` reads (``name``, ``total_steps``, ``batch``, ``hours_seen``,
``hardware``, ``licence``, ``training_data``, ``dev_scores``; see ``audiodenoise/card.py``); they are
merged over the file's own info (the run's step, validation scores and training config are kept). The
output and its ``.sha256`` (the hex digest alone, as ``api.pretrained_sha256`` reads it) are written
atomically; the weights are copied bit for bit, which the script checks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from audiodenoise.checkpoint import atomic_write_bytes, load_model, save_model, sha256_file

ROOT = Path(__file__).resolve().parents[1]


def ship(weights: Path, facts: dict, out: Path) -> str:
    """Write ``out`` (weights of ``weights``, info merged with ``facts``) and ``out.sha256``; return the digest."""
    loaded = load_model(weights)
    save_model(out, loaded.model, loaded.features, info={**loaded.info, **facts})
    shipped = load_model(out).model.state_dict()
    for key, value in loaded.model.state_dict().items():
        if not torch.equal(value, shipped[key]):
            raise SystemExit(f"error: {key} changed on the way to {out}")
    digest = sha256_file(out)
    atomic_write_bytes(out.with_name(out.name + ".sha256"), (digest + "\n").encode())
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("facts", type=Path, help="JSON object of card facts")
    parser.add_argument("--out", type=Path, default=ROOT / "pretrained" / "model.safetensors")
    args = parser.parse_args()
    facts = json.loads(args.facts.read_text())
    if not isinstance(facts, dict):
        raise SystemExit(f"error: {args.facts} must hold a JSON object")
    digest = ship(args.weights, facts, args.out)
    print(f"wrote {args.out} (sha256 {digest}) and {args.out.name}.sha256")


if __name__ == "__main__":
    main()
