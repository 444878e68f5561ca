"""smoothgrad_estimate: standard errors, antithetic pairs, adaptive N, and the TF32 scope of every call."""

import functools
import math

import pytest
import torch
from torch import nn

from smoothgrad_lib import noisy_gradients, smoothgrad, smoothgrad_estimate, vanilla_gradient
from smoothgrad_lib.aggregates import AGGREGATES
from smoothgrad_lib.precision import current_settings, float32_precision

SHAPE = (3, 6, 5)  # conftest's default image shape


@pytest.fixture
def small_cnn(small_cnn):
    """conftest's ``small_cnn`` with Softplus after the first convolution and ReLU after the second."""
    return functools.partial(small_cnn, activation=nn.Softplus, second_activation=nn.ReLU)


@pytest.mark.parametrize("sampling", ["iid", "antithetic"])
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_mean_is_bitwise_smoothgrad(aggregate, sampling, small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(2)
    kwargs = dict(n_samples=8, aggregate=aggregate, sampling=sampling, noise_level=0.2)
    estimate = smoothgrad_estimate(model, x, **kwargs, generator=seeded(3))
    assert torch.equal(estimate.mean, smoothgrad(model, x, **kwargs, generator=seeded(3)))
    assert estimate.stderr.shape == x.shape and estimate.n_samples.tolist() == [8, 8]


def test_stderr_of_the_quadratic_is_the_closed_form(quadratic_model, random_images, seeded):
    """raw: G_i = 2a(x + eps_i), so the standard error of the mean is 2|a| sigma / sqrt(N)."""
    model, x = quadratic_model(), random_images(1, seed=3)
    n, sigma = 400, 0.1
    estimate = smoothgrad_estimate(model, x, 1, n_samples=n, sigma=sigma, aggregate="raw", generator=seeded())
    expected = 2 * model.a[1].detach().abs() * sigma / math.sqrt(n)
    ratio = (estimate.stderr[0] / expected).flatten()
    assert 0.85 < float(ratio.median()) < 1.15 and float(ratio.min()) > 0.75 and float(ratio.max()) < 1.3


def test_antithetic_pairs_cancel_the_linear_term_of_a_quadratic(quadratic_model, random_images, seeded):
    """For a quadratic g the noisy gradient is linear in eps: each pair's mean is exactly 2 a x, the error is 0."""
    model, x = quadratic_model(), random_images(1, seed=3)
    estimate = smoothgrad_estimate(
        model, x, 0, n_samples=6, sigma=0.3, aggregate="raw", sampling="antithetic", generator=seeded()
    )
    torch.testing.assert_close(estimate.mean[0], 2 * model.a[0].detach() * x[0], rtol=1e-5, atol=1e-6)
    assert float(estimate.stderr.max()) < 1e-5
    iid = smoothgrad_estimate(model, x, 0, n_samples=6, sigma=0.3, aggregate="raw", generator=seeded())
    assert float(iid.stderr.min()) > 1e-3


def test_noisy_gradients_come_in_antithetic_pairs(quadratic_model, random_images, seeded):
    model, x = quadratic_model(), random_images(1, seed=3)
    grads = noisy_gradients(model, x[0], 0, n_samples=4, sigma=0.3, sampling="antithetic", generator=seeded())
    centre = 2 * model.a[0].detach() * x[0]
    torch.testing.assert_close(grads[0] - centre, centre - grads[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[2] - centre, centre - grads[3], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(grads[0], grads[2])


@pytest.mark.parametrize(("sampling", "n_samples"), [("iid", 7), ("antithetic", 8)])
def test_vargrad_stderr_is_the_leave_one_unit_out_jackknife(sampling, n_samples, small_cnn, random_images, seeded):
    """The closed form from power sums equals the jackknife computed by dropping each unit in turn."""
    model, x = small_cnn(), random_images(1, seed=5)
    kwargs = dict(n_samples=n_samples, noise_level=0.3, sampling=sampling)
    estimate = smoothgrad_estimate(model, x, 0, aggregate="vargrad", **kwargs, generator=seeded(2))
    grads = noisy_gradients(model, x, 0, **kwargs, generator=seeded(2))[0].double()
    units = grads.unflatten(0, (-1, 2)) if sampling == "antithetic" else grads[:, None]
    k = len(units)
    left_out = []
    for drop in range(k):
        kept = torch.cat([units[:drop], units[drop + 1 :]]).flatten(0, 1)
        left_out.append(kept.square().mean(0) - kept.mean(0).square())
    left_out = torch.stack(left_out)
    jackknife = ((k - 1) / k * (left_out - left_out.mean(0)).square().sum(0)).sqrt()
    torch.testing.assert_close(estimate.stderr[0].double(), jackknife, rtol=1e-4, atol=1e-9)


def test_vargrad_stderr_needs_three_units(small_cnn, random_images, seeded):
    """Two iid gradients leave one gradient out: each left-out variance is 0, so the jackknife would say 0."""
    model, x = small_cnn(), random_images(1)
    two = smoothgrad_estimate(model, x, 0, n_samples=2, aggregate="vargrad", generator=seeded())
    three = smoothgrad_estimate(model, x, 0, n_samples=3, aggregate="vargrad", generator=seeded())
    assert bool(two.stderr.isnan().all()) and bool((three.stderr > 0).any())
    with pytest.raises(ValueError, match="at least 3 independent units"):
        smoothgrad_estimate(model, x, 0, n_samples=4, aggregate="vargrad", sampling="antithetic", tolerance=0.1)


@pytest.mark.parametrize("sampling", ["iid", "antithetic"])
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_reported_stderr_matches_the_spread_over_seeds(aggregate, sampling, small_cnn, random_images, seeded):
    """Calibration: the mean reported stderr^2 equals the variance of the mean over 60 independent seeds (x/÷1.25)."""
    model, x = small_cnn(), random_images(1, seed=4)
    runs = [
        smoothgrad_estimate(
            model, x, 0, n_samples=16, noise_level=0.3, aggregate=aggregate, sampling=sampling, generator=seeded(s)
        )
        for s in range(60)
    ]
    means = torch.stack([r.mean for r in runs]).double()
    reported = torch.stack([r.stderr for r in runs]).double().square().mean(0).sum()
    empirical = means.var(0).sum()
    assert 0.8 < float(reported / empirical) < 1.25


@pytest.mark.parametrize("sampling", ["iid", "antithetic"])
def test_batch_size_does_not_change_estimate(sampling, small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(3)
    reference = smoothgrad_estimate(
        model, x, n_samples=10, aggregate="vargrad", sampling=sampling, batch_size=30, generator=seeded()
    )
    for batch_size in (1, 3, 4, None):
        result = smoothgrad_estimate(
            model, x, n_samples=10, aggregate="vargrad", sampling=sampling, batch_size=batch_size, generator=seeded()
        )
        torch.testing.assert_close(result.mean, reference.mean, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(result.stderr, reference.stderr, rtol=1e-4, atol=1e-8)


def test_tolerance_stops_each_image_when_its_error_is_small_enough(small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(3)
    tolerance = 0.05
    estimate = smoothgrad_estimate(
        model, x, n_samples=10, aggregate="raw", tolerance=tolerance, max_samples=5000, generator=seeded()
    )
    relative = estimate.stderr.flatten(1).norm(dim=1) / estimate.mean.flatten(1).norm(dim=1)
    assert bool((relative <= tolerance).all())
    assert bool((estimate.n_samples > 10).all()) and len(set(estimate.n_samples.tolist())) > 1  # independent stops
    fixed = smoothgrad_estimate(model, x, n_samples=10, aggregate="raw", generator=seeded())
    fixed_relative = fixed.stderr.flatten(1).norm(dim=1) / fixed.mean.flatten(1).norm(dim=1)
    assert bool((fixed_relative > tolerance).all())  # so the adaptive rule did the work


def test_tolerance_warns_at_max_samples(small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(1)
    with pytest.warns(UserWarning, match="max_samples=20"):
        estimate = smoothgrad_estimate(
            model, x, n_samples=10, aggregate="raw", tolerance=1e-4, max_samples=20, generator=seeded()
        )
    assert estimate.n_samples.tolist() == [20]


def test_single_image_gives_int_count(small_cnn, random_images, seeded):
    estimate = smoothgrad_estimate(small_cnn(), random_images(1)[0], n_samples=4, generator=seeded())
    assert estimate.n_samples == 4 and estimate.mean.shape == SHAPE


def test_stderr_is_nan_with_a_single_unit(small_cnn, random_images, seeded):
    estimate = smoothgrad_estimate(
        small_cnn(), random_images(1), n_samples=2, sampling="antithetic", generator=seeded()
    )
    assert bool(estimate.stderr.isnan().all()) and bool(estimate.mean.isfinite().all())


BAD = [
    (ValueError, "must be even", dict(n_samples=5, sampling="antithetic")),
    (ValueError, "sampling must be one of", dict(sampling="sobol")),
    (ValueError, "tolerance must be", dict(tolerance=0.0)),
    (ValueError, "tolerance must be", dict(tolerance=1.5)),
    (ValueError, "max_samples must be", dict(n_samples=50, tolerance=0.1, max_samples=10)),
    (ValueError, "at least 2 independent units", dict(n_samples=2, sampling="antithetic", tolerance=0.1)),
    (ValueError, "not both", dict(noise_level=0.15, sigma=0.1)),
    (ValueError, "not both", dict(noise_level=0.2, sigma=0.1)),
]


@pytest.mark.parametrize(("error", "message", "kwargs"), BAD)
def test_bad_arguments_are_clear_errors(error, message, kwargs, small_cnn, random_images):
    with pytest.raises(error, match=message):
        smoothgrad_estimate(small_cnn(), random_images(1), **kwargs)


def test_arguments_after_target_are_keyword_only(small_cnn, random_images):
    model, x = small_cnn(), random_images(1)
    with pytest.raises(TypeError, match="positional"):
        smoothgrad(model, x, 0, 10)
    with pytest.raises(TypeError, match="positional"):
        noisy_gradients(model, x, 0, 10)


class PrecisionProbe(nn.Module):
    """A linear model that records the TF32 settings in force during each forward pass."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.linear, self.fail, self.seen = nn.Linear(math.prod(SHAPE), 3), fail, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(current_settings())
        if self.fail:
            raise RuntimeError("boom")
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_is_scoped_to_the_call_and_the_callers_settings_come_back(tf32, random_images):
    before = current_settings()
    with float32_precision(tf32=not tf32):  # the caller's own, opposite choice
        outer = current_settings()
        probe = PrecisionProbe().eval()
        vanilla_gradient(probe, random_images(1), tf32=tf32)
        smoothgrad(probe, random_images(1), n_samples=2, tf32=tf32)
        assert current_settings() == outer
    assert current_settings() == before
    with float32_precision(tf32=tf32):
        inside = current_settings()
    assert set(probe.seen) == {inside} and inside != outer


def test_tf32_settings_are_restored_when_the_model_raises(random_images):
    before = current_settings()
    with pytest.raises(RuntimeError, match="boom"):
        vanilla_gradient(PrecisionProbe(fail=True).eval(), random_images(1))
    assert current_settings() == before
