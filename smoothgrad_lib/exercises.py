"""Self-checks for the notebooks' exercises: a student's answer, run on cases whose answer is known.

Each ``check_*`` function takes the student's function, runs it on small cases (a linear model, whose gradient
is its weight row; a shapes twin on one or two 64x64 images; a 1-D function with a closed form), and prints one
line: every property it checked, or the first property that failed with a hint the student can act on (which
property, what was expected, what came back). A missing, crashing or wrong answer never raises: the student
reads advice, not a traceback. ``check_choice`` and ``check_number`` compare a written-down prediction with
what the notebook measured and say why the measurement came out as it did.

The teacher's version of a notebook holds the solutions between ``### BEGIN SOLUTION`` and ``### END
SOLUTION`` lines, which ``tools/make_exercises.py`` replaces by a placeholder in the student's version.

Every check returns None and prints, so that a check cell shows one deterministic line that nbval compares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .faithfulness import deletion_curve
from .models import load_model
from .robustness import max_sensitivity
from .saliency import smoothgrad, vanilla_gradient
from .shapes import make_shapes

NOT_ANSWERED = "not answered yet: replace `raise NotImplementedError` with your code and run the cell again"


class Failed(Exception):
    """One property of an answer that does not hold; its message is the hint shown to the student."""


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the student's function, turning a crash into a hint."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise Failed(NOT_ANSWERED) from None
    except Exception as error:  # noqa: BLE001 -- any crash of the student's code becomes advice
        raise Failed(f"your function raised {type(error).__name__}: {error}") from None


def _tensor_like(value: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if value is None:
        raise Failed(f"your function returned None: did you forget to `return` {what}?")
    if not isinstance(value, torch.Tensor):
        raise Failed(f"expected a torch.Tensor ({what}), got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise Failed(f"expected {what} of shape {shape}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise Failed("the result holds NaN or inf values")
    return value.detach()


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach().double(), expected.detach().double()
    return float((got - expected).norm() / expected.norm().clamp_min(1e-12))


def _close(got: torch.Tensor, expected: torch.Tensor, tolerance: float, hint: str) -> None:
    error = _relative_error(got, expected)
    if error > tolerance:
        sign = " (it is the expected one with the opposite sign)" if _relative_error(-got, expected) < tolerance else ""
        raise Failed(f"relative error {error:.2g} against the known answer{sign}; {hint}")


def _unchanged(before: torch.Tensor, after: torch.Tensor) -> None:
    if not torch.equal(before, after.detach()) or after.requires_grad or after.grad is not None:
        raise Failed(
            "your function changed its input x (its values, requires_grad or .grad): work on a copy, "
            "x = x.detach().clone().requires_grad_(True)"
        )


def _report(exercise: str, properties: Iterator[str]) -> None:
    """Run the properties one by one (the iterator yields each name once it holds) and print the outcome."""
    held = []
    try:
        for name in properties:
            held.append(name)
    except Failed as failed:
        so_far = f" (passed so far: {', '.join(held)})" if held else ""
        print(f"Exercise {exercise}: not yet. {failed}{so_far}")
        return
    print(f"Exercise {exercise}: all {len(held)} checks pass: {', '.join(held)}.")


def _linear_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A linear classifier on 3x4x4 images with 5 classes, in eval mode, and two images for it."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(5, 48, generator=generator))
        model[1].bias.copy_(torch.randn(5, generator=generator))
    return model, torch.rand(2, 3, 4, 4, generator=generator)


def _twin_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The shapes ReLU twin (CPU, eval mode) with two images and their classes."""
    data = make_shapes(2, seed=7)
    return load_model("shapes-relu", device="cpu").model, data.images, data.labels


def _model_untouched(model: nn.Module) -> None:
    if model.training:
        raise Failed("your function put the model in training mode: leave model.train()/eval() alone")
    if any(p.grad is not None for p in model.parameters()):
        raise Failed(
            "the model's parameters now hold .grad: use torch.autograd.grad(score, x), which differentiates with "
            "respect to x only, instead of score.backward()"
        )


def check_gradient(fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 1.1: ``fn(model, x, target)`` -> d logit_target / d x, shaped like x (B, C, H, W)."""

    def properties() -> Iterator[str]:
        model, x = _linear_model()
        target = torch.tensor([3, 0])
        before = x.clone()
        got = _tensor_like(_run(fn, model, x, target), tuple(x.shape), "a gradient shaped like x (B, C, H, W)")
        yield "shape"
        _unchanged(before, x)
        yield "input unchanged"
        _model_untouched(model)
        yield "model unchanged"
        expected = model[1].weight[target].reshape(x.shape)
        _close(
            got,
            expected,
            1e-5,
            "a linear model's gradient of logit t is row t of its weights: differentiate "
            "logits.gather(1, target[:, None]).sum() (one score per image, its own class)",
        )
        yield "linear model: weight row"
        twin, images, labels = _twin_case()
        first = _tensor_like(_run(fn, twin, images, labels), tuple(images.shape), "a gradient shaped like x")
        _close(first, vanilla_gradient(twin, images, labels), 1e-4, "on the ReLU twin it should equal vanilla_gradient")
        yield "ReLU twin: vanilla_gradient"
        second = _run(fn, twin, images, labels)
        if not torch.equal(first, second.detach()):
            raise Failed("two calls on the same input gave different gradients: a gradient has no randomness")
        yield "deterministic"

    _report("1.1", properties())


def check_smoothgrad(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 2.1: ``fn(model, x, target, sigma, n_samples, generator)`` -> SmoothGrad raw mean, shaped like x.

    The reference is ``smoothgrad(..., aggregate="raw")``, whose noise is, image by image, ``n_samples`` draws of
    ``torch.randn(x[b].shape, generator=generator)``: a loop that draws in that order reproduces it.
    """

    def properties() -> Iterator[str]:
        model, x = _linear_model()
        target = torch.tensor([1, 4])
        before = x.clone()
        got = _tensor_like(
            _run(fn, model, x, target, 0.3, 4, torch.Generator().manual_seed(0)),
            tuple(x.shape),
            "a map shaped like x (B, C, H, W)",
        )
        yield "shape"
        _unchanged(before, x)
        yield "input unchanged"
        _close(
            got,
            model[1].weight[target].reshape(x.shape),
            1e-5,
            "a linear model's gradient is the same at every noisy copy, so SmoothGrad must return its weight row; "
            "average the gradients (raw), not their absolute values",
        )
        yield "linear model: weight row for any sigma"
        twin, images, labels = _twin_case()
        plain = _run(fn, twin, images, labels, 0.0, 3, torch.Generator().manual_seed(0))
        plain = _tensor_like(plain, tuple(images.shape), "a map shaped like x")
        _close(plain, vanilla_gradient(twin, images, labels), 1e-4, "with sigma = 0 every copy is x itself")
        yield "sigma = 0: vanilla gradient"
        first = _run(fn, twin, images, labels, 0.15, 4, torch.Generator().manual_seed(1))
        first = _tensor_like(first, tuple(images.shape), "a map shaped like x")
        again = _run(fn, twin, images, labels, 0.15, 4, torch.Generator().manual_seed(1))
        other = _run(fn, twin, images, labels, 0.15, 4, torch.Generator().manual_seed(2))
        if not torch.equal(first, again.detach()):
            raise Failed("the same seed gave two different maps: draw every noise with the generator passed in")
        if torch.equal(first, other.detach()):
            raise Failed("two seeds gave the same map: the noise must come from the generator passed in")
        yield "deterministic under a seed"
        reference = smoothgrad(
            twin, images, labels, n_samples=4, sigma=0.15, aggregate="raw", generator=torch.Generator().manual_seed(1)
        )
        _close(
            first,
            reference,
            1e-4,
            "draw image by image: for each image b, n_samples times x[b] + sigma * torch.randn(x[b].shape, "
            "generator=generator), and average the gradients at those copies",
        )
        yield "equals smoothgrad(aggregate='raw') on the same noise"

    _report("2.1", properties())


def check_smoothed_derivative(fn: Callable[..., Any]) -> None:
    """Exercise 3.1: ``fn(f, x, sigma, n_samples, generator)`` -> Monte-Carlo E[f'(x + sigma eps)], a number.

    Known answers: for f = sin, E[cos(x + sigma eps)] = cos(x) exp(-sigma^2 / 2); for f(x) = x^3,
    E[3 (x + sigma eps)^2] = 3 x^2 + 3 sigma^2. The tolerance is 4 Monte-Carlo standard errors.
    """

    def number(value: Any) -> float:
        if value is None:
            raise Failed("your function returned None: did you forget to `return` the average?")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise Failed(f"expected one number (the average over the samples), got shape {tuple(value.shape)}")
            value = value.item()
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Failed(f"expected a finite number, got {value!r}")
        return float(value)

    def properties() -> Iterator[str]:
        exact = number(_run(fn, torch.sin, 1.0, 0.0, 8, torch.Generator().manual_seed(0)))
        if abs(exact - math.cos(1.0)) > 1e-6:
            raise Failed(f"with sigma = 0 it should be f'(1) = cos(1) = {math.cos(1.0):.6f}, got {exact:.6f}")
        yield "sigma = 0: f'(x)"
        n = 20_000
        cases = (
            ("sin at x = 1, sigma = 0.5", torch.sin, 1.0, 0.5, math.cos(1.0) * math.exp(-0.125), 0.7),
            ("x^3 at x = 0.5, sigma = 0.3", lambda t: t**3, 0.5, 0.3, 3 * 0.25 + 3 * 0.09, 1.3),
        )
        for label, f, x, sigma, expected, spread in cases:
            got = number(_run(fn, f, x, sigma, n, torch.Generator().manual_seed(3)))
            tolerance = 4 * spread / math.sqrt(n)
            if abs(got - expected) > tolerance:
                raise Failed(
                    f"{label}: expected {expected:.4f} (closed form), got {got:.4f}: average f' at x + sigma * "
                    f"torch.randn(n_samples, generator=generator), using autograd for f'"
                )
            yield f"closed form: {label}"
        first = number(_run(fn, torch.sin, 1.0, 0.5, 64, torch.Generator().manual_seed(5)))
        again = number(_run(fn, torch.sin, 1.0, 0.5, 64, torch.Generator().manual_seed(5)))
        if first != again:
            raise Failed("the same seed gave two different averages: draw the noise with the generator passed in")
        yield "deterministic under a seed"

    _report("3.1", properties())


def check_deletion_curve(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 4.1: ``fn(model, x, target, maps, steps)`` -> (B, steps + 1) target probabilities, black fill.

    After step k the ``round(k H W / steps)`` highest-ranked pixels (all channels, ties in raster order) are set
    to 0. The ends are checked on the ReLU twin, the order against ``deletion_curve(..., baseline=0.0)`` on a linear
    model (on the twin the probability collapses after the first step, in any order).
    """

    def properties() -> Iterator[str]:
        twin, images, labels = _twin_case()
        maps = vanilla_gradient(twin, images, labels).abs().amax(1)
        before = images.clone()
        steps = 8
        got = _run(fn, twin, images, labels, maps, steps)
        got = _tensor_like(got, (len(images), steps + 1), "probabilities (B, steps + 1)")
        yield "shape"
        _unchanged(before, images)
        yield "input unchanged"
        if ((got < 0) | (got > 1)).any():
            raise Failed("the curve leaves [0, 1]: use the softmax probability of the target, not the logit")
        clean = twin(images).softmax(1).gather(1, labels[:, None])[:, 0].detach()
        black = twin(torch.zeros_like(images)).softmax(1).gather(1, labels[:, None])[:, 0].detach()
        _close(got[:, 0], clean, 1e-4, "step 0 removes nothing: it is p(target | x)")
        yield "starts at p(x)"
        _close(got[:, -1], black, 1e-4, "the last step removes every pixel: it is p(target | black image)")
        yield "ends at p(black)"
        # The twin's probability collapses once a few pixels are black, whatever the order: the order is checked on
        # a linear model, where each pixel's contribution (weight x value, summed over channels) sets its effect.
        model, x = _linear_model()
        target = torch.tensor([0, 3])
        contributions = (model[1].weight[target].reshape(x.shape) * x).sum(1).detach()
        got = _tensor_like(_run(fn, model, x, target, contributions, 8), (len(x), 9), "probabilities (B, steps + 1)")
        reference = deletion_curve(model, x, contributions, target, baseline=0.0, steps=8)
        _close(
            got,
            reference,
            1e-4,
            "rank pixels by the map, largest first (a stable sort: ties in raster order), and after step k set the "
            "round(k H W / steps) first ones to 0 in all three channels",
        )
        yield "linear model: equals deletion_curve(baseline=0.0)"

    _report("4.1", properties())


def check_max_sensitivity(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 5.1: ``fn(explain_fn, x, radius, n_samples, generator)`` -> (B,) max-sensitivity.

    ``max_k ||e(x + d_k) - e(x)|| / ||e(x)||`` with ``d_k = uniform_ball_noise(x, radius, generator)`` drawn for
    the whole batch, k = 0, 1, ...; the reference is ``metrics.max_sensitivity`` on the same generator.
    """

    def properties() -> Iterator[str]:
        model, x = _linear_model()
        target = torch.tensor([2, 2])
        before = x.clone()
        flat = _run(fn, lambda batch: vanilla_gradient(model, batch, target), x, 0.05, 3, torch.Generator())
        flat = _tensor_like(flat, (len(x),), "one score per image (B,)")
        yield "shape"
        _unchanged(before, x)
        yield "input unchanged"
        if flat.abs().max() > 1e-6:
            raise Failed(
                "a linear model's gradient does not depend on x, so its sensitivity is 0: divide the change "
                "e(x + d) - e(x) by the norm of e(x), and take the norm over each image's elements"
            )
        yield "linear model: 0"
        twin, images, labels = _twin_case()

        def explain(batch: torch.Tensor) -> torch.Tensor:
            return vanilla_gradient(twin, batch, labels)

        got = _tensor_like(
            _run(fn, explain, images, 0.02, 4, torch.Generator().manual_seed(9)), (len(images),), "scores (B,)"
        )
        reference = max_sensitivity(explain, images, 0.02, 4, generator=torch.Generator().manual_seed(9))
        _close(
            got,
            reference,
            1e-4,
            "draw the k-th perturbation of the whole batch with uniform_ball_noise(x, radius, generator), k = 0, "
            "1, ..., and keep each image's largest ||e(x + d) - e(x)|| / ||e(x)||",
        )
        yield "equals metrics.max_sensitivity on the same draws"

    _report("5.1", properties())


def check_choice(exercise: str, prediction: Any, measured: str, options: tuple[str, ...], why: str) -> None:
    """A prediction among ``options`` against the option the measurement gave; ``why`` explains the outcome."""
    if prediction is None or prediction is Ellipsis:
        print(f"Exercise {exercise}: write your prediction first: one of {', '.join(map(repr, options))}.")
    elif prediction not in options:
        print(f"Exercise {exercise}: {prediction!r} is not one of the options {', '.join(map(repr, options))}.")
    elif prediction == measured:
        print(f"Exercise {exercise}: you predicted {prediction!r}, and so it is. {why}")
    else:
        print(f"Exercise {exercise}: you predicted {prediction!r}; the measurement says {measured!r}. {why}")


def check_number(exercise: str, prediction: Any, low: float, high: float, why: str) -> None:
    """A predicted number against the measured interval [low, high]; ``why`` explains the outcome."""
    if prediction is None or prediction is Ellipsis:
        print(f"Exercise {exercise}: write your prediction first: a number.")
    elif isinstance(prediction, bool) or not isinstance(prediction, (int, float)) or not math.isfinite(prediction):
        print(f"Exercise {exercise}: a prediction must be a finite number, got {prediction!r}.")
    else:
        where = "inside" if low <= prediction <= high else "outside"
        print(f"Exercise {exercise}: you predicted {prediction:g}, {where} the measured [{low:.2f}, {high:.2f}]. {why}")
