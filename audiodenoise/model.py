"""The convolutional denoising autoencoder.

Input: a log-magnitude spectrogram ``[batch, freq, frames]`` on the grid of a
:class:`~audiodenoise.features.FeatureConfig`. Output: a mask in ``[0, 1]``
over the input magnitude (``output="mask"``) or a log-magnitude
(``output="log_mag"``).

Two layouts share one design (encoder: conv + LeakyReLU + BatchNorm; a
bottleneck of residual dilated convolutions along time; decoder: transposed
conv + LeakyReLU + BatchNorm, with U-Net skip connections when ``skip``):

- ``"freq_channels"`` (default): frequency bins are the channels of 1-D
  convolutions along time; the encoder compresses 257 bins into
  ``channels[-1]`` features.
- ``"freq_conv2d"``: 2-D convolutions over (frequency, time); the encoder
  halves the frequency axis at each layer.
- ``"crn"``: a frequency-local front end as in CRN / GTCRN / DeepFilterNet
  encoders: 2-D convolutions with stride 2 along frequency (weights shared
  across frequency), then the (channels x bands) features are flattened into
  ``bottleneck_channels`` for a temporal stack of dilated 1-D convolutions,
  and a mirrored 2-D decoder with skips.

``front_channels > 0`` adds a frequency-local front end to the
``freq_channels`` layout: a residual branch of 2-D convolutions over
(frequency, time) on the normalised input, weights shared across frequency,
before the bins-as-channels encoder. Its last BatchNorm can start at zero
(``train --grow``), so a trained model gains it as the identity.

Every layer has a finite time support: an output frame depends on
``receptive_frames`` frames either side, which is what lets long signals be
processed in chunks with the same result as one pass.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ._config import config_from_dict, config_to_dict
from .errors import ConfigError

LAYOUTS = ("freq_channels", "freq_conv2d", "crn")
FRONT_LAYERS = 2  # 3 x kernel_time (frequency x time) convolutions of the front end, then a 1x1 back to one channel


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`DenoisingAutoencoder`."""

    n_freqs: int = 257
    layout: str = "freq_channels"
    channels: tuple[int, ...] = (256, 128)
    kernel_freq: int = 5
    kernel_time: int = 3
    # three stacks of dilations 1-32: the shipped model's bottleneck, issue 11's measured winner (model card)
    bottleneck_dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32) * 3
    negative_slope: float = 0.2
    skip: bool = True
    output: str = "mask"
    bottleneck_channels: int = 256  # the "crn" layout's temporal stack width
    front_channels: int = 0  # channels of the freq_channels layout's 2-D front end; 0: none

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.output not in ("mask", "log_mag"):
            raise ConfigError(f"output must be 'mask' or 'log_mag', got {self.output!r}")
        if not self.channels or any(int(c) < 1 for c in self.channels):
            raise ConfigError(f"channels must be positive, got {self.channels}")
        if self.kernel_freq % 2 == 0 or self.kernel_time % 2 == 0:
            raise ConfigError("kernel_freq and kernel_time must be odd")
        if self.bottleneck_channels < 1:
            raise ConfigError(f"bottleneck_channels must be positive, got {self.bottleneck_channels}")
        if any(int(d) < 1 for d in self.bottleneck_dilations):
            raise ConfigError(f"bottleneck_dilations must be positive, got {self.bottleneck_dilations}")
        if self.front_channels < 0:
            raise ConfigError(f"front_channels must be 0 (none) or positive, got {self.front_channels}")
        if self.front_channels and self.layout != "freq_channels":
            raise ConfigError(f"front_channels is for the freq_channels layout, not {self.layout!r}")
        if self.layout != "freq_channels" and self.n_freqs < 2 ** len(self.channels) + 1:
            raise ConfigError(f"n_freqs {self.n_freqs} too small for {len(self.channels)} layers")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return config_from_dict(cls, data)

    @property
    def receptive_frames(self) -> int:
        """Frames of context on each side that one output frame depends on."""
        half = self.kernel_time // 2
        front = FRONT_LAYERS * half if self.front_channels else 0
        return front + 2 * half * len(self.channels) + sum(half * d for d in self.bottleneck_dilations)


class _Ops:
    """The layer constructors of one layout."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.two_d = cfg.layout in ("freq_conv2d", "crn")

    def _kernel(self) -> tuple:
        k, p = self.cfg.kernel_time, self.cfg.kernel_time // 2
        if self.two_d:
            return dict(kernel_size=(self.cfg.kernel_freq, k), padding=(self.cfg.kernel_freq // 2, p), stride=(2, 1))
        return dict(kernel_size=k, padding=p)

    def norm(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels) if self.two_d else nn.BatchNorm1d(channels)

    def act(self) -> nn.Module:
        return nn.LeakyReLU(self.cfg.negative_slope)

    def encoder(self, cin: int, cout: int) -> nn.Module:
        conv = nn.Conv2d if self.two_d else nn.Conv1d
        return nn.Sequential(conv(cin, cout, **self._kernel()), self.act(), self.norm(cout))

    def decoder(self, cin: int, cout: int) -> nn.Module:
        conv = nn.ConvTranspose2d if self.two_d else nn.ConvTranspose1d
        return nn.Sequential(conv(cin, cout, **self._kernel()), self.act(), self.norm(cout))

    def bottleneck(self, channels: int, dilation: int) -> nn.Module:
        k = self.cfg.kernel_time
        if self.cfg.layout == "freq_conv2d":
            conv = nn.Conv2d(channels, channels, (3, k), padding=(1, dilation * (k // 2)), dilation=(1, dilation))
        else:
            conv = nn.Conv1d(channels, channels, k, padding=dilation * (k // 2), dilation=dilation)
        return _Residual(nn.Sequential(conv, self.act(), self.norm(channels)))

    def front(self, channels: int) -> nn.Module:
        """The 2-D front end's residual branch: [batch, 1, freq, frames] -> the same shape."""
        k = dict(kernel_size=(3, self.cfg.kernel_time), padding=(1, self.cfg.kernel_time // 2))
        layers: list[nn.Module] = []
        cin = 1
        for _ in range(FRONT_LAYERS):
            layers += [nn.Conv2d(cin, channels, **k), self.act(), nn.BatchNorm2d(channels)]
            cin = channels
        layers += [nn.Conv2d(channels, 1, 1), self.act(), nn.BatchNorm2d(1)]
        return _Residual(nn.Sequential(*layers))

    def head(self, cin: int, cout: int) -> nn.Module:
        return nn.Conv2d(cin, cout, 1) if self.two_d else nn.Conv1d(cin, cout, 1)


class _Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DenoisingAutoencoder(nn.Module):
    """Convolutional denoising autoencoder over log-magnitude spectrograms."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        ops = _Ops(config)
        self._two_d = ops.two_d
        first = 1 if ops.two_d else config.n_freqs
        chans = (first, *(int(c) for c in config.channels))
        # the last decoder layer ends at head_channels, the head maps them to the output
        head_channels = max(1, chans[1] // 2) if ops.two_d else config.n_freqs
        factor = 2 if config.skip else 1
        self.input_norm = ops.norm(first)
        self.front = ops.front(int(config.front_channels)) if config.front_channels else None
        self.encoder = nn.ModuleList(ops.encoder(chans[i], chans[i + 1]) for i in range(len(chans) - 1))
        self._crn = config.layout == "crn"
        if self._crn:  # flatten (channels x bands) into a temporal stack and back
            bands = _bands(config.n_freqs, len(config.channels))
            flat, width = chans[-1] * bands, int(config.bottleneck_channels)
            self.squeeze = nn.Sequential(nn.Conv1d(flat, width, 1), ops.act(), nn.BatchNorm1d(width))
            self.unsqueeze = nn.Sequential(nn.Conv1d(width, flat, 1), ops.act(), nn.BatchNorm1d(flat))
            self._crn_shape = (chans[-1], bands)
            temporal = _Ops(dataclasses.replace(config, layout="freq_channels"))
            self.bottleneck = nn.Sequential(*(temporal.bottleneck(width, int(d)) for d in config.bottleneck_dilations))
        else:
            self.bottleneck = nn.Sequential(*(ops.bottleneck(chans[-1], int(d)) for d in config.bottleneck_dilations))
        self.decoder = nn.ModuleList(
            ops.decoder(chans[i + 1] * factor, chans[i] if i > 0 else head_channels)
            for i in reversed(range(len(chans) - 1))
        )
        self.head = ops.head(head_channels, 1 if ops.two_d else config.n_freqs)

    def forward(self, log_mag: torch.Tensor) -> torch.Tensor:
        """Mask or log-magnitude estimate.

        Parameters
        ----------
        log_mag : Tensor [batch, freq, frames]

        Returns
        -------
        Tensor [batch, freq, frames]: a mask in [0, 1] (``output="mask"``) or
        a log-magnitude (``output="log_mag"``).
        """
        if log_mag.dim() != 3 or log_mag.shape[1] != self.config.n_freqs:
            raise ValueError(f"expected [batch, {self.config.n_freqs}, frames], got {list(log_mag.shape)}")
        x = self.input_norm(log_mag.unsqueeze(1) if self._two_d else log_mag)
        if self.front is not None:
            # channels-last: several times faster for these few-channel convolutions on a CPU
            x = self.front(x.unsqueeze(1).contiguous(memory_format=torch.channels_last)).squeeze(1)
        sizes = [x.shape[2]]
        encoded = []
        for block in self.encoder:
            x = block(x)
            encoded.append(x)
            sizes.append(x.shape[2])
        if self._crn:
            batch, channels, bands, frames = x.shape
            x = self.unsqueeze(self.bottleneck(self.squeeze(x.reshape(batch, channels * bands, frames))))
            x = x.reshape(batch, channels, bands, frames)
        else:
            x = self.bottleneck(x)
        for level, block in zip(reversed(range(len(self.encoder))), self.decoder, strict=True):
            if self.config.skip:
                x = torch.cat([x, encoded[level]], dim=1)
            x = block(x)
            if self._two_d:
                x = _match_freq(x, sizes[level])
        out = self.head(x)
        if self._two_d:
            out = out.squeeze(1)
        if self.config.output == "mask":
            return torch.sigmoid(out)
        return log_mag + out


def _bands(n_freqs: int, layers: int) -> int:
    """Frequency bands after ``layers`` stride-2 convolutions (padding k // 2): ceil-halving."""
    for _ in range(layers):
        n_freqs = (n_freqs + 1) // 2
    return n_freqs


def _match_freq(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Crop or zero-pad the frequency axis of ``x [batch, ch, freq, frames]``."""
    have = x.shape[2]
    if have > n_freqs:
        return x[:, :, :n_freqs]
    if have < n_freqs:
        return nn.functional.pad(x, (0, 0, 0, n_freqs - have))
    return x


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def macs_per_second(model: DenoisingAutoencoder, frames_per_second: float, *, frames: int = 256) -> float:
    """Multiply-accumulates of the convolutions per second of audio (BatchNorm, activations not counted).

    Counted on a forward pass over ``frames`` frames, then scaled to
    ``frames_per_second`` (the feature grid's frame rate, ``sample_rate / hop``).
    """
    counts: list[int] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        kernel = math.prod(module.kernel_size)
        if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            counts.append(inputs[0][0].numel() * module.out_channels // module.groups * kernel)
        else:
            counts.append(output[0].numel() * module.in_channels // module.groups * kernel)

    convs = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, convs)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, model.config.n_freqs, frames))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sum(counts) / frames * frames_per_second
