"""The training recipes in data_prep/ stay loadable and their documented commands point at real files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from audiodenoise.model import DenoisingAutoencoder
from audiodenoise.training import load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "data_prep").rglob("*.toml"))


def test_the_recipes_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in RECIPES}
    assert {"data_prep/train.toml", "data_prep/ablation/scratch-fc.toml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_recipe_loads_and_builds_its_model(path):
    config = load_config(path)  # unknown keys and bad values raise ConfigError
    model = DenoisingAutoencoder(config.model)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_recipe_commands_name_existing_configs(path):
    named = re.findall(r"--config (\S+\.toml)", path.read_text())
    for name in named:
        assert (ROOT / name).is_file(), f"{path.name} documents --config {name}, which does not exist"
