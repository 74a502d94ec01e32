"""Growing a trained model into a deeper one without losing what it learnt.

``train --init MODEL --grow`` builds the recipe's architecture instead of the
model file's, copies the file's weights into it and starts every added layer
as the identity, so step 0 of the grown model denoises exactly as the file
does and training only has to learn what the new layers add. This lets the
architecture grow on a CPU without paying again for the hundreds of hours of
audio the smaller model has seen.

What can grow: more residual blocks appended to the bottleneck (longer
``bottleneck_dilations`` that start with the file's), and a frequency-local
front end (``front_channels`` > 0 where the file has none). Each added
residual branch's last BatchNorm starts with zero scale and shift, so it
outputs zero (the "zero-gamma" start of residual networks); the scale gets a
gradient at the first step and the branch comes alive from there.
"""

from __future__ import annotations

import dataclasses

import torch

from .errors import ConfigError
from .model import DenoisingAutoencoder, ModelConfig


def check_growable(small: ModelConfig, big: ModelConfig) -> list[str]:
    """The parts ``big`` adds to ``small`` (``bottleneck.N``, ``front``); ConfigError if it is not a grown ``small``."""
    head = tuple(big.bottleneck_dilations[: len(small.bottleneck_dilations)])
    adds_front = big.front_channels > 0 and small.front_channels == 0
    front = small.front_channels if adds_front else big.front_channels
    same_otherwise = dataclasses.replace(
        big, bottleneck_dilations=small.bottleneck_dilations, front_channels=front) == small
    if not same_otherwise or head != tuple(small.bottleneck_dilations):
        raise ConfigError(
            "--grow: the recipe's model must be the model file's with bottleneck blocks appended "
            f"(bottleneck_dilations starting with {list(small.bottleneck_dilations)}) or a front end added "
            f"(front_channels where the file has 0), all else equal; file {_describe(small)}, recipe {_describe(big)}"
        )
    first = len(small.bottleneck_dilations)
    added = [f"bottleneck.{i}" for i in range(first, len(big.bottleneck_dilations))] + ["front"] * adds_front
    if not added:
        raise ConfigError(f"--grow: the recipe's model adds no bottleneck block or front end to the model file's "
                          f"({_describe(small)})")
    return added


def grow(model: DenoisingAutoencoder, source: DenoisingAutoencoder) -> list[str]:
    """Load ``source``'s weights into the grown ``model``; the added parts start as the identity.

    Returns the names of the added parts (``bottleneck.N``, ``front``).
    """
    added = check_growable(source.config, model.config)
    # check_growable guarantees the file's weights are exactly the grown model's minus the added parts
    model.load_state_dict(source.state_dict(), strict=False)
    with torch.no_grad():
        for name in added:
            norm = model.get_submodule(name).body[-1]
            norm.weight.zero_()
            norm.bias.zero_()
    return added


def _describe(config: ModelConfig) -> str:
    return (f"layout {config.layout}, channels {list(config.channels)}, "
            f"bottleneck_dilations {list(config.bottleneck_dilations)}, front_channels {config.front_channels}")
