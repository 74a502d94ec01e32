"""audiodenoise: speech denoising with a convolutional autoencoder on log-magnitude spectrograms."""

__version__ = "0.1.0"

from .api import Denoiser  # noqa: E402
from .checkpoint import load_model  # noqa: E402
from .errors import AudioDenoiseError  # noqa: E402

__all__ = ["AudioDenoiseError", "Denoiser", "__version__", "load_model"]
