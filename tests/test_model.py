"""model: shapes, mask range, both layouts, and an exact receptive field."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_MODEL, make_model

from audiodenoise.errors import ConfigError
from audiodenoise.model import DenoisingAutoencoder, ModelConfig, count_parameters, macs_per_second

TINY_2D = dataclasses.replace(TINY_MODEL, layout="freq_conv2d", channels=(8, 16))
TINY_CRN = dataclasses.replace(TINY_MODEL, layout="crn", channels=(4, 8), kernel_freq=3, bottleneck_channels=24)
TINY_FRONT = dataclasses.replace(TINY_MODEL, front_channels=4)

CONFIGS = {
    "freq_channels": TINY_MODEL,
    "freq_channels_no_skip": dataclasses.replace(TINY_MODEL, skip=False),
    "freq_channels_log_mag": dataclasses.replace(TINY_MODEL, output="log_mag"),
    "freq_channels_front": TINY_FRONT,
    "freq_conv2d": TINY_2D,
    "freq_conv2d_log_mag": dataclasses.replace(TINY_2D, output="log_mag"),
    "freq_conv2d_129_bins": dataclasses.replace(TINY_2D, n_freqs=129),
    "freq_conv2d_100_bins": dataclasses.replace(TINY_2D, n_freqs=100, kernel_freq=3),
    "crn": TINY_CRN,
    "crn_log_mag_no_skip": dataclasses.replace(TINY_CRN, output="log_mag", skip=False),
    "crn_100_bins_3_layers": dataclasses.replace(TINY_CRN, n_freqs=100, channels=(4, 4, 8)),
}


def _input(config: ModelConfig, frames: int, *, seed: int = 0, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.n_freqs, frames, generator=generator) * 2 - 4


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_shape_equals_input_shape(name):
    config = CONFIGS[name]
    model = make_model(config)
    for frames in (1, 2, 7, 50):
        x = _input(config, frames)
        with torch.no_grad():
            out = model(x)
        assert out.shape == x.shape, frames
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["freq_channels", "freq_channels_no_skip", "freq_channels_front", "freq_conv2d",
                                  "freq_conv2d_129_bins", "crn"])
def test_mask_is_in_unit_interval(name):
    config = CONFIGS[name]
    model = make_model(config)
    x = _input(config, 40) * 10  # far outside the BatchNorm statistics
    with torch.no_grad():
        mask = model(x)
    assert mask.min().item() >= 0.0 and mask.max().item() <= 1.0
    assert mask.std().item() > 0  # a real function of the input, not a constant


@pytest.mark.parametrize("name", ["freq_channels_log_mag", "freq_conv2d_log_mag"])
def test_log_mag_output_is_a_residual_over_the_input(name):
    config = CONFIGS[name]
    model = make_model(config)
    x = _input(config, 30)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    # ``log_mag + correction``: zeroing the head leaves the input unchanged
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        assert torch.equal(model(x), x)


RF_CONFIGS = {
    "tiny": TINY_MODEL,
    "tiny_kernel5": dataclasses.replace(TINY_MODEL, kernel_time=5, bottleneck_dilations=(1, 3)),
    "tiny_2d": TINY_2D,
    "tiny_crn": TINY_CRN,
    "tiny_crn_kernel5": dataclasses.replace(TINY_CRN, kernel_time=5, bottleneck_dilations=(1, 2, 4)),
    "tiny_3_layers_no_skip": dataclasses.replace(TINY_MODEL, channels=(24, 16, 8), skip=False),
    "tiny_front": TINY_FRONT,
    "tiny_front_kernel5": dataclasses.replace(TINY_FRONT, kernel_time=5),
    "default": ModelConfig(),
}


@pytest.mark.parametrize("name", sorted(RF_CONFIGS))
def test_receptive_frames_is_exact(name):
    config = RF_CONFIGS[name]
    rf = config.receptive_frames
    # float64, so the faint influence of the receptive field's edge frames (about 1e-14 through the default's
    # eighteen blocks) is not lost to rounding; a frame outside the field changes nothing at all, exactly
    model = make_model(config).double()
    frames = 2 * rf + 9
    t0 = frames // 2
    x = _input(config, frames, batch=1).double()
    with torch.no_grad():
        base = model(x)[..., t0]

        def change_at_t0(perturbed_frame: int) -> float:
            y = x.clone()
            y[..., perturbed_frame] += 3.0
            return (model(y)[..., t0] - base).abs().max().item()

        # just outside the receptive field on either side: no effect at all
        assert change_at_t0(t0 + rf + 1) == 0.0
        assert change_at_t0(t0 - rf - 1) == 0.0
        # the edges of the receptive field: an effect (so rf is not an over-estimate)
        assert change_at_t0(t0 + rf) > 0.0
        assert change_at_t0(t0 - rf) > 0.0


def test_receptive_frames_formula():
    # encoder + decoder: one half-kernel per layer each; bottleneck: half-kernel times dilation
    wide = ModelConfig(channels=(256, 192), bottleneck_dilations=(1, 2, 4, 8, 16, 1, 2, 4, 8, 16))
    assert wide.receptive_frames == 2 * 2 * 1 + sum((1, 2, 4, 8, 16, 1, 2, 4, 8, 16))
    assert dataclasses.replace(TINY_MODEL, kernel_time=5, bottleneck_dilations=(1, 3)).receptive_frames == 16
    # the 2-D front end: two more half-kernels
    assert TINY_FRONT.receptive_frames == TINY_MODEL.receptive_frames + 2


def test_wrong_input_shape_is_refused():
    model = make_model()
    with pytest.raises(ValueError, match="expected \\[batch, 257, frames\\]"):
        model(torch.zeros(1, 256, 10))
    with pytest.raises(ValueError, match="expected"):
        model(torch.zeros(257, 10))


def test_config_dict_round_trip_and_unknown_keys():
    config = dataclasses.replace(TINY_2D, output="log_mag", skip=False)
    data = config.to_dict()
    assert data["channels"] == [8, 16]  # JSON-able
    assert ModelConfig.from_dict(data) == config
    with pytest.raises(ConfigError, match="unknown key.*dropout"):
        ModelConfig.from_dict({**data, "dropout": 0.1})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"layout": "transformer"}, "layout must be one of"),
        ({"output": "waveform"}, "output must be"),
        ({"channels": ()}, "channels must be positive"),
        ({"kernel_time": 4}, "must be odd"),
        ({"bottleneck_dilations": (1, 0)}, "dilations must be positive"),
        ({"layout": "freq_conv2d", "n_freqs": 4}, "too small"),
        ({"layout": "crn", "n_freqs": 4}, "too small"),
        ({"bottleneck_channels": 0}, "bottleneck_channels must be positive"),
        ({"front_channels": -1}, "front_channels must be 0"),
        ({"layout": "crn", "front_channels": 4}, "front_channels is for the freq_channels layout"),
    ],
)
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(TINY_MODEL, **changes)


def test_count_parameters_counts_only_trainable_ones():
    model = DenoisingAutoencoder(TINY_MODEL)
    total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    model.head.requires_grad_(False)
    assert count_parameters(model) == total - model.head.weight.numel() - model.head.bias.numel()


def test_crn_shares_weights_across_frequency():
    # the front end is frequency-local: shifting a pattern up by one encoder stride moves the first
    # encoder layer's response with it (the same kernel sees it), which 1-D bins-as-channels cannot do
    model = make_model(TINY_CRN)
    first = model.encoder[0][0]
    assert isinstance(first, torch.nn.Conv2d) and first.stride == (2, 1)
    x = torch.full((1, 1, 64, 9), -4.0)
    x[0, 0, 20:24, 4] = 2.0
    shifted = torch.roll(x, 2, dims=2)
    with torch.no_grad():
        a, b = first(x), first(shifted)
    assert torch.allclose(torch.roll(a, 1, dims=2)[:, :, 2:-2], b[:, :, 2:-2], atol=1e-6)


def test_front_end_is_frequency_local_and_shares_weights_across_frequency():
    # the front end's residual branch responds to a time-frequency pattern the same way wherever it sits
    # in frequency (away from the edges), which the bins-as-channels encoder after it cannot do alone
    branch = make_model(TINY_FRONT).front.body
    x = torch.full((1, 1, 64, 9), -1.0)
    x[0, 0, 20:24, 4] = 2.0
    shifted = torch.roll(x, 7, dims=2)
    with torch.no_grad():
        a, b = branch(x), branch(shifted)
    assert a.abs().max() > 0
    torch.testing.assert_close(torch.roll(a, 7, dims=2)[:, :, 10:-10], b[:, :, 10:-10], rtol=0, atol=1e-6)


def test_macs_per_second_counts_every_convolution():
    # TINY_MODEL (freq_channels, 32 -> 16, two bottleneck blocks, skips), kernel 3, per frame:
    n, k = 257, 3
    per_frame = (n * 32 * k + 32 * 16 * k  # encoder
                 + 2 * 16 * 16 * k  # bottleneck
                 + 32 * 32 * k + 64 * n * k  # decoder (skip-concatenated inputs)
                 + n * n)  # 1x1 head
    assert macs_per_second(make_model(), 125.0) == pytest.approx(per_frame * 125.0)
    deeper = dataclasses.replace(TINY_MODEL, bottleneck_dilations=(1, 2, 4))
    assert macs_per_second(make_model(deeper), 125.0) == pytest.approx((per_frame + 16 * 16 * k) * 125.0)
    assert macs_per_second(make_model(TINY_CRN), 125.0) > 0
    front = n * (1 * 4 * 9 + 4 * 4 * 9 + 4)  # two 3x3 convolutions over every bin, then a 1x1 back to one channel
    assert macs_per_second(make_model(TINY_FRONT), 125.0) == pytest.approx((per_frame + front) * 125.0)
