"""``python -m audiodenoise``: the ``audiodenoise`` command."""

from .cli.entry import audiodenoise

if __name__ == "__main__":
    audiodenoise()
