"""Statistics of measured summaries: bootstrap confidence intervals over images, correlations, slopes.

Every comparison in the report is a mean over images; its uncertainty comes
from which images were drawn. The percentile bootstrap resamples the images
with replacement; the *paired* version resamples image indices once for both
methods, so that what varies from image to image cancels in the difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats as scipy_stats
from torch import nn


def bootstrap_ci(
    values: torch.Tensor | np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` (n,) over images, with a percentile-bootstrap confidence interval.

    Returns (mean, low, high). NaN values are an error (drop or explain them first).
    """
    data = _as_array(values)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), (n_boot, len(data)))].mean(1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(data.mean()), float(low), float(high)


def paired_bootstrap_ci(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean difference ``a - b`` over the same images (n,), with a paired percentile-bootstrap interval."""
    first, second = _as_array(a), _as_array(b)
    if first.shape != second.shape:
        raise ValueError(f"paired values need the same images: shapes {first.shape} and {second.shape}.")
    return bootstrap_ci(first - second, n_boot=n_boot, confidence=confidence, seed=seed)


def _as_array(values: torch.Tensor | np.ndarray) -> np.ndarray:
    data = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    data = data.reshape(-1)
    if len(data) < 2:
        raise ValueError(f"a bootstrap needs at least 2 values, got {len(data)}.")
    if not np.isfinite(data).all():
        raise ValueError("values contain NaN or inf: drop or explain them before summarising.")
    return data


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between corresponding items of ``a`` and ``b`` (B, ...), over all their other axes: (B,)."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    x, y = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))


def spearman_brown(reliability: torch.Tensor | float, factor: float) -> torch.Tensor | float:
    """Reliability of an average over ``factor`` times as many samples, from a split-half correlation r.

    ``factor * r / (1 + (factor - 1) * r)``: the correlation expected between
    two independent estimates made from ``factor`` times as many samples as
    the two halves that gave ``r`` (Spearman 1910, Brown 1910). With
    ``factor=2`` it turns the correlation of two N-sample maps into the
    reliability of one 2N-sample map.
    """
    return factor * reliability / (1 + (factor - 1) * reliability)


def disattenuated_correlation(
    r_ab: torch.Tensor | float, reliability_a: torch.Tensor | float, reliability_b: torch.Tensor | float
) -> torch.Tensor | float:
    """The correlation of a and b corrected for measurement noise: ``r_ab / sqrt(rel_a rel_b)`` (Spearman 1904).

    ``r_ab`` correlates noisy measurements of a and b (e.g. two independent
    Monte-Carlo maps), ``rel_a`` and ``rel_b`` are their reliabilities (e.g.
    split-half correlations): the result estimates the correlation of the
    noise-free quantities. It can exceed 1 when the reliabilities are themselves noisy.
    """
    return r_ab / (reliability_a * reliability_b) ** 0.5


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of corresponding items of ``a`` and ``b`` (B, ...), over all their other axes: (B,)."""
    return nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def relative_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||b - a|| / ||a||`` per item of a batch (B, ...), in float64: (B,)."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    x, y = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    return (y - x).norm(dim=1) / x.norm(dim=1)


def loglog_slope(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Least-squares slope of log y against log x, with a two-sided confidence interval (Student t, len(x) - 2 d.o.f.).

    The interval assumes independent points scattered around a straight line;
    it is too narrow when the points share data or the curve bends.
    """
    if len(x) < 3:
        raise ValueError(f"a slope with a confidence interval needs at least 3 points, got {len(x)}.")
    fit = scipy_stats.linregress(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(x) - 2) * fit.stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


def ratio_stderr(ratio: float, a: float, a_se: float, b: float, b_se: float) -> float:
    """Standard error of ``ratio = a / b`` from independent estimates a and b, by the delta method.

    Relative errors of independent estimates add in quadrature:
    ``se(a/b) / (a/b) = sqrt((se_a / a)^2 + (se_b / b)^2)``.
    """
    return abs(ratio) * ((a_se / a) ** 2 + (b_se / b) ** 2) ** 0.5
