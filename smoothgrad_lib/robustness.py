"""Scores of an explanation *function* under perturbation of its input: how much the attribution changes.

``explain_fn(x)`` (or ``explain_fn(x, target)``) is a method as a function of its input, e.g.
``methods.explanation_function(...)``. Max-sensitivity and the local Lipschitz estimate perturb ``x`` within an
L-infinity ball (``uniform_ball_noise``, drawn by ``noise.uniform_noise``); class sensitivity changes the class
instead. Scores of *maps* are in ``metrics``; the infidelity of an explanation is in ``faithfulness``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._checks import check_count, check_images
from .metrics import rank_correlation
from .noise import uniform_noise

ExplainFn = Callable[[torch.Tensor], torch.Tensor]
"""``explain_fn(x)`` -> an attribution of each image of ``x`` (B, C, H, W), with its batch axis first."""


def uniform_ball_noise(x: torch.Tensor, radius: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One perturbation per element of ``x``, uniform in [-radius, radius]: uniform in the L-infinity ball.

    ``(2 u - 1) * radius`` with ``u = noise.uniform_noise(x, generator)``: Captum's ``sensitivity_max`` default
    (``default_perturb_func``) draws from the same distribution.

    Examples:
        >>> import torch
        >>> d = uniform_ball_noise(torch.zeros(2, 1, 3, 3), 0.5, torch.Generator().manual_seed(0))
        >>> d.shape, bool(d.abs().max() <= 0.5)
        (torch.Size([2, 1, 3, 3]), True)
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}.")
    return (2 * uniform_noise(x, generator) - 1) * radius


def max_sensitivity(
    explain_fn: ExplainFn,
    x: torch.Tensor,
    radius: float = 0.02,
    n_samples: int = 10,
    *,
    generator: torch.Generator | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Max-sensitivity of an explanation (Yeh et al., 2019, NeurIPS): its largest change within a ball around x.

    ``max_k ||e(x + d_k) - e(x)||_F / ||e(x)||_F`` over ``n_samples`` perturbations ``d_k``, each drawn
    uniformly from the L-infinity ball of ``radius`` around x (``uniform_ball_noise``; the perturbed images are
    not clipped to the data range). ``||.||_F`` is the L2 (Frobenius) norm over all elements of one image's
    attribution. With ``normalize=False`` the change is not divided by ``||e(x)||``; with ``normalize=True`` an
    all-zero ``e(x)`` is divided by 1 instead (as Captum does). This is Captum's ``sensitivity_max`` with its
    defaults (``norm_ord="fro"``, ``default_perturb_func``), whose result it equals for the same perturbations.

    Sample k draws its perturbation of the whole batch by one ``uniform_ball_noise(x, radius, generator)``, k =
    0, 1, ...; ``explain_fn`` is called once on x and once per sample on the perturbed batch (B images). A
    stochastic ``explain_fn`` (SmoothGrad) adds its own noise to the measured change: with the same noise in
    every call ("common noise") the change is that of the map; with fresh noise (independent) it includes the
    Monte-Carlo error a user without a fixed seed sees. Fix the class: an ``explain_fn`` that explains the
    predicted class may explain another class at a perturbed image.

    Args:
        explain_fn: x (B, C, H, W) -> attribution (B, ...), e.g. ``methods.explanation_function(...)``.
        x: float images (B, C, H, W); left unchanged.
        radius: half-width of the L-infinity ball, in the units of x.
        n_samples: perturbations per image.
        generator: draws the perturbations (a ``torch.Generator`` on x's device type or the CPU; None: the global one).
        normalize: divide by the norm of the explanation at x.

    Returns:
        (B,) float, >= 0.

    Examples:
        A constant explanation (a linear model's gradient) does not move; ``e(x) = x`` moves by ``||d|| <= 0.1 * 2``
        at x of norm 2:

        >>> import torch
        >>> x, generator = torch.ones(1, 1, 2, 2), torch.Generator().manual_seed(0)
        >>> max_sensitivity(lambda x: 3 * torch.ones_like(x), x, generator=generator).tolist()
        [0.0]
        >>> bool(max_sensitivity(lambda x: x, x, radius=0.1, generator=generator) <= 0.1)
        True
    """
    return explanation_robustness(explain_fn, x, radius, n_samples, generator=generator, normalize=normalize)[
        "max_sensitivity"
    ]


def local_lipschitz(
    explain_fn: ExplainFn,
    x: torch.Tensor,
    radius: float = 0.02,
    n_samples: int = 10,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Local Lipschitz estimate of an explanation (Alvarez-Melis and Jaakkola, 2018, NeurIPS): the largest ratio of
    the change of the attribution to the change of the input around x.

    ``max_k ||e(x + d_k) - e(x)||_2 / ||d_k||_2``, with L2 norms over all elements of one image (attribution and
    perturbation), over ``n_samples`` perturbations ``d_k`` drawn uniformly from the L-infinity ball of
    ``radius`` (``uniform_ball_noise``, the same draws as ``max_sensitivity`` with the same generator), not
    clipped. Alvarez-Melis and Jaakkola maximise over the ball by optimisation; random sampling gives a lower
    bound of that maximum. The explanation e(x) = x scores exactly 1, a constant explanation 0. Not normalised:
    the value scales with the attribution (a map times 2 scores twice as much), so compare methods whose maps
    share a scale, or normalise their maps first. See ``max_sensitivity`` for stochastic explanations.

    Args:
        explain_fn, x, radius, n_samples, generator: as in ``max_sensitivity``.

    Returns:
        (B,) float, >= 0.

    Examples:
        ``e(x) = 2 x`` changes by exactly twice the perturbation:

        >>> import torch
        >>> x = torch.zeros(2, 1, 3, 3)
        >>> local_lipschitz(lambda x: 2 * x, x, generator=torch.Generator().manual_seed(0)).tolist()
        [2.0, 2.0]
    """
    return explanation_robustness(explain_fn, x, radius, n_samples, generator=generator)["local_lipschitz"]


def explanation_robustness(
    explain_fn: ExplainFn,
    x: torch.Tensor,
    radius: float = 0.02,
    n_samples: int = 10,
    *,
    generator: torch.Generator | None = None,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """``max_sensitivity`` and ``local_lipschitz`` of one explanation from the same perturbations (both are
    computed here; the two functions return one entry each).

    ``explain_fn`` is called ``n_samples + 1`` times for both: ``{"max_sensitivity": (B,), "local_lipschitz":
    (B,)}``, exactly what the two functions return for the same generator state. Use it when the explanation is
    the expensive part (SmoothGrad with many samples). ``normalize`` applies to the max-sensitivity only.

    Examples:
        >>> import torch
        >>> x, explain = torch.zeros(1, 1, 2, 2), lambda x: 2 * x
        >>> scores = explanation_robustness(explain, x, generator=torch.Generator().manual_seed(0))
        >>> scores["local_lipschitz"].tolist()
        [2.0]
        >>> alone = max_sensitivity(explain, x, generator=torch.Generator().manual_seed(0))   # the same draws
        >>> torch.equal(scores["max_sensitivity"], alone)
        True
    """
    reference, changes = _explanation_changes(explain_fn, x, radius, n_samples, generator)
    change = torch.stack([d.flatten(1).norm(dim=1) for d, _ in changes])
    steps = torch.stack([step.flatten(1).norm(dim=1) for _, step in changes])
    sensitivity = change.amax(0)
    if normalize:
        norm = reference.flatten(1).norm(dim=1)
        sensitivity = sensitivity / torch.where(norm == 0, torch.ones_like(norm), norm)
    return {"max_sensitivity": sensitivity, "local_lipschitz": (change / steps).amax(0)}


def _explanation_changes(
    explain_fn: ExplainFn, x: torch.Tensor, radius: float, n_samples: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """e(x), and (e(x + d_k) - e(x), d_k) for each of ``n_samples`` uniform perturbations d_k of the batch."""
    check_images(x)
    check_count("n_samples", n_samples)
    x = x.detach()
    reference = _explanation(explain_fn, x)
    changes = []
    for _ in range(n_samples):
        step = uniform_ball_noise(x, radius, generator)
        perturbed = _explanation(explain_fn, x + step)
        if perturbed.shape != reference.shape:
            raise ValueError(f"explain_fn gave shape {tuple(perturbed.shape)}, then {tuple(reference.shape)}.")
        changes.append((perturbed - reference, step))
    return reference, changes


def _explanation(explain_fn: ExplainFn, x: torch.Tensor) -> torch.Tensor:
    """``explain_fn(x)`` detached, checked to have x's batch axis."""
    out = explain_fn(x)
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"explain_fn must return one attribution per image, (B, ...) with B = {x.shape[0]}: {shape}.")
    return out.detach()


def class_sensitivity(
    explain_fn: Callable[[torch.Tensor, torch.Tensor | int], torch.Tensor],
    x: torch.Tensor,
    target_a: torch.Tensor | int | list[int],
    target_b: torch.Tensor | int | list[int],
    *,
    absolute: bool = False,
) -> torch.Tensor:
    """How little a method's attribution depends on the class it explains: per image, Spearman's rank correlation
    (``rank_correlation``) between the attributions of x for ``target_a`` and for ``target_b``, over all elements.

    1 means the same ranking of pixels whatever the class (the map explains the image, not the decision; e.g. an
    explanation that returns the input); values near 0 or below mean class-specific maps. ``absolute=True``
    compares magnitudes. NaN where either attribution is constant.

    Args:
        explain_fn: (x, target) -> attribution (B, ...), e.g. ``methods.explanation_function(...)``.
        x: float images (B, C, H, W).
        target_a, target_b: the two classes, an int or one per image (e.g. the predicted and another class).

    Returns:
        (B,) float64 in [-1, 1].

    Examples:
        A map that ignores the class scores 1; the gradients ``w`` and ``-w`` of a linear model with opposite
        logits score -1, or 1 with ``absolute``:

        >>> import torch
        >>> x, w = torch.zeros(1, 1, 2, 2), torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
        >>> gradient = lambda x, target: w if target == 0 else -w
        >>> class_sensitivity(lambda x, target: x + w, x, 0, 1).item(), class_sensitivity(gradient, x, 0, 1).item()
        (1.0, -1.0)
        >>> class_sensitivity(gradient, x, 0, 1, absolute=True).item()
        1.0
    """
    check_images(x)
    x = x.detach()
    a = explain_fn(x, target_a)
    b = explain_fn(x, target_b)
    return rank_correlation(a, b, absolute=absolute)
