"""The ``grade`` command on a corpus of submissions made here from the student and teacher versions.

Every submission is a student version (exercises/) with some answer cells filled in: the teacher's solutions, a
correct alternative, a call to the library, a fake pass, a redefined check, an infinite loop, a crash, global
seeding and each known wrong variant. All are graded by one ``grade`` call (one forkserver, a short time limit),
and each row must have its expected status, points and named mistake. The corpus is made from the current
notebooks, so it stays current.
"""

import csv
import re
import textwrap
from pathlib import Path

import nbformat
import pytest

from smoothgrad_lib import grading
from smoothgrad_lib.cli import main
from tools import make_exercises

ROOT = Path(__file__).resolve().parents[1]
KEYS = grading.answer_keys(ROOT / "report")
STUDENT = {path.stem: nbformat.read(path, as_version=4) for path in sorted((ROOT / "exercises").glob("*.ipynb"))}
TEACHER = {path.stem: nbformat.read(path, as_version=4) for path in sorted((ROOT / "report").glob("0[1-5]-*.ipynb"))}
NOTEBOOK = {stem[:2]: stem for stem in STUDENT}  # "02" -> "02-smoothgrad"
TIMEOUT = 8.0  # seconds per exercise: the infinite loop's row waits for it


def teacher_answer(stem: str, exercise: str) -> str:
    """The teacher's answer cell for ``exercise``, solution markers removed (a model answer for a written one)."""
    cells = TEACHER[stem].cells
    cell = next(c for c in cells if (c.metadata.get("exercise") or {}).get("id") == exercise)
    if cell.cell_type == "markdown":
        answer = next(c for c in cells[cells.index(cell) :] if "solution" in c.metadata.get("tags", []))
        return re.sub(r"</?details>|<summary>.*?</summary>", "", answer.source).strip()
    markers = (make_exercises.BEGIN, make_exercises.END)
    return "\n".join(line for line in cell.source.split("\n") if line.strip() not in markers)


def submission(number: str, answers: dict[str, str], *, fake_outputs: bool = False) -> nbformat.NotebookNode:
    """The student version of notebook ``number`` with ``answers`` (exercise id -> cell source) filled in."""
    notebook = nbformat.from_dict(STUDENT[NOTEBOOK[number]])
    for cell in notebook.cells:
        exercise = (cell.metadata.get("exercise") or {}).get("id")
        if exercise in answers:
            cell.source = textwrap.dedent(answers[exercise]).strip("\n")
        if fake_outputs and "check" in cell.metadata.get("tags", []):
            text = f"Exercise {number[1]}.1: all 9 checks pass: everything.\n"
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    return notebook


def solutions(number: str) -> dict[str, str]:
    return {e.id: teacher_answer(NOTEBOOK[number], e.id) for e in KEYS[NOTEBOOK[number]].exercises}


SMOOTHGRAD_LOOP = """
def my_smoothgrad(model, x, target, sigma, n_samples, generator):
    grads = [vanilla_gradient(model, x + {noise}, {target}) for _ in range(n_samples)]
    return {combine}
"""


def smoothgrad_answer(
    noise: str = "sigma * torch.randn(x.shape, generator=generator)",
    target: str = "target",
    combine: str = "torch.stack(grads).mean(0)",
) -> str:
    return SMOOTHGRAD_LOOP.format(noise=noise, target=target, combine=combine)


GRADIENT = """
def my_gradient(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    return torch.autograd.grad({score}, x)[0]
"""

# name -> (notebook, answers, {exercise: (status, points, text in the feedback or None)})
CORPUS = {
    **{
        f"teacher-{n}": (n, solutions(n), {f"{n[1]}.1": ("passed", 5, None), f"{n[1]}.2": ("passed", 1, None)})
        for n in NOTEBOOK
    },
    "unanswered": ("02", {}, {"2.1": ("not answered", 0, "not answered"), "2.2": ("not answered", 0, None)}),
    "alternative-gradient": (
        "01",
        {
            "1.1": """
            def my_gradient(model, x, target):
                rows = []
                for b in range(len(x)):
                    image = x[b : b + 1].detach().clone().requires_grad_(True)
                    rows.append(torch.autograd.grad(model(image)[0, target[b]], image)[0][0])
                return torch.stack(rows)
            """
        },
        {"1.1": ("passed", 5, None)},
    ),
    "alternative-smoothgrad": (
        "02",
        {
            "2.1": """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                noise = torch.randn((n_samples, *x.shape), generator=generator)  # every copy of the batch at once
                return sum(vanilla_gradient(model, x + sigma * eps, target) for eps in noise) / n_samples
            """
        },
        {"2.1": ("passed", 5, None)},
    ),
    "library-gradient": (
        "01",
        {"1.1": "def my_gradient(model, x, target):\n    return vanilla_gradient(model, x, target)"},
        {"1.1": ("failed", 0, "calls `vanilla_gradient`")},
    ),
    "library-smoothgrad": (
        "02",
        {
            "2.1": """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                return smoothgrad(model, x, target, n_samples=n_samples, sigma=sigma, aggregate="raw",
                                  generator=generator)
            """
        },
        {"2.1": ("failed", 0, "calls `smoothgrad`")},
    ),
    "fake-pass": (
        "02",
        {
            "2.1": """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                print("Exercise 2.1: all 9 checks pass")
                return None

            def check_smoothgrad(fn):  # a redefined check
                print("Exercise 2.1: all 9 checks pass")
            """
        },
        {"2.1": ("failed", 0, "returned None")},
    ),
    "tampering": (
        "02",
        {
            "2.1": """
            import smoothgrad_lib.exercises as grader

            grader.check_smoothgrad = lambda fn, hidden=None: None
            grader._compare = lambda *args, **kwargs: None

            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                return x
            """
        },
        {"2.1": ("error", 0, "changes the library")},
    ),
    "code-swap": (
        "02",
        {
            "2.1": """
            import smoothgrad_lib.exercises as grader

            def passed(exercise, properties):
                return grader.CheckResult(exercise, "passed", f"Exercise {exercise}: all 9 checks pass.")

            grader._result.__code__ = passed.__code__  # the same function object, other code

            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                return torch.zeros_like(x)
            """
        },
        {"2.1": ("error", 0, "changes the library")},
    ),
    "torch-patch": (
        "01",
        {
            "1.1": """
            torch.Tensor.norm = lambda self, *args, **kwargs: torch.zeros(())

            def my_gradient(model, x, target):
                return torch.ones_like(x)
            """
        },
        {"1.1": ("error", 0, "torch.Tensor.norm")},
    ),
    "reads-the-key": (
        "02",
        {
            "2.2": """
            import json, pathlib, smoothgrad_lib
            key = pathlib.Path(smoothgrad_lib.__file__).resolve().parents[1] / "report" / "02-smoothgrad.ipynb"
            prediction_2_2 = next(c["metadata"]["exercise"]["answer"] for c in json.loads(key.read_text())["cells"]
                                  if c["metadata"].get("exercise", {}).get("id") == "2.2")
            """
        },
        {"2.2": ("failed", 0, "is not one of the options")},
    ),
    "padded-prediction": ("02", {"2.2": 'prediction_2_2 = "below 0.5 "'}, {"2.2": ("passed", 1, None)}),
    "infinite-loop": (
        "02",
        {
            "2.1": """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                while True:
                    pass
            """,
            "2.2": solutions("02")["2.2"],
        },
        {"2.1": ("timeout", 0, "time limit"), "2.2": ("passed", 1, None)},
    ),
    "crash": (
        "01",
        {"1.1": "def my_gradient(model, x, target):\n    return 1 / 0"},
        {"1.1": ("error", 0, "ZeroDivisionError")},
    ),
    "syntax-error": (
        "01",
        {"1.1": "def my_gradient(model, x, target)\n    return x"},
        {"1.1": ("error", 0, "SyntaxError")},
    ),
    "global-seeding": (
        "03",
        {
            "3.1": """
            def my_smoothed_derivative(f, x, sigma, n_samples, generator):
                torch.manual_seed(0)
                points = (x + sigma * torch.randn(n_samples, dtype=torch.float64)).requires_grad_(True)
                return torch.autograd.grad(f(points).sum(), points)[0].mean().item()
            """
        },
        {"3.1": ("failed", 0, "torch.manual_seed")},
    ),
    "wrong-prediction": ("01", {"1.2": 'prediction_1_2 = "smoother"'}, {"1.2": ("failed", 0, "the measurement")}),
    "summed-logits": ("01", {"1.1": GRADIENT.format(score="logits.sum()")}, {"1.1": ("failed", 0, "sum of all")}),
    "gradient-target-ignored": (
        "01",
        {"1.1": GRADIENT.format(score="logits.gather(1, logits.argmax(1)[:, None]).sum()")},
        {"1.1": ("failed", 0, "predicted class")},
    ),
    "summed": (
        "02",
        {"2.1": smoothgrad_answer(combine="torch.stack(grads).sum(0)")},
        {"2.1": ("failed", 0, "average the gradients, do not sum")},
    ),
    "target-ignored": (
        "02",
        {"2.1": smoothgrad_answer(target="None")},
        {"2.1": ("failed", 0, "other classes than its target")},
    ),
    "sigma-by-range": (
        "02",
        {
            "2.1": smoothgrad_answer(
                noise="sigma * (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))[:, None, None, None] "
                "* torch.randn(x.shape, generator=generator)"
            )
        },
        {"2.1": ("failed", 0, "sigma x (max - min)")},
    ),
    "abs": (
        "02",
        {"2.1": smoothgrad_answer(combine="torch.stack(grads).abs().mean(0)")},
        {"2.1": ("failed", 0, "absolute values")},
    ),
    "unseeded": (
        "02",
        {"2.1": smoothgrad_answer(noise="sigma * torch.randn(x.shape)")},
        {"2.1": ("failed", 0, "torch's global random generator")},
    ),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every submission of the corpus graded by one ``grade`` command: the CSV's rows and the feedback folder."""
    folder = tmp_path_factory.mktemp("submissions")
    for name, (number, answers, _) in CORPUS.items():
        nbformat.write(submission(number, answers, fake_outputs=name == "fake-pass"), folder / f"{name}.ipynb")
    out, feedback = folder.parent / "grades.csv", folder.parent / "feedback"
    code = main(["grade", str(folder), "--out", str(out), "--feedback", str(feedback), "--timeout", str(TIMEOUT),
                 "--seed", "2024", "--no-progress"])  # fmt: skip
    assert code == 0
    with out.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return {(row["student"], row["exercise"]): row for row in rows}, feedback


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_submission_gets_its_expected_points(graded, name):
    rows, _ = graded
    number, _, expected = CORPUS[name]
    key = KEYS[NOTEBOOK[number]]
    assert {exercise for student, exercise in rows if student == name} == {e.id for e in key.exercises}
    for exercise, (status, points, text) in expected.items():
        row = rows[name, exercise]
        assert (row["status"], float(row["points"])) == (status, points), row
        assert text is None or text in row["feedback"], row
        assert "\n" not in row["feedback"] or row["kind"] == "interpret"


def test_written_answers_are_manual_rows_with_their_text_and_the_rubric_maximum(graded):
    rows, feedback = graded
    for number in NOTEBOOK:
        row = rows[f"teacher-{number}", f"{number[1]}.3"]
        assert row["kind"] == "interpret" and row["status"] == "manual" and row["points"] == ""
        assert float(row["max_points"]) == 4 and len(row["feedback"]) > 100
    assert rows["unanswered", "2.3"]["status"] == "not answered"
    text = (feedback / "teacher-02.md").read_text(encoding="utf-8")
    assert "**6 of 6 points** from the checks" in text and "Rubric:" in text
    assert "2024" not in text  # the hidden cases' seed is the teacher's


def test_a_submission_that_lost_its_metadata_is_matched_by_content(tmp_path):
    notebook = submission("01", solutions("01"))
    for cell in notebook.cells:
        cell.metadata.pop("exercise", None)
    key, answers = grading.read_submission(_write(notebook, tmp_path / "copy.ipynb"), KEYS)
    assert key.notebook == NOTEBOOK["01"] and set(answers) == {"1.1", "1.2", "1.3"}


def _write(notebook: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.write(notebook, path)
    return path


def test_unreadable_input_exits_2_with_one_line_before_any_grading(tmp_path, capsys):
    text = tmp_path / "essay.ipynb"
    text.write_text("not a notebook")
    empty = _write(nbformat.v4.new_notebook(), tmp_path / "empty.ipynb")
    good = _write(submission("01", {}), tmp_path / "s1.ipynb")
    (tmp_path / "again").mkdir()
    twice = _write(submission("01", {}), tmp_path / "again" / "s1.ipynb")
    out = str(tmp_path / "g.csv")
    cases = {
        "not found": [str(tmp_path / "missing.ipynb")],
        "not a notebook": [str(text)],
        "holds none of the exercises": [str(empty)],
        "two submissions of 01-vanilla-gradient by 's1'": [str(good), str(twice)],
    }
    for expected, paths in cases.items():
        assert main(["grade", *paths, "--out", out, "--no-progress"]) == 2
        message = capsys.readouterr().err
        assert message.startswith("grade: ") and message.count("\n") == 1 and expected in message, message
    assert main(["grade", str(text), str(empty), "--out", out, "--no-progress"]) == 2
    both = capsys.readouterr().err
    assert "essay.ipynb" in both and "empty.ipynb" in both  # every unreadable file, in the one line
    for options in (["--timeout", "1e9"], ["--timeout", "0"], ["--out", str(tmp_path / "no" / "g.csv")],
                    ["--out", str(tmp_path)]):  # fmt: skip
        assert main(["grade", str(good), "--out", out, *options, "--no-progress"]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "g.csv").exists()


def test_a_prediction_is_read_without_running_its_cell():
    assert grading.prediction('prediction_1_2 = None  # "a" or "b"\nprediction_1_2 = "b"', "prediction_1_2") == "b"
    assert grading.prediction("prediction_3_2 = -0.5", "prediction_3_2") == -0.5
    assert grading.prediction("prediction_3_2 = open('key').read()", "prediction_3_2") == "open('key').read()"
    assert grading.prediction("prediction_3_2 = ", "prediction_3_2") == "prediction_3_2 ="


def test_every_exercise_declares_points_and_each_notebook_states_its_total():
    for stem, key in KEYS.items():
        assert [e.kind for e in key.exercises] == ["implement", "predict", "interpret"]
        stated = re.search(r"\*\*Points:\*\*.*total (\d+)", "\n".join(c.source for c in STUDENT[stem].cells))
        assert stated and float(stated.group(1)) == key.total, stem
        assert all(points > 0 for e in key.exercises if e.kind == "interpret" for points, _ in e.rubric)
        assert sum(points for e in key.exercises for points, _ in e.rubric) == next(
            e.points for e in key.exercises if e.kind == "interpret"
        )


def test_the_key_matches_the_measurement_that_nbval_keeps_true():
    """Each prediction's answer in the metadata is what the teacher version's committed check output says."""
    for stem, key in KEYS.items():
        (predict,) = (e for e in key.exercises if e.kind == "predict")
        check = next(c for c in TEACHER[stem].cells if "prediction-check" in c.metadata.get("tags", []))
        printed = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in check.outputs)
        if isinstance(predict.answer, list):
            assert f"inside the measured [{predict.answer[0]:.2f}, {predict.answer[1]:.2f}]" in printed
        else:
            assert f"you predicted {predict.answer!r}, and so it is" in printed
            assert predict.answer in predict.options


def test_the_grader_only_runs_the_notebooks_import_statements():
    imports = KEYS[NOTEBOOK["05"]].imports
    assert "import torch" in imports and "from smoothgrad_lib.exercises import" in imports
    assert "load_model(" not in imports and "filterwarnings" not in imports
