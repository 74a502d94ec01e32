import dataclasses
import json

import pytest
import torch
from conftest import TINY_MODEL, make_model
from test_training import QUIET, TINY_TRAIN, last_checkpoint

from audiodenoise.checkpoint import save_model
from audiodenoise.errors import ConfigError
from audiodenoise.features import FeatureConfig
from audiodenoise.growth import check_growable, grow
from audiodenoise.model import DenoisingAutoencoder, ModelConfig
from audiodenoise.training import TrainConfig, fit

DEEP = dataclasses.replace(TINY_MODEL, bottleneck_dilations=(*TINY_MODEL.bottleneck_dilations, 4, 8))
TINY_CRN = ModelConfig(layout="crn", channels=(4, 8), kernel_freq=3, bottleneck_channels=24,
                       bottleneck_dilations=(1, 2))


@pytest.mark.parametrize("small", [TINY_MODEL, TINY_CRN], ids=["freq_channels", "crn"])
def test_a_grown_model_starts_as_the_model_it_grew_from(small):
    source = make_model(small)
    big = dataclasses.replace(small, bottleneck_dilations=(*small.bottleneck_dilations, 1, 2, 4))
    torch.manual_seed(1)
    grown = DenoisingAutoencoder(big).eval()
    assert grow(grown, source) == ["bottleneck.2", "bottleneck.3", "bottleneck.4"]
    x = torch.randn(2, small.n_freqs, 200) * 2 - 4
    with torch.no_grad():
        torch.testing.assert_close(grown(x), source(x), rtol=0, atol=1e-6)
    # the added blocks are real layers with random convolutions, only their BatchNorm starts at zero
    assert grown.bottleneck[3].body[0].weight.abs().sum() > 0
    assert big.receptive_frames > small.receptive_frames


@pytest.mark.parametrize("more_blocks", [(), (4, 8)], ids=["front_end", "front_end_and_blocks"])
def test_a_grown_front_end_starts_as_the_identity(more_blocks):
    source = make_model(TINY_MODEL)
    big = dataclasses.replace(TINY_MODEL, front_channels=4,
                              bottleneck_dilations=(*TINY_MODEL.bottleneck_dilations, *more_blocks))
    torch.manual_seed(1)
    grown = DenoisingAutoencoder(big).eval()
    added = grow(grown, source)
    assert added == [f"bottleneck.{2 + i}" for i in range(len(more_blocks))] + ["front"]
    x = torch.randn(2, TINY_MODEL.n_freqs, 120) * 2 - 4
    with torch.no_grad():
        torch.testing.assert_close(grown(x), source(x), rtol=0, atol=1e-6)
        # the front end's convolutions are random, only its last BatchNorm starts at zero: give it a scale
        # and the grown model computes something else
        grown.front.body[-1].weight.fill_(1.0)
        assert (grown(x) - source(x)).abs().max() > 1e-3


@pytest.mark.parametrize(("change", "message"), [
    (dict(channels=(32, 24), bottleneck_dilations=(1, 2, 4)), "all else equal"),
    (dict(bottleneck_dilations=(2, 1, 4)), "starting with \\[1, 2\\]"),
    (dict(bottleneck_dilations=(1,)), "starting with"),
    (dict(), "adds no bottleneck block or front end"),
    (dict(front_channels=4, kernel_time=5), "all else equal"),
])
def test_only_appended_bottleneck_blocks_and_a_new_front_end_can_grow(change, message):
    with pytest.raises(ConfigError, match=message):
        check_growable(TINY_MODEL, dataclasses.replace(TINY_MODEL, **change))


def test_an_existing_front_end_cannot_be_regrown_or_removed():
    front = dataclasses.replace(TINY_MODEL, front_channels=4)
    with pytest.raises(ConfigError, match="all else equal"):
        check_growable(front, dataclasses.replace(TINY_MODEL, front_channels=8))
    with pytest.raises(ConfigError, match="all else equal"):
        check_growable(front, dataclasses.replace(TINY_MODEL, bottleneck_dilations=(1, 2, 4)))
    assert check_growable(front, dataclasses.replace(front, bottleneck_dilations=(1, 2, 4))) == ["bottleneck.2"]


def test_train_grow_keeps_the_recipes_deeper_model_and_trains_the_new_blocks(dataset, tmp_path):
    small = tmp_path / "small.safetensors"
    save_model(small, make_model(TINY_MODEL), FeatureConfig(), info={})
    messages = []
    run = tmp_path / "run"
    config = dataclasses.replace(TINY_TRAIN, model=DEEP, epochs=1, ema_decay=0.0)
    fit(dataset, run, config, init=small, grow=True, stop_after=2, progress=False, log=messages.append)
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())).model == DEEP
    assert any("grew" in m and "2 bottleneck block(s)" in m for m in messages)
    _, state = last_checkpoint(run)
    # after two steps the new blocks' BatchNorm scale has moved off zero: they learn
    assert state["model"]["bottleneck.3.body.2.weight"].abs().max() > 0


def test_train_grow_adds_a_front_end_that_learns(dataset, tmp_path):
    small = tmp_path / "small.safetensors"
    save_model(small, make_model(TINY_MODEL), FeatureConfig(), info={})
    messages = []
    run = tmp_path / "run"
    front = dataclasses.replace(TINY_MODEL, front_channels=4)
    config = dataclasses.replace(TINY_TRAIN, model=front, epochs=1, ema_decay=0.0)
    fit(dataset, run, config, init=small, grow=True, stop_after=2, progress=False, log=messages.append)
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())).model == front
    assert any("grew" in m and "a 2-D front end" in m and "bottleneck" not in m for m in messages)
    _, state = last_checkpoint(run)
    assert state["model"]["front.body.8.weight"].abs().max() > 0


def test_grow_needs_init_and_a_growable_recipe(dataset, tmp_path):
    with pytest.raises(ConfigError, match="--grow needs --init"):
        fit(dataset, tmp_path / "a", dataclasses.replace(TINY_TRAIN, model=DEEP), grow=True, **QUIET)
    small = tmp_path / "small.safetensors"
    save_model(small, make_model(TINY_MODEL), FeatureConfig(), info={})
    with pytest.raises(ConfigError, match="adds no bottleneck block or front end"):
        fit(dataset, tmp_path / "b", TINY_TRAIN, init=small, grow=True, **QUIET)
