"""Checks for the notebooks' exercises: a student's answer, run on cases whose answer is known.

Each ``check_*`` function takes the student's function, runs it on small cases (a linear model, whose gradient is
its weight row; a quadratic model, whose SmoothGrad has a closed mean and variance; a shapes twin; a 1-D function
with a closed form) and returns a :class:`CheckResult`: every property that held, or the first that failed with a
hint. A notebook shows the result as one line; ``python -m smoothgrad_lib grade`` reads it as data. A missing,
crashing or wrong answer never raises.

Properties a correct answer must have, whatever order it draws its noise in: shape, input and model unchanged,
closed forms, determinism under one generator and change under another, and for SmoothGrad the mean and the variance
over seeds. A wrong answer is compared with the known wrong variants (summed instead of averaged, target ignored,
|G| instead of G, sigma scaled by the image's range, unseeded or globally seeded noise) and the one it matches is
named; where none matches, the hint says which property failed and what the right value is. While the student's
function runs, calls to the library functions that the exercise asks them to write, and to global seeding
(``torch.manual_seed``), are recorded: either fails the exercise with a hint naming the call.

``hidden`` (an int, given by the grader) adds cases the notebook does not show, drawn from that seed: other shapes,
seeds and models, so that an answer fitted to the public cases fails.

The teacher's version of a notebook holds the solutions between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
lines, which ``tools/make_exercises.py`` replaces by a placeholder in the student's version.
"""

from __future__ import annotations

import inspect
import math
import random
import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import faithfulness, robustness, saliency
from .faithfulness import deletion_curve
from .models import load_model
from .saliency import vanilla_gradient
from .shapes import make_shapes

Status = Literal["passed", "failed", "not answered", "error"]
NOT_ANSWERED = "not answered yet: replace `raise NotImplementedError` with your code and run the cell again"

GLOBAL_SEEDING: dict[str, Callable[..., Any]] = {
    "torch.manual_seed": torch.manual_seed,
    "torch.seed": torch.seed,
    "torch.cuda.manual_seed": torch.cuda.manual_seed,
    "torch.cuda.manual_seed_all": torch.cuda.manual_seed_all,
    "numpy.random.seed": np.random.seed,
    "random.seed": random.seed,
}


@dataclass(frozen=True)
class CheckResult:
    """What a check found: ``status``, the properties that held, and the line a notebook shows.

    ``mistake`` names the known wrong variant the answer matched, or the forbidden call it made (None if neither).
    """

    exercise: str
    status: Status
    line: str
    held: tuple[str, ...] = ()
    mistake: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __str__(self) -> str:
        return self.line

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows the line, not the dataclass
        printer.text(self.line)


class Failed(Exception):
    """One property of an answer that does not hold; ``hint`` is what the student reads."""

    def __init__(self, hint: str, *, status: Status = "failed", mistake: str | None = None) -> None:
        super().__init__(hint)
        self.hint, self.status, self.mistake = hint, status, mistake


# --- running the student's function ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """What the student's function may not call while it runs.

    ``functions``: by name, at any depth (also through another library function). ``modules``: every function and
    method defined in these modules or their submodules, when the student's own code calls it directly, but
    ``allowed`` (qualified names, ``module.function``).
    """

    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    modules: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()

    def codes(self) -> tuple[dict[Any, str], dict[Any, str], dict[int, str]]:
        """(code -> name at any depth, code -> name when called directly, id of a builtin -> name), over the
        modules loaded now (an answer may import more of them)."""
        loaded = tuple(
            sorted(n for n in list(sys.modules) if any(n == m or n.startswith(m + ".") for m in self.modules))
        )
        return _codes(loaded, self.allowed, tuple((self.functions | GLOBAL_SEEDING).items()))


@lru_cache(maxsize=64)
def _codes(
    modules: tuple[str, ...], allowed: tuple[str, ...], functions: tuple[tuple[str, Callable[..., Any]], ...]
) -> tuple[dict[Any, str], dict[Any, str], dict[int, str]]:
    anywhere, builtins = {}, {}
    for name, function in functions:
        code = getattr(inspect.unwrap(function), "__code__", None)
        if code is None:
            builtins[id(function)] = name
        else:
            anywhere[code] = name
    direct = {}
    for module_name in modules:
        module = sys.modules.get(module_name)
        for value in list(vars(module).values()) if module is not None else []:
            if getattr(value, "__module__", None) != module_name:
                continue
            for member in list(vars(value).values()) if inspect.isclass(value) else [value]:
                function = getattr(member, "__func__", member)
                qualified = f"{module_name}.{getattr(function, '__qualname__', '')}"
                if inspect.isfunction(function) and qualified not in allowed:
                    direct[function.__code__] = qualified
    return anywhere, direct, builtins


def _library_code(filename: str) -> bool:
    """Whether a code object's file belongs to the library, Python or an installed package (not the student)."""
    return filename.startswith(_LIBRARY_ROOTS)


_LIBRARY_ROOTS = tuple(
    {str(Path(__file__).resolve().parent), *(sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib"))}
)


@contextmanager
def _watching(rules: Rules) -> Iterator[list[str]]:
    """Record which forbidden functions are called inside the block, in the order first called."""
    anywhere, direct, builtins = rules.codes()
    seen: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            name = anywhere.get(code)
            caller = frame.f_back
            if name is None and code in direct and caller is not None and not _library_code(caller.f_code.co_filename):
                name = direct[code]
        elif event == "c_call":
            name = builtins.get(id(arg))
        else:
            return
        if name is not None and name not in seen:
            seen.append(name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def _global_states() -> tuple[Any, ...]:
    """The program-wide random states: torch's default generator, numpy's and Python's."""
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002 -- the global one


def _run(fn: Callable[..., Any], *args: Any, forbidden: Rules, seeded: bool = True) -> Any:
    """Call the student's function; a crash, a forbidden call or global randomness becomes a ``Failed``.

    ``seeded``: the function is given a generator, so it must leave the program-wide random states alone (a draw
    from torch's, numpy's or Python's global generator, or a reseeding, changes them).
    """
    before = _global_states()
    try:
        with _watching(forbidden) as called:
            value = fn(*args)
    except NotImplementedError:
        raise Failed(NOT_ANSWERED, status="not answered") from None
    except Exception as error:  # noqa: BLE001 -- any crash of the student's code becomes advice
        raise Failed(f"your function raised {type(error).__name__}: {error}", status="error") from None
    for name in called:
        if name in GLOBAL_SEEDING:
            raise Failed(
                f"your function calls {name}: global seeding resets the random state of the whole program; draw "
                "every random number from the `generator` passed in (torch.randn(..., generator=generator))",
                mistake="global seeding",
            )
        raise Failed(
            f"your function calls `{name}`, which does what this exercise asks you to write yourself",
            mistake=f"calls {name}",
        )
    after = _global_states()
    changed = [
        name
        for name, old, new in zip(("torch's", "numpy's", "Python's"), before, after, strict=True)
        if not (
            torch.equal(old, new)
            if isinstance(old, torch.Tensor)
            else np.array_equal(old, new)
            if isinstance(old, np.ndarray)
            else old == new
        )
    ]
    if seeded and changed:
        raise Failed(
            f"your function draws from (or reseeds) {changed[0]} global random generator: draw every random number "
            "from the `generator` passed in, torch.randn(..., generator=generator)",
            mistake="unseeded noise",
        )
    return value


def _tensor(value: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if value is None:
        raise Failed(f"your function returned None: did you forget to `return` {what}?")
    if not isinstance(value, torch.Tensor):
        raise Failed(f"expected a torch.Tensor ({what}), got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise Failed(f"expected {what} of shape {shape}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise Failed("the result holds NaN or inf values")
    return value.detach().cpu()


def _number(value: Any, what: str) -> float:
    if value is None:
        raise Failed(f"your function returned None: did you forget to `return` {what}?")
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        if value.size != 1 if isinstance(value, (np.ndarray, np.generic)) else value.numel() != 1:
            raise Failed(f"expected one number ({what}), got an array of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Failed(f"expected a finite number ({what}), got {value!r}")
    return float(value)


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    return float((got - expected).norm() / expected.norm().clamp_min(1e-12))


def _preview(values: torch.Tensor) -> str:
    flat = values.detach().flatten().tolist()
    return "[" + ", ".join(f"{v:.3g}" for v in flat[:3]) + (", ...]" if len(flat) > 3 else "]")


def _compare(
    got: torch.Tensor,
    expected: torch.Tensor,
    tolerance: float,
    what: str,
    variants: tuple[tuple[str, torch.Tensor, str], ...] = (),
) -> None:
    """Pass if ``got`` is ``expected``; else name the wrong variant it matches, or give the right value."""
    error = _relative_error(got, expected)
    if error <= tolerance:
        return
    for mistake, value, hint in (
        ("sign flipped", -expected, "it is the right answer with the opposite sign"),
    ) + variants:
        if _relative_error(got, value) <= tolerance:
            raise Failed(hint, mistake=mistake)
    first = next(b for b in range(len(got)) if _relative_error(got[b], expected[b]) > tolerance) if got.dim() else 0
    where = f" (first wrong: image {first})" if got.dim() and len(got) > 1 else ""
    shown = (expected[first], got[first]) if got.dim() else (expected, got)
    raise Failed(f"{what}: expected {_preview(shown[0])}, got {_preview(shown[1])}{where} (relative error {error:.2g})")


def _unchanged(
    before: torch.Tensor, after: torch.Tensor, advice: str = "x + noise is a new tensor; x += ... is not"
) -> None:
    if not torch.equal(before, after.detach()) or after.requires_grad or after.grad is not None:
        raise Failed(
            f"your function changed its input x (its values, requires_grad or .grad): leave it alone ({advice})",
            mistake="input changed",
        )


def _model_untouched(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        return
    if model.training:
        raise Failed("your function put the model in training mode: leave model.train()/eval() alone")
    if any(p.grad is not None for p in model.parameters()):
        raise Failed(
            "the model's parameters now hold .grad: use torch.autograd.grad(score, x), which differentiates with "
            "respect to x only, instead of score.backward()",
            mistake="parameter gradients",
        )


def _result(exercise: str, properties: Iterator[str]) -> CheckResult:
    """Run the properties one by one (the iterator yields each name once it holds) into a result."""
    held: list[str] = []
    try:
        for name in properties:
            held.append(name)
    except Failed as failed:
        so_far = f" (passed so far: {', '.join(held)})" if held else ""
        line = f"Exercise {exercise}: not yet. {failed.hint}{so_far}"
        return CheckResult(exercise, failed.status, line, tuple(held), failed.mistake)
    line = f"Exercise {exercise}: all {len(held)} checks pass: {', '.join(held)}."
    return CheckResult(exercise, "passed", line, tuple(held))


# --- cases with known answers ----------------------------------------------------------------------------------


class Quadratic(nn.Module):
    """Logits ``f_k(x) = w_k . x + b_k + c_k ||x||^2 / 2`` over the flattened image: gradient ``w_k + c_k x``.

    With ``c = 0`` it is a linear classifier, whose gradient is its weight row at every input.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, curvature: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias, self.curvature = nn.Parameter(weight), nn.Parameter(bias), nn.Parameter(curvature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return flat @ self.weight.T + self.bias + self.curvature * flat.square().sum(1, keepdim=True) / 2

    def gradient(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The closed-form gradient of each image's target logit, shaped like ``x``."""
        flat = self.weight[target] + self.curvature[target, None] * x.flatten(1)
        return flat.reshape(x.shape).detach()


@dataclass(frozen=True)
class Case:
    """A model, images and targets; ``label`` says what they are in a hint."""

    label: str
    model: Quadratic
    x: torch.Tensor
    target: torch.Tensor


def _case(seed: int, shape: tuple[int, ...], classes: int, *, curved: bool, span: float = 1.0) -> Case:
    """A linear (or quadratic) model with ``classes`` classes and images of ``shape`` (B, C, H, W).

    Pixels are uniform in [-span/2 + 0.5, span/2 + 0.5] with the two ends present in every image, so that each
    image's range max - min is exactly ``span``.
    """
    generator = torch.Generator().manual_seed(seed)
    features = math.prod(shape[1:])
    curvature = torch.linspace(0.5, 2.0, classes) if curved else torch.zeros(classes)
    model = Quadratic(
        torch.randn(classes, features, generator=generator), torch.randn(classes, generator=generator), curvature
    ).eval()
    x = 0.5 + span * (torch.rand(shape, generator=generator) - 0.5)
    x.view(shape[0], -1)[:, 0], x.view(shape[0], -1)[:, 1] = 0.5 - span / 2, 0.5 + span / 2
    target = torch.randint(classes, (shape[0],), generator=generator)
    with torch.no_grad():  # a target that is not the predicted class, so that "target ignored" shows
        predicted = model(x).argmax(1)
    target = torch.where(target == predicted, (target + 1) % classes, target)
    kind = "quadratic" if curved else "linear"
    return Case(f"{kind} model, {shape[0]} images of shape {tuple(shape[1:])}, {classes} classes", model, x, target)


def _twin_case(name: str = "relu", seed: int = 7, n: int = 2) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A shapes twin (CPU, eval mode) with ``n`` images and their classes."""
    data = make_shapes(n, seed=seed)
    return load_model(f"shapes-{name}", device="cpu").model, data.images, data.labels


def _hidden_seed(hidden: int | None, salt: int) -> int | None:
    return None if hidden is None else (hidden * 7919 + salt) % 2**31


def _mixes_other_classes(case: Case, got: torch.Tensor) -> bool:
    """Whether each image's answer on a linear ``case`` is a combination of its weight rows other than its target's."""
    rows = case.model.weight.detach().double().T  # (features, classes)
    flat = got.double().flatten(1).T  # (features, B)
    coefficients = torch.linalg.lstsq(rows, flat).solution  # (classes, B)
    fits = (rows @ coefficients - flat).norm(dim=0) <= 1e-4 * flat.norm(dim=0)
    own = coefficients[case.target, torch.arange(len(case.target))]
    return bool(fits.all() and ((own - 1).abs() > 1e-3).any() and (coefficients.sum(0) - 1).abs().max() < 1e-3)


def _gradient_variants(case: Case, expected: torch.Tensor) -> tuple[tuple[str, torch.Tensor, str], ...]:
    """The known wrong answers of a gradient on ``case``: all logits, the predicted class, softmax, log-softmax."""
    model, x, target = case.model, case.x, case.target
    with torch.no_grad():
        logits = model(x)
        p = logits.softmax(1)
    every = torch.stack([model.gradient(x, torch.full_like(target, k)) for k in range(logits.shape[1])], 1)
    average = (p[:, :, None, None, None] * every).sum(1)
    p_target = p.gather(1, target[:, None])[:, 0].reshape(-1, 1, 1, 1)
    return (
        (
            "summed logits",
            every.sum(1),
            "this is the gradient of the sum of all logits: take each image's own "
            "class, logits.gather(1, target[:, None]).sum()",
        ),
        (
            "target ignored",
            model.gradient(x, logits.argmax(1)),
            "this is the gradient of each image's predicted class: use `target`, not the argmax",
        ),
        (
            "softmax",
            p_target * (expected - average),
            "this is the gradient of the softmax probability: differentiate the logit, model(x), without softmax",
        ),
        (
            "log-softmax",
            expected - average,
            "this is the gradient of the log-probability (log_softmax): differentiate the logit itself",
        ),
    )


# --- 1.1 the vanilla gradient ----------------------------------------------------------------------------------

ATTRIBUTION_MODULES = (
    "smoothgrad_lib.saliency",
    "smoothgrad_lib.methods",
    "smoothgrad_lib.probes",
    "smoothgrad_lib.lrp",
    "smoothgrad_lib.montecarlo",
    "smoothgrad_lib.smoothing",
    "captum.attr",
)
GRADIENT_RULES = Rules(
    {
        "vanilla_gradient": vanilla_gradient,
        "noisy_gradients": saliency.noisy_gradients,
        "smoothgrad": saliency.smoothgrad,
        "smoothgrad_estimate": saliency.smoothgrad_estimate,
    },
    ATTRIBUTION_MODULES,
)


def check_gradient(fn: Callable[..., torch.Tensor], *, hidden: int | None = None) -> CheckResult:
    """Exercise 1.1: ``fn(model, x, target)`` -> d logit_target / d x, shaped like x (B, C, H, W)."""

    def closed_form(case: Case, name: str) -> Iterator[str]:
        before = case.x.clone()
        got = _tensor(
            _run(fn, case.model, case.x, case.target, forbidden=GRADIENT_RULES, seeded=False),
            tuple(case.x.shape),
            "a gradient shaped like x (B, C, H, W)",
        )
        yield f"shape{name}"
        _unchanged(before, case.x, "differentiate a copy, x = x.detach().clone().requires_grad_(True)")
        yield f"input unchanged{name}"
        _model_untouched(case.model)
        yield f"model unchanged{name}"
        expected = case.model.gradient(case.x, case.target)
        _compare(
            got,
            expected,
            1e-5,
            f"{case.label}: the gradient of logit t is w_t + c_t x",
            _gradient_variants(case, expected),
        )
        yield f"{case.label.split(',')[0]}: closed form{name}"

    def twin(name: str, seed: int, n: int, what: str) -> Iterator[str]:
        model, images, labels = _twin_case(name, seed=seed, n=n)
        got = _tensor(
            _run(fn, model, images, labels, forbidden=GRADIENT_RULES, seeded=False), tuple(images.shape), "a gradient"
        )
        _compare(got, vanilla_gradient(model, images, labels), 1e-4, f"{what}: against vanilla_gradient")
        yield f"{what}: vanilla_gradient"
        again = _run(fn, model, images, labels, forbidden=GRADIENT_RULES, seeded=False)
        if not torch.equal(got, _tensor(again, tuple(images.shape), "a gradient")):
            raise Failed("two calls on the same input gave different gradients: a gradient has no randomness")
        yield f"{what}: deterministic"

    def properties() -> Iterator[str]:
        yield from closed_form(_case(0, (2, 3, 4, 4), 5, curved=False), "")
        yield from twin("relu", 7, 2, "ReLU twin")
        seed = _hidden_seed(hidden, 11)
        if seed is not None:
            yield from closed_form(_case(seed, (3, 2, 5, 7), 6, curved=True, span=2.0), " (hidden)")
            yield from twin("softplus", seed % 1000, 3, "Softplus twin (hidden)")

    return _result("1.1", properties())


# --- 2.1 SmoothGrad --------------------------------------------------------------------------------------------

SMOOTHGRAD_RULES = Rules(
    {
        "noisy_gradients": saliency.noisy_gradients,
        "smoothgrad": saliency.smoothgrad,
        "smoothgrad_estimate": saliency.smoothgrad_estimate,
    },
    ATTRIBUTION_MODULES,
    ("smoothgrad_lib.saliency.vanilla_gradient",),
)
SEEDS = 16  # generators over which SmoothGrad's mean and variance are checked
LOW, HIGH = 0.9, 1.11  # the variance ratio a correct answer gives: 1, within about 5 of its standard errors


def _spread_over_seeds(
    fn: Callable[..., torch.Tensor], case: Case, sigma: float, n_samples: int
) -> tuple[torch.Tensor, float]:
    """The answer's maps on ``case`` under ``SEEDS`` generators: their mean (B, C, H, W) and the variance ratio.

    Raw SmoothGrad of a quadratic model is ``w_t + c_t x + c_t sigma mean(eps)``: mean ``w_t + c_t x``, variance
    ``c_t^2 sigma^2 / N`` in every element. The ratio is the answer's variance over seeds (unbiased, averaged over
    elements) divided by that.
    """
    maps = torch.stack(
        [
            _tensor(
                _run(
                    fn,
                    case.model,
                    case.x,
                    case.target,
                    sigma,
                    n_samples,
                    torch.Generator().manual_seed(100 + k),
                    forbidden=SMOOTHGRAD_RULES,
                ),
                tuple(case.x.shape),
                "a map shaped like x",
            )
            for k in range(SEEDS)
        ]
    ).double()
    c = case.model.curvature.detach()[case.target].double().reshape(-1, *[1] * (case.x.dim() - 1))
    expected_variance = (c * sigma) ** 2 / n_samples
    return maps.mean(0), float((maps.var(0) / expected_variance).mean())


def check_smoothgrad(fn: Callable[..., torch.Tensor], *, hidden: int | None = None) -> CheckResult:
    """Exercise 2.1: ``fn(model, x, target, sigma, n_samples, generator)`` -> raw SmoothGrad (B, C, H, W).

    ``sigma`` is an absolute standard deviation. Checked whatever order the noise is drawn in: on a linear model
    the answer is the weight row for any sigma; at sigma = 0 it is the vanilla gradient; the same generator gives
    the same map and another gives another; on a quadratic model (gradient ``w_t + c_t x``) the maps over 16 seeds
    have mean ``w_t + c_t x`` and variance ``c_t^2 sigma^2 / N``, as N independent noisy copies give.
    """

    def linear(case: Case, sigma: float, n_samples: int, name: str) -> Iterator[str]:
        before = case.x.clone()
        got = _run(
            fn,
            case.model,
            case.x,
            case.target,
            sigma,
            n_samples,
            torch.Generator().manual_seed(0),
            forbidden=SMOOTHGRAD_RULES,
        )
        got = _tensor(got, tuple(case.x.shape), "a map shaped like x (B, C, H, W)")
        yield f"shape{name}"
        _unchanged(before, case.x)
        yield f"input unchanged{name}"
        _model_untouched(case.model)
        yield f"model unchanged{name}"
        expected = case.model.gradient(case.x, case.target)
        if _mixes_other_classes(case, got):
            raise Failed(
                "each image's map is a mix of the weight rows of other classes than its target (the predicted class "
                "of each noisy copy?): differentiate the logit of `target` at every copy",
                mistake="target ignored",
            )
        _compare(
            got,
            expected,
            1e-5,
            f"{case.label}: a linear model's gradient is its weight row at every copy, so raw SmoothGrad is that row "
            "for any sigma",
            (
                (
                    "summed",
                    n_samples * expected,
                    f"this is {n_samples} (n_samples) times the answer: average the gradients, do not sum them",
                ),
                (
                    "abs",
                    expected.abs(),
                    "these are the absolute values of the answer: average the gradients themselves (raw), not |G|",
                ),
                (
                    "square",
                    expected.square(),
                    "these are the squares of the answer: average the gradients themselves (raw), not G^2",
                ),
            ),
        )
        yield f"linear model: weight row for any sigma{name}"

    def spread(case: Case, sigma: float, n_samples: int, name: str) -> Iterator[str]:
        mean, ratio = _spread_over_seeds(fn, case, sigma, n_samples)
        span = float((case.x.amax((1, 2, 3)) - case.x.amin((1, 2, 3))).mean())
        for factor, mistake, hint in (
            (
                0.0,
                "no noise",
                "the maps do not vary between seeds: every copy needs its own independent noise, x + sigma * "
                "torch.randn(..., generator=generator) (no noise at all, or noise that cancels such as pairs eps, "
                "-eps, does not vary)",
            ),
            (
                span**2,
                "sigma scaled by range",
                f"the maps vary over seeds as if the noise had standard deviation "
                f"sigma x (max - min) of each image ({span:g} here): sigma is already absolute, the copies are "
                "x + sigma * eps",
            ),
            (
                float(n_samples),
                "one draw for all copies",
                "the maps vary over seeds as if all n_samples copies "
                "shared one noise draw: draw a new eps for every copy",
            ),
            (4.0, "sigma doubled", "the maps vary over seeds as if the noise had standard deviation 2 sigma"),
        ):
            if abs(ratio - factor) <= 0.1 * factor + 0.02 and not LOW <= ratio <= HIGH:
                raise Failed(f"{case.label}: {hint}", mistake=mistake)
        if not LOW <= ratio <= HIGH:
            raise Failed(
                f"{case.label}: over {SEEDS} seeds each element of your map varies {ratio:.2f} times as "
                f"much as the average of exactly {n_samples} independent noisy copies at sigma = {sigma:g} does "
                f"(expected 1, within {LOW}-{HIGH}): average n_samples copies, each with its own noise"
            )
        yield f"variance over seeds: sigma^2 / N{name}"
        expected = case.model.gradient(case.x, case.target).double()
        c = case.model.curvature.detach()[case.target].double().reshape(-1, 1, 1, 1)
        z = (mean - expected) / (c * sigma / math.sqrt(n_samples * SEEDS))
        if float(z.square().mean()) > 2.0:
            raise Failed(
                f"{case.label}: averaged over {SEEDS} seeds your map should approach the smoothed gradient "
                f"w_t + c_t x = {_preview(expected)}, got {_preview(mean)}"
            )
        yield f"mean over seeds: the smoothed gradient{name}"

    def seeded(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Iterator[str]:
        def run(seed: int) -> torch.Tensor:
            got = _run(
                fn, model, images, labels, 0.15, 4, torch.Generator().manual_seed(seed), forbidden=SMOOTHGRAD_RULES
            )
            return _tensor(got, tuple(images.shape), "a map shaped like x")

        first, again, other = run(1), run(1), run(2)
        if not torch.equal(first, again):
            raise Failed(
                "the same seed gave two different maps: draw every noise with the generator passed in, "
                "torch.randn(..., generator=generator)",
                mistake="unseeded noise",
            )
        yield "deterministic under a seed"
        if torch.equal(first, other):
            raise Failed(
                "two different generators gave the same map: the noise must come from the generator passed in",
                mistake="generator ignored",
            )
        yield "another seed, another map"

    def properties() -> Iterator[str]:
        yield from linear(_case(0, (2, 3, 4, 4), 5, curved=False), 0.3, 4, "")
        twin, images, labels = _twin_case()
        plain = _run(fn, twin, images, labels, 0.0, 3, torch.Generator().manual_seed(0), forbidden=SMOOTHGRAD_RULES)
        plain = _tensor(plain, tuple(images.shape), "a map shaped like x")
        _compare(
            plain,
            vanilla_gradient(twin, images, labels),
            1e-4,
            "ReLU twin, sigma = 0: every copy is x itself, so the map is the vanilla gradient",
        )
        yield "sigma = 0: vanilla gradient"
        yield from seeded(twin, images, labels)
        yield from spread(_case(1, (2, 3, 8, 8), 5, curved=True, span=3.0), 0.3, 5, "")
        seed = _hidden_seed(hidden, 21)
        if seed is not None:
            yield from linear(_case(seed, (3, 1, 5, 7), 6, curved=False, span=2.5), 0.7, 5, " (hidden)")
            yield from spread(_case(seed + 1, (3, 1, 5, 7), 6, curved=True, span=2.5), 0.4, 7, " (hidden)")

    return _result("2.1", properties())


# --- 3.1 the smoothed derivative of a 1-D function -------------------------------------------------------------


def check_smoothed_derivative(fn: Callable[..., Any], *, hidden: int | None = None) -> CheckResult:
    """Exercise 3.1: ``fn(f, x, sigma, n_samples, generator)`` -> Monte-Carlo E[f'(x + sigma eps)], a number.

    Known answers: for f = sin, E[cos(x + sigma eps)] = cos(x) exp(-sigma^2 / 2); for f(x) = x^3,
    E[3 (x + sigma eps)^2] = 3 x^2 + 3 sigma^2 (hidden: f = exp, E[exp(x + sigma eps)] = exp(x + sigma^2 / 2)).
    The tolerance is 4 Monte-Carlo standard errors.
    """

    def run(f: Callable[..., Any], x: float, sigma: float, n: int, seed: int) -> float:
        value = _run(fn, f, x, sigma, n, torch.Generator().manual_seed(seed), forbidden=Rules())
        return _number(value, "the average over the samples")

    def closed(
        label: str,
        f: Callable[..., Any],
        x: float,
        sigma: float,
        expected: float,
        spread: float,
        variants: tuple[tuple[str, float, str], ...],
        exact: float,
    ) -> None:
        n = 20_000
        got = run(f, x, sigma, n, 3)
        tolerance = 4 * spread / math.sqrt(n)
        if abs(got - expected) <= tolerance:
            return
        if abs(got - exact) <= 1e-9:
            raise Failed(
                f"{label}: this is f'(x) itself: average f' over the noisy points x + sigma * eps", mistake="no noise"
            )
        for mistake, value, hint in (
            ("summed", n * expected, f"this is n_samples ({n}) times the answer: average, do not sum"),
        ) + variants:
            if abs(got - value) <= max(tolerance, 1e-6 * abs(value)):
                raise Failed(f"{label}: {hint}", mistake=mistake)
        raise Failed(f"{label}: expected {expected:.4f} (closed form, within {tolerance:.4f}), got {got:.4f}")

    def properties() -> Iterator[str]:
        exact = run(torch.sin, 1.0, 0.0, 8, 0)
        for mistake, value, hint in (
            ("f instead of f'", math.sin(1.0), "this is f(1), not f'(1): differentiate f with autograd"),
            ("summed", 8 * math.cos(1.0), "this is n_samples (8) times f'(1): average, do not sum"),
        ):
            if abs(exact - value) < 1e-6:
                raise Failed(hint, mistake=mistake)
        if abs(exact - math.cos(1.0)) > 1e-6:
            raise Failed(f"with sigma = 0 it should be f'(1) = cos(1) = {math.cos(1.0):.6f}, got {exact:.6f}")
        yield "sigma = 0: f'(x)"
        s = 0.8
        closed(
            "sin at x = 1, sigma = 0.8",
            torch.sin,
            1.0,
            s,
            math.cos(1.0) * math.exp(-s * s / 2),
            0.7,
            (
                (
                    "f instead of f'",
                    math.sin(1.0) * math.exp(-s * s / 2),
                    "this is the mean of f, not of f': differentiate f at the noisy points with autograd",
                ),
                (
                    "sigma doubled",
                    math.cos(1.0) * math.exp(-2 * s * s),
                    "this is the answer for noise of standard deviation 2 sigma: the points are x + sigma * eps",
                ),
                (
                    "variance for sigma",
                    math.cos(1.0) * math.exp(-(s**4) / 2),
                    "this is the answer for noise of standard "
                    "deviation sigma^2: sigma is the standard deviation, x + sigma * eps",
                ),
            ),
            math.cos(1.0),
        )
        yield "closed form: sin at x = 1, sigma = 0.8"
        closed("x^3 at x = 0.5, sigma = 0.3", lambda t: t**3, 0.5, 0.3, 3 * 0.25 + 3 * 0.09, 1.3, (), 3 * 0.25)
        yield "closed form: x^3 at x = 0.5, sigma = 0.3"
        first, again, other = (run(torch.sin, 1.0, 0.5, 64, seed) for seed in (5, 5, 6))
        if first != again:
            raise Failed(
                "the same seed gave two different averages: draw the noise with the generator passed in, "
                "torch.randn(n_samples, generator=generator)",
                mistake="unseeded noise",
            )
        yield "deterministic under a seed"
        if first == other:
            raise Failed(
                "two different generators gave the same average: the noise must come from the generator passed in",
                mistake="generator ignored",
            )
        yield "another seed, another average"
        seed = _hidden_seed(hidden, 31)
        if seed is not None:
            rng = random.Random(seed)
            x, sigma = rng.uniform(-1, 1), rng.uniform(0.2, 0.6)
            closed(
                f"hidden case: exp at x = {x:.2f}, sigma = {sigma:.2f}",
                torch.exp,
                x,
                sigma,
                math.exp(x + sigma**2 / 2),
                math.exp(x + sigma**2) * 1.5,
                (),
                math.exp(x),
            )
            yield "closed form: exp (hidden)"

    return _result("3.1", properties())


# --- 4.1 a deletion curve --------------------------------------------------------------------------------------

DELETION_RULES = Rules(
    {"deletion_curve": deletion_curve, "insertion_curve": faithfulness.insertion_curve},
    ("smoothgrad_lib.faithfulness", "smoothgrad_lib.roar", "captum.metrics", "quantus"),
)


def check_deletion_curve(fn: Callable[..., torch.Tensor], *, hidden: int | None = None) -> CheckResult:
    """Exercise 4.1: ``fn(model, x, target, maps, steps)`` -> (B, steps + 1) target probabilities, black fill.

    After step k the ``round(k H W / steps)`` highest-ranked pixels (all channels, ties in raster order) are set
    to 0. The ends are checked on the ReLU twin, the order against ``deletion_curve(..., baseline=0.0)`` on a linear
    model (on the twin the probability collapses after the first step, in any order).
    """

    def order(case: Case, steps: int, name: str) -> Iterator[str]:
        model, x, target = case.model, case.x, case.target
        contributions = (model.gradient(x, target) * x).sum(1)
        got = _run(fn, model, x, target, contributions, steps, forbidden=DELETION_RULES, seeded=False)
        got = _tensor(got, (len(x), steps + 1), "probabilities (B, steps + 1)")
        reference = deletion_curve(model, x, contributions, target, baseline=0.0, steps=steps)
        with torch.no_grad():
            predicted = model(x).argmax(1)
        _compare(
            got,
            reference,
            1e-4,
            f"{case.label}, {steps} steps: against deletion_curve(baseline=0.0)",
            (
                (
                    "ascending order",
                    deletion_curve(model, x, -contributions, target, baseline=0.0, steps=steps),
                    "the pixels are removed least relevant first: rank them largest first (descending=True)",
                ),
                (
                    "target ignored",
                    deletion_curve(model, x, contributions, predicted, baseline=0.0, steps=steps),
                    "these are the probabilities of each image's predicted class: use `target`",
                ),
            ),
        )
        yield f"{case.label.split(',')[0]}: equals deletion_curve(baseline=0.0){name}"

    def properties() -> Iterator[str]:
        twin, images, labels = _twin_case()
        maps = vanilla_gradient(twin, images, labels).abs().amax(1)
        before = images.clone()
        steps = 8
        got = _run(fn, twin, images, labels, maps, steps, forbidden=DELETION_RULES, seeded=False)
        got = _tensor(got, (len(images), steps + 1), "probabilities (B, steps + 1)")
        yield "shape"
        _unchanged(before, images)
        yield "input unchanged"
        _model_untouched(twin)
        if ((got < 0) | (got > 1)).any():
            raise Failed(
                "the curve leaves [0, 1]: use the softmax probability of the target, not the logit", mistake="logits"
            )
        with torch.no_grad():
            clean = twin(images).softmax(1).gather(1, labels[:, None])[:, 0]
            black = twin(torch.zeros_like(images)).softmax(1).gather(1, labels[:, None])[:, 0]
        _compare(got[:, 0], clean, 1e-4, "step 0 removes nothing: it is p(target | x)")
        yield "starts at p(x)"
        _compare(got[:, -1], black, 1e-4, "the last step removes every pixel: it is p(target | black image)")
        yield "ends at p(black)"
        # The twin's probability collapses once a few pixels are black, whatever the order: the order is checked on
        # a linear model, where each pixel's contribution (weight x value, summed over channels) sets its effect.
        yield from order(_case(0, (2, 3, 5, 7), 5, curved=False), 8, "")
        seed = _hidden_seed(hidden, 41)
        if seed is not None:
            yield from order(_case(seed, (3, 2, 5, 7), 6, curved=False), 5, " (hidden)")

    return _result("4.1", properties())


# --- 5.1 max-sensitivity ---------------------------------------------------------------------------------------

SENSITIVITY_RULES = Rules(
    {
        "max_sensitivity": robustness.max_sensitivity,
        "local_lipschitz": robustness.local_lipschitz,
        "explanation_robustness": robustness.explanation_robustness,
    },
    ("smoothgrad_lib.robustness", "captum.metrics", "quantus"),
    ("smoothgrad_lib.robustness.uniform_ball_noise",),
)


class Recorded:
    """An explanation function that records every image it explains: rows of x exactly, or perturbed copies."""

    def __init__(
        self, explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor
    ) -> None:
        self.explain, self.x, self.target = explain, x.detach().clone(), target
        self.rows: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (image, perturbation, explanation)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.detach()
        distance = (batch[:, None] - self.x[None]).flatten(2).abs().amax(2)  # L-inf to every image (rows, B)
        images = distance.argmin(1)
        explanation = self.explain(batch, self.target[images])
        for row, image in enumerate(images.tolist()):
            self.rows.append((image, batch[row] - self.x[image], explanation[row].detach()))
        return explanation

    def sensitivity(self, radius: float, n_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: max and mean of ||e(x + d) - e(x)|| / ||e(x)|| over the perturbed rows, and max unnormalised."""
        reference = self.explain(self.x, self.target).detach()
        norms = reference.flatten(1).norm(dim=1)
        changes: list[list[float]] = [[] for _ in range(len(self.x))]
        drawn: list[set[bytes]] = [set() for _ in range(len(self.x))]
        for image, perturbation, explanation in self.rows:
            size = float(perturbation.abs().max())
            if size == 0:
                continue
            if size > radius * (1 + 1e-4):
                raise Failed(
                    f"a perturbation reaches {size:.3g}, outside the L-infinity ball of radius {radius:g}: "
                    "draw each one with uniform_ball_noise(x, radius, generator)"
                )
            if perturbation.numpy().tobytes() in drawn[image]:
                raise Failed(
                    "your function explained the same perturbation more than once: draw a new one for each of the "
                    "n_samples, uniform_ball_noise(x, radius, generator) inside the loop",
                    mistake="one draw reused",
                )
            drawn[image].add(perturbation.numpy().tobytes())
            changes[image].append(float((explanation - reference[image]).norm()))
        counts = [len(c) for c in changes]
        if counts != [n_samples] * len(self.x):
            raise Failed(
                f"your function explained {counts} perturbed copies of the {len(self.x)} images; expected "
                f"n_samples = {n_samples} of each",
                mistake="perturbation count",
            )
        largest = torch.tensor([max(c) for c in changes], dtype=torch.float64)
        mean = torch.tensor([sum(c) / len(c) for c in changes], dtype=torch.float64)
        return largest / norms.double(), mean / norms.double(), largest


def check_max_sensitivity(fn: Callable[..., torch.Tensor], *, hidden: int | None = None) -> CheckResult:
    """Exercise 5.1: ``fn(explain_fn, x, radius, n_samples, generator)`` -> (B,) max-sensitivity.

    ``max_k ||e(x + d_k) - e(x)|| / ||e(x)||`` over ``n_samples`` perturbations ``d_k`` uniform in the L-infinity
    ball. Checked whatever order the perturbations are drawn in: the explanation function records every image it is
    given, so the answer is compared with the max-sensitivity of the perturbations the function itself drew (each
    inside the ball, ``n_samples`` per image), and a linear model's gradient, which does not depend on x, scores 0.
    """

    def score(
        explain: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: torch.Tensor,
        radius: float,
        n_samples: int,
        seed: int,
    ) -> tuple[torch.Tensor, Recorded]:
        recorded = Recorded(explain, x, target)
        got = _run(fn, recorded, x, radius, n_samples, torch.Generator().manual_seed(seed), forbidden=SENSITIVITY_RULES)
        return _tensor(got, (len(x),), "one score per image (B,)"), recorded

    def drawn(
        explain: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: torch.Tensor,
        radius: float,
        n_samples: int,
        name: str,
    ) -> Iterator[str]:
        got, recorded = score(explain, x, target, radius, n_samples, 9)
        expected, mean, unnormalised = recorded.sensitivity(radius, n_samples)
        _compare(
            got,
            expected,
            1e-4,
            f"{name}: against the max-sensitivity of the perturbations your function drew",
            (
                (
                    "mean instead of max",
                    mean,
                    "this is the mean change over the perturbations: keep each image's largest",
                ),
                ("unnormalised", unnormalised, "this is the change ||e(x + d) - e(x)|| itself: divide by ||e(x)||"),
            ),
        )
        yield f"{name}: the max over the drawn perturbations"

    def properties() -> Iterator[str]:
        case = _case(0, (2, 3, 4, 4), 5, curved=False)
        before = case.x.clone()
        flat, _ = score(lambda batch, target: case.model.gradient(batch, target), case.x, case.target, 0.05, 3, 0)
        yield "shape"
        _unchanged(before, case.x)
        yield "input unchanged"
        if flat.abs().max() > 1e-6:
            raise Failed(
                "a linear model's gradient does not depend on x, so its sensitivity is 0: divide the change "
                "e(x + d) - e(x) by the norm of e(x), and take the norm over each image's elements"
            )
        yield "linear model: 0"
        twin, images, labels = _twin_case()
        yield from drawn(
            lambda batch, target: vanilla_gradient(twin, batch, target), images, labels, 0.02, 4, "ReLU twin"
        )
        first, _ = score(lambda batch, target: vanilla_gradient(twin, batch, target), images, labels, 0.02, 4, 9)
        other, _ = score(lambda batch, target: vanilla_gradient(twin, batch, target), images, labels, 0.02, 4, 10)
        again, _ = score(lambda batch, target: vanilla_gradient(twin, batch, target), images, labels, 0.02, 4, 9)
        if not torch.equal(first, again):
            raise Failed(
                "the same seed gave two different scores: draw the perturbations with the generator passed in",
                mistake="unseeded noise",
            )
        yield "deterministic under a seed"
        if torch.equal(first, other):
            raise Failed(
                "two different generators gave the same scores: the perturbations must come from the "
                "generator passed in",
                mistake="generator ignored",
            )
        yield "another seed, another score"
        seed = _hidden_seed(hidden, 51)
        if seed is not None:
            curved = _case(seed, (3, 2, 5, 7), 6, curved=True)
            yield from drawn(
                lambda batch, target: curved.model.gradient(batch, target),
                curved.x,
                curved.target,
                0.05,
                5,
                "hidden case, quadratic model",
            )

    return _result("5.1", properties())


CHECKS: dict[str, Callable[..., CheckResult]] = {
    "1.1": check_gradient,
    "2.1": check_smoothgrad,
    "3.1": check_smoothed_derivative,
    "4.1": check_deletion_curve,
    "5.1": check_max_sensitivity,
}


# --- predictions -----------------------------------------------------------------------------------------------


def check_choice(exercise: str, prediction: Any, measured: str, options: tuple[str, ...], why: str) -> CheckResult:
    """A prediction among ``options`` against the option the measurement gave; ``why`` explains the outcome."""
    prefix = f"Exercise {exercise}:"
    if prediction is None or prediction is Ellipsis:
        status, line = "not answered", f"{prefix} write your prediction first: one of {', '.join(map(repr, options))}."
    elif isinstance(prediction, str) and prediction.strip() in options and prediction.strip() != prediction:
        return check_choice(exercise, prediction.strip(), measured, options, why)
    elif prediction not in options:
        status, line = "failed", f"{prefix} {prediction!r} is not one of the options {', '.join(map(repr, options))}."
    elif prediction == measured:
        status, line = "passed", f"{prefix} you predicted {prediction!r}, and so it is. {why}"
    else:
        status, line = "failed", f"{prefix} you predicted {prediction!r}; the measurement says {measured!r}. {why}"
    return CheckResult(exercise, status, line.rstrip())


def check_number(exercise: str, prediction: Any, low: float, high: float, why: str) -> CheckResult:
    """A predicted number against the measured interval [low, high]; ``why`` explains the outcome."""
    prefix = f"Exercise {exercise}:"
    if prediction is None or prediction is Ellipsis:
        status, line = "not answered", f"{prefix} write your prediction first: a number."
    elif isinstance(prediction, bool) or not isinstance(prediction, (int, float)) or not math.isfinite(prediction):
        status, line = "failed", f"{prefix} a prediction must be a finite number, got {prediction!r}."
    else:
        inside = low <= prediction <= high
        where = "inside" if inside else "outside"
        status = "passed" if inside else "failed"
        line = f"{prefix} you predicted {prediction:g}, {where} the measured [{low:.2f}, {high:.2f}]. {why}"
    return CheckResult(exercise, status, line.rstrip())
