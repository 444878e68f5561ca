"""The build step that records which commit a wheel was built from (everything else is in pyproject.toml).

A wheel built from a git checkout carries ``smoothgrad_lib/BUILD_COMMIT``: the newest commit that changed the library
or pyproject.toml, the same commit ``tools/stamp_colab.py`` pins in the notebooks' install cell. So a wheel built from
any later checkout with the same library code is recognised by that cell, while pip's ``direct_url.json`` of a wheel
installed from a file names no commit at all. Outside a git checkout (an sdist, say) the file is not written.
"""

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

LIBRARY_PATHS = ("smoothgrad_lib", "pyproject.toml", "setup.py")  # as in tools/stamp_colab.py


def library_commit(root: Path) -> str | None:
    """The newest commit of the checkout at ``root`` that changed the library, or None outside a git checkout."""
    command = ["git", "-C", str(root), "log", "-1", "--format=%H", "--", *LIBRARY_PATHS]
    try:
        found = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return found or None


class BuildWithCommit(build_py):
    """``build_py`` that also writes ``smoothgrad_lib/BUILD_COMMIT`` into the build."""

    def run(self) -> None:
        super().run()
        commit = library_commit(Path(__file__).resolve().parent)
        if commit and not self.dry_run:
            Path(self.build_lib, "smoothgrad_lib", "BUILD_COMMIT").write_text(commit + "\n")


setup(cmdclass={"build_py": BuildWithCommit})
