"""The notebooks' exercises: student versions generated from the teacher versions, checks that give hints.

The teacher versions (report/*.ipynb) run under nbval with their solutions, and their committed check outputs say
that every property holds. Here the student versions (exercises/*.ipynb) are checked to be what
``tools/make_exercises.py`` makes, to hold no solution, and their check cells are run on the empty answers and on
typical wrong answers: each must print the hint written for that mistake, never raise.
"""

import contextlib
import io
import re
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

from smoothgrad_lib import exercises
from tools import make_exercises

ROOT = Path(__file__).resolve().parents[1]
TEACHER = {path.name: nbformat.read(path, as_version=4) for path in sorted((ROOT / "report").glob("0[1-5]-*.ipynb"))}
STUDENT = {path.name: nbformat.read(path, as_version=4) for path in sorted((ROOT / "exercises").glob("*.ipynb"))}


def tagged(notebook: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]


def run(*sources: str) -> str:
    """Execute cell sources in one fresh namespace (torch and the check functions imported); what they print."""
    checks = {name: getattr(exercises, name) for name in dir(exercises) if name.startswith("check")}
    namespace = {"torch": torch} | checks
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for source in sources:
            exec(compile(source, "<cell>", "exec"), namespace)  # noqa: S102 -- the notebooks' own cells
    return printed.getvalue()


def test_every_report_notebook_has_a_student_version():
    assert set(STUDENT) == set(TEACHER)


def test_student_versions_are_generated_not_edited():
    assert make_exercises.write_all(check=True) == 0


@pytest.mark.parametrize("name", sorted(TEACHER))
def test_three_kinds_of_exercise_in_every_notebook(name):
    headings = re.findall(r"\*\*Exercise (\d)\.(\d) \((\w+)", "\n".join(c.source for c in TEACHER[name].cells))
    assert {int(n) for n, _, _ in headings} == {int(name[:2])}
    assert {kind for *_, kind in headings} >= {"implement", "predict", "interpret"}
    assert len(tagged(TEACHER[name], "solution")) >= 1  # the interpret exercise's model answer


@pytest.mark.parametrize("name", sorted(TEACHER))
def test_teacher_solutions_pass_their_checks(name):
    for cell in tagged(TEACHER[name], "check"):
        printed = "".join(output.get("text", "") for output in cell.outputs)
        assert re.search(r"Exercise \d\.\d: all \d+ checks pass", printed), printed


@pytest.mark.parametrize("name", sorted(STUDENT))
def test_student_version_holds_no_solution_and_no_output(name):
    notebook = STUDENT[name]
    text = nbformat.writes(notebook)
    assert make_exercises.BEGIN not in text and make_exercises.END not in text
    assert tagged(notebook, "solution") == []
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    assert f"blob/main/exercises/{name}" in notebook.cells[0].source  # the Colab badge opens the student version
    for cell in tagged(notebook, "exercise"):
        assert "raise NotImplementedError" in cell.source
    for cell in tagged(notebook, "prediction"):
        assert re.search(r"^prediction_\d_\d = None", cell.source, re.M), cell.source


@pytest.mark.parametrize("name", sorted(STUDENT))
def test_empty_answers_get_the_not_answered_hint(name):
    answers, checks = tagged(STUDENT[name], "exercise"), tagged(STUDENT[name], "check")
    assert len(answers) == len(checks) >= 1
    for answer, check in zip(answers, checks, strict=True):
        assert exercises.NOT_ANSWERED in run(answer.source, check.source)


WRONG = {
    "my_gradient": [
        (
            """
            def my_gradient(model, x, target):
                x = x.detach().clone().requires_grad_(True)
                model(x).gather(1, target[:, None]).sum().backward()
                return x.grad
            """,
            "use torch.autograd.grad(score, x)",
        ),
        (
            """
            def my_gradient(model, x, target):
                x = x.detach().clone().requires_grad_(True)
                return torch.autograd.grad(model(x).sum(), x)[0]
            """,
            "row t of its weights",
        ),
        (
            """
            def my_gradient(model, x, target):
                x.requires_grad_(True)
                return torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)[0]
            """,
            "changed its input x",
        ),
        ("def my_gradient(model, x, target):\n    x.sum()\n", "did you forget to `return`"),
        ("def my_gradient(model, x, target):\n    return x[0]\n", "of shape (2, 3, 4, 4), got (3, 4, 4)"),
    ],
    "my_smoothgrad": [
        (
            """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                grads = [vanilla_gradient(model, x + sigma * torch.randn(x.shape, generator=generator), target)
                         for _ in range(n_samples)]
                return torch.stack(grads).abs().mean(0)
            """,
            "not their absolute values",
        ),
        (
            """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                grads = [vanilla_gradient(model, x + sigma * torch.randn(x.shape), target) for _ in range(n_samples)]
                return torch.stack(grads).mean(0)
            """,
            "the same seed gave two different maps",
        ),
        (
            """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                grads = [vanilla_gradient(model, x + sigma * torch.randn(x.shape, generator=generator), target)
                         for _ in range(n_samples)]
                return torch.stack(grads).mean(0)
            """,
            "draw image by image",
        ),
    ],
    "my_smoothed_derivative": [
        (
            """
            def my_smoothed_derivative(f, x, sigma, n_samples, generator):
                return f(x + sigma * torch.randn(n_samples, generator=generator)).mean().item()
            """,
            "with sigma = 0 it should be f'(1)",
        ),
        (
            """
            def my_smoothed_derivative(f, x, sigma, n_samples, generator):
                points = (x + 2 * sigma * torch.randn(n_samples, generator=generator)).requires_grad_(True)
                return torch.autograd.grad(f(points).sum(), points)[0].mean().item()
            """,
            "(closed form)",
        ),
    ],
    "my_deletion_curve": [
        (
            """
            def my_deletion_curve(model, x, target, maps, steps):
                return model(x).gather(1, target[:, None]).detach().expand(len(x), steps + 1)
            """,
            "use the softmax probability",
        ),
        (
            """
            def my_deletion_curve(model, x, target, maps, steps):
                order = maps.flatten(1).argsort(dim=1)  # least relevant first: an insertion-like order
                n, _, h, w = x.shape
                rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w).expand_as(order))
                with torch.no_grad():
                    return torch.stack([
                        model(torch.where(rank.reshape(n, 1, h, w) < round(k * h * w / steps), 0.0, x))
                        .softmax(1).gather(1, target[:, None])[:, 0] for k in range(steps + 1)], 1)
            """,
            "largest first",
        ),
    ],
    "my_max_sensitivity": [
        (
            """
            def my_max_sensitivity(explain_fn, x, radius, n_samples, generator):
                reference = explain_fn(x)
                changes = [(explain_fn(x + uniform_ball_noise(x, radius, generator)) - reference).flatten(1).norm(dim=1)
                           for _ in range(n_samples)]
                return torch.stack(changes).amax(0) + 1
            """,
            "its sensitivity is 0",
        ),
        (
            """
            def my_max_sensitivity(explain_fn, x, radius, n_samples, generator):
                reference = explain_fn(x)
                changes = [(explain_fn(x + uniform_ball_noise(x, radius, generator)) - reference).flatten(1).norm(dim=1)
                           / reference.flatten(1).norm(dim=1) for _ in range(n_samples)]
                return torch.stack(changes).mean(0)
            """,
            "keep each image's largest",
        ),
    ],
}
HELPERS = "from smoothgrad_lib import vanilla_gradient\nfrom smoothgrad_lib.robustness import uniform_ball_noise\n"


def wrong_answer_cases() -> list[tuple[str, str, str]]:
    cases = []
    for name, notebook in sorted(STUDENT.items()):
        for answer in tagged(notebook, "exercise"):
            function = re.search(r"^def (\w+)\(", answer.source, re.M).group(1)
            cases += [(name, function, i) for i in range(len(WRONG[function]))]
    return cases


@pytest.mark.parametrize(("name", "function", "index"), wrong_answer_cases())
def test_wrong_answers_get_their_hint_not_a_traceback(name, function, index):
    answers, checks = tagged(STUDENT[name], "exercise"), tagged(STUDENT[name], "check")
    check = next(c for a, c in zip(answers, checks, strict=True) if f"def {function}(" in a.source)
    source, hint = WRONG[function][index]
    printed = run(HELPERS + textwrap.dedent(source), check.source)
    assert "not yet" in printed and hint in printed, printed


def test_predictions_not_written_yet_or_off_the_list_get_a_hint():
    for name, notebook in STUDENT.items():
        for cell in tagged(notebook, "prediction"):
            namespace: dict = {}
            exec(compile(cell.source, name, "exec"), namespace)  # noqa: S102
            assert all(namespace[v] is None for v in namespace if v.startswith("prediction_")), cell.source
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exercises.check_choice("9.9", None, "b", ("a", "b"), "")
        exercises.check_choice("9.9", "c", "b", ("a", "b"), "")
        exercises.check_number("9.9", None, 0.0, 1.0, "")
        exercises.check_number("9.9", "two", 0.0, 1.0, "")
    assert printed.getvalue().splitlines() == [
        "Exercise 9.9: write your prediction first: one of 'a', 'b'.",
        "Exercise 9.9: 'c' is not one of the options 'a', 'b'.",
        "Exercise 9.9: write your prediction first: a number.",
        "Exercise 9.9: a prediction must be a finite number, got 'two'.",
    ]


def test_a_right_or_wrong_prediction_is_told_which_with_the_reason():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exercises.check_choice("9.9", "a", "a", ("a", "b"), "Why.")
        exercises.check_choice("9.9", "b", "a", ("a", "b"), "Why.")
        exercises.check_number("9.9", 2, 0.35, 0.78, "Why.")
    assert printed.getvalue().splitlines() == [
        "Exercise 9.9: you predicted 'a', and so it is. Why.",
        "Exercise 9.9: you predicted 'b'; the measurement says 'a'. Why.",
        "Exercise 9.9: you predicted 2, outside the measured [0.35, 0.78]. Why.",
    ]


def test_solution_blocks_become_placeholders_at_their_indentation():
    teacher = (
        "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n\n"
        "p = None\n### BEGIN SOLUTION\np = 1\n### END SOLUTION"
    )
    assert make_exercises.strip_solutions(teacher) == (
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError\n\np = None\n# YOUR CODE HERE"
    )
    for broken in ("### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION"):
        with pytest.raises(ValueError, match="SOLUTION"):
            make_exercises.strip_solutions(broken)
