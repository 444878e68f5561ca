"""The notebooks' exercises: student versions generated from the teacher versions, checks that give hints.

The teacher versions (report/*.ipynb) run under nbval with their solutions, and their committed check outputs say
that every property holds. Here the student versions (exercises/*.ipynb) are checked to be what
``tools/make_exercises.py`` makes, to hold no solution, and their check cells are run on the empty answers and on
typical wrong answers: each must print the hint written for that mistake, never raise.
"""

import re
import textwrap
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch

from smoothgrad_lib import exercises
from tools import make_exercises, make_release

ROOT = Path(__file__).resolve().parents[1]
TEACHER = {path.name: nbformat.read(path, as_version=4) for path in sorted((ROOT / "report").glob("0[1-5]-*.ipynb"))}
STUDENT = {path.name: nbformat.read(path, as_version=4) for path in sorted((ROOT / "exercises").glob("*.ipynb"))}


def tagged(notebook: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]


def run(answer: str, check: str) -> exercises.CheckResult:
    """Execute an answer cell, then evaluate its check cell (one call), in one fresh namespace; the result."""
    checks = {name: getattr(exercises, name) for name in dir(exercises) if name.startswith("check")}
    namespace = {"torch": torch} | checks
    exec(compile(answer, "<cell>", "exec"), namespace)  # noqa: S102 -- the notebooks' own cells
    return eval(compile(check, "<check>", "eval"), namespace)  # noqa: S307


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
        shown = "".join(output.get("data", {}).get("text/plain", "") for output in cell.outputs)
        assert re.search(r"^Exercise \d\.\d: all \d+ checks pass", shown), shown


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
        result = run(answer.source, check.source)
        assert result.status == "not answered" and exercises.NOT_ANSWERED in str(result)


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
            "gradient of the sum of all logits",
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
        (
            "def my_gradient(model, x, target):\n    return vanilla_gradient(model, x, target)\n",
            "calls `vanilla_gradient`",
        ),
    ],
    "my_smoothgrad": [
        (
            """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                grads = [vanilla_gradient(model, x + sigma * torch.randn(x.shape, generator=generator), target)
                         for _ in range(n_samples)]
                return torch.stack(grads).abs().mean(0)
            """,
            "absolute values of the answer",
        ),
        (
            """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                grads = [vanilla_gradient(model, x + sigma * torch.randn(x.shape), target) for _ in range(n_samples)]
                return torch.stack(grads).mean(0)
            """,
            "torch's global random generator",
        ),
        (
            """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                return sum(vanilla_gradient(model, x + sigma * torch.randn(x.shape, generator=generator), target)
                           for _ in range(n_samples))
            """,
            "do not sum them",
        ),
        (
            """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                span = (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))[:, None, None, None]
                grads = [vanilla_gradient(model, x + sigma * span * torch.randn(x.shape, generator=generator), target)
                         for _ in range(n_samples)]
                return torch.stack(grads).mean(0)
            """,
            "sigma x (max - min) of each image",
        ),
        (
            """
            def my_smoothgrad(model, x, target, sigma, n_samples, generator):
                grads = [vanilla_gradient(model, x + sigma * torch.randn(x.shape, generator=generator))
                         for _ in range(n_samples)]
                return torch.stack(grads).mean(0)
            """,
            "other classes than its target",
        ),
    ],
    "my_smoothed_derivative": [
        (
            """
            def my_smoothed_derivative(f, x, sigma, n_samples, generator):
                return f(x + sigma * torch.randn(n_samples, generator=generator)).mean().item()
            """,
            "this is f(1), not f'(1)",
        ),
        (
            """
            def my_smoothed_derivative(f, x, sigma, n_samples, generator):
                points = (x + 2 * sigma * torch.randn(n_samples, generator=generator)).requires_grad_(True)
                return torch.autograd.grad(f(points).sum(), points)[0].mean().item()
            """,
            "standard deviation 2 sigma",
        ),
        (
            """
            def my_smoothed_derivative(f, x, sigma, n_samples, generator):
                torch.manual_seed(0)
                points = (x + sigma * torch.randn(n_samples)).requires_grad_(True)
                return torch.autograd.grad(f(points).sum(), points)[0].mean().item()
            """,
            "calls torch.manual_seed",
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
        (
            """
            def my_max_sensitivity(explain_fn, x, radius, n_samples, generator):
                return max_sensitivity(explain_fn, x, radius, n_samples, generator=generator)
            """,
            "calls `max_sensitivity`",
        ),
    ],
}
HELPERS = (
    "from smoothgrad_lib import vanilla_gradient\n"
    "from smoothgrad_lib.robustness import max_sensitivity, uniform_ball_noise\n"
)


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
    result = run(HELPERS + textwrap.dedent(source), check.source)
    assert result.status in ("failed", "error") and "not yet" in str(result) and hint in str(result), result


def test_predictions_not_written_yet_or_off_the_list_get_a_hint():
    for name, notebook in STUDENT.items():
        for cell in tagged(notebook, "prediction"):
            namespace: dict = {}
            exec(compile(cell.source, name, "exec"), namespace)  # noqa: S102
            assert all(namespace[v] is None for v in namespace if v.startswith("prediction_")), cell.source
    results = [
        exercises.check_choice("9.9", None, "b", ("a", "b"), ""),
        exercises.check_choice("9.9", "c", "b", ("a", "b"), ""),
        exercises.check_number("9.9", None, 0.0, 1.0, ""),
        exercises.check_number("9.9", "two", 0.0, 1.0, ""),
    ]
    assert [r.status for r in results] == ["not answered", "failed", "not answered", "failed"]
    assert [str(r) for r in results] == [
        "Exercise 9.9: write your prediction first: one of 'a', 'b'.",
        "Exercise 9.9: 'c' is not one of the options 'a', 'b'.",
        "Exercise 9.9: write your prediction first: a number.",
        "Exercise 9.9: a prediction must be a finite number, got 'two'.",
    ]


def test_a_right_or_wrong_prediction_is_told_which_with_the_reason():
    results = [
        exercises.check_choice("9.9", "a", "a", ("a", "b"), "Why."),
        exercises.check_choice("9.9", "b", "a", ("a", "b"), "Why."),
        exercises.check_number("9.9", 2, 0.35, 0.78, "Why."),
    ]
    assert [r.status for r in results] == ["passed", "failed", "failed"]
    assert [str(r) for r in results] == [
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


CORRECT = {
    "my_gradient": """
        def my_gradient(model, x, target):
            rows = []
            for b in range(len(x)):
                image = x[b : b + 1].detach().clone().requires_grad_(True)
                rows.append(torch.autograd.grad(model(image)[0, target[b]], image)[0][0])
            return torch.stack(rows)
        """,
    "my_smoothgrad": """
        def my_smoothgrad(model, x, target, sigma, n_samples, generator):
            noise = torch.randn((n_samples, *x.shape), generator=generator)  # the whole batch at once
            return torch.stack([vanilla_gradient(model, x + sigma * eps, target) for eps in noise]).mean(0)
        """,
    "my_max_sensitivity": """
        def my_max_sensitivity(explain_fn, x, radius, n_samples, generator):
            scores = []
            for b in range(len(x)):  # image by image, drawn with torch.rand
                image = x[b : b + 1]
                reference = explain_fn(image)
                changes = [
                    (explain_fn(image + (2 * torch.rand(image.shape, generator=generator) - 1) * radius) - reference)
                    .norm() / reference.norm() for _ in range(n_samples)
                ]
                scores.append(max(changes))
            return torch.stack(scores)
        """,
}


@pytest.mark.parametrize("function", sorted(CORRECT))
def test_a_correct_answer_written_differently_passes_public_and_hidden_cases(function):
    check = {"my_gradient": exercises.check_gradient, "my_smoothgrad": exercises.check_smoothgrad}.get(
        function, exercises.check_max_sensitivity
    )
    namespace = {"torch": torch, "vanilla_gradient": exercises.vanilla_gradient}
    exec(textwrap.dedent(CORRECT[function]), namespace)  # noqa: S102
    for hidden in (None, 1, 2):
        result = check(namespace[function], hidden=hidden)
        assert result.passed, result


# Each prediction's measured answer, and other ways of stating it, that nothing may say before its measuring cell.
GIVE_AWAYS = {
    "1.2": ("rougher", "slightly rougher", "less smooth"),
    "2.2": ("below 0.5", "0.271"),
    "3.2": ("0.56", "0.35", "0.78"),
    "4.2": ("none or almost none", "none of 62", "none of the 62", "0 of 62", "better in none"),
    "5.2": ("SG, new noise", "0.312"),
}


@pytest.mark.parametrize("name", sorted(STUDENT))
def test_nothing_gives_a_prediction_away_before_its_measurement(name):
    cells = STUDENT[name].cells
    (prediction,) = tagged(STUDENT[name], "prediction")
    (measured,) = tagged(STUDENT[name], "prediction-check")
    exercise = prediction.metadata["exercise"]["id"]
    question = cells[cells.index(prediction) - 1]
    before = [c.source for c in cells[: cells.index(measured)] if c is not prediction and c is not question]
    for phrase in GIVE_AWAYS[exercise]:
        assert not any(phrase in source for source in before), (exercise, phrase)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not any(phrase in readme for phrase in GIVE_AWAYS[exercise][1:]), exercise


@pytest.mark.parametrize("name", sorted(STUDENT))
def test_student_versions_link_to_no_teacher_version_and_hold_no_key(name):
    text = nbformat.writes(STUDENT[name])
    assert not re.search(r"report/0[1-5]-", text)  # the teacher versions hold the solutions
    assert "rubric" not in text and '"answer"' not in text and "Teacher version" not in text
    links = re.findall(r"\]\(([\w./-]+\.ipynb)", text)
    assert all((ROOT / "exercises" / link).exists() for link in links), links


def test_the_release_holds_student_versions_and_nothing_of_the_teachers(tmp_path):
    archive = make_release.write_release(tmp_path)
    folder = tmp_path / make_release.NAME
    assert sorted(p.name for p in folder.iterdir()) == sorted([*STUDENT, *make_release.EXTRAS, "README.md"])
    assert make_release.EXTRAS == ("06-statistics-appendix.ipynb", "07-your-own-model.ipynb")
    with zipfile.ZipFile(archive) as zipped:
        assert len([n for n in zipped.namelist() if not n.endswith("/")]) == len(STUDENT) + 3
    assert make_release.check_release(folder) == []
    (folder / "01-vanilla-gradient.ipynb").write_text(nbformat.writes(TEACHER["01-vanilla-gradient.ipynb"]))
    found = make_release.check_release(folder)  # a teacher version slipped in: said, every way it shows
    assert {"a solution block", "an answer key in the metadata", "a teacher-only cell"} <= {
        problem.split(": ", 1)[1] for problem in found
    }
    assert "pip install" in (folder / "README.md").read_text()
