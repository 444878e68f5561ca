"""Which code made a result: the package's version and commit, recorded in what the ``roar`` and ``evaluate``
commands write."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def code_version() -> dict[str, str | None]:
    """The package version and the commit of its code.

    ``git`` is the commit of the git checkout the package is imported from (``-dirty`` if it has changes); for a
    package installed from a wheel (``make wheel``, or pip from the repository), the commit recorded in the wheel's
    ``BUILD_COMMIT``, the newest that changed the library (see ``setup.py``); None when neither is known. A package
    installed into a virtual environment that lies inside some checkout is not taken for that checkout's code.

    Examples:
        >>> sorted(code_version())
        ['git', 'package']
    """
    package = sys.modules[__package__]  # the package's own __init__, loaded before any of its modules
    return {"package": package.__version__, "git": _checkout_commit() or _built_from()}


def _checkout_commit() -> str | None:
    """``git describe`` of the checkout whose top folder holds the package, or None."""

    def git(*args: str) -> str | None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            command = ["git", "-C", str(PACKAGE), *args]
            return subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != PACKAGE.parent:
        return None
    return git("describe", "--always", "--dirty", "--abbrev=40") or None


def _built_from() -> str | None:
    """The commit ``setup.py`` wrote into the wheel the package was installed from, or None."""
    built = PACKAGE / "BUILD_COMMIT"
    return (built.read_text().strip() or None) if built.is_file() else None
