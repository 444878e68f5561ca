"""stats: confidence intervals of a mean over images, checked by their coverage on nulls where the mean is known.

Each coverage test draws many small samples with a known mean from a seeded
generator, builds the interval on each, and counts how often it holds the
true mean. With R replications the Monte-Carlo standard error of a coverage
near 0.95 is sqrt(0.95 * 0.05 / R), 0.0049 at R = 2000, so [0.93, 0.97] is
a band of about four standard errors each side: it passes for an exact
interval and fails for the percentile bootstrap at n <= 12.
"""

import numpy as np
import pytest
import torch
from numpy.random import default_rng as rng
from scipy import stats as scipy_stats

from smoothgrad_lib.stats import (
    INTERVAL_METHODS,
    Interval,
    bootstrap_ci,
    mean_ci,
    paired_bootstrap_ci,
    paired_ci,
    paired_test,
)

REPLICATIONS = 2000


def coverage(samples: np.ndarray, truth: float, method: str, **kwargs) -> float:
    """Share of the rows of ``samples`` (R, n) whose ``mean_ci`` holds ``truth``; bootstrap seeds 0..R-1."""
    hits = [
        (ci.low <= truth <= ci.high)
        for ci in (mean_ci(row, method=method, generator=rng(k), **kwargs) for k, row in enumerate(samples))
    ]
    return float(np.mean(hits))


@pytest.mark.parametrize("n", [4, 5, 12, 30])
def test_t_interval_covers_a_normal_mean_at_its_level(n):
    samples = np.random.default_rng(100 + n).normal(0.3, 2.0, size=(REPLICATIONS, n))
    assert 0.93 <= coverage(samples, 0.3, "t") <= 0.97
    # a 90% interval covers 90%: the level is honoured, not just the default
    assert 0.875 <= coverage(samples, 0.3, "t", level=0.9) <= 0.925


@pytest.mark.parametrize("n", [4, 5])
def test_the_old_percentile_bootstrap_undercovers_at_small_n(n):
    """Why ``bootstrap_ci`` is replaced: at n = 4 and 5 its nominal 95% interval covers about 0.8 of the time."""
    samples = np.random.default_rng(200 + n).normal(0.0, 1.0, size=(REPLICATIONS, n))
    old = np.mean(
        [
            low <= 0 <= high
            for _, low, high in (bootstrap_ci(row, n_boot=999, generator=rng(k)) for k, row in enumerate(samples))
        ]
    )
    assert old < 0.90  # more than 10 Monte-Carlo standard errors below 0.95
    assert coverage(samples, 0.0, "t") > old + 0.08  # the t-interval on the same samples


def test_bca_beats_the_percentile_bootstrap_on_skewed_data_and_t_beats_both():
    """Exponential values (skewed), n = 12: BCa covers more often than the percentile interval, and the t-interval
    more often than either, which is why ``mean_ci`` defaults to ``"t"``."""
    samples = np.random.default_rng(312).exponential(1.0, size=(REPLICATIONS, 12))
    bca = np.array(
        [
            (ci.low <= 1 <= ci.high)
            for ci in (mean_ci(r, method="bca", n_boot=999, generator=rng(k)) for k, r in enumerate(samples))
        ]
    )
    old = np.array(
        [
            low <= 1 <= high
            for _, low, high in (bootstrap_ci(r, n_boot=999, generator=rng(k)) for k, r in enumerate(samples))
        ]
    )
    t = np.array([(ci.low <= 1 <= ci.high) for ci in map(mean_ci, samples)])
    # paired over the same samples: the difference is measured from the replications where the two disagree
    only_bca, only_old = int((bca & ~old).sum()), int((old & ~bca).sum())
    assert only_bca - only_old > 2.5 * np.sqrt(only_bca + only_old)
    assert t.mean() > bca.mean() > old.mean()
    assert bca.mean() < 0.93  # BCa still undercovers a skewed mean at n = 12: it is no fix for few images


def test_mean_ci_t_is_the_textbook_interval():
    values = np.array([0.1, 0.4, 0.35, 0.8, 0.2])
    ci = mean_ci(values)
    half = scipy_stats.t.ppf(0.975, 4) * values.std(ddof=1) / np.sqrt(5)
    assert ci == pytest.approx(Interval(values.mean(), values.mean() - half, values.mean() + half, 5, "t"))
    assert isinstance(ci.n, int) and ci.method == "t"
    estimate, low, high, n, method = mean_ci(torch.tensor(values))  # tensors too; unpacks like a tuple
    assert (estimate, n) == pytest.approx((values.mean(), 5))


@pytest.mark.parametrize("method", INTERVAL_METHODS)
def test_mean_ci_methods_bracket_the_mean_and_are_seeded(method):
    values = np.random.default_rng(1).exponential(size=40)
    ci = mean_ci(values, method=method, n_boot=999, generator=rng(3))
    assert ci.low < ci.estimate < ci.high and ci.estimate == pytest.approx(values.mean())
    assert ci.n == 40 and ci.method == method
    assert mean_ci(values, method=method, n_boot=999, generator=rng(3)) == ci
    # No generator: numpy's default_rng(0), the same draws every call.
    assert mean_ci(values, method=method, n_boot=999) == mean_ci(values, method=method, n_boot=999, generator=rng(0))


def test_the_percentile_bootstraps_draw_from_the_generator_given():
    values = np.random.default_rng(2).exponential(size=12)
    assert bootstrap_ci(values) == bootstrap_ci(values, generator=rng(0)) != bootstrap_ci(values, generator=rng(1))
    shared = rng(5)  # a generator goes on drawing: a second call gets new resamples
    assert bootstrap_ci(values, generator=shared) != bootstrap_ci(values, generator=shared)
    assert paired_bootstrap_ci(values, values / 2, generator=rng(4)) == bootstrap_ci(values / 2, generator=rng(4))


def test_constant_values_give_a_zero_width_interval_and_bad_input_is_refused():
    for method in INTERVAL_METHODS:
        assert mean_ci([2.0, 2.0, 2.0], method=method) == (2.0, 2.0, 2.0, 3, method)
    with pytest.raises(ValueError, match="method"):
        mean_ci([1.0, 2.0], method="normal")
    with pytest.raises(ValueError, match="level"):
        mean_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([1.0])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="same images"):
        paired_ci([1.0, 2.0], [1.0, 2.0, 3.0])


def test_interval_prints_three_significant_digits_with_n_and_method():
    assert str(Interval(0.0521, 0.00612, 0.1003, 500, "t")) == "0.052 [0.006, 0.100] (n = 500, t)"
    assert str(Interval(-0.015, -0.0163, -0.0061, 200, "bca")) == "-0.0150 [-0.0163, -0.0061] (n = 200, bca)"
    assert str(Interval(12.34, 10.1, 14.6, 4, "t")) == "12.3 [10.1, 14.6] (n = 4, t)"
    assert str(Interval(0.09996, 0.05, 0.0999, 12, "t")) == "0.100 [0.050, 0.100] (n = 12, t)"
    assert str(Interval(1234.5, 1000.0, 1500.0, 3, "t")) == "1234 [1000, 1500] (n = 3, t)"


def test_paired_ci_cancels_what_varies_between_images():
    """Two methods whose separate intervals overlap widely, but one is higher on every image by about 0.05."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0, 1, 500)
    a, b = base + 0.05 + rng.normal(0, 0.01, 500), base
    separate = mean_ci(a), mean_ci(b)
    assert separate[0].low < separate[1].high  # the unpaired intervals overlap
    paired = paired_ci(a, b)
    assert paired == pytest.approx(mean_ci(a - b)) and 0.048 < paired.low < paired.high < 0.052
    assert paired_ci(torch.tensor(a), torch.tensor(b), method="bca", n_boot=999).low > 0.04
    # the old paired percentile interval gives the same mean
    assert paired_bootstrap_ci(a, b)[0] == pytest.approx(paired.estimate)


def test_paired_test_is_ttest_rel_and_agrees_with_the_t_interval():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8)) + 0.4
    p = paired_test(a, b)
    assert p.shape == (50,)
    np.testing.assert_allclose(p, scipy_stats.ttest_rel(a, b, axis=-1).pvalue, rtol=1e-10)
    for row_a, row_b, p_row in zip(a, b, p, strict=True):
        ci = paired_ci(row_a, row_b)
        assert (p_row < 0.05) == (not ci.low <= 0 <= ci.high)
        assert paired_test(row_a, row_b) == pytest.approx(p_row)
    assert isinstance(paired_test(a[0], b[0]), float)
    assert paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0  # no difference at all
    assert paired_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0]) == 0.0  # the same non-zero difference on every image
    with pytest.raises(ValueError, match="same shape"):
        paired_test([1.0, 2.0], [1.0, 2.0, 3.0])


def test_an_interval_needs_two_values():
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        mean_ci([0.5])
