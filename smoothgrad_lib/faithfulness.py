"""Faithfulness of saliency maps: does removing the pixels a map ranks first change the model's output?

Deletion and insertion curves (Petsiuk et al., 2018) and AOPC (Samek et al.,
2017), per image, with one Gaussian ``blur`` for the blurred baselines.

One Gaussian blur, ``blur``, for images, attributions and maps alike: the baselines of the curves, the
``blurred_vanilla`` method and the spatial smoothing of a map that notebook 02 compares SmoothGrad with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn
from torchvision.transforms import functional as TF

from ._checks import (
    TargetType,
    check_batch_size,
    check_count,
    check_images,
    check_model,
    checked_logits,
    clean_classes,
    clean_forward,
    resolve_target,
)
from .noise import gaussian_noise
from .precision import float32_precision
from .saliency import default_batch_size

DEFAULT_STEPS = 32
BASELINE_BLUR_SIGMA = 5.0  # pixels, the "blur" baseline of the deletion and insertion curves
Baseline = torch.Tensor | float | Literal["mean", "blur"]


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur over the last two axes (H, W) of images (B, C, H, W) or maps (B, H, W), standard deviation
    ``sigma`` in pixels, on their device and in their dtype.

    torchvision's ``gaussian_blur``: the separable kernel ``k_j = exp(-j^2 / (2 sigma^2)) / sum_i exp(-i^2 /
    (2 sigma^2))``, ``|j| <= r``, with r = ceil(3 sigma) (the Gaussian truncated at 3 sigma), or min(H, W) - 1 if
    that is smaller (the most that reflection allows), and borders reflected without repeating the edge pixel.
    Far from the borders it keeps a map's total. The convolution runs in full float32 on CUDA (``float32_precision``).

    Examples:
        A point spreads into the product of two 1-D kernels; with sigma = 1 (r = 3) the centre keeps
        ``1 / (sum_j exp(-j^2 / 2))^2``:

        >>> import math, torch
        >>> point = torch.zeros(1, 9, 9, dtype=torch.float64)
        >>> point[0, 4, 4] = 1.0
        >>> blurred = blur(point, 1.0)
        >>> round(float(blurred.sum()), 12), round(float(blurred[0, 4, 4]), 6)
        (1.0, 0.159241)
        >>> round(1 / sum(math.exp(-j * j / 2) for j in range(-3, 4)) ** 2, 6)
        0.159241
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 pixels, got {sigma!r}.")
    width = 2 * min(math.ceil(3 * sigma), min(images.shape[-2:]) - 1) + 1
    with float32_precision():
        return TF.gaussian_blur(images, [width, width], [float(sigma), float(sigma)])


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetType = None,
    *,
    baseline: Baseline,
    steps: int = DEFAULT_STEPS,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deletion curve (Petsiuk et al., 2018, "RISE"): the target's probability as the most relevant pixels are removed.

    Pixels are ranked by the map, most relevant first, and all C channels of
    a pixel move together. After step k = 0..steps the ``round(k H W / steps)``
    highest-ranked pixels of ``x`` are replaced by the baseline's pixels; the
    curve is the softmax probability of the target class at each step, so it
    starts at p(x) and ends at p(baseline). A faithful map makes it fall fast:
    a small ``curve_auc`` is good. Every forward pass runs in full float32 on
    CUDA (``precision.float32_precision``), whatever the caller's TF32 setting.

    Args:
        model: classifier in eval mode, (B, C, H, W) -> logits (B, K).
        x: images (B, C, H, W).
        maps: (B, H, W), larger = more relevant.
        target: None (each image's predicted class on x), an int, or one class per image.
        baseline: what replaces a removed pixel: a tensor shaped like x (e.g.
            ``make_shapes(...).backgrounds``, the image without its shape: an
            on-manifold baseline), a number (every channel set to it, e.g. 0.0
            for black), ``"mean"`` (each image's mean colour, per channel), or
            ``"blur"`` (``blur(x, BASELINE_BLUR_SIGMA)``, a 5-pixel Gaussian blur).
        steps: number of steps; the curve has steps + 1 points.
        batch_size: perturbed copies per forward pass (None: about 10 images of
            3x224x224 worth of elements on the CPU). Does not change the result.
        generator: breaks ties in the map at random (deterministically for a
            seeded generator); None breaks them in raster order (row by row).

    Returns:
        (B, steps + 1) probabilities.

    Examples:
        With logits ``(s, -s)``, ``p_0 = sigmoid(2 s)``: deleting the 4 pixels of ones (to 0) one at a time gives
        s = 4, 3, 2, 1, 0, and the curve ends at the baseline's probability 1/2:

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
        >>> model[1].weight.data[:] = torch.tensor([[1.0], [-1.0]])    # logits (s, -s), s = sum of the pixels
        >>> curve = deletion_curve(model, torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2), 0, baseline=0.0, steps=4)
        >>> torch.allclose(curve, torch.sigmoid(torch.tensor([[8.0, 6.0, 4.0, 2.0, 0.0]]))), curve[0, -1].item()
        (True, 0.5)
    """
    return _perturbation_curve(model, x, maps, target, baseline, steps, batch_size, generator, reveal=False)


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetType = None,
    *,
    baseline: Baseline,
    steps: int = DEFAULT_STEPS,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Insertion curve (Petsiuk et al., 2018): the target's probability as the most relevant pixels are revealed.

    The mirror of ``deletion_curve`` (same arguments): it starts from the
    baseline and after step k shows the ``round(k H W / steps)`` highest-ranked
    pixels of x over it, so it runs from p(baseline) to p(x). A faithful map
    makes it rise fast: a large ``curve_auc`` is good. Petsiuk et al. insert
    over a blurred image (``baseline="blur"``).

    Returns:
        (B, steps + 1) probabilities.

    Examples:
        On the model of ``deletion_curve``'s example, the mirror image of the deletion curve:

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
        >>> model[1].weight.data[:] = torch.tensor([[1.0], [-1.0]])    # logits (s, -s), s = sum of the pixels
        >>> x, maps = torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2)
        >>> inserted = insertion_curve(model, x, maps, 0, baseline=0.0, steps=4)
        >>> torch.equal(inserted, deletion_curve(model, x, maps, 0, baseline=0.0, steps=4).flip(1))
        True
    """
    return _perturbation_curve(model, x, maps, target, baseline, steps, batch_size, generator, reveal=True)


def curve_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under deletion or insertion curves (B, steps + 1): trapezoids over the fraction of pixels moved, [0, 1].

    Returns (B,), in probability units (between 0 and 1).

    Examples:
        A constant curve's area is its value; a straight fall from 1 to 0 has area 1/2:

        >>> import torch
        >>> curve_auc(torch.tensor([[0.25, 0.25, 0.25], [1.0, 0.5, 0.0]])).tolist()
        [0.25, 0.5]
    """
    if curve.ndim != 2 or curve.shape[1] < 2:
        raise ValueError(f"curve must have shape (B, steps + 1) with steps >= 1, got {tuple(curve.shape)}.")
    return torch.trapezoid(curve, dx=1 / (curve.shape[1] - 1), dim=1)


def aopc(curve: torch.Tensor) -> torch.Tensor:
    """Area over the MoRF perturbation curve (Samek et al., 2017, IEEE TNNLS 28(11)), per image, from a deletion curve.

    ``AOPC_b = 1 / (L + 1) sum_{k=0}^{L} (f(x_b^(0)) - f(x_b^(k)))`` with
    ``f`` the target's softmax probability, ``x^(k)`` the image after k
    deletion steps (most relevant first) and L = steps: the mean drop of the
    probability along ``deletion_curve``. Samek et al. average it over images
    (``<.>_p(x)``); here that average is left to the caller, so that it can
    carry a bootstrap interval. Differences from the paper: pixels instead of
    9x9 regions, and the deletion baseline of the curve instead of uniform noise.
    Larger is better. Returns (B,).

    Examples:
        >>> import torch
        >>> aopc(torch.tensor([[1.0, 0.5, 0.0], [0.5, 0.5, 0.5]])).tolist()    # drops 0, 0.5, 1; none
        [0.5, 0.0]
    """
    if curve.ndim != 2 or curve.shape[1] < 2:
        raise ValueError(f"curve must be a deletion curve (B, steps + 1) with steps >= 1, got {tuple(curve.shape)}.")
    return curve[:, 0] - curve.mean(1)


def _perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetType,
    baseline: Baseline,
    steps: int,
    batch_size: int | None,
    generator: torch.Generator | None,
    reveal: bool,
) -> torch.Tensor:
    """Probabilities (B, steps + 1) of the target while pixels move from x to the baseline (or back, ``reveal``);
    every forward pass in full float32 on CUDA (``float32_precision``)."""
    check_model(model, x)
    check_images(x)
    n_images, _, height, width = x.shape
    if not isinstance(maps, torch.Tensor) or maps.shape != (n_images, height, width):
        raise ValueError(f"maps must have shape (B, H, W) = {(n_images, height, width)}, got {tuple(maps.shape)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= height * width:
        raise ValueError(f"steps must be an int between 1 and H W = {height * width}, got {steps!r}.")
    check_batch_size(batch_size)
    x = x.detach()
    base = baseline_images(x, baseline)
    position = pixel_ranking(maps.detach().to(x.device), generator).reshape(n_images, 1, 1, height, width)
    moved_after = torch.round(torch.arange(steps + 1, device=x.device) * (height * width / steps))
    moved_after = moved_after.reshape(1, -1, 1, 1, 1)
    start, end = (base, x) if reveal else (x, base)
    per_forward = max(1, (batch_size or default_batch_size(x)) // (steps + 1))  # images per forward pass
    curves = []
    layout, logits = clean_forward(model, x, need_logits=True)
    classes = resolve_target(target, n_images, logits.shape[1], predicted=logits).to(x.device)
    with torch.no_grad(), float32_precision():
        for chunk in torch.arange(n_images, device=x.device).split(per_forward):
            copies = torch.where(position[chunk] < moved_after, end[chunk, None], start[chunk, None])
            probabilities = model(copies.flatten(0, 1).contiguous(memory_format=layout)).softmax(1)
            chosen = probabilities.gather(1, classes[chunk].repeat_interleave(steps + 1)[:, None])
            curves.append(chosen.reshape(len(chunk), steps + 1))
    return torch.cat(curves).to(x.dtype)


def baseline_images(x: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """What replaces a removed pixel of each image of x (B, C, H, W): a tensor shaped like x.

    ``baseline`` is a tensor like x (returned detached, in x's dtype and device), a number ``v`` (every element
    ``v``), ``"mean"`` (image b's mean colour, ``mean_{h,w} x_{b,c,h,w}`` per channel c) or ``"blur"``
    (``blur(x, BASELINE_BLUR_SIGMA)``). The fill of the deletion and insertion curves and of ``roar.remove_top``.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]]]])
        >>> baseline_images(x, "mean").flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
        >>> baseline_images(x, 0.5).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != x.shape:
            raise ValueError(
                f"a baseline tensor must have the shape of x {tuple(x.shape)}, got {tuple(baseline.shape)}."
            )
        return baseline.detach().to(x)
    if baseline == "blur":
        return blur(x, BASELINE_BLUR_SIGMA)
    if baseline == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    raise ValueError(f"baseline must be a tensor like x, a number, 'mean' or 'blur'; got {baseline!r}.")


def pixel_ranking(maps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Place of each pixel in the ranking by map value, 0 = most relevant: (B, H, W) -> (B, H W) long.

    The package's one ranking of pixels (the curves here, ``roar.remove_top``): the pixels with place < n are the
    n of highest value. Ties keep raster order (a stable sort), or, with ``generator``, the order of a random
    shuffle drawn first (``torch.rand`` on the generator's device, so a CPU generator ranks maps on any device
    alike).

    Examples:
        >>> import torch
        >>> pixel_ranking(torch.tensor([[[0.1, 0.9], [0.5, 0.9]]])).tolist()
        [[3, 0, 2, 1]]
    """
    flat = maps.flatten(1)
    shuffle = None
    if generator is not None:
        shuffle = torch.rand(flat.shape, generator=generator, device=generator.device).to(flat.device).argsort(1)
        flat = flat.gather(1, shuffle)
    order = flat.sort(dim=1, descending=True, stable=True).indices
    if shuffle is not None:
        order = shuffle.gather(1, order)
    places = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, places)


def gaussian_perturbations(x: torch.Tensor, noise_std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One perturbation I of every element of x, iid N(0, noise_std^2): ``noise_std * noise.gaussian_noise(x, ...)``.

    Examples:
        >>> import torch
        >>> gaussian_perturbations(torch.zeros(2, 1, 4, 4), 0.1, torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 4, 4])
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std!r}.")
    return noise_std * gaussian_noise(x, generator)


def infidelity(
    model: nn.Module,
    explain_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int = 10,
    noise_std: float = 0.1,
    generator: torch.Generator | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Infidelity of an explanation (Yeh et al., 2019, NeurIPS): how badly the attribution predicts the change of
    the output when the input is perturbed.

    ``INFD(e, f, x) = E_I[(I . e(x) - (f(x) - f(x - I)))^2]``, with f the target logit, ``I . e`` the sum over
    all elements of their product (an attribution with one channel, (B, 1, H, W), is broadcast over the colour
    channels: ``sum_p e_p sum_c I_cp``), and the expectation a mean over ``n_samples`` perturbations I drawn iid
    N(0, noise_std^2) per element (``gaussian_perturbations``; the "noisy baseline" of Yeh et al.), the perturbed
    images x - I not clipped. Sample k draws the perturbation of the whole batch by one
    ``gaussian_perturbations(x, noise_std, generator)``, k = 0, 1, ...

    ``normalize=True`` first rescales e by the beta that minimises the mean over the samples,
    ``beta = sum_k (I_k . e)(f(x) - f(x - I_k)) / sum_k (I_k . e)^2`` (0 when the denominator is), so that maps of
    arbitrary scale (|G|, G^2) can be compared. This is Captum's ``captum.metrics.infidelity`` (including its
    ``normalize``), whose result it equals for the same perturbations. Exact cases: for a linear model
    f(x) = w . x + b and e = w (its gradient), ``I . w = f(x) - f(x - I)`` for every I, so the infidelity is 0.

    Args:
        model: classifier in eval mode, (B, C, H, W) -> logits (B, K); left unchanged.
        explain_fn: x (B, C, H, W) -> attribution (B, C, H, W) or (B, 1, H, W) of the same class as ``target``.
        x: float images (B, C, H, W); left unchanged.
        target: None (each image's predicted class at x), an int, or one class per image.
        n_samples: perturbations per image.
        noise_std: the standard deviation of the perturbation, in the units of x.
        generator: draws the perturbations (a ``torch.Generator`` on x's device type or the CPU; None: the global one).
        normalize: rescale e by the optimal beta first.

    Returns:
        (B,) float, >= 0.

    Examples:
        A linear model's gradient predicts every change exactly, at any scale with ``normalize``:

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
        >>> model[1].weight.data[:] = torch.tensor([[1.0], [-1.0]])    # logits (s, -s), s = sum of the pixels
        >>> gradient = model[1].weight[0].detach().reshape(1, 1, 2, 2)    # of logit 0
        >>> x, generator = torch.ones(2, 1, 2, 2), torch.Generator().manual_seed(0)
        >>> float(infidelity(model, lambda x: gradient.expand_as(x), x, 0, generator=generator).max()) < 1e-10
        True
        >>> scaled = infidelity(model, lambda x: 5 * gradient.expand_as(x), x, 0, generator=generator, normalize=True)
        >>> float(scaled.max()) < 1e-10
        True
    """
    check_model(model, x)
    check_images(x)
    scores = infidelities(
        model,
        {"e": explain_fn(x.detach())},
        x,
        target,
        n_samples=n_samples,
        noise_std=noise_std,
        generator=generator,
        normalize=normalize,
    )
    return scores["e"].to(x.dtype)


def _checked_attribution(attribution: object, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(attribution, torch.Tensor) or attribution.ndim != 4 or attribution.shape[0] != x.shape[0]:
        shape = tuple(attribution.shape) if isinstance(attribution, torch.Tensor) else type(attribution).__name__
        raise ValueError(f"an attribution must be (B, C, H, W) or (B, 1, H, W) like x {tuple(x.shape)}; got {shape}.")
    return attribution.detach().to(x.device)


def _infidelity(predicted_sums: torch.Tensor, differences: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Mean over samples of (I . e - (f(x) - f(x - I)))^2 from (B, n_samples) sums and differences, after the
    optimal rescaling of e when ``normalize``."""
    if normalize:
        num, den = (predicted_sums * differences).sum(1), predicted_sums.square().sum(1)
        beta = torch.where(den == 0, torch.zeros_like(den), num / torch.where(den == 0, torch.ones_like(den), den))
        predicted_sums = beta[:, None] * predicted_sums
    return (predicted_sums - differences).square().mean(1)


def infidelities(
    model: nn.Module,
    attributions: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int = 10,
    noise_std: float = 0.1,
    generator: torch.Generator | None = None,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """``infidelity`` of several fixed attributions of ``x``, by label, each (B,) float64, on the same perturbations
    (so that differences between maps are paired).

    ``infidelity`` is this function for one map. The perturbations and the logit changes they cause are computed
    once for all the maps: one forward pass per perturbation, whatever the number of maps.

    Examples:
        A linear model's gradient predicts every perturbation exactly; a zero map predicts none (with
        ``normalize``, its infidelity is the mean squared change of the logit, the no-information floor):

        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> x = torch.rand(3, 1, 2, 2)
        >>> weight = model[1].weight[1].reshape(1, 1, 2, 2).expand(3, -1, -1, -1).detach()
        >>> scores = infidelities(model, {"gradient": weight, "zero": torch.zeros_like(x)}, x, 1,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> float(scores["gradient"].max()) < 1e-10, bool((scores["zero"] > 0).all())
        (True, True)
    """
    check_model(model, x)
    check_images(x)
    check_count("n_samples", n_samples)
    x = x.detach()
    classes = clean_classes(model, x, target)
    rows = torch.arange(x.shape[0], device=x.device)
    maps = {label: _checked_attribution(a, x) for label, a in attributions.items()}
    predicted: dict[str, list[torch.Tensor]] = {label: [] for label in maps}
    actual = []
    with torch.no_grad(), float32_precision(False):
        clean = checked_logits(model, x)[rows, classes]
        for _ in range(n_samples):
            perturbation = gaussian_perturbations(x, noise_std, generator)
            for label, attribution in maps.items():
                predicted[label].append((perturbation * attribution).flatten(1).sum(1))
            actual.append(clean - checked_logits(model, x - perturbation)[rows, classes])
    differences = torch.stack(actual, 1)
    return {
        label: _infidelity(torch.stack(sums, 1), differences, normalize).double() for label, sums in predicted.items()
    }
