"""Student versions of the report notebooks, generated from the teacher versions in report/ (never edited by hand).

    python tools/make_exercises.py            # write exercises/NN-*.ipynb for every report notebook with exercises
    python tools/make_exercises.py --check    # exit 1 if a committed student version differs from a fresh one

The teacher version is the report notebook itself: nbval executes it with its solutions. A student version is the
same notebook with, in code cells, every block between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` replaced by
``# YOUR CODE HERE`` (and ``raise NotImplementedError`` inside a function, so that its check says "not answered
yet"), the markdown cells tagged ``solution`` (model answers) or ``teacher`` removed, the answers and rubrics
removed from the exercises' cell metadata (their ids, kinds and points stay: the grader matches cells by them),
every output cleared, a note on top, and the links re-pointed: the Colab badge at the student version, links to
other notebooks with exercises at their student versions (same folder), links to the others at report/. No student
version links to a teacher version.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
REPORT, EXERCISES = ROOT / "report", ROOT / "exercises"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION_TAG = "solution"
TEACHER_ONLY = {SOLUTION_TAG, "teacher"}  # markdown cells the student version drops
KEY_FIELDS = ("answer", "rubric")  # exercise metadata the student version drops


def has_exercises(notebook: nbformat.NotebookNode) -> bool:
    return any(BEGIN in cell.source or SOLUTION_TAG in cell.metadata.get("tags", []) for cell in notebook.cells)


def strip_solutions(source: str) -> str:
    """The code with each solution block replaced by a placeholder at the block's indentation."""
    lines, out, inside = source.split("\n"), [], False
    for line in lines:
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN!r} in:\n{source}")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
            if indent:
                out.append(f"{indent}raise NotImplementedError")
        elif stripped == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r} in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r} in:\n{source}")
    return "\n".join(out)


def student_version(notebook: nbformat.NotebookNode, name: str, with_exercises: set[str]) -> nbformat.NotebookNode:
    """The student version of the teacher notebook ``name`` (a file name in report/).

    ``with_exercises`` names the report notebooks that have a student version: links to them stay in the folder.
    """
    student = nbformat.from_dict(notebook)
    cells = []
    for cell in student.cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "markdown" and tags & TEACHER_ONLY:
            continue
        exercise = cell.metadata.get("exercise")
        if exercise:
            cell.metadata["exercise"] = {k: v for k, v in exercise.items() if k not in KEY_FIELDS}
        if cell.cell_type == "markdown":
            if "colab-badge" in tags:
                cell.source = cell.source.replace(f"blob/main/report/{name}", f"blob/main/exercises/{name}")
            cell.source = re.sub(
                r"\]\((\d\d-[\w-]+\.ipynb)",
                lambda link: f"]({'' if link.group(1) in with_exercises else '../report/'}{link.group(1)}",
                cell.source,
            )
        elif cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    note = nbformat.v4.new_markdown_cell(
        "**Student version**, made by `make exercises`: the solutions of the exercises are removed and no cell has "
        "run yet. Run the cells from the top; each exercise's check cell says which property of your answer holds "
        "and, for the first that does not, what to change. To hand it in, save it under the name your teacher asks "
        "for (the grader takes the file's name as your id).",
        id="student-version",
    )
    student.cells = cells[:1] + [note] + cells[1:]
    return student


def student_versions() -> dict[str, nbformat.NotebookNode]:
    """Every report notebook with exercises, as its student version, by file name."""
    teachers = {path.name: nbformat.read(path, as_version=4) for path in sorted(REPORT.glob("*.ipynb"))}
    with_exercises = {name for name, notebook in teachers.items() if has_exercises(notebook)}
    return {name: student_version(teachers[name], name, with_exercises) for name in sorted(with_exercises)}


def write_all(check: bool) -> int:
    """Write (or, with ``check``, compare) the student version of every report notebook with exercises."""
    EXERCISES.mkdir(exist_ok=True)
    stale = []
    for name, notebook in student_versions().items():
        text = nbformat.writes(notebook) + "\n"
        target = EXERCISES / name
        if check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run `make exercises`): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    return write_all(parser.parse_args().check)


if __name__ == "__main__":
    sys.exit(main())
