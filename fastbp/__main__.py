"""``python -m fastbp``: the command line (``fastbp.cli``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
