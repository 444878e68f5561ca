"""The set-up a new user relies on: environment.yml and the lock agree with pyproject, Colab cells are stamped and
inert, committed notebooks ran cleanly and carry no volatile metadata."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "report").glob("*.ipynb"))
CONDA_NAMES = {"pytorch": "torch"}  # conda's name for the PyPI package


def _requirement(text: str) -> tuple[str, str]:
    name, bound = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", text).groups()
    return CONDA_NAMES.get(name, name).lower().replace("_", "-"), bound.replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = dict(_requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    listed = {}
    for entry in conda:
        for item in entry["pip"] if isinstance(entry, dict) else [entry]:
            if item not in ("pip", "-e .") and not item.startswith("python"):
                name, bound = _requirement(item)
                listed[name] = bound
    assert listed == expected


def test_lock_pins_every_dependency_within_pyprojects_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            pinned = Requirement(line)
            (specifier,) = pinned.specifier
            assert specifier.operator == "==", f"the lock must pin exactly: {line}"
            pins[canonicalize_name(pinned.name)] = specifier.version
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"lock pins {name}=={pins[name]}, not {text}"
        )


def test_every_notebook_has_the_colab_badge_and_install_cell():
    sys.path.insert(0, str(ROOT / "tools"))
    import stamp_colab

    url = stamp_colab.repository_url()
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        assert cells[0].source == stamp_colab.badge_source(url, path), path.name
        assert f"/blob/main/report/{path.name}" in cells[0].source
        assert cells[1].source == stamp_colab.install_source(url), path.name


def _run_install_cell(source: str, monkeypatch, on_colab: bool) -> list:
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append(args))
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
    calls = _run_install_cell(source, monkeypatch, on_colab=True)  # and does install on Colab
    assert len(calls) == 1 and "pip" in calls[0][0]


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
    sys.path.insert(0, str(ROOT / "tools"))
    import build_report

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
    assert all(set(cell["metadata"]) <= {"tags"} for cell in stripped["cells"])
    original = json.loads(NOTEBOOKS[0].read_text())
    for cell in [*original["cells"], *stripped["cells"]]:
        cell["metadata"].pop("execution", None)
    assert stripped == original, "only the volatile metadata changed"
    assert "nothing volatile" in subprocess.run(tool, check=True, capture_output=True, text=True).stdout
