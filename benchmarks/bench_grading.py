"""The grading bar: one submitted notebook graded in at most 60 s on a 2-core machine.

Makes ``--n`` submissions of notebook 02 from its student version: a third with the teacher's solutions, a third
with a correct alternative (noise drawn for the whole batch at once), a third with a wrong answer (|G| averaged),
each with a prediction; grades them with one ``python -m smoothgrad_lib grade`` command, as a teacher would, and
prints the wall time of the whole command (start-up included), the time per submission and the statuses.

    python benchmarks/bench_grading.py [--n 30] [--timeout 60]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = {
    "teacher": None,  # the teacher's solution, markers removed
    "alternative": (
        "def my_smoothgrad(model, x, target, sigma, n_samples, generator):\n"
        "    noise = torch.randn((n_samples, *x.shape), generator=generator)\n"
        "    return sum(vanilla_gradient(model, x + sigma * eps, target) for eps in noise) / n_samples"
    ),
    "wrong": (
        "def my_smoothgrad(model, x, target, sigma, n_samples, generator):\n"
        "    noise = torch.randn((n_samples, *x.shape), generator=generator)\n"
        "    return sum(vanilla_gradient(model, x + sigma * eps, target).abs() for eps in noise) / n_samples"
    ),
}


def submissions(folder: Path, n: int) -> None:
    teacher = nbformat.read(ROOT / "report" / "02-smoothgrad.ipynb", as_version=4)
    solution = next(c.source for c in teacher.cells if "exercise" in c.metadata.get("tags", []))
    solution = "\n".join(line for line in solution.split("\n") if "SOLUTION" not in line)
    student = nbformat.read(ROOT / "exercises" / "02-smoothgrad.ipynb", as_version=4)
    kinds = list(ANSWERS)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        notebook = nbformat.from_dict(student)
        for cell in notebook.cells:
            tags = cell.metadata.get("tags", [])
            if "exercise" in tags:
                cell.source = ANSWERS[kind] or solution
            elif "prediction" in tags:
                cell.source = 'prediction_2_2 = "below 0.5"'
        nbformat.write(notebook, folder / f"student{i:02d}-{kind}.ipynb")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30, help="submissions (default: 30)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per exercise (default: 60)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder, out = Path(scratch) / "submissions", Path(scratch) / "grades.csv"
        folder.mkdir()
        submissions(folder, args.n)
        command = [sys.executable, "-m", "smoothgrad_lib", "grade", str(folder), "--out", str(out), "--seed", "0",
                   "--timeout", str(args.timeout), "--no-progress"]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        with out.open(newline="") as file:
            rows = list(csv.DictReader(file))
    statuses = Counter((row["student"].split("-")[1], row["exercise"], row["status"]) for row in rows)
    print(f"{args.n} submissions of 02 graded in {seconds:.1f} s wall (start-up included): "
          f"{seconds / args.n:.2f} s per submission (bar: <= 60 s)")  # fmt: skip
    for (kind, exercise, status), count in sorted(statuses.items()):
        print(f"  {kind:12s} {exercise}  {status:13s} x{count}")
    return 0 if seconds / args.n <= 60 else 1


if __name__ == "__main__":
    sys.exit(main())
