"""What a report notebook's code cells may hold: narrative, library calls and printing, never a protocol."""

import ast
from pathlib import Path

import nbformat
import pytest

REPORT = Path(__file__).resolve().parents[1] / "report"
# The notebooks whose measurement code lives in the library (06, the statistics appendix, derives its estimators in
# cells on purpose).
CHECKED = [
    "01-vanilla-gradient",
    "02-smoothgrad",
    "03-taylor-and-variance",
    "04-evaluation",
    "05-robustness",
    "07-your-own-model",
]
ALLOWED = {"exercise", "colab-install"}  # a student's function, and the install cell's helper


@pytest.mark.parametrize("stem", CHECKED)
def test_no_cell_defines_a_function_but_exercise_and_install_cells(stem):
    notebook = nbformat.read(REPORT / f"{stem}.ipynb", as_version=4)
    defining = [
        cell.get("id")
        for cell in notebook.cells
        if cell.cell_type == "code"
        and not ALLOWED & set(cell.metadata.get("tags", []))
        and any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            for node in ast.walk(
                ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith(("%", "!"))))
            )
        )
    ]
    assert defining == [], f"{stem}: move these cells' functions into the library, with tests"
