"""Grade submitted notebooks: ``python -m smoothgrad_lib grade SUBMISSION... --out grades.csv``.

The answer key is the teacher versions of the notebooks (``report/``): each exercise's cell carries, in its
metadata under ``"exercise"``, its id, kind (``implement``, ``predict``, ``interpret``) and points; a prediction
also its options and the measured answer, a written (interpret) answer its rubric. ``tools/make_exercises.py``
removes the answers and rubrics from the student versions and keeps the rest, so that a submission's cells can be
matched to the key.

Each implement answer is graded in a process of its own, forked from a server that has imported the library and
nothing of the submission, in an empty temporary folder, with a clean environment, one CPU thread, bounded memory
and a time limit. That process runs the notebook's import statements (taken from the teacher version) and the
student's answer cell, nothing else of the submission, and then the check (``smoothgrad_lib.exercises``), with
hidden cases; it sends back the check's result as JSON. A prediction is read from its cell without running it (a
plain value). Scores come from those results, never from what a notebook printed, and a student's printout is
discarded. A change to a library module, to a function's code or to torch's core functions by the student's code
(a redefined check, say) makes the exercise an ``error``. A crash or a time-out costs only that exercise.

This defends against honest mistakes and casual tampering. A determined student can still run arbitrary code in
the grading process (read files, the answer key among them; use the network; tamper in ways no snapshot sees): run
the grader in a container without network for that (``docs/teaching.md``).
"""

from __future__ import annotations

import ast
import csv
import inspect
import json
import math
import multiprocessing
import os
import random
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from . import exercises

Kind = Literal["implement", "predict", "interpret"]
MAX_TIMEOUT = 86_400.0  # seconds per exercise: a day
EXIT_GRACE = 5.0  # seconds a child that has answered gets to exit by itself before it is killed
ROW_FIELDS = ("student", "notebook", "exercise", "kind", "points", "max_points", "status", "feedback")
PLACEHOLDER = re.compile(r"\*\*Your answer:\*\*|\*\(double-click to write\)\*")
NOT_GRADED_CELLS = {"colab-install", "exercise", "prediction", "check", "prediction-check"}


class UnreadableSubmission(ValueError):
    """A submission (or the key) that cannot be read as an exercise notebook; the message says why."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of the key: what it is worth and how it is graded.

    ``name`` is the function (implement) or variable (predict) the answer cell defines; ``answer`` the measured
    option or ``[low, high]`` interval of a prediction; ``rubric`` the (points, criterion) pairs of a written answer.
    """

    id: str
    kind: Kind
    points: float
    name: str | None = None
    options: tuple[str, ...] = ()
    answer: Any = None
    rubric: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class Key:
    """One teacher notebook: its name, its import statements and its exercises in order."""

    notebook: str
    imports: str
    exercises: tuple[Exercise, ...]

    @property
    def total(self) -> float:
        return sum(exercise.points for exercise in self.exercises)


@dataclass(frozen=True)
class Row:
    """One line of ``grades.csv``: one student's result on one exercise (``points`` None for a manual grade)."""

    student: str
    notebook: str
    exercise: str
    kind: Kind
    points: float | None
    max_points: float
    status: str
    feedback: str


# --- the key and the submissions ---------------------------------------------------------------------------------


def _read_notebook(path: Path) -> Any:
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError, nbformat.reader.NotJSONError) as error:
        what = "a directory" if path.is_dir() else "not found" if not path.exists() else "not a notebook"
        raise UnreadableSubmission(f"cannot read {path}: {what} ({type(error).__name__})") from None


def exercise_of(cell: Any) -> Exercise | None:
    """The exercise a cell's metadata declares, or None."""
    meta = cell.get("metadata", {}).get("exercise")
    if not meta:
        return None
    return Exercise(
        id=str(meta["id"]),
        kind=meta["kind"],
        points=float(meta["points"]),
        name=meta.get("name"),
        options=tuple(meta.get("options", ())),
        answer=meta.get("answer"),
        rubric=tuple((float(points), text) for points, text in meta.get("rubric", ())),
    )


def import_statements(sources: Iterable[str]) -> str:
    """The top-level ``import``/``from`` statements of some code cells, in order, one per line."""
    statements = []
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        statements += [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(dict.fromkeys(statements))


def read_key(notebook: Path) -> Key:
    """The key of one teacher notebook (its exercises must declare points, and predictions their answers)."""
    cells = _read_notebook(notebook).cells
    found = tuple(sorted((e for e in map(exercise_of, cells) if e is not None), key=lambda e: e.id))
    for exercise in found:
        if exercise.kind == "predict" and exercise.answer is None:
            raise UnreadableSubmission(f"{notebook} is not a teacher version: prediction {exercise.id} has no answer")
    sources = [
        cell.source
        for cell in cells
        if cell.cell_type == "code" and not NOT_GRADED_CELLS & set(cell.metadata.get("tags", []))
    ]
    return Key(notebook.stem, import_statements(sources), found)


def answer_keys(folder: Path) -> dict[str, Key]:
    """The keys of every teacher notebook with exercises in ``folder``, by notebook name."""
    keys = {key.notebook: key for key in map(read_key, sorted(folder.glob("*.ipynb"))) if key.exercises}
    if not keys:
        raise UnreadableSubmission(f"no teacher notebook with exercises in {folder}")
    return keys


def _answer_cell(cells: Sequence[Any], exercise: Exercise) -> Any | None:
    """The submission's cell for ``exercise``: by its metadata, else by its content (a copy that lost metadata)."""
    for cell in cells:
        if (cell.get("metadata", {}).get("exercise") or {}).get("id") == exercise.id:
            return cell
    if exercise.kind == "interpret":
        for question, answer in zip(cells, cells[1:], strict=False):
            if question.source.startswith(f"**Exercise {exercise.id} (interpret)"):
                return answer
        return None
    pattern = rf"^def {exercise.name}\(" if exercise.kind == "implement" else rf"^{exercise.name}\s*="
    return next((cell for cell in cells if cell.cell_type == "code" and re.search(pattern, cell.source, re.M)), None)


def read_submission(path: Path, keys: dict[str, Key]) -> tuple[Key, dict[str, str]]:
    """The key a submitted notebook answers, and its answer cells' sources by exercise id."""
    cells = _read_notebook(path).cells
    best, answers = None, {}
    for key in keys.values():
        found = {exercise.id: _answer_cell(cells, exercise) for exercise in key.exercises}
        found = {id_: cell.source for id_, cell in found.items() if cell is not None}
        if len(found) > len(answers):
            best, answers = key, found
    if best is None:
        raise UnreadableSubmission(f"{path} holds none of the exercises of {', '.join(keys)}")
    return best, answers


# --- running one answer in its own process -----------------------------------------------------------------------


WATCHED = ("torch", "torch.nn.functional", "torch.autograd", "numpy", "math", "builtins")  # beside smoothgrad_lib


def _library_state() -> dict[str, dict[str, tuple[int, int]]]:
    """The identity of every object, and of every function's code, in the library's loaded modules, in torch's
    core modules and in ``torch.Tensor`` and ``nn.Module`` (to see a student's redefinitions)."""
    import torch

    spaces = {
        name: vars(module)
        for name, module in list(sys.modules.items())
        if module is not None and (name.startswith("smoothgrad_lib") or name in WATCHED)
    }
    spaces |= {"torch.Tensor": vars(torch.Tensor), "torch.nn.Module": vars(torch.nn.Module)}
    state = {}
    for name, space in spaces.items():
        entries = {}
        for attribute, value in list(space.items()):
            entries[attribute] = (id(value), id(getattr(value, "__code__", None)))
            if inspect.isclass(value) and name.startswith("smoothgrad_lib") and value.__module__ == name:
                for member, function in vars(value).items():
                    entries[f"{attribute}.{member}"] = (id(function), id(getattr(function, "__code__", None)))
        state[name] = entries
    return state


def _changed(before: dict[str, dict[str, tuple[int, int]]]) -> list[str]:
    after = _library_state()
    return [
        f"{module}.{attribute}"
        for module, attributes in before.items()
        for attribute, identity in attributes.items()
        if after.get(module, {}).get(attribute) != identity
    ]


def _isolate(folder: str) -> None:
    """Run in an empty folder with a clean environment, one thread, discarded output and bounded memory."""
    import torch

    os.chdir(folder)
    os.environ.clear()
    os.environ.update(HOME=folder, TMPDIR=folder, MPLCONFIGDIR=folder, MPLBACKEND="Agg", PATH=os.defpath)
    null = os.open(os.devnull, os.O_RDWR)
    for descriptor in (0, 1, 2):
        os.dup2(null, descriptor)
    sys.stdin, sys.stdout, sys.stderr = open(os.devnull), open(os.devnull, "w"), open(os.devnull, "w")  # noqa: SIM115
    torch.set_num_threads(1)
    try:
        import resource

        pages = int(Path("/proc/self/statm").read_text().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + 4 * 2**30  # what is mapped now, plus 4 GiB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):  # not Linux: no memory bound
        pass


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _work(job: dict[str, Any], folder: str, connection: Connection) -> None:
    """In the child: the imports, the answer cell, then the check; the outcome goes back as JSON bytes."""
    check = exercises.CHECKS.get(job["id"])  # taken before any student code runs
    _isolate(folder)

    def send(message: dict[str, Any]) -> None:
        connection.send_bytes(json.dumps(message).encode())

    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        exec(compile(job["imports"], "<the notebook's imports>", "exec"), namespace)  # noqa: S102 -- the teacher's
    except Exception as error:  # noqa: BLE001 -- the grader's environment, not the student, is at fault
        send({"status": "error", "line": f"the notebook's imports failed in the grader: {_one_line(error)}"})
        return
    before = _library_state()
    try:
        exec(compile(job["source"], f"<your answer to {job['id']}>", "exec"), namespace)  # noqa: S102
    except BaseException as error:  # noqa: BLE001 -- a student's cell may raise anything
        send({"status": "error", "line": f"your answer cell raised {_one_line(error)}"})
        return
    value = namespace.get(job["name"])
    if not callable(value):
        send({"status": "error", "line": f"your answer cell does not define the function `{job['name']}`"})
        return
    try:
        result, crash = check(value, hidden=job["hidden"]), ""
    except BaseException as error:  # noqa: BLE001 -- a tampered library may raise anything
        result, crash = None, _one_line(error)
    changed = _changed(before)
    if changed:
        send({"status": "error", "line": f"your code changes the library: {', '.join(changed[:3])}"})
    elif result is None:
        send({"status": "error", "line": f"the check could not run your answer: {crash}"})
    else:
        send({"status": result.status, "line": result.line, "mistake": result.mistake})


def imported_modules(imports: str) -> list[str]:
    """The modules that some import statements load (``from a.b import c`` loads ``a.b``)."""
    modules = []
    for node in ast.parse(imports).body:
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.append(node.module)
    return modules


def _context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    """Processes forked from a server that imported the library and the notebook's modules once, before any
    student code (fast, and each child starts from the same clean state); spawned where forking is unavailable.
    The server starts on first use and keeps its modules for the rest of the grading run."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["smoothgrad_lib.grading", *preload])
        return context
    return multiprocessing.get_context("spawn")


def run_isolated(job: dict[str, Any], timeout: float, *, preload: Sequence[str] = ()) -> dict[str, Any]:
    """Run one answer (``job``: kind, id, name, imports, source, hidden) in its own process; its JSON outcome.

    ``preload``: modules for the server to import first (the first call's list holds for the whole run).
    """
    context = _context(preload)
    receive, send = context.Pipe(duplex=False)
    with tempfile.TemporaryDirectory(prefix="smoothgrad-grade-") as folder:
        process = context.Process(target=_work, args=(job, folder, send), daemon=True)
        process.start()
        send.close()
        try:
            if not receive.poll(timeout):
                process.kill()
                return {"status": "timeout", "line": f"no result within the time limit of {timeout:g} s"}
            return json.loads(receive.recv_bytes(maxlength=2**20))
        except (EOFError, OSError, ValueError):
            return {"status": "error", "line": "your code ended the grading process (exit, os._exit or a crash)"}
        finally:
            process.join(EXIT_GRACE)  # a child that has answered exits by itself, releasing what it holds
            if process.is_alive():
                process.kill()
                process.join()
            receive.close()


# --- grading --------------------------------------------------------------------------------------------------


def _prediction(exercise: Exercise, value: Any) -> exercises.CheckResult:
    if isinstance(exercise.answer, list):
        low, high = exercise.answer
        return exercises.check_number(exercise.id, value, low, high, "")
    return exercises.check_choice(exercise.id, value, exercise.answer, exercise.options, "")


def prediction(source: str, name: str) -> Any:
    """The value a prediction cell assigns to ``name`` last, read without running it: a plain value (a string or
    a number) is taken as it is, anything else is returned as its source text (which no option equals)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source.strip()
    value = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = ast.unparse(node.value)
    return value


def _written(source: str) -> str:
    return PLACEHOLDER.sub("", source).strip()


def grade_submission(
    student: str,
    key: Key,
    answers: dict[str, str],
    *,
    timeout: float = 60.0,
    hidden: int = 0,
    preload: Sequence[str] = (),
) -> list[Row]:
    """One row per exercise of ``key`` for one student's answers (cell sources by exercise id)."""
    rows = []
    for exercise in key.exercises:
        source = answers.get(exercise.id, "")
        row = Row(student, key.notebook, exercise.id, exercise.kind, 0.0, exercise.points, "not answered", "")
        if exercise.kind == "interpret":
            text = _written(source)
            status = "manual" if text else "not answered"
            rows.append(replace(row, points=None if text else 0.0, status=status, feedback=text))
            continue
        if not source.strip():
            rows.append(replace(row, feedback="no answer cell found"))
            continue
        if exercise.kind == "predict":
            result = _prediction(exercise, prediction(source, exercise.name))
            rows.append(
                replace(
                    row, points=exercise.points if result.passed else 0.0, status=result.status, feedback=result.line
                )
            )
            continue
        job = {
            "kind": exercise.kind,
            "id": exercise.id,
            "name": exercise.name,
            "imports": key.imports,
            "source": source,
            "hidden": hidden,
        }
        outcome = run_isolated(job, timeout, preload=preload or imported_modules(key.imports))
        points = exercise.points if outcome["status"] == "passed" else 0.0
        rows.append(replace(row, points=points, status=outcome["status"], feedback=outcome["line"]))
    return rows


def submissions(paths: Iterable[Path]) -> list[Path]:
    """Every notebook named, or found directly in a named folder; a path that is neither is an error."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.glob("*.ipynb") if not p.name.startswith("."))
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            what = "not found" if not path.exists() else "not a .ipynb notebook"
            raise UnreadableSubmission(f"cannot grade {path}: {what}")
    if not found:
        raise UnreadableSubmission("no notebook to grade among " + ", ".join(map(str, paths)))
    return found


def grade(
    paths: Iterable[Path], keys: dict[str, Key], *, timeout: float = 60.0, hidden: int = 0, progress: bool = True
) -> list[Row]:
    """Grade every submission. All are read first, so that unreadable input (every unreadable file, said in one
    line) or two submissions with one id for one notebook stop the command before any long work."""
    read, problems = [], []
    for path in submissions(paths):
        try:
            read.append((path.stem, *read_submission(path, keys)))
        except UnreadableSubmission as error:
            problems.append(str(error))
    ids = [(student, key.notebook) for student, key, _ in read]
    problems += sorted({f"two submissions of {n} by {s!r}" for s, n in ids if ids.count((s, n)) > 1})
    if problems:
        raise UnreadableSubmission("; ".join(problems))
    preload = sorted({module for key in keys.values() for module in imported_modules(key.imports)})
    rows = []
    for student, key, answers in tqdm(read, desc="grading", unit="notebook", disable=not progress):
        rows += grade_submission(student, key, answers, timeout=timeout, hidden=hidden, preload=preload)
    return rows


def write_csv(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(ROW_FIELDS)
        for row in rows:
            points = "" if row.points is None else f"{row.points:g}"
            writer.writerow(
                [
                    row.student,
                    row.notebook,
                    row.exercise,
                    row.kind,
                    points,
                    f"{row.max_points:g}",
                    row.status,
                    row.feedback,
                ]
            )


def feedback_text(rows: Sequence[Row], key: Key) -> str:
    """One student's feedback on one notebook, as Markdown: points, each check's message, the rubrics."""
    automatic = sum(row.points or 0.0 for row in rows)
    graded = sum(row.max_points for row in rows if row.kind != "interpret")
    written = sum(row.max_points for row in rows if row.kind == "interpret")
    lines = [
        f"# {rows[0].student}: {key.notebook}",
        "",
        f"**{automatic:g} of {graded:g} points** from the checks; the written answers ({written:g} points) are "
        f"graded by your teacher. Total possible: {key.total:g}.",
        "",
    ]
    for row, exercise in zip(rows, key.exercises, strict=True):
        score = "to be graded" if row.points is None else f"{row.points:g} of {row.max_points:g}"
        lines += [f"## Exercise {row.exercise} ({row.kind}): {score} ({row.status})", ""]
        if row.kind == "interpret":
            lines += ["Your answer:", "", *(f"> {line}" for line in (row.feedback or "(none)").splitlines()), ""]
            lines += ["Rubric:", "", *(f"- {points:g} point(s): {criterion}" for points, criterion in exercise.rubric)]
        else:
            lines.append(row.feedback or "(no message)")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_feedback(rows: Sequence[Row], keys: dict[str, Key], folder: Path) -> list[Path]:
    """One Markdown file per student and notebook in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.student, row.notebook), []).append(row)
    for (student, notebook), group in groups.items():
        name = student if sum(s == student for s, _ in groups) == 1 else f"{student}-{notebook}"
        path = folder / f"{name}.md"
        path.write_text(feedback_text(group, keys[notebook]), encoding="utf-8")
        written.append(path)
    return written


def default_key_folder() -> Path:
    """``report/`` beside the package, where a clone of the repository has the teacher versions."""
    return Path(__file__).resolve().parents[1] / "report"


def main(
    paths: Sequence[Path],
    out: Path,
    *,
    key: Path | None = None,
    feedback: Path | None = None,
    timeout: float = 60.0,
    seed: int | None = None,
    progress: bool = True,
) -> int:
    """The ``grade`` command: 0 once every submission is graded, 2 with one line for unreadable input."""
    hidden = random.SystemRandom().randrange(2**31) if seed is None else seed
    problem = None
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        problem = f"--timeout must be a number of seconds in (0, {MAX_TIMEOUT}], got {timeout}"
    elif out.is_dir() or not out.parent.is_dir():
        problem = f"--out {out}: " + ("is a directory" if out.is_dir() else f"its folder {out.parent} does not exist")
    elif feedback is not None and feedback.exists() and not feedback.is_dir():
        problem = f"--feedback {feedback}: not a folder"
    if problem:
        print(f"grade: {problem}", file=sys.stderr)
        return 2
    try:
        keys = answer_keys(key or default_key_folder())
        rows = grade(paths, keys, timeout=timeout, hidden=hidden, progress=progress)
    except UnreadableSubmission as error:
        print(f"grade: {error}", file=sys.stderr)
        return 2
    write_csv(rows, out)
    if feedback is not None:
        write_feedback(rows, keys, feedback)
    students = len({row.student for row in rows})
    print(f"graded {students} submission(s), {len(rows)} rows -> {out} (hidden cases: --seed {hidden})")
    return 0
