"""The set-up a new user relies on: environment.yml agrees with pyproject, Colab cells are stamped and inert."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

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


def test_lock_pins_every_dependency_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert _requirement(requirement)[0] in pins, requirement
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


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
