"""Project-wide pytest settings: scratch folders for everything that writes under $HOME, and a
check that nbval collected every notebook in report/."""

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
REPORT = ROOT / "report"

_scratch = Path(os.environ.get("SMOOTHGRAD_SCRATCH", Path(tempfile.gettempdir()) / "smoothgrad-scratch"))
for _name, _sub in {
    "MPLCONFIGDIR": "mpl",
    "TORCH_HOME": "torch",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "IPYTHONDIR": "ipython",
}.items():
    os.environ.setdefault(_name, str(_scratch / _sub))


def pytest_collection_modifyitems(session, config, items):
    """When pytest runs its configured test paths with --nbval, every report notebook must be collected."""
    if not config.getoption("nbval", default=False) or config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return
    collected = {Path(str(item.fspath)).resolve() for item in items if str(item.fspath).endswith(".ipynb")}
    missing = sorted(p.name for p in REPORT.glob("*.ipynb") if p.resolve() not in collected)
    if missing or not collected:
        raise pytest.UsageError(f"nbval did not collect these notebooks in report/: {missing or 'any'}")
