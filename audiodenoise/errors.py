"""The exceptions audiodenoise raises on purpose.

Every error a user can cause derives from :class:`AudioDenoiseError`; the CLI
prints its message on one line and exits with code 1. Anything else is a bug.
"""


class AudioDenoiseError(Exception):
    """Base class of every error audiodenoise raises on purpose."""


class AudioError(AudioDenoiseError):
    """An audio file or signal that cannot be read, processed or written."""


class ModelError(AudioDenoiseError):
    """A model file that is missing, corrupt, unsafe or incompatible."""


class ConfigError(AudioDenoiseError):
    """A configuration value or file that is invalid."""


class DatasetError(AudioDenoiseError):
    """A corpus or prepared dataset that cannot be used."""


class TrainingError(AudioDenoiseError):
    """Training that cannot start or cannot go on (e.g. the loss became NaN)."""


class OutputError(AudioDenoiseError):
    """An output path that must not or cannot be written (an input, an existing file, a FIFO, too long)."""
