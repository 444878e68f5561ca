"""From an attribution (B, C, H, W) to a displayable saliency map (B, H, W) in [0, 1].

Two steps, as in the SmoothGrad paper and PAIR's ``saliency`` library:

1. reduce ``|attr|`` over the C colour channels of the image (``max`` by
   default: ``max over c in {1..C}``, the channels, not the K classes);
2. normalise each map to [0, 1].
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

Reduction = Literal["max", "sum", "mean", "l2"]
Normalization = Literal["minmax", "percentile"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
NORMALIZATIONS: tuple[str | None, ...] = (*get_args(Normalization), None)


def saliency_map(
    attr: torch.Tensor,
    *,
    reduce: Reduction = "max",
    normalize: Normalization | None = "minmax",
    percentile: float = 99.0,
) -> torch.Tensor:
    """Channel-reduce and normalise an attribution.

    Args:
        attr: attribution, (B, C, H, W) or (C, H, W).
        reduce: how ``|attr|`` is combined over channels: ``"max"``
            (``max_c |a_c|``), ``"sum"`` (``sum_c |a_c|``), ``"mean"``, or
            ``"l2"`` (``sqrt(sum_c a_c^2)``).
        normalize: ``"minmax"`` maps each image's ``[min, max]`` to [0, 1];
            ``"percentile"`` maps ``[min, p]`` to [0, 1] and clips above, with
            ``p`` the ``percentile``-th percentile of the map (PAIR's
            ``VisualizeImageGrayscale``); None returns the reduced map as is.
        percentile: the clipping percentile for ``"percentile"``, in (0, 100].

    Returns:
        (B, H, W), or (H, W) for a (C, H, W) input. A constant map normalises
        to zeros, never NaN.

    Examples:
        Two channels (3, -4) and (0, 2) at two pixels: ``max_c |a_c|`` is (4, 2), the L2 norm (5, 2), and
        min-max scaling sends the smaller pixel to 0 and the larger to 1:

        >>> import torch
        >>> attr = torch.tensor([[[[3.0, 0.0]], [[-4.0, 2.0]]]])  # (B, C, H, W) = (1, 2, 1, 2)
        >>> saliency_map(attr, normalize=None).tolist(), saliency_map(attr, reduce="l2", normalize=None).tolist()
        ([[[4.0, 2.0]]], [[[5.0, 2.0]]])
        >>> saliency_map(attr).tolist()
        [[[1.0, 0.0]]]
    """
    if not isinstance(attr, torch.Tensor) or not attr.is_floating_point():
        raise TypeError("attr must be a floating-point torch.Tensor of shape (B, C, H, W) or (C, H, W).")
    if attr.ndim not in (3, 4):
        raise ValueError(f"attr must have shape (B, C, H, W) or (C, H, W), got {tuple(attr.shape)}.")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}.")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}.")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}.")
    single = attr.ndim == 3
    batch = attr.detach().unsqueeze(0) if single else attr.detach()

    magnitude = batch.abs()
    if reduce == "max":
        reduced = magnitude.amax(1)
    elif reduce == "sum":
        reduced = magnitude.sum(1)
    elif reduce == "mean":
        reduced = magnitude.mean(1)
    else:
        reduced = batch.square().sum(1).sqrt()

    if normalize is not None:
        flat = reduced.flatten(1)
        low = flat.amin(1)
        if normalize == "minmax":
            high = flat.amax(1)
        else:
            high = torch.quantile(flat.float(), percentile / 100, dim=1).to(flat.dtype)
        low, span = low.reshape(-1, 1, 1), (high - low).reshape(-1, 1, 1)
        scaled = (reduced - low) / span.clamp_min(torch.finfo(span.dtype).tiny)
        reduced = torch.where(span > 0, scaled.clamp(0, 1), 0.0)
    return reduced[0] if single else reduced
