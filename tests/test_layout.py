"""The package's layout rules: no private imports between modules, deprecated shims warn, explain stays light."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "smoothgrad_lib"
RESEARCH = {"experiments", "theory", "evaluation", "metrics", "faithfulness", "randomisation", "probes", "montecarlo"}


def _relative_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from .module import name`` or ``from smoothgrad_lib.module import name`` in a file
    of the package, and every ``module._name`` attribute read on a module it imported that way."""
    found, modules = [], set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("smoothgrad_lib")):
            module = (node.module or "").removeprefix("smoothgrad_lib").lstrip(".")
            found += [(module, alias.name) for alias in node.names]
            modules |= {alias.asname or alias.name for alias in node.names if not module}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            found.append((node.value.id, node.attr))
    return found


def test_no_module_imports_a_private_name_from_another():
    private = [
        f"{path.name}: from .{module} import {name}"
        for path in sorted(PACKAGE.glob("*.py"))
        for module, name in _relative_imports(path)
        if name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
    ]
    assert private == []


def test_explain_imports_no_research_module():
    modules = {module.split(".")[0] for module, _ in _relative_imports(PACKAGE / "explain.py")}
    assert modules & RESEARCH == set()


@pytest.mark.parametrize("module", ["experiments", "theory", "evaluation"])
def test_old_modules_warn_and_re_export(module):
    sys.modules.pop(f"smoothgrad_lib.{module}", None)
    with pytest.warns(DeprecationWarning, match=f"smoothgrad_lib.{module} is deprecated"):
        shim = importlib.import_module(f"smoothgrad_lib.{module}")
    for name in shim.__all__:
        assert getattr(shim, name) is not None


def test_new_modules_import_without_a_deprecation_warning():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "from smoothgrad_lib import methods, montecarlo, smoothing, explain\n"
        "from smoothgrad_lib import metrics, faithfulness, randomisation, probes\n"
        "import sys; old = ('experiments', 'theory', 'evaluation')\n"
        "print(sorted(m for m in sys.modules if m.rsplit('.')[-1] in old))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_layout_has_no_import_cycle():
    graph = {
        path.stem: {module.split(".")[0] for module, _ in _relative_imports(path) if module}
        for path in PACKAGE.glob("*.py")
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph.get(start, ())
        )

    cyclic = [name for name in graph if reaches(name, name, {name})]
    assert cyclic == []
