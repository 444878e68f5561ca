"""The package's layout rules: no private imports between modules, removed shims stay removed, explain stays light."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smoothgrad_lib"
RESEARCH = {"metrics", "robustness", "faithfulness", "randomisation", "probes", "montecarlo"}


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


def test_the_data_and_model_layer_imports_no_research_module():
    """``images``, ``shapes``, ``twins``, ``models`` and ``train`` sit below the measurements (accuracy included)."""
    layer = ("images", "shapes", "twins", "models", "train")
    upward = {
        f"{name}: {module}"
        for name in layer
        for module, _ in _relative_imports(PACKAGE / f"{name}.py")
        if module.split(".")[0] in RESEARCH
    }
    assert upward == set()


def test_removed_modules_are_gone_and_nothing_imports_them():
    removed = {"experiments", "theory", "evaluation"}
    assert not [module for module in removed if (PACKAGE / f"{module}.py").exists()]
    imported = {module.split(".")[0] for path in PACKAGE.glob("*.py") for module, _ in _relative_imports(path)}
    assert imported & removed == set()


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


def _exported(tree: ast.Module) -> list[str]:
    """The names a module's ``__all__`` lists (empty when it has none)."""
    return [
        element.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(target, "id", "") == "__all__" for target in node.targets)
        for element in node.value.elts
    ]


def test_no_module_but_the_package_reexports_a_name():
    """A name has one home: only ``__init__`` (the front door) lists in ``__all__`` a name it imports."""
    reexported = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        if path.name != "__init__.py":
            reexported += [f"{path.stem}.{name}" for name in _exported(tree) if name in imported]
    assert reexported == []
