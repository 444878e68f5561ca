"""A report notebook as a plain Python script, the text its committed cells printed, and how far a run differs.

    python tools/notebook_script.py script NOTEBOOK            # its code cells, in order, as one script
    python tools/notebook_script.py printed NOTEBOOK           # what its committed code cells wrote to stdout
    python tools/notebook_script.py diffcount NOTEBOOK OUTPUT  # how many lines of a run's stdout (file) differ

For running the notebooks where Jupyter is not installed (the GPU machine of tools/gpu_check.sh), reading the
notebook as JSON (nbformat 4) with the standard library only. The notebooks hold no IPython magics: the Colab
install cell is plain Python. Diff a script's output against ``printed`` to see which printed numbers changed;
``diffcount`` counts them.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path


def code_cells(notebook: Path) -> list[dict]:
    return [cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]


def script(notebook: Path) -> str:
    return "\n\n".join("".join(cell["source"]) for cell in code_cells(notebook)) + "\n"


def printed(notebook: Path) -> str:
    return "".join(
        "".join(output["text"])
        for cell in code_cells(notebook)
        for output in cell["outputs"]
        if output["output_type"] == "stream" and output["name"] == "stdout"
    )


def differing_lines(expected: str, found: str) -> int:
    """How many lines of ``found`` and ``expected`` differ: for each block of lines that differs (difflib's
    alignment), the longer of its two sides, so a changed line counts once, and so does a missing or an extra one.

    >>> differing_lines("a\\nb\\nc\\n", "a\\nB\\nc\\nd\\n")
    2
    """
    matcher = difflib.SequenceMatcher(None, expected.splitlines(), found.splitlines(), autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


def diffcount(notebook: Path, output: Path) -> str:
    """``"N of M printed lines differ"``: the run's stdout in the file ``output`` against the notebook's committed."""
    expected = printed(notebook)
    return f"{differing_lines(expected, output.read_text())} of {len(expected.splitlines())} printed lines differ\n"


COMMANDS = {"script": script, "printed": printed, "diffcount": diffcount}

if __name__ == "__main__":
    command, *paths = sys.argv[1:] or [""]
    if command not in COMMANDS or len(paths) != (2 if command == "diffcount" else 1):
        sys.exit(__doc__.split("\n\n")[1])
    sys.stdout.write(COMMANDS[command](*map(Path, paths)))
