"""smoothgrad_lib.stats: bootstrap intervals, correlations, slopes."""

import pytest
import torch

from smoothgrad_lib.stats import loglog_slope


def test_loglog_slope_of_an_exact_power_law():
    slope, low, high = loglog_slope([1, 2, 4, 8], [3, 12, 48, 192])
    assert slope == pytest.approx(2.0) and low == pytest.approx(2.0) and high == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 3"):
        loglog_slope([1, 2], [1, 2])


def test_bootstrap_ci_and_pearson_and_spearman_brown(seeded):
    from smoothgrad_lib.stats import bootstrap_ci, paired_bootstrap_ci, pearson, spearman_brown

    values = torch.arange(100.0)
    mean, low, high = bootstrap_ci(values)
    assert mean == 49.5 and 43 < low < 49.5 < high < 56  # s.e. of the mean = 29 / 10
    diff, low, high = paired_bootstrap_ci(values + 1, values)
    assert diff == low == high == 1.0  # paired: the image-to-image spread cancels exactly
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(torch.tensor([1.0, float("nan")]))
    a = torch.randn(3, 50, generator=seeded())
    torch.testing.assert_close(pearson(a, 2 * a + 1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(pearson(a, -a), -torch.ones(3, dtype=torch.float64))
    assert spearman_brown(0.5, 2) == pytest.approx(2 / 3) and spearman_brown(0.5, 1) == 0.5
