"""The set-up a new user relies on: environment.yml and the lock agree with pyproject, Colab cells are stamped and
inert, committed notebooks ran cleanly and carry no volatile metadata."""

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "report").glob("*.ipynb"))
CONDA_NAMES = {"pytorch": "torch"}  # conda's name for the PyPI package


def _conda_environment() -> dict[str, str]:
    """environment.yml's packages (PyPI names) and their version specifiers, conda's and pip's alike."""
    listed = {}
    for entry in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]:
        for item in entry["pip"] if isinstance(entry, dict) else [entry]:
            if item not in ("pip", "-e .") and not item.startswith("python"):
                name, bound = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", item).groups()
                listed[canonicalize_name(CONDA_NAMES.get(name, name))] = bound.replace(" ", "")
    return listed


def test_environment_yml_pins_what_the_lock_pins_for_the_packages_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    direct |= {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    pins = {canonicalize_name(r.name): str(r.specifier) for r in _lock()}
    assert _conda_environment() == {name: pins[name] for name in direct}


def _lock() -> list[Requirement]:
    """The requirements of requirements.lock (uv's format: ``# via`` comments on indented lines)."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_lock_is_universal_and_says_how_to_regenerate_it():
    header = (ROOT / "requirements.lock").read_text().splitlines()[:2]
    assert header[1].strip() == "#    make lock", header
    assert "uv pip compile pyproject.toml --extra dev --universal" in (ROOT / "Makefile").read_text()
    by_name = {canonicalize_name(r.name): r for r in _lock()}
    # CUDA libraries, triton and Windows-only packages are pinned for their platforms only, so the same lock installs
    # on macOS, Windows and Linux aarch64 (`make lockcheck` resolves it for each; it needs the package index).
    platform_only = [n for n in by_name if n.startswith(("nvidia-", "cuda-")) or n in ("triton", "pywinpty")]
    assert len(platform_only) >= 10
    for name in platform_only:
        assert by_name[name].marker is not None, f"{name} is pinned for every platform"
        darwin = {"sys_platform": "darwin", "platform_machine": "arm64", "os_name": "posix"}
        assert not by_name[name].marker.evaluate(darwin), f"{name} would install on macOS"


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(ROOT), *args], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_with_an_empty_venv_uses_the_environment_it_is_given_and_builds_no_venv():
    """The conda path: `make test VENV=` (a dry run: the real one is the whole suite) and its environment check, which
    stops an environment that lacks the packages (.ci/run checks that the project's own environment passes it)."""
    dry = _make("-n", "test", "report", "VENV=", f"PY={sys.executable}")
    assert dry.returncode == 0, dry.stderr
    assert "-m venv" not in dry.stdout and "pip install" not in dry.stdout and ".installed" not in dry.stdout
    assert f"{sys.executable} -m pytest" in dry.stdout and f"{sys.executable} tools/build_report.py" in dry.stdout
    assert "warning" not in dry.stderr.lower(), dry.stderr
    default = _make("-n", "test", "PYTHON=python3")
    assert ".venv/bin/python -m pytest" in default.stdout, default.stdout
    bare = _make("in-place", "VENV=", "PY=" + str(ROOT / "no-such-python"))
    assert bare.returncode != 0 and "conda env create -f environment.yml" in bare.stdout


def test_python_floor_is_the_same_everywhere_and_admits_colab():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = project["project"]["requires-python"]
    assert floor == ">=3.11"  # tomllib, used by the tests and tools, is 3.11+
    assert project["tool"]["ruff"]["target-version"] == "py311"
    assert "python>=3.11" in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    assert (
        "Python 3.11 or newer" in (ROOT / "README.md").read_text() and "3.10+" not in (ROOT / "README.md").read_text()
    )
    from packaging.specifiers import SpecifierSet

    assert "3.12.12" in SpecifierSet(floor), "Colab's Python must be inside the range"
    assert "3.10.13" not in SpecifierSet(floor)


def test_lock_pins_every_dependency_within_pyprojects_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for pinned in _lock():
        (specifier,) = pinned.specifier
        assert specifier.operator == "==", f"the lock must pin exactly: {pinned}"
        pins[canonicalize_name(pinned.name)] = specifier.version
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"lock pins {name}=={pins[name]}, not {text}"
        )


def _stamp_colab():
    from tools import stamp_colab

    return stamp_colab


def test_every_notebook_has_the_colab_badge_and_install_cell_of_pyproject():
    stamp_colab = _stamp_colab()
    url, version = stamp_colab.repository_url(), stamp_colab.project()["version"]
    digest = stamp_colab.outputs_digest(NOTEBOOKS)
    assert NOTEBOOKS
    refs = set()
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        assert cells[0].source == stamp_colab.badge_source(url, path), path.name
        ref = re.search(r'^REF = "([0-9a-f]{40})"$', cells[1].source, re.MULTILINE)
        assert ref, f"{path.name}: the install cell pins no commit (python tools/stamp_colab.py)"
        refs.add(ref[1])
        assert cells[1].source == stamp_colab.install_source(url, ref[1], version, digest), (
            f"{path.name}: install cell out of date with pyproject's URL/version or the committed outputs "
            "(bump the version if outputs changed, then python tools/stamp_colab.py)"
        )
    assert len(refs) == 1, "every notebook pins the same commit"
    readme_links = re.findall(r"colab\.research\.google\.com/github/(.+?)/blob/", (ROOT / "README.md").read_text())
    assert readme_links and set(readme_links) == {url.split("github.com/", 1)[1]}


def test_pinned_commit_holds_the_library_of_this_tree():
    """The commit the Colab cell installs has the same library and pyproject as the commit under test."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    git = ["git", "-C", str(ROOT)]
    if (
        subprocess.run([*git, "rev-parse", "--is-shallow-repository"], capture_output=True, text=True).stdout.strip()
        == "true"
    ):
        pytest.skip("shallow clone: the pinned commit may be missing")
    source = nbformat.read(NOTEBOOKS[0], as_version=4).cells[1].source
    pinned = re.search(r'^REF = "([0-9a-f]{40})"$', source, re.MULTILINE)
    assert pinned, "the install cell pins no commit: python tools/stamp_colab.py"
    ref = pinned[1]
    diff = subprocess.run(
        [*git, "diff", "--stat", ref, "HEAD", "--", *_stamp_colab().LIBRARY_PATHS], capture_output=True, text=True
    )
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout == "", (
        f"the library changed since the pinned commit {ref[:12]}: python tools/stamp_colab.py\n{diff.stdout}"
    )


def test_the_wheel_and_the_colab_cell_mean_the_same_library_commit():
    """setup.py writes the commit a wheel holds by the same paths stamp_colab.py pins a commit by."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    (paths,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["LIBRARY_PATHS"]
    ]
    assert paths == _stamp_colab().LIBRARY_PATHS


def _run_install_cell(source: str, monkeypatch, on_colab: bool) -> list:
    calls = []
    monkeypatch.setattr(
        subprocess, "run", lambda *args, **kwargs: calls.append(args) or subprocess.CompletedProcess(args, 0)
    )
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", object())
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "install-cell", "exec"), {})
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_does_nothing_outside_colab(path, monkeypatch):
    source = nbformat.read(path, as_version=4).cells[1].source
    assert _run_install_cell(source, monkeypatch, on_colab=False) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_ran_in_order_without_errors(path):
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} was not executed top to bottom in one run: {counts}"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} holds an error output: {errors[0].ename}"
    streams = "".join(o.get("text", "") for c in code for o in c.outputs if o.get("name") == "stderr")
    assert "Traceback" not in streams


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_volatile_metadata(path):
    from tools import build_report

    notebook = nbformat.read(path, as_version=4)
    assert not build_report.strip_volatile(notebook), (
        f"{path.name} carries execution timestamps or other volatile metadata: "
        f"python tools/build_report.py --strip-only {path.relative_to(ROOT)}"
    )


def test_build_report_strips_volatile_metadata_and_nothing_else(tmp_path):
    path = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], path)
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["widgets"] = {"state": {}}
    for cell in notebook.cells:
        cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000000Z"}
        cell.metadata["collapsed"] = False
    nbformat.write(notebook, path)
    tool = [sys.executable, str(ROOT / "tools" / "build_report.py"), "--strip-only", str(path)]
    assert "stripped" in subprocess.run(tool, check=True, capture_output=True, text=True).stdout
    stripped = json.loads(path.read_text())
    assert "widgets" not in stripped["metadata"]
    assert all(set(cell["metadata"]) <= {"tags", "exercise"} for cell in stripped["cells"])
    original = json.loads(NOTEBOOKS[0].read_text())
    for cell in [*original["cells"], *stripped["cells"]]:
        cell["metadata"].pop("execution", None)
    assert stripped == original, "only the volatile metadata changed"
    assert "nothing volatile" in subprocess.run(tool, check=True, capture_output=True, text=True).stdout


def test_package_version_is_pyprojects():
    import smoothgrad_lib

    assert smoothgrad_lib.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _small_notebook(printed: list[str], timing: str) -> nbformat.NotebookNode:
    """Three code cells as a kernel leaves them: a printout split where it flushed, a figure, a timing cell."""
    v4 = nbformat.v4
    stream = [v4.new_output("stream", name="stdout", text=text) for text in printed]
    return v4.new_notebook(
        cells=[
            v4.new_markdown_cell("# A notebook"),
            v4.new_code_cell("print(a)\nprint(b)", execution_count=1, outputs=stream),
            v4.new_code_cell(
                "plot()",
                execution_count=2,
                outputs=[
                    v4.new_output("stream", name="stderr", text="warning\n"),
                    v4.new_output("display_data", data={"text/plain": "<Figure>"}),
                    v4.new_output("stream", name="stdout", text="after\n"),
                    v4.new_output("stream", name="stdout", text="the figure\n"),
                ],
            ),
            v4.new_code_cell(
                "# NBVAL_IGNORE_OUTPUT\nprint(seconds)",
                execution_count=3,
                outputs=[v4.new_output("stream", name="stdout", text=timing)],
            ),
        ]
    )


def test_report_builder_merges_split_printouts_and_keeps_a_file_whose_results_did_not_change(tmp_path):
    from tools import build_report

    merged = build_report.merge_streams(_small_notebook(["0.1", "25\n", "0.3\n"], "12.0 s\n"))
    assert [o.text for o in merged.cells[1].outputs] == ["0.125\n0.3\n"]
    assert [(o.output_type, o.get("text")) for o in merged.cells[2].outputs] == [
        ("stream", "warning\n"),
        ("display_data", None),
        ("stream", "after\nthe figure\n"),
    ], "only consecutive outputs of one stream merge"

    path = tmp_path / "report.ipynb"
    nbformat.write(_small_notebook(["0.125\n", "0.3\n"], "12.0 s\n"), path)  # as committed: split elsewhere
    before = path.read_bytes()
    rerun = _small_notebook(["0.1", "25\n0.3\n"], "14.5 s\n")
    rerun.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    assert not build_report.save(rerun, path), "same numbers, another split and another timing: not rewritten"
    assert path.read_bytes() == before

    changed = _small_notebook(["0.125\n", "0.4\n"], "14.5 s\n")
    assert build_report.save(changed, path), "a changed number rewrites the file"
    saved = nbformat.read(path, as_version=4)
    assert [o.text for o in saved.cells[1].outputs] == ["0.125\n0.4\n"] and saved.cells[3].outputs[0].text == "14.5 s\n"
    assert all("execution" not in cell.metadata for cell in saved.cells)
    assert not build_report.save(_small_notebook(["0.125\n0.4\n"], "9 s\n"), path)
