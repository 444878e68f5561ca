"""tools/notebook_script.py: a notebook as a script, its committed stdout, and how many lines of a run differ."""

import json
import subprocess
import sys
from pathlib import Path

from tools.notebook_script import differing_lines

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "notebook_script.py"


def notebook(tmp_path: Path) -> Path:
    """Two code cells that printed four lines, and a markdown cell."""
    cells = [
        {"cell_type": "markdown", "source": ["# title"]},
        {"cell_type": "code", "source": ["print(1)\n", "print(2)"], "outputs": [_stdout("1\n2\n")]},
        {"cell_type": "code", "source": ["print(3)"], "outputs": [_stdout("3\nend\n")]},
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "nbformat": 4}))
    return path


def _stdout(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": [text]}


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True)


def test_differing_lines_counts_changed_missing_and_extra_lines_once():
    expected = "1\n2\n3\nend\n"
    assert differing_lines(expected, expected) == 0
    assert differing_lines(expected, "1\n2.5\n3\nend\n") == 1  # changed
    assert differing_lines(expected, "1\n3\nend\n") == 1  # missing
    assert differing_lines(expected, "1\n2\n3\nend\nextra\n") == 1  # extra
    assert differing_lines(expected, "x\n2\ny\nz\n") == 3
    assert differing_lines(expected, "") == 4


def test_the_commands(tmp_path):
    path = notebook(tmp_path)
    assert run("script", path).stdout == "print(1)\nprint(2)\n\nprint(3)\n"
    assert run("printed", path).stdout == "1\n2\n3\nend\n"
    output = tmp_path / "run.txt"
    output.write_text("1\n2.01\n3\nend\n")
    assert run("diffcount", path, output).stdout == "1 of 4 printed lines differ\n"
    wrong = run("diffcount", path)
    assert wrong.returncode == 1 and "diffcount NOTEBOOK OUTPUT" in wrong.stderr
