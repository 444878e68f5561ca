"""``provenance.code_version``: the checkout's commit when the package is imported from a checkout, the wheel's
``BUILD_COMMIT`` when it is installed, never the commit of a checkout that merely holds the virtual environment."""

import subprocess
from pathlib import Path

import pytest

from smoothgrad_lib import __version__, provenance

ROOT = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, str]:
    """A git checkout with a package folder at its top and a virtual environment's package inside it."""
    repo = tmp_path / "repo"
    (repo / "smoothgrad_lib").mkdir(parents=True)
    (repo / "smoothgrad_lib" / "code.py").write_text("X = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    return repo, _git(repo, "rev-parse", "HEAD")


def test_this_checkout_reports_its_own_commit():
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    head = _git(ROOT, "rev-parse", "HEAD")
    version = provenance.code_version()
    assert version["package"] == __version__ and version["git"].removesuffix("-dirty") == head


def test_a_package_at_a_checkouts_top_reports_the_checkouts_commit_and_changes(checkout, monkeypatch):
    repo, head = checkout
    monkeypatch.setattr(provenance, "PACKAGE", repo / "smoothgrad_lib")
    assert provenance.code_version()["git"] == head
    (repo / "smoothgrad_lib" / "code.py").write_text("X = 2\n")
    assert provenance.code_version()["git"] == f"{head}-dirty"


def test_an_installed_package_inside_some_checkout_reports_the_commit_its_wheel_was_built_from(checkout, monkeypatch):
    repo, head = checkout
    installed = repo / ".venv" / "lib" / "site-packages" / "smoothgrad_lib"
    installed.mkdir(parents=True)
    monkeypatch.setattr(provenance, "PACKAGE", installed)
    assert provenance.code_version()["git"] is None  # not the surrounding checkout's commit
    (installed / "BUILD_COMMIT").write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert provenance.code_version()["git"] == "0123456789abcdef0123456789abcdef01234567" != head
