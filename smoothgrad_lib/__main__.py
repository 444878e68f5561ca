"""``python -m smoothgrad_lib``: the command line of :mod:`smoothgrad_lib.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
