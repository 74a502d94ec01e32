"""``python -m audiodenoise``: the ``audiodenoise`` command."""

from .cli.main import main

if __name__ == "__main__":
    main()
