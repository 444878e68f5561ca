"""Scratch folders for everything that writes under $HOME (Jupyter, matplotlib, IPython, torch hub): the one list of
variables that both the Makefile and pytest (conftest.py) use.

    python tools/scratch.py   # creates the folders under build/scratch and prints NAME=value ... for a shell prefix

The Makefile puts that output in front of every command it runs; conftest.py calls :func:`environment` and sets
whatever is still unset, so a plain ``pytest`` outside make writes to the same folders (HOME excepted: the user's
own HOME stays where it is).
"""

from __future__ import annotations

import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "build" / "scratch"
FOLDERS = {
    "HOME": "home",
    "MPLCONFIGDIR": "mpl",
    "TORCH_HOME": "torch",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "IPYTHONDIR": "ipython",
}
# debugpy warns in every kernel that frozen modules may break breakpoints; the report sets none.
SETTINGS = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def environment(scratch: Path = SCRATCH) -> dict[str, str]:
    """Variable -> value: each folder variable points under ``scratch``, plus ``SETTINGS``."""
    return {name: str(scratch / sub) for name, sub in FOLDERS.items()} | SETTINGS


def main() -> None:
    for name in FOLDERS:
        (SCRATCH / FOLDERS[name]).mkdir(parents=True, exist_ok=True)
    print(" ".join(f"{name}={shlex.quote(value)}" for name, value in environment().items()))


if __name__ == "__main__":
    main()
