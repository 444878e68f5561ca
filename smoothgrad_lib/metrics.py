"""Per-image scores of saliency maps: localisation against evidence masks, similarity between maps, texture.

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

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import sobel
from skimage.metrics import structural_similarity
from torch.nn import functional as F

from ._checks import check_count, check_images
from .noise import check_generator
from .stats import pearson


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


def neighbour_difference(maps: torch.Tensor) -> torch.Tensor:
    """Mean |difference| between horizontally and vertically adjacent pixels of maps (B, H, W): (B,).

    The average of the two directions' means, in the units of the map (for
    maps in [0, 1]: a fraction of the colour scale). Lower is smoother; it
    measures high spatial frequency, not how a map changes with the input.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (B, H, W), got {tuple(maps.shape)}.")
    maps = maps.detach()
    return (maps.diff(dim=1).abs().mean((1, 2)) + maps.diff(dim=2).abs().mean((1, 2))) / 2


def spatial_autocorrelation(maps: torch.Tensor) -> torch.Tensor:
    """Lag-1 spatial autocorrelation of maps (B, H, W): (B,), the mean of the horizontal and vertical ones.

    For each direction, Pearson's correlation over all pixels between each pixel and its right (or lower)
    neighbour. It is unchanged by ``a m + b`` with ``a > 0`` (offset- and scale-free), so a denser map (more
    pixels lit) does not read as rougher, as it can under ``neighbour_difference``. White noise gives about 0,
    a map that varies slowly in space nearly 1; higher is smoother. A constant map gives NaN.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (B, H, W), got {tuple(maps.shape)}.")
    return ((pearson(maps[:, :, :-1], maps[:, :, 1:]) + pearson(maps[:, :-1], maps[:, 1:])) / 2).float()


def brightest_share(maps: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """Share of each map's total (B, H, W), maps >= 0, held by its ``fraction`` brightest pixels: (B,).

    A uniform map gives ``fraction``; a map whose saliency sits on a few pixels gives nearly 1.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    flat = maps.detach().flatten(1).sort(dim=1, descending=True).values
    count = max(1, round(fraction * flat.shape[1]))
    return flat[:, :count].sum(1) / flat.sum(1)


def far_share(maps: torch.Tensor, masks: torch.Tensor, distance: float = 4.0) -> torch.Tensor:
    """Share of each map's out-of-mask saliency that lies more than ``distance`` pixels from the mask: (B,).

    ``sum_{p : d(p) > distance} M_p / sum_{p not in mask} M_p`` for maps M >= 0,
    with ``d(p)`` the Euclidean distance from pixel p to the nearest mask pixel
    (``scipy.ndimage.distance_transform_edt``). A blur of a map that sits on
    the mask keeps its spill-over near the mask (a small share); saliency
    spread evenly over the image puts most of it far away. NaN for a map with
    nothing outside the mask.
    """
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be (B, H, W), got {tuple(maps.shape)} and {tuple(masks.shape)}.")
    outside = ~masks.detach().cpu().numpy().astype(bool)
    distances = np.stack([ndimage.distance_transform_edt(item) for item in outside])
    far = torch.from_numpy(distances > distance).to(maps.device)
    values = maps.detach().clamp_min(0)
    return (values * far).flatten(1).sum(1) / (values * torch.from_numpy(outside).to(maps.device)).flatten(1).sum(1)


def localisation(
    maps: torch.Tensor, masks: torch.Tensor, dilation: int = 2, far: float = 4.0
) -> dict[str, torch.Tensor]:
    """Per-image localisation scores of maps (B, H, W) >= 0 against evidence masks (B, H, W): a dict of (B,) tensors.

    * ``"auc"``: ROC-AUC of the map as a detector of mask pixels (rank-based,
      unchanged by any increasing transform of the map; 0.5 is chance);
    * ``"auc_dilated"``: the same against the mask grown by ``dilation`` pixels;
    * ``"mass"``, ``"mass_dilated"``: share of the map's total inside the mask
      / the dilated mask (``relevance_mass``; changes under transforms like squaring);
    * ``"far"``: share of the out-of-mask saliency more than ``far`` pixels from the mask (``far_share``).
    """
    grown = dilate(masks, dilation)
    return {
        "auc": mask_auc(maps, masks),
        "auc_dilated": mask_auc(maps, grown),
        "mass": relevance_mass(maps, masks),
        "mass_dilated": relevance_mass(maps, grown),
        "far": far_share(maps, masks, far),
    }


def edge_maps(images: torch.Tensor) -> torch.Tensor:
    """Sobel edge magnitude of images (B, C, H, W), the largest over channels: maps (B, H, W) in float32.

    scikit-image's ``sobel`` on each channel (its border handling), then the
    maximum over channels, as ``saliency_map`` reduces attributions: the map an
    edge detector would draw, to compare saliency maps with (Adebayo et al., 2018).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor (B, C, H, W), got {getattr(images, 'shape', type(images))}.")
    edges = np.stack([np.max([sobel(channel) for channel in image], 0) for image in images.detach().cpu().numpy()])
    return torch.tensor(edges).to(images.device)


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


ExplainFn = Callable[[torch.Tensor], torch.Tensor]
"""``explain_fn(x)`` -> an attribution of each image of ``x`` (B, C, H, W), with its batch axis first."""


def uniform_ball_noise(x: torch.Tensor, radius: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One perturbation per element of ``x``, uniform in [-radius, radius]: uniform in the L-infinity ball.

    ``(2 torch.rand(x.shape, generator=generator) - 1) * radius``, on the generator's device, then moved to x's:
    Captum's ``sensitivity_max`` default (``default_perturb_func``) draws from the same distribution.
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}.")
    check_generator(generator, x)
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return (2 * u - 1) * radius


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
        generator: draws the perturbations (a ``torch.Generator`` on x's device type; None: the global one).
        normalize: divide by the norm of the explanation at x.

    Returns:
        (B,) float, >= 0.
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
    """
    check_images(x)
    x = x.detach()
    a = explain_fn(x, target_a)
    b = explain_fn(x, target_b)
    return rank_correlation(a, b, absolute=absolute)
