"""Project-wide pytest settings: scratch folders for everything that writes under $HOME, nbval's tolerance for the
last printed digit, and a check that nbval collected every notebook in report/."""

import os
from importlib.util import find_spec
from pathlib import Path

import pytest

from tools.scratch import environment

# nbval with a tolerance of one unit in the last printed digit of each number (see tests/nbval_numbers.py); left
# out where nbval is not installed (tools/gpu_check.sh runs only the CUDA tests, on a machine without Jupyter).
pytest_plugins = ["tests.nbval_numbers"] if find_spec("nbval") else []

ROOT = Path(__file__).parent
REPORT = ROOT / "report"


def pytest_configure(config):
    """Point Jupyter, matplotlib, IPython and torch at the scratch folders of tools/scratch.py, unless already set
    (``make`` sets them all); HOME itself is left alone."""
    for name, value in environment().items():
        if name != "HOME":
            os.environ.setdefault(name, value)


def pytest_collection_modifyitems(session, config, items):
    """When pytest runs its configured test paths with --nbval, every report notebook must be collected."""
    if not config.getoption("nbval", default=False) or config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return
    collected = {Path(str(item.fspath)).resolve() for item in items if str(item.fspath).endswith(".ipynb")}
    missing = sorted(p.name for p in REPORT.glob("*.ipynb") if p.resolve() not in collected)
    if missing or not collected:
        raise pytest.UsageError(f"nbval did not collect these notebooks in report/: {missing or 'any'}")
