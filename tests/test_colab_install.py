"""The notebooks' Colab install cell, run as on Colab but offline: ``google.colab`` faked, the repository URL swapped
for a local ``git+file://`` clone, pip without an index, a throwaway virtual environment that sees this one's
packages (so the dependencies are already there) and installs smoothgrad-lib into itself."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from tools import stamp_colab

ROOT = Path(__file__).resolve().parents[1]

FAKE_COLAB = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def _release(repo: Path, version: str) -> str:
    """Commit ``version`` into the clone's pyproject.toml; returns the commit."""
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text()
    current = stamp_colab.tomllib.loads(text)["project"]["version"]
    pyproject.write_text(text.replace(f'version = "{current}"', f'version = "{version}"', 1))
    _git(repo, "commit", "-q", "-am", f"version {version}")
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    work = tmp_path_factory.mktemp("colab")
    repo = work / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # pip comes from here
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # this environment's packages
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env |= {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def run_cell(url: str, ref: str, version: str, after: str = "") -> subprocess.CompletedProcess:
        """The cell in IPython, as a notebook runs it (the cell's error shows as IPython shows it), then ``after``."""
        cell = stamp_colab.install_source(url, ref, version, "0" * 12)
        code = FAKE_COLAB + cell + "\n" + after
        ipython = [python, "-m", "IPython", "--quick", "--no-banner", "--colors=nocolor", "-c", code]
        return subprocess.run(ipython, capture_output=True, text=True, env=env, cwd=work, timeout=600)

    def make_wheel() -> Path:
        """`make wheel` in the clone, as a student runs it (offline here: no build isolation); returns the wheel."""
        shutil.rmtree(repo / "dist", ignore_errors=True)
        make = ["make", "-C", str(repo), "wheel", f"PYTHON={python}"]
        subprocess.run(make, check=True, capture_output=True, env=env, timeout=600)
        (wheel,) = (repo / "dist").glob("*.whl")
        return wheel

    def pip_install(wheel: Path) -> None:
        """``%pip install WHEEL`` in the Colab session."""
        command = [python, "-m", "pip", "install", "-q", str(wheel)]
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=work, timeout=600)

    return repo, run_cell, Path(site), make_wheel, pip_install


def test_colab_cell_installs_the_pinned_commit_and_reinstalls_after_a_version_change(colab):
    repo, run_cell, site, _, _ = colab
    url = f"file://localhost{repo}"  # a host, since the packaging in pip 23 wants one
    first = _release(repo, "0.0.1.dev1")
    _release(repo, "0.0.1.dev2")  # main has moved on: the cell must still install what it pins

    result = run_cell(url, first, "0.0.1.dev1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"smoothgrad-lib 0.0.1.dev1 (commit {first})"

    (installed,) = site.glob("smoothgrad_lib-*.dist-info")
    assert installed.name == "smoothgrad_lib-0.0.1.dev1.dist-info"  # in the throwaway environment itself
    # The installed package (not a checkout) holds what the notebooks read besides code: the ROAR grid of 05.
    shipped = {path.name for path in (site / "smoothgrad_lib" / "results").glob("*.json")}
    assert shipped == {path.name for path in (ROOT / "smoothgrad_lib" / "results").glob("*.json")} and shipped
    when = installed.stat().st_mtime_ns
    again = run_cell(url, first, "0.0.1.dev1")  # already installed at that version: no reinstall, same line
    assert again.returncode == 0 and again.stdout == result.stdout
    assert installed.stat().st_mtime_ns == when

    second = _release(repo, "0.0.1.dev3")
    updated = run_cell(url, second, "0.0.1.dev3")
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.strip() == f"smoothgrad-lib 0.0.1.dev3 (commit {second})"


def test_colab_cell_reinstalls_when_the_pinned_commit_changes_at_the_same_version(colab):
    repo, run_cell, *_ = colab
    url = f"file://localhost{repo}"
    first = _release(repo, "0.0.2")
    assert run_cell(url, first, "0.0.2").returncode == 0
    (repo / "NOTE").write_text("a fix without a version bump\n")
    _git(repo, "add", "NOTE")
    _git(repo, "commit", "-q", "-m", "fix")
    fixed = _git(repo, "rev-parse", "HEAD")
    result = run_cell(url, fixed, "0.0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"smoothgrad-lib 0.0.2 (commit {fixed})"


def test_colab_cell_says_what_to_do_when_the_repository_is_unreachable(colab, tmp_path):
    _, run_cell, *_ = colab
    result = run_cell(f"file://localhost{tmp_path}/no-such-repository", "0" * 40, "0.0.1.dev9")
    assert result.returncode == 1
    advice = result.stdout.strip().splitlines()[-1]  # IPython shows the exception's line last
    assert advice.startswith("RuntimeError: Could not install smoothgrad-lib @ git+file://localhost"), advice
    assert "at commit 000000000000, run `make wheel`" in advice
    assert advice.endswith("run `%pip install smoothgrad_lib-0.0.1.dev9-py3-none-any.whl` and then Run all again.")
    assert "does not appear to be a git repository" in result.stderr  # pip's own reason, shown above


def _student_check() -> str:
    """Notebook 01's first exercise as a student version has it (unanswered) and its check cell, after the imports."""
    student = nbformat.read(ROOT / "exercises" / "01-vanilla-gradient.ipynb", as_version=4)
    answer, check = (
        next(c for c in student.cells if tag in c.metadata.get("tags", [])) for tag in ("exercise", "check")
    )
    imports = "import torch\nfrom smoothgrad_lib.exercises import check_gradient\n"
    return imports + answer.source + "\n" + check.source


def test_a_student_versions_checks_run_after_its_colab_install(colab):
    """The student version carries the teacher's install cell, and its check cells work with what it installs."""
    repo, run_cell, *_ = colab
    teacher = nbformat.read(ROOT / "report" / "01-vanilla-gradient.ipynb", as_version=4)
    student = nbformat.read(ROOT / "exercises" / "01-vanilla-gradient.ipynb", as_version=4)
    installs = [
        [c.source for c in notebook.cells if stamp_colab.INSTALL_TAG in c.metadata.get("tags", [])]
        for notebook in (teacher, student)
    ]
    assert installs[0] == installs[1] and len(installs[0]) == 1
    ref = _release(repo, "0.0.4")
    result = run_cell(f"file://localhost{repo}", ref, "0.0.4", after=_student_check())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Exercise 1.1: not yet. not answered yet" in result.stdout, result.stdout


def test_the_advised_wheel_gets_a_student_through_the_install_cell(colab, tmp_path):
    """Colab without the repository: the cell fails with its advice; `make wheel` in a clone (one with later commits
    that leave the library alone), `%pip install` of that wheel, and Run all passes the cell and runs a check cell."""
    repo, run_cell, site, make_wheel, pip_install = colab
    ref = _release(repo, "0.0.5")
    unreachable = f"file://localhost{tmp_path}/not-published-yet"
    failed = run_cell(unreachable, ref, "0.0.5")
    assert failed.returncode == 1
    advice = failed.stdout.strip().splitlines()[-1]
    advised = re.search(r"run `make wheel`, upload dist/(\S+) to this session, run `%pip install (\S+)`", advice)
    assert advised and advised[1] == advised[2], advice

    (repo / "NOTES.md").write_text("a later commit that leaves the library alone\n")
    _git(repo, "add", "NOTES.md")
    _git(repo, "commit", "-q", "-m", "notes")
    wheel = make_wheel()
    assert wheel.name == advised[1]
    pip_install(wheel)

    run_all = run_cell(unreachable, ref, "0.0.5", after=_student_check())
    assert run_all.returncode == 0, run_all.stdout + run_all.stderr
    lines = run_all.stdout.strip().splitlines()
    assert lines[0] == f"smoothgrad-lib 0.0.5 (commit {ref})"
    assert "Exercise 1.1: not yet. not answered yet" in run_all.stdout, run_all.stdout
    # The wheel also installs the console script the README's examples use.
    script = site.parents[2] / "bin" / "smoothgrad"
    usage = subprocess.run([script, "explain", "--help"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: smoothgrad explain [-h]"), usage.stderr
    # What the commands record as their code version is the commit the wheel was built from.
    version = "from smoothgrad_lib.provenance import code_version; print(code_version()['git'])"
    recorded = subprocess.run([script.parent / "python", "-c", version], capture_output=True, text=True, cwd=tmp_path)
    assert recorded.stdout.strip() == ref, recorded.stderr


def test_a_wheel_of_other_library_code_is_not_taken_for_the_pinned_commit(colab, tmp_path):
    """A wheel built after the library changed (same version) records its own commit: the cell still asks for REF."""
    repo, run_cell, _, make_wheel, pip_install = colab
    ref = _release(repo, "0.0.6")
    (repo / "smoothgrad_lib" / "changed.py").write_text("CHANGED = True\n")
    _git(repo, "add", "smoothgrad_lib/changed.py")
    _git(repo, "commit", "-q", "-m", "library change without a version bump")
    pip_install(make_wheel())
    result = run_cell(f"file://localhost{tmp_path}/not-published-yet", ref, "0.0.6")
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1].startswith("RuntimeError: Could not install smoothgrad-lib")
