"""Does a saliency map say something true? Localisation, similarity, faithfulness and randomisation tests.

Conventions. ``maps`` are saliency maps (B, H, W), larger = more relevant;
``masks`` (B, H, W) bool mark the ground-truth evidence (for the shapes data:
the pixels of the class shape). Every metric is computed per image and
returned as a tensor (B,), so that callers can bootstrap over images.

Rank-based metrics (``relevance_rank``, ``mask_auc``, ``rank_correlation``)
give tied map values their average rank, i.e. they score a tie as the average
over all orders of the tied pixels. They are therefore unchanged by any
strictly increasing transform of the map (exp, x**3 + c, min-max scaling), and
a constant map scores exactly chance.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence

import torch
from skimage.metrics import structural_similarity
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur

from .saliency import TargetType, _check_model, _clean_forward, default_batch_size, resolve_target

DEFAULT_STEPS = 32
BLUR_SIGMA = 5.0  # pixels, the "blur" baseline of the deletion and insertion curves
ORDERS = ("top_down", "independent")


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Whether the map's maximum lies in the mask: the pointing game (Zhang et al., 2018, IJCV 126).

    Ties: if several pixels share the maximum value, the image counts as a hit
    when *any* of them lies in the mask (as Quantus's ``PointingGame``). A
    constant map is therefore always a hit; compare with a random map.

    Args:
        maps: (B, H, W) float; masks: (B, H, W) bool, each with at least one pixel.

    Returns:
        (B,) bool.
    """
    flat, inside = _flatten(maps, masks)
    is_max = flat == flat.amax(1, keepdim=True)
    return (is_max & inside).any(1)


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance mass accuracy: the share of the positive relevance that lies inside the mask.

    Arras, Osman and Samek (2022), "CLEVR-XAI", Information Fusion 81.

    ``sum_{p in mask} max(R_p, 0) / sum_p max(R_p, 0)``, a number in [0, 1];
    a map spread uniformly scores ``|mask| / (H W)``. Negative values count as
    no relevance (Arras et al. keep only positive relevance). For non-negative
    maps this equals Quantus's ``RelevanceMassAccuracy``. NaN for a map with
    no positive value (0 / 0), e.g. an all-zero Grad-CAM.

    Args:
        maps: (B, H, W) float; masks: (B, H, W) bool, each with at least one pixel.

    Returns:
        (B,) in the dtype of ``maps``.
    """
    flat, inside = _flatten(maps, masks)
    positive = flat.clamp_min(0)
    return (positive * inside).sum(1) / positive.sum(1)


def relevance_rank(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al., 2022): the share of the K = |mask| top-ranked pixels inside the mask.

    A number in [0, 1]; a random map scores ``K / (H W)`` on average.

    Ties: a group of tied pixels that straddles the K-th place fills the
    remaining places in expectation over a uniformly random order of the
    group, i.e. each tied pixel counts with probability (free places) /
    (group size). Hence a constant map scores exactly ``K / (H W)`` and the
    score is invariant to strictly increasing transforms of the map. Without
    ties it equals Quantus's ``RelevanceRankAccuracy`` (which breaks ties by
    NumPy's sort order).

    Args:
        maps: (B, H, W) float; masks: (B, H, W) bool, each with at least one pixel.

    Returns:
        (B,) float64.
    """
    flat, inside = _flatten(maps, masks)
    below, up_to = _tie_bounds(flat)
    n_pixels = flat.shape[1]
    k = inside.sum(1, keepdim=True)
    above = n_pixels - up_to  # pixels strictly greater
    group = up_to - below  # pixels tied with this one, itself included
    free = (k - above).clamp(min=torch.zeros_like(group), max=group)
    chosen = free.double() / group.double()  # probability that the pixel is among the top K
    return (chosen * inside).sum(1) / k[:, 0].double()


def mask_auc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """ROC-AUC of the map as a detector of mask pixels: P(R_in > R_out) + P(R_in = R_out) / 2.

    Over all pairs of an inside pixel and an outside pixel, the share where the
    inside pixel has the larger map value, ties counting one half. Computed by
    the Mann-Whitney U statistic on average ranks r_p (1..HW):
    ``AUC = (sum_{p in mask} r_p - n1 (n1 + 1) / 2) / (n1 n0)`` with n1, n0
    the numbers of pixels inside and outside. 0.5 is chance (a constant map
    scores exactly 0.5), 1 a perfect separation. Invariant to strictly
    increasing transforms; equals scikit-learn's ``roc_auc_score(mask, map)``
    (and Quantus's ``AUC``).

    Args:
        maps: (B, H, W) float; masks: (B, H, W) bool, each with at least one pixel inside and one outside.

    Returns:
        (B,) float64.
    """
    flat, inside = _flatten(maps, masks, need_outside=True)
    below, up_to = _tie_bounds(flat)
    ranks = (below + up_to + 1).double() / 2  # average 1-based rank of each value
    n_in = inside.sum(1).double()
    n_out = flat.shape[1] - n_in
    u = (ranks * inside).sum(1) - n_in * (n_in + 1) / 2
    return u / (n_in * n_out)


def dilate(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow each mask by ``pixels`` in every direction with a (2 pixels + 1)-wide square.

    A pixel joins the mask when some mask pixel lies within Chebyshev distance
    ``pixels`` (a square structuring element, so diagonals grow as far as rows
    and columns). ``pixels=0`` returns a copy.

    Args:
        masks: (B, H, W) bool; pixels: int >= 0.

    Returns:
        (B, H, W) bool.
    """
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or masks.ndim != 3:
        raise TypeError("masks must be a bool tensor of shape (B, H, W).")
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
        raise ValueError(f"pixels must be an int >= 0, got {pixels!r}.")
    grown = F.max_pool2d(masks[:, None].float(), 2 * pixels + 1, stride=1, padding=pixels)
    return grown[:, 0] > 0


def rank_correlation(a: torch.Tensor, b: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Spearman's rank correlation between two maps (or attributions) of each image, over all their elements.

    ``rho = Pearson correlation of the average ranks`` of ``a_b`` and ``b_b``
    (ties take their average rank, as ``scipy.stats.spearmanr``). With
    ``absolute=True`` it compares ``|a|`` with ``|b|``, which ignores sign
    flips (Adebayo et al., 2018 report both). NaN where either map is constant.

    Args:
        a, b: tensors of the same shape (B, ...), e.g. maps (B, H, W) or attributions (B, C, H, W).

    Returns:
        (B,) float64 in [-1, 1].
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape or a.ndim < 2:
        raise ValueError("a and b must be tensors of the same shape (B, ...), with a batch axis first.")
    flat_a, flat_b = a.detach().flatten(1), b.detach().flatten(1).to(a.device)
    if absolute:
        flat_a, flat_b = flat_a.abs(), flat_b.abs()
    ranks = [sum(_tie_bounds(flat)).double() / 2 for flat in (flat_a, flat_b)]
    centred_a, centred_b = (r - r.mean(1, keepdim=True) for r in ranks)
    return (centred_a * centred_b).sum(1) / (centred_a.square().sum(1) * centred_b.square().sum(1)).sqrt()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity of two maps per image, by scikit-image's ``structural_similarity``.

    scikit-image's defaults: 7x7 uniform windows, K1 = 0.01, K2 = 0.03, with
    ``data_range`` the span the map values can take (1 for maps normalised to
    [0, 1], e.g. by ``saliency_map(..., normalize="minmax")``, as Adebayo et
    al., 2018 compare them). 1 means identical maps.

    Args:
        a, b: maps (B, H, W) with values in [0, data_range]; H, W >= 7.

    Returns:
        (B,) float64.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape or a.ndim != 3:
        raise ValueError("a and b must be maps of the same shape (B, H, W).")
    arrays = [m.detach().cpu().double().numpy() for m in (a, b)]
    if any(m.min() < 0 or m.max() > data_range for m in arrays):
        raise ValueError(
            f"map values must lie in [0, data_range] = [0, {data_range}]: normalise them first, "
            "e.g. saliency_map(attribution, normalize='minmax'), or give the right data_range."
        )
    return torch.tensor([structural_similarity(p, q, data_range=data_range) for p, q in zip(*arrays, strict=True)])


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each channel of images (B, C, H, W), standard deviation ``sigma`` in pixels.

    torchvision's ``gaussian_blur`` with a (2 r + 1)-wide kernel and reflected
    borders, r = ceil(3 sigma) (the Gaussian truncated at 3 sigma), or
    min(H, W) - 1 if that is smaller (the most that reflection allows).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 pixels, got {sigma!r}.")
    width = 2 * min(math.ceil(3 * sigma), min(images.shape[-2:]) - 1) + 1
    return gaussian_blur(images, [width, width], [float(sigma), float(sigma)])


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetType = None,
    *,
    baseline: torch.Tensor | float | str,
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
    a small ``curve_auc`` is good.

    Args:
        model: classifier in eval mode, (B, C, H, W) -> logits (B, K).
        x: images (B, C, H, W).
        maps: (B, H, W), larger = more relevant.
        target: None (each image's predicted class on x), an int, or one class per image.
        baseline: what replaces a removed pixel: a tensor shaped like x (e.g.
            ``make_shapes(...).backgrounds``, the image without its shape: an
            on-manifold baseline), a number (every channel set to it, e.g. 0.0
            for black), ``"mean"`` (each image's mean colour, per channel), or
            ``"blur"`` (``blur(x, BLUR_SIGMA)``, a 5-pixel Gaussian blur).
        steps: number of steps; the curve has steps + 1 points.
        batch_size: perturbed copies per forward pass (None: about 10 images of
            3x224x224 worth of elements on the CPU). Does not change the result.
        generator: breaks ties in the map at random (deterministically for a
            seeded generator); None breaks them in raster order (row by row).

    Returns:
        (B, steps + 1) probabilities.
    """
    return _perturbation_curve(model, x, maps, target, baseline, steps, batch_size, generator, reveal=False)


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetType = None,
    *,
    baseline: torch.Tensor | float | str,
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
    """
    return _perturbation_curve(model, x, maps, target, baseline, steps, batch_size, generator, reveal=True)


def curve_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under deletion or insertion curves (B, steps + 1): trapezoids over the fraction of pixels moved, [0, 1].

    Returns (B,), in probability units (between 0 and 1).
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
    """
    if curve.ndim != 2 or curve.shape[1] < 2:
        raise ValueError(f"curve must be a deletion curve (B, steps + 1) with steps >= 1, got {tuple(curve.shape)}.")
    return curve[:, 0] - curve.mean(1)


def randomize_layers(
    model: nn.Module,
    order: str = "top_down",
    layers: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[str, nn.Module]]:
    """Model parameter randomisation (Adebayo et al., 2018, "Sanity checks for saliency maps").

    Yields ``(layer name, randomised copy of model)``, one per layer, starting
    at the output. ``order="top_down"`` is the cascading test: step j
    re-initialises the top j layers together (cumulatively), so the last copy
    has every layer random. ``order="independent"``: step j re-initialises
    only layer j, the others keep their trained weights. The caller's model is
    never changed, and each yielded copy is the caller's to keep or modify.

    A layer is a module with parameters of its own and a ``reset_parameters``
    method (Conv, Linear, BatchNorm, ...). Its parameters are set to fresh
    values from its own ``reset_parameters()`` (PyTorch's default
    initialisation, e.g. Kaiming-uniform for convolutions), drawn on the CPU
    under a forked RNG seeded from ``generator`` (one seed per layer, so the
    same layer gets the same values in both orders, on any device). A
    batch-norm layer gets its initial affine parameters (weight 1, bias 0)
    but keeps its running mean and variance: only parameters are randomised,
    never buffers.

    Quantus's ``MPRT`` differs, so its scores are not compared with ours: it
    calls ``reset_parameters()`` in place, which also resets batch-norm
    running statistics to mean 0 and variance 1; it re-seeds the global RNG
    with the same seed before every layer; and it yields one model that it
    keeps mutating. Its layer order is the same (tests check it).

    Args:
        model: the trained classifier; not modified.
        order: ``"top_down"`` (cumulative) or ``"independent"``.
        layers: names of submodules (``model.get_submodule(name)``) in forward
            order, input to output; each step re-initialises every layer
            inside the named module (e.g. a whole block). None: every layer in
            registration order (``model.named_modules()``), which is the
            forward order for ``nn.Sequential`` and most torchvision models.
        generator: CPU ``torch.Generator`` for the seeds; None uses the global one.

    Yields:
        (name, model copy) from the top layer down, in eval mode like ``model``.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
    names = [name for name, module in model.named_modules() if _is_layer(module)] if layers is None else list(layers)
    for name in names:
        if not any(_is_layer(module) for module in model.get_submodule(name).modules()):
            raise ValueError(f"module {name!r} holds no layer with parameters and reset_parameters() to randomise.")
    if not names:
        raise ValueError("model has no layer with parameters and reset_parameters() to randomise.")
    seeds = torch.randint(0, 2**62, (len(names),), generator=generator).tolist()
    state = model
    for name, seed in reversed(list(zip(names, seeds, strict=True))):
        state = copy.deepcopy(model if order == "independent" else state)
        _reinitialise(state.get_submodule(name), seed)
        yield name, copy.deepcopy(state)


def _is_layer(module: nn.Module) -> bool:
    return hasattr(module, "reset_parameters") and any(True for _ in module.parameters(recurse=False))


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Give every layer inside ``module`` the parameters of a fresh ``reset_parameters()``, CPU RNG seeded with seed."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for layer in filter(_is_layer, module.modules()):
            fresh = copy.deepcopy(layer).cpu()
            fresh.reset_parameters()
            for name, parameter in layer.named_parameters(recurse=False):
                parameter.copy_(fresh.get_parameter(name))


def _perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetType,
    baseline: torch.Tensor | float | str,
    steps: int,
    batch_size: int | None,
    generator: torch.Generator | None,
    reveal: bool,
) -> torch.Tensor:
    """Probabilities (B, steps + 1) of the target while pixels move from x to the baseline (or back, ``reveal``)."""
    _check_model(model)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise ValueError("x must be a float tensor of shape (B, C, H, W); add a batch axis for one image: x[None].")
    n_images, _, height, width = x.shape
    if not isinstance(maps, torch.Tensor) or maps.shape != (n_images, height, width):
        raise ValueError(f"maps must have shape (B, H, W) = {(n_images, height, width)}, got {tuple(maps.shape)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= height * width:
        raise ValueError(f"steps must be an int between 1 and H W = {height * width}, got {steps!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}.")
    x = x.detach()
    base = _baseline(x, baseline)
    position = _ranking_positions(maps.detach().to(x.device), generator).reshape(n_images, 1, 1, height, width)
    moved_after = torch.round(torch.arange(steps + 1, device=x.device) * (height * width / steps))
    moved_after = moved_after.reshape(1, -1, 1, 1, 1)
    start, end = (base, x) if reveal else (x, base)
    per_forward = max(1, (batch_size or default_batch_size(x)) // (steps + 1))  # images per forward pass
    curves = []
    layout, logits = _clean_forward(model, x, need_logits=True)
    classes = resolve_target(target, n_images, logits.shape[1], predicted=logits).to(x.device)
    with torch.no_grad():
        for chunk in torch.arange(n_images, device=x.device).split(per_forward):
            copies = torch.where(position[chunk] < moved_after, end[chunk, None], start[chunk, None])
            probabilities = model(copies.flatten(0, 1).contiguous(memory_format=layout)).softmax(1)
            chosen = probabilities.gather(1, classes[chunk].repeat_interleave(steps + 1)[:, None])
            curves.append(chosen.reshape(len(chunk), steps + 1))
    return torch.cat(curves).to(x.dtype)


def _baseline(x: torch.Tensor, baseline: torch.Tensor | float | str) -> torch.Tensor:
    """The baseline image for each image of x (B, C, H, W), shaped like x."""
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != x.shape:
            raise ValueError(
                f"a baseline tensor must have the shape of x {tuple(x.shape)}, got {tuple(baseline.shape)}."
            )
        return baseline.detach().to(x)
    if baseline == "blur":
        return blur(x, BLUR_SIGMA)
    if baseline == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    raise ValueError(f"baseline must be a tensor like x, a number, 'mean' or 'blur'; got {baseline!r}.")


def _ranking_positions(maps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Place of each pixel in the ranking by map value, 0 = most relevant: (B, H, W) -> (B, H W) long.

    Ties keep raster order (stable sort), or a random order drawn from ``generator``.
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


def _flatten(maps: torch.Tensor, masks: torch.Tensor, need_outside: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Check maps (B, H, W) float and masks (B, H, W) bool, return both flattened to (B, H W)."""
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise TypeError("maps must be a floating-point tensor of shape (B, H, W).")
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        raise TypeError("masks must be a bool tensor of shape (B, H, W) (e.g. make_shapes(...).masks).")
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(
            f"maps and masks must both have shape (B, H, W); got {tuple(maps.shape)} and {tuple(masks.shape)}. "
            "Reduce attributions over channels first (saliency_map) and add a batch axis for one image."
        )
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or inf values.")
    flat, inside = maps.detach().flatten(1), masks.to(maps.device).flatten(1)
    counts = inside.sum(1)
    if (counts == 0).any():
        raise ValueError(f"masks {torch.nonzero(counts == 0).flatten().tolist()} are empty: the metric is undefined.")
    if need_outside and (counts == inside.shape[1]).any():
        raise ValueError(
            f"masks {torch.nonzero(counts == inside.shape[1]).flatten().tolist()} cover the whole image: "
            "the AUC needs pixels outside the mask."
        )
    return flat, inside


def _tie_bounds(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each value of ``flat`` (B, N): how many values of its row are smaller, and how many are smaller or equal."""
    ordered = flat.sort(1).values.contiguous()
    values = flat.contiguous()
    return torch.searchsorted(ordered, values, right=False), torch.searchsorted(ordered, values, right=True)
