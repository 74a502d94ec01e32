"""audiodenoise: speech denoising with a convolutional autoencoder on log-magnitude spectrograms."""

__version__ = "0.1.0"

__all__ = ["AudioDenoiseError", "Denoiser", "__version__", "load_model"]

# imported on first use: `import audiodenoise` (and so the commands' start) must not wait for torch
_LAZY = {"Denoiser": ".api", "load_model": ".checkpoint", "AudioDenoiseError": ".errors"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
