"""Statistics of measured summaries: confidence intervals over images, paired tests, Holm's adjustment,
correlations, slopes.

Every comparison in the report is a mean over images; its uncertainty comes
from which images were drawn. ``mean_ci`` gives the mean with a Student-t
interval (or BCa bootstrap) as an ``Interval`` that prints its n and method;
``paired_ci`` does the same for the mean difference of two methods on the
same images, so that what varies from image to image cancels in the
difference. ``paired_test`` gives the paired t-test's p-value and ``holm``
adjusts a family of p-values for multiplicity. ``bootstrap_ci`` and
``paired_bootstrap_ci`` (percentile bootstrap) are kept for old callers: they
are too narrow for a few images. The bootstraps resample with a numpy ``generator`` (None:
``numpy.random.default_rng(0)``, so a call without one is reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from scipy import special
from scipy import stats as scipy_stats
from torch import nn


def bootstrap_ci(
    values: torch.Tensor | np.ndarray,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    generator: np.random.Generator | None = None,
) -> tuple[float, float, float]:
    """Mean of ``values`` (n,) over images, with a percentile-bootstrap confidence interval.

    Returns (mean, low, high): the mean, and the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles
    of the means of ``n_boot`` resamples of the n values with replacement, drawn by ``generator``
    (None: ``numpy.random.default_rng(0)``, so the same values give the same interval). NaN values are an error
    (drop or explain them first).

    The percentile interval is too narrow for few values: its coverage falls
    well below ``confidence`` at small n (the bootstrap distribution of the
    mean has the spread of the plug-in standard error ``sd * sqrt((n-1)/n)``
    and normal rather than Student-t tails). Use ``mean_ci`` (Student t by
    default), which also reports n and the method.

    Examples:
        Equal values leave nothing to resample; two values give resample means of 1, 1.5 or 2 only:

        >>> bootstrap_ci([0.5, 0.5, 0.5])
        (0.5, 0.5, 0.5)
        >>> bootstrap_ci([1.0, 2.0], confidence=0.5)
        (1.5, 1.5, 1.5)
    """
    data = _as_array(values)
    rng = np.random.default_rng(0) if generator is None else generator
    means = data[rng.integers(0, len(data), (n_boot, len(data)))].mean(1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(data.mean()), float(low), float(high)


def paired_bootstrap_ci(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    generator: np.random.Generator | None = None,
) -> tuple[float, float, float]:
    """Mean difference ``a - b`` over the same images (n,), with a paired percentile-bootstrap interval:
    ``bootstrap_ci(a - b, ...)``.

    Too narrow at small n, like ``bootstrap_ci``: use ``paired_ci``.

    Examples:
        >>> paired_bootstrap_ci([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
        (1.0, 1.0, 1.0)
    """
    first, second = _as_array(a), _as_array(b)
    if first.shape != second.shape:
        raise ValueError(f"paired values need the same images: shapes {first.shape} and {second.shape}.")
    return bootstrap_ci(first - second, n_boot=n_boot, confidence=confidence, generator=generator)


def _as_array(values: torch.Tensor | np.ndarray) -> np.ndarray:
    data = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    data = data.reshape(-1)
    if len(data) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(data)}.")
    if not np.isfinite(data).all():
        raise ValueError("values contain NaN or inf: drop or explain them before summarising.")
    return data


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between corresponding items of ``a`` and ``b`` (B, ...), over all their other axes: (B,).

    Examples:
        >>> a = torch.tensor([[1.0, 2.0, 4.0]])
        >>> round(pearson(a, 2 * a + 1).item(), 12), round(pearson(a, -a).item(), 12)
        (1.0, -1.0)
    """
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

    Examples:
        Two halves that correlate 0.5 make a whole of reliability ``2 * 0.5 / 1.5``:

        >>> round(spearman_brown(0.5, 2), 6)
        0.666667
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

    It assumes that the noise adds independently to fixed maps. Maps made with
    ``|.|``, a channel maximum or clipping break that: the noise of a signed
    map then takes the magnitude map's spatial envelope, and the result is
    near 1 even where the mean gradient is exactly 0 (``tests/test_stats_nulls.py``).
    Correlate signed maps (``montecarlo.signed_split_half``) instead.

    Examples:
        >>> round(disattenuated_correlation(0.45, 0.9, 0.9), 12)    # 0.45 / 0.9
        0.5
    """
    return r_ab / (reliability_a * reliability_b) ** 0.5


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of corresponding items of ``a`` and ``b`` (B, ...), over all their other axes: (B,).

    Examples:
        >>> cosine(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [-3.0, -3.0]])).tolist()
        [0.0, -1.0]
    """
    return nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def relative_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||b - a|| / ||a||`` per item of a batch (B, ...), in float64: (B,).

    Examples:
        >>> relative_change(torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 5.0]])).tolist()   # ||(0, 1)|| / ||(3, 4)||
        [0.2]
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    x, y = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    return (y - x).norm(dim=1) / x.norm(dim=1)


def loglog_slope(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Least-squares slope of log y against log x, with a two-sided confidence interval (Student t, len(x) - 2 d.o.f.).

    The interval assumes independent points scattered around a straight line;
    it is too narrow when the points share data or the curve bends.

    Examples:
        Points on y = x^2 lie on a line of slope 2 with no scatter:

        >>> [round(value, 6) for value in loglog_slope([1, 2, 4, 8], [1, 4, 16, 64])]
        [2.0, 2.0, 2.0]
    """
    if len(x) < 3:
        raise ValueError(f"a slope with a confidence interval needs at least 3 points, got {len(x)}.")
    fit = scipy_stats.linregress(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(x) - 2) * fit.stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


IntervalMethod = Literal["t", "bca", "percentile"]
INTERVAL_METHODS: tuple[IntervalMethod, ...] = ("t", "bca", "percentile")


class Interval(NamedTuple):
    """A mean (or mean difference) over n values with its confidence interval.

    Prints as ``0.052 [0.006, 0.100] (n = 500, t)``: the three numbers share
    the decimals that give the largest of them three significant digits.

    Attributes:
        estimate: the mean.
        low, high: the interval's bounds.
        n: how many values (images) the mean is over.
        method: how the interval was made (``"t"``, ``"bca"`` or ``"percentile"``).

    Examples:
        >>> print(Interval(0.052, 0.006, 0.1, 500, "t"))
        0.052 [0.006, 0.100] (n = 500, t)
    """

    estimate: float
    low: float
    high: float
    n: int
    method: str

    def __str__(self) -> str:
        decimals = significant_decimals((self.estimate, self.low, self.high))
        estimate, low, high = (f"{value:.{decimals}f}" for value in (self.estimate, self.low, self.high))
        return f"{estimate} [{low}, {high}] (n = {self.n}, {self.method})"


def significant_decimals(values: Sequence[float], digits: int = 3) -> int:
    """Decimals that give the largest finite ``|value|`` ``digits`` significant digits (at least 0).

    Examples:
        >>> significant_decimals([0.052, 0.1]), significant_decimals([123.4]), significant_decimals([0.09996])
        (3, 0, 3)
    """
    largest = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    if largest == 0:
        return digits - 1
    # round first so that 0.09996 counts as 0.100 (3 digits at 3 decimals), not 0.0999(6)
    exponent = math.floor(math.log10(float(f"{largest:.{digits - 1}e}")))
    return max(digits - 1 - exponent, 0)


def mean_ci(
    values: torch.Tensor | np.ndarray | Sequence[float],
    level: float = 0.95,
    method: IntervalMethod = "t",
    *,
    n_boot: int = 9999,
    generator: np.random.Generator | None = None,
) -> Interval:
    """Mean of ``values`` (n,) over images with a two-sided confidence interval at ``level``: an ``Interval``.

    Methods:

    * ``"t"`` (default): ``mean +- t_{n-1} * sd / sqrt(n)``, exact for normal
      values at every n, and the best of the three for a mean in the tests'
      simulations, skewed values included.
    * ``"bca"``: bias-corrected and accelerated bootstrap (Efron 1987;
      ``scipy.stats.bootstrap(method="BCa")`` with ``n_boot`` resamples drawn
      by ``generator``, None: ``numpy.random.default_rng(0)``). Corrects the percentile interval for skewness, but keeps
      its narrowness at small n.
    * ``"percentile"``: the plain percentile bootstrap (as ``bootstrap_ci``), for comparison only.

    Values that are all equal give the zero-width interval ``[mean, mean]``.
    NaN values are an error (drop or explain them first).

    Examples:
        Values 1, 2, 3: mean 2, sd 1, and ``t_{2, 0.975} = 4.3027``, so the half-width is ``4.3027 / sqrt(3)``:

        >>> interval = mean_ci([1.0, 2.0, 3.0])
        >>> round(interval.low, 4), round(interval.high, 4), interval.n
        (-0.4841, 4.4841, 3)
    """
    if method not in INTERVAL_METHODS:
        raise ValueError(f"method must be one of {INTERVAL_METHODS}, got {method!r}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    data = _as_array(values)
    n, mean = len(data), float(data.mean())
    if n < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {n}.")
    if np.all(data == data[0]):
        return Interval(mean, mean, mean, n, method)
    if method == "t":
        half = float(special.stdtrit(n - 1, 0.5 + level / 2)) * float(data.std(ddof=1)) / math.sqrt(n)  # t quantile
        return Interval(mean, mean - half, mean + half, n, method)
    result = scipy_stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=level,
        n_resamples=n_boot,
        method="BCa" if method == "bca" else "percentile",
        rng=np.random.default_rng(0) if generator is None else generator,
    )
    return Interval(mean, float(result.confidence_interval.low), float(result.confidence_interval.high), n, method)


def paired_ci(
    a: torch.Tensor | np.ndarray | Sequence[float],
    b: torch.Tensor | np.ndarray | Sequence[float],
    level: float = 0.95,
    method: IntervalMethod = "t",
    *,
    n_boot: int = 9999,
    generator: np.random.Generator | None = None,
) -> Interval:
    """Mean paired difference ``a - b`` over the same images (n,), with ``mean_ci``'s interval of the differences.

    Pairing removes what varies from image to image: two methods whose
    separate intervals overlap can still differ clearly on every image.

    Examples:
        Differences 1, 2, 3 give ``mean_ci([1, 2, 3])``:

        >>> paired_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == mean_ci([1.0, 2.0, 3.0])
        True
    """
    return mean_ci(_paired_differences(a, b), level, method, n_boot=n_boot, generator=generator)


def paired_test(
    a: torch.Tensor | np.ndarray | Sequence[float], b: torch.Tensor | np.ndarray | Sequence[float]
) -> float | np.ndarray:
    """Two-sided p-value of the paired t-test of mean(a - b) = 0 (``scipy.stats.ttest_rel``) over the last axis.

    ``a`` and ``b`` (..., n) hold the same images in the same order; a float
    for (n,) inputs, an array (...) for more axes (many tests at once, for
    ``holm``). The p-value matches ``paired_ci(a, b)``: it is below
    ``1 - level`` exactly when the t-interval excludes 0. Differences that are
    all zero give 1; all equal and non-zero, 0.

    Examples:
        Differences 1, 2, 3 give t = 2 / (1 / sqrt(3)) with 2 degrees of freedom, whose two-sided p-value is
        ``1 - t / sqrt(2 + t^2) = 1 - sqrt(6 / 7)``:

        >>> import math
        >>> round(paired_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]), 6), round(1 - math.sqrt(6 / 7), 6)
        (0.07418, 0.07418)
        >>> paired_test([1.0, 2.0], [1.0, 2.0]), paired_test([2.0, 3.0], [1.0, 2.0])   # no difference; always 1
        (1.0, 0.0)
    """
    first, second = (
        x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float) for x in (a, b)
    )
    if first.shape != second.shape or first.ndim == 0 or first.shape[-1] < 2:
        raise ValueError(f"paired values need the same shape (..., n >= 2): got {first.shape} and {second.shape}.")
    diff = first - second
    if not np.isfinite(diff).all():
        raise ValueError("values contain NaN or inf: drop or explain them before testing.")
    n = diff.shape[-1]
    constant = np.all(diff == diff[..., :1], axis=-1)
    spread = np.where(constant, 1.0, diff.std(axis=-1, ddof=1))
    t = diff.mean(axis=-1) / (spread / math.sqrt(n))  # ttest_rel's statistic, without its warning on constant rows
    p = np.where(constant, np.where(diff[..., 0] == 0, 1.0, 0.0), 2 * special.stdtr(n - 1, -np.abs(t)))
    return float(p) if p.ndim == 0 else p


def holm(p_values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of a family of tests, over the last axis (Holm 1979).

    With the k p-values sorted, ``p_(1) <= ... <= p_(k)``, the adjusted values
    are ``max_{j <= i} min(1, (k - j + 1) p_(j))``, returned in the input's
    order. Rejecting every hypothesis whose adjusted p-value is below alpha
    keeps the family-wise error rate (the chance of any false rejection) at
    most alpha whatever the dependence between the tests. The smallest
    p-value gets Bonferroni's ``k p``; the adjusted values are never below the
    raw ones and keep their order. Several families at once: (..., k).

    Examples:
        Sorted, 0.01, 0.03, 0.04 become 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04):

        >>> holm([0.01, 0.04, 0.03]).round(6).tolist()
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError(f"need a family of at least one p-value, got shape {p.shape}.")
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("p-values must lie in [0, 1] (no NaN).")
    k = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * np.arange(k, 0, -1)
    ranked = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    adjusted = np.empty_like(ranked)
    np.put_along_axis(adjusted, order, ranked, axis=-1)
    return adjusted


def _paired_differences(a: torch.Tensor | np.ndarray | Sequence[float], b: torch.Tensor | np.ndarray | Sequence[float]):
    first, second = _as_array(a), _as_array(b)
    if first.shape != second.shape:
        raise ValueError(f"paired values need the same images: shapes {first.shape} and {second.shape}.")
    return first - second


def paired_summary(
    a: torch.Tensor | np.ndarray | Sequence[float], b: torch.Tensor | np.ndarray | Sequence[float]
) -> str:
    """``paired_ci(a, b)`` as text, signed and at the precision of the two means (3 significant digits of the
    larger): ``+0.005 [-0.000, +0.011] (n = 100, t)``.

    Examples:
        >>> paired_summary([1.0, 2.0, 3.5], [0.5, 1.5, 2.5])  # means 2.17 and 1.50: two decimals
        '+0.67 [-0.05, +1.38] (n = 3, t)'
    """
    difference = paired_ci(a, b)
    places = significant_decimals((float(np.mean(_as_array(a))), float(np.mean(_as_array(b)))))
    low, high = difference.low, difference.high
    return f"{difference.estimate:+.{places}f} [{low:+.{places}f}, {high:+.{places}f}] (n = {difference.n}, t)"


def brief(interval: Interval) -> str:
    """An interval as ``estimate [low, high]``, without its ``(n = ..., method)``: for a table that states n once.

    Examples:
        >>> brief(mean_ci([1.0, 2.0, 3.0]))
        '2.00 [-0.48, 4.48]'
    """
    return str(interval).split(" (")[0]


class Contrast(NamedTuple):
    """One contrast of a declared family (``contrast_family``).

    Attributes:
        interval: the mean paired difference ``a - b`` with its Student-t interval (``paired_ci``).
        p: the paired t-test's two-sided p-value (``paired_test``), unadjusted.
        adjusted: Holm's adjusted p-value over the whole family (``holm``).
    """

    interval: Interval
    p: float
    adjusted: float

    def outcome(self, alpha: float = 0.05) -> int:
        """+1 if the adjusted p-value is below ``alpha`` and the difference positive, -1 if negative, else 0.

        Examples:
            >>> interval = mean_ci([1.0, 2.0, 3.0])                  # a positive mean difference
            >>> Contrast(interval, p=0.01, adjusted=0.03).outcome(), Contrast(interval, p=0.01, adjusted=0.2).outcome()
            (1, 0)
        """
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}.")
        if self.adjusted >= alpha:
            return 0
        return (self.interval.estimate > 0) - (self.interval.estimate < 0)


def contrast_family(
    pairs: Mapping[
        Hashable, tuple[torch.Tensor | np.ndarray | Sequence[float], torch.Tensor | np.ndarray | Sequence[float]]
    ],
    level: float = 0.95,
) -> dict[Hashable, Contrast]:
    """A family of primary contrasts, declared in advance: each one's paired t-interval and p, adjusted by Holm.

    For every ``key: (a, b)`` of ``pairs``, ``a`` and ``b`` (n,) are the scores of two maps on the same images
    (or seeds), oriented by the caller so that a positive ``a - b`` means "better". Each contrast gets
    ``paired_ci(a, b, level)`` (Student t), the p-value of ``paired_test(a, b)`` (which is below ``1 - level``
    exactly when that interval excludes 0) and Holm's adjusted p-value over all of ``pairs`` (``holm``), so that
    rejecting where ``adjusted < alpha`` keeps the family-wise error rate at most ``alpha``. The contrasts may
    be over different numbers of images.

    Args:
        pairs: contrast key (anything hashable, e.g. ``(test, map, reference)``) -> ``(a, b)``.
        level: the confidence level of the unadjusted intervals.

    Returns:
        key -> ``Contrast(interval, p, adjusted)``, in the order of ``pairs``.

    Examples:
        >>> a, b = [0.9, 0.8, 0.7, 0.9], [0.5, 0.6, 0.4, 0.5]
        >>> family = contrast_family({"test 1": (a, b), "test 2": (b, b)})
        >>> print(family["test 1"].interval)
        0.325 [0.173, 0.477] (n = 4, t)
        >>> [round(c.adjusted, 4) for c in family.values()], [c.outcome() for c in family.values()]
        ([0.0131, 1.0], [1, 0])
    """
    if not pairs:
        raise ValueError("a family needs at least one contrast.")
    intervals = {key: paired_ci(a, b, level) for key, (a, b) in pairs.items()}
    p_values = {key: float(paired_test(a, b)) for key, (a, b) in pairs.items()}
    adjusted = holm(list(p_values.values()))
    return {key: Contrast(intervals[key], p_values[key], float(q)) for key, q in zip(pairs, adjusted, strict=True)}


def format_p(p: float) -> str:
    """A p-value as the report prints it: two significant digits, and ``<1e-4`` below 1e-4.

    Examples:
        >>> format_p(0.01234), format_p(1.0), format_p(3e-7)
        ('0.012', '1', '<1e-4')
    """
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"
