"""The students' release: the student versions of the notebooks and a short README, as a folder and a zip.

    python tools/make_release.py                 # writes build/release/smoothgrad-exercises/ and its .zip
    python tools/make_release.py --out DIR       # elsewhere

The student versions are made afresh from the teacher versions (``tools/make_exercises.py``), so the release is
current even where exercises/ is not. The statistics appendix (06, no exercises) comes along, so that the student
versions' links to it work; its links to the other notebooks lead to their student versions in the same folder.
Nothing else comes from report/: no teacher version, solution, model answer, rubric or link to them (the function
:func:`check_release` says so, and the tests run it).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tomllib
from pathlib import Path

import nbformat

from tools import make_exercises

ROOT = Path(__file__).resolve().parents[1]
NAME = "smoothgrad-exercises"
APPENDIX = "06-statistics-appendix.ipynb"
EXTRAS = (APPENDIX, "07-your-own-model.ipynb")  # report notebooks without exercises, as they are

README = """# SmoothGrad exercises

Five Jupyter notebooks on gradient saliency (the vanilla gradient, SmoothGrad, the theory behind it, how maps are
evaluated, robustness), each ending with three exercises: **implement** a function (a check cell says which of its
properties hold, or what to change), **predict, then measure** (write your prediction before running the cell
that measures it), and **interpret** (a written answer). Each notebook's exercise section gives the points;
`{appendix}` explains the statistics they use, and `07-your-own-model.ipynb` runs the comparison on a model and
images of your own.

## Set up

Install the library the notebooks use (Python 3.11 or newer):

    {install}

or, where your teacher gave you a wheel file, `pip install smoothgrad_lib-VERSION-py3-none-any.whl`. On Google
Colab, upload a notebook and run its first code cell: it installs the library (or says how to install the wheel).
Then run the cells from the top. Nothing downloads at run time beyond the install.

## Hand in

Save each notebook under the name your teacher asks for (the grader takes the file's name as your id), with your
answers in the answer cells: the function cell of the implement exercise, the `prediction_N_2 = ...` cell, and the
"Your answer" cell of the written exercise. Only those cells are graded, after the notebook's imports: define
everything your function needs inside its cell. What the check cells printed is not read; the grader runs your
functions again, on the notebook's cases and on others.

## Notebooks

{notebooks}
"""


def repository_url() -> str:
    """The project's repository, from ``[project.urls]`` in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["urls"]["Repository"]


def extra(name: str) -> nbformat.NotebookNode:
    """A report notebook without exercises (the statistics appendix, your own model), whose links lead to the
    student versions beside it."""
    return nbformat.read(ROOT / "report" / name, as_version=4)


def check_release(folder: Path) -> list[str]:
    """Everything in a release folder that a student should not see (empty when the release is clean)."""
    found = []
    for path in sorted(folder.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        text = nbformat.writes(notebook)
        for pattern, what in (
            (make_exercises.BEGIN, "a solution block"),
            (r"report/0[1-5]-", "a link to a teacher version"),
            (r"\]\(\.\./", "a link outside the release"),
            (r'"rubric"|"answer"', "an answer key in the metadata"),
        ):
            if re.search(pattern, text):
                found.append(f"{path.name}: {what}")
        if any(make_exercises.TEACHER_ONLY & set(c.metadata.get("tags", [])) for c in notebook.cells):
            found.append(f"{path.name}: a teacher-only cell")
        for link in re.findall(r"\]\(([\w.-]+\.ipynb)", text):
            if not (folder / link).exists():
                found.append(f"{path.name}: a link to {link}, which the release lacks")
    return found


def write_release(out: Path) -> Path:
    """Write the release folder ``out / NAME`` and its zip; the zip's path."""
    folder = out / NAME
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    students = make_exercises.student_versions()
    for name, notebook in students.items():
        for cell in notebook.cells:
            for other in EXTRAS:
                cell.source = cell.source.replace(f"](../report/{other}", f"]({other}")
        nbformat.write(notebook, folder / name)
    for name in EXTRAS:
        nbformat.write(extra(name), folder / name)
    listing = "\n".join(f"- `{name}`" for name in [*students, *EXTRAS])
    install = f'pip install "smoothgrad-lib @ git+{repository_url()}"'
    (folder / "README.md").write_text(README.format(appendix=APPENDIX, install=install, notebooks=listing))
    problems = check_release(folder)
    if problems:
        raise RuntimeError("the release would show students: " + "; ".join(problems))
    return Path(shutil.make_archive(str(folder), "zip", out, NAME))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "release", help="where (default: build/release)")
    archive = write_release(parser.parse_args().out)
    print(f"wrote {archive.parent / NAME}/ and {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
