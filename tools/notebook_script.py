"""A report notebook as a plain Python script, and the text its committed cells printed.

    python tools/notebook_script.py script NOTEBOOK     # its code cells, in order, as one script
    python tools/notebook_script.py printed NOTEBOOK    # what its committed code cells wrote to stdout

For running the notebooks where Jupyter is not installed (the GPU machine of tools/gpu_check.sh), reading the
notebook as JSON (nbformat 4) with the standard library only. The notebooks hold no IPython magics: the Colab
install cell is plain Python. Diff a script's output against ``printed`` to see which printed numbers changed.
"""

from __future__ import annotations

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


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("script", "printed"):
        sys.exit(__doc__.split("\n\n")[1])
    sys.stdout.write({"script": script, "printed": printed}[sys.argv[1]](Path(sys.argv[2])))
