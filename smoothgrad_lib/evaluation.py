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

import torch
from torch.nn import functional as F


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Whether the map's maximum lies in the mask (Zhang et al., 2018, "Top-down neural attention by excitation backprop").

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
    """Relevance mass accuracy (Arras et al., 2022, "CLEVR-XAI", Information Fusion 81): the share of the positive relevance inside the mask.

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
    """Relevance rank accuracy (Arras et al., 2022): the share of the K = |mask| highest-ranked pixels that lie in the mask.

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
