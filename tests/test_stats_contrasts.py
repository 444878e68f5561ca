"""stats.contrast_family: a declared family of paired contrasts, each with its t-interval, p and Holm's p."""

import numpy as np
import pytest
import torch

from smoothgrad_lib.stats import Contrast, contrast_family, format_p, holm, paired_ci, paired_test


def test_each_contrast_is_paired_ci_and_paired_test_and_the_family_is_adjusted_by_holm():
    rng = np.random.default_rng(0)
    base = rng.normal(size=40)
    pairs = {
        ("mask AUC", "sg", "vanilla"): (base + 0.5 + rng.normal(scale=0.3, size=40), base),
        ("mask AUC", "sg", "blur"): (base + rng.normal(scale=0.3, size=40), base),
        ("sanity", "sg", "vanilla"): (torch.tensor(base[:12] - 0.4), torch.tensor(base[:12])),  # other n, tensors
    }
    family = contrast_family(pairs)
    assert list(family) == list(pairs)  # the declared order
    p = [paired_test(a, b) for a, b in pairs.values()]
    for (key, (a, b)), q in zip(pairs.items(), holm(p), strict=True):
        assert family[key] == Contrast(paired_ci(a, b), paired_test(a, b), float(q))
    assert family["sanity", "sg", "vanilla"].interval.n == 12
    assert [c.outcome() for c in family.values()] == [1, 0, -1]


def test_holm_makes_the_smallest_p_bonferroni_and_never_lowers_a_p_value():
    rng = np.random.default_rng(1)
    pairs = {k: (rng.normal(loc=0.3 * k, size=20), rng.normal(size=20)) for k in range(5)}
    family = contrast_family(pairs)
    smallest = min(family.values(), key=lambda c: c.p)
    assert smallest.adjusted == pytest.approx(min(1.0, 5 * smallest.p))
    assert all(c.adjusted >= c.p for c in family.values())


def test_outcome_needs_the_adjusted_p_below_alpha():
    interval = paired_ci([1.0, 1.2, 0.9], [0.0, 0.1, 0.0])
    assert Contrast(interval, 0.01, 0.04).outcome() == 1
    assert Contrast(interval, 0.01, 0.04).outcome(alpha=0.01) == 0
    assert Contrast(interval, 0.01, 0.06).outcome() == 0
    with pytest.raises(ValueError, match="alpha"):
        Contrast(interval, 0.01, 0.04).outcome(alpha=1.5)


def test_a_family_needs_a_contrast_and_paired_values():
    with pytest.raises(ValueError, match="at least one"):
        contrast_family({})
    with pytest.raises(ValueError, match="same"):
        contrast_family({"x": ([1.0, 2.0, 3.0], [1.0, 2.0])})


def test_format_p():
    assert [format_p(p) for p in (1.0, 0.58, 0.00036, 1e-4, 9.9e-5)] == ["1", "0.58", "0.00036", "0.0001", "<1e-4"]
