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

from collections.abc import Mapping

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import sobel
from skimage.metrics import structural_similarity
from torch.nn import functional as F

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

    Examples:
        >>> import torch
        >>> masks = torch.zeros(2, 2, 2, dtype=torch.bool)
        >>> masks[:, 0, 0] = True
        >>> maps = torch.tensor([[[0.9, 0.1], [0.2, 0.3]], [[0.1, 0.9], [0.2, 0.3]]])
        >>> pointing_game(maps, masks).tolist()
        [True, False]
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

    Examples:
        Positive relevance 3 + 1 = 4, of which 3 inside; the negative pixel counts as none:

        >>> import torch
        >>> masks = torch.tensor([[[True, False], [False, False]]])
        >>> relevance_mass(torch.tensor([[[3.0, 1.0], [0.0, -2.0]]]), masks).tolist()
        [0.75]
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

    Examples:
        A map whose top pixel is the mask's one pixel scores 1; a constant map scores ``K / (H W) = 1 / 4``:

        >>> import torch
        >>> masks = torch.tensor([[[True, False], [False, False]]])
        >>> top = torch.tensor([[[0.9, 0.1], [0.2, 0.3]]])
        >>> relevance_rank(top, masks).tolist(), relevance_rank(torch.ones(1, 2, 2), masks).tolist()
        ([1.0], [0.25])
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

    Examples:
        A map equal to the mask separates it perfectly, its reverse not at all, a constant map is chance:

        >>> import torch
        >>> masks = torch.tensor([[[True, True], [False, False]]])
        >>> maps = torch.cat([masks.double(), 1 - masks.double(), torch.ones(1, 2, 2)])
        >>> mask_auc(maps, masks.expand(3, 2, 2)).tolist()
        [1.0, 0.0, 0.5]
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

    Examples:
        >>> import torch
        >>> point = torch.zeros(1, 5, 5, dtype=torch.bool)
        >>> point[0, 2, 2] = True
        >>> dilate(point, 1)[0].int().tolist()[1:4], int(dilate(point, 2).sum())   # a 3x3, then a 5x5 square
        ([[0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0]], 25)
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

    Examples:
        An increasing transform keeps the ranking; a sign flip reverses it, unless ``absolute``:

        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> rank_correlation(a, a**3).item(), rank_correlation(a, -a).item()
        (1.0, -1.0)
        >>> rank_correlation(a, -a, absolute=True).item()
        1.0
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape or a.ndim < 2:
        raise ValueError("a and b must be tensors of the same shape (B, ...), with a batch axis first.")
    flat_a, flat_b = a.detach().flatten(1), b.detach().flatten(1).to(a.device)
    if absolute:
        flat_a, flat_b = flat_a.abs(), flat_b.abs()
    ranks = [sum(_tie_bounds(flat)).double() / 2 for flat in (flat_a, flat_b)]
    centred_a, centred_b = (r - r.mean(1, keepdim=True) for r in ranks)
    return (centred_a * centred_b).sum(1) / (centred_a.square().sum(1) * centred_b.square().sum(1)).sqrt()


def ranking_agreement(
    scores: Mapping[str, Mapping[str, float]], direction: Mapping[str, float] | None = None
) -> torch.Tensor:
    """Do the tests rank the methods alike? Spearman's correlation between every two tests' rankings: (T, T).

    ``scores[test][method]`` is one summary score per method and test (a mean
    over images, say); ``direction[test]`` is +1 where higher is better and -1
    where lower is (None: +1 for every test), so that a correlation of 1 means
    the same order from best to worst. Each pair of tests is compared over the
    methods both score (``rank_correlation`` of the two score vectors, ties at
    their average rank); the matrix is symmetric, in the order of ``scores``,
    with 1 on the diagonal. NaN where one test gives every common method the
    same score.

    Examples:
        >>> scores = {"AUC": {"a": 0.9, "b": 0.7, "c": 0.5}, "error": {"a": 0.1, "b": 0.2, "c": 0.4}}
        >>> ranking_agreement(scores, {"AUC": 1, "error": -1})[0, 1].item()
        1.0
    """
    tests = list(scores)
    sign = {test: 1 for test in tests} if direction is None else direction
    missing = [test for test in tests if test not in sign]
    if missing:
        raise ValueError(f"direction has no sign for {missing}: give +1 (higher is better) or -1 for every test.")
    agreement = torch.ones(len(tests), len(tests), dtype=torch.float64)
    for i, a in enumerate(tests):
        for j, b in enumerate(tests[:i]):
            common = [name for name in scores[a] if name in scores[b]]
            if len(common) < 2:
                raise ValueError(f"tests {a!r} and {b!r} score {len(common)} common method(s); a ranking needs 2.")
            pair = torch.tensor([[sign[m] * scores[m][name] for name in common] for m in (a, b)], dtype=torch.float64)
            agreement[i, j] = agreement[j, i] = rank_correlation(pair[:1], pair[1:])[0]
    return agreement


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

    Examples:
        >>> import torch
        >>> ramp = torch.linspace(0, 1, 64).reshape(1, 8, 8)
        >>> round(ssim(ramp, ramp).item(), 6)
        1.0
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

    Examples:
        Horizontal neighbours differ by 1, vertical ones by 2:

        >>> import torch
        >>> neighbour_difference(torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])).tolist()
        [1.5]
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

    Examples:
        A ramp ``i + j`` is perfectly correlated with its shifted self, a checkerboard perfectly anti-correlated:

        >>> import torch
        >>> i, j = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
        >>> [round(v, 6) for v in spatial_autocorrelation(torch.stack([i + j, (-1) ** (i + j)])).tolist()]
        [1.0, -1.0]
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (B, H, W), got {tuple(maps.shape)}.")
    return ((pearson(maps[:, :, :-1], maps[:, :, 1:]) + pearson(maps[:, :-1], maps[:, 1:])) / 2).float()


def brightest_share(maps: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """Share of each map's total (B, H, W), maps >= 0, held by its ``fraction`` brightest pixels: (B,).

    A uniform map gives ``fraction``; a map whose saliency sits on a few pixels gives nearly 1.

    Examples:
        >>> import torch
        >>> spike = torch.zeros(1, 10, 10)
        >>> spike[0, 3, 4] = 5.0
        >>> round(brightest_share(torch.ones(1, 10, 10)).item(), 6), brightest_share(spike).item()   # 1 of 100 pixels
        (0.01, 1.0)
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

    Examples:
        A uniform row of 8 pixels with its first pixel as mask: 3 of the 7 outside pixels lie more than 4 away:

        >>> import torch
        >>> mask = torch.zeros(1, 1, 8, dtype=torch.bool)
        >>> mask[0, 0, 0] = True
        >>> round(far_share(torch.ones(1, 1, 8), mask).item(), 6), round(3 / 7, 6)
        (0.428571, 0.428571)
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

    Examples:
        >>> import torch
        >>> masks = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> masks[0, 3:5, 3:5] = True
        >>> scores = localisation(masks.float(), masks)           # a map that is the mask
        >>> sorted(scores), scores["auc"].item(), scores["mass"].item()
        (['auc', 'auc_dilated', 'far', 'mass', 'mass_dilated'], 1.0, 1.0)
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

    Examples:
        A constant image has no edges; a vertical step has them only along the step:

        >>> import torch
        >>> step = torch.zeros(1, 3, 8, 8)
        >>> step[..., 4:] = 1.0
        >>> edges = edge_maps(step)
        >>> flat = edge_maps(torch.ones(1, 3, 8, 8))
        >>> edges.shape, float(flat.abs().max()), bool((edges[..., [0, 1, 6, 7]] == 0).all())
        (torch.Size([1, 8, 8]), 0.0, True)
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
