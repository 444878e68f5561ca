"""smoothing: Stein's-lemma gradient estimator, Softplus_beta in place of ReLU."""

import copy

import pytest
import torch
from torch import nn

from smoothgrad_lib import smoothgrad, smoothgrad_estimate, vanilla_gradient
from smoothgrad_lib import smoothing as sm


def relu_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()),
        nn.Flatten(),
        nn.Linear(96, 3),
    ).eval()


def test_stein_estimator_recovers_the_gradient_of_a_quadratic(quadratic_model, seeded):
    model, x = quadratic_model(2, shape=(3, 4, 4), linear_seed=2), torch.rand(2, 3, 4, 4, generator=seeded(3))
    estimate = sm.stein_gradient(model, x, 1, n_samples=4000, sigma=0.1, batch_size=4000, generator=seeded(4))
    expected = 2 * model.a[1].detach() * x + model.b[1].detach()
    z = (estimate.mean - expected) / estimate.stderr
    assert float(z.abs().max()) < 5 and 0.7 < float(z.square().mean()) < 1.3  # unbiased, with honest error bars
    assert estimate.mean.shape == x.shape and estimate.n_samples.tolist() == [4000, 4000]


def test_stein_estimator_is_exact_in_expectation_for_a_linear_logit(seeded):
    """g = b . x: eps (g(x + eps) - g(x)) / sigma^2 = eps eps^T b / sigma^2, mean b, error ~ ||b|| / sqrt(N)."""
    model = nn.Linear(12, 2).eval()
    flat = nn.Sequential(nn.Flatten(), model).eval()
    x = torch.rand(1, 3, 2, 2, generator=seeded(5))
    estimate = sm.stein_gradient(flat, x, 0, n_samples=10000, sigma=2.0, batch_size=10000, generator=seeded(6))
    expected = model.weight[0].detach().reshape(1, 3, 2, 2)
    tolerance = 4 * float(expected.norm()) / 10000**0.5
    assert float((estimate.mean - expected).abs().max()) < tolerance


def test_stein_agrees_with_smoothgrad_raw_on_a_relu_network(seeded):
    model, x = relu_cnn(), torch.rand(1, 3, 4, 4, generator=seeded(7))
    stein = sm.stein_gradient(model, x, 0, n_samples=8000, noise_level=0.3, batch_size=8000, generator=seeded(8))
    reference = smoothgrad(
        model, x, 0, n_samples=1000, noise_level=0.3, aggregate="raw", batch_size=1000, generator=seeded(9)
    )
    assert float(sm.cosine(stein.mean, reference)) > 0.95


def test_stein_rejects_bad_input():
    with pytest.raises(ValueError, match="B, C, H, W"):
        sm.stein_gradient(relu_cnn(), torch.rand(2, 1, 3, 4, 4), 0, sigma=0.1)
    with pytest.raises(ValueError, match="noise_level"):
        sm.stein_gradient(relu_cnn(), torch.rand(1, 3, 4, 4), 0, sigma=0.1, noise_level=0.1)
    with pytest.raises(ValueError, match="NaN"):
        sm.stein_gradient(relu_cnn(), torch.full((1, 3, 4, 4), float("nan")), 0, sigma=0.1)
    with pytest.raises(ValueError, match="n_samples"):
        sm.stein_gradient(relu_cnn(), torch.rand(1, 3, 4, 4), 0, n_samples=1)


def test_stein_rejects_a_model_in_training_mode():
    with pytest.raises(ValueError, match="training mode"):
        sm.stein_gradient(relu_cnn().train(), torch.rand(1, 3, 4, 4), 0, sigma=0.1)


def test_stein_does_not_depend_on_batch_size(seeded):
    """The noise comes from noise.NormalStream: batch_size 40 and 7 draw the same copies (it used not to)."""
    flat = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    x = torch.rand(2, 3, 2, 2, generator=seeded(5))
    runs = [sm.stein_gradient(flat, x, n_samples=100, batch_size=b, generator=seeded(6)) for b in (40, 7)]
    torch.testing.assert_close(runs[0].mean, runs[1].mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(runs[0].stderr, runs[1].stderr, rtol=1e-5, atol=1e-6)


def test_stein_defaults_the_noise_level_like_smoothgrad(seeded):
    model, x = relu_cnn(), torch.rand(1, 3, 4, 4, generator=seeded(7))
    default = sm.stein_gradient(model, x, 0, n_samples=50, generator=seeded(8))
    explicit = sm.stein_gradient(model, x, 0, n_samples=50, noise_level=0.15, generator=seeded(8))
    assert torch.equal(default.mean, explicit.mean)
    single = sm.stein_gradient(model, x[0], 0, n_samples=50, noise_level=0.15, generator=seeded(8))
    assert torch.equal(single.mean, explicit.mean[0]) and single.n_samples == 50


def test_softplus_copy_tends_to_relu_and_leaves_the_model_alone(seeded):
    model, x = relu_cnn(), torch.rand(2, 3, 4, 4, generator=seeded(10))
    before = copy.deepcopy(model.state_dict())
    sharp, soft = sm.softplus_copy(model, 1e4), sm.softplus_copy(model, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(sharp(x), model(x), rtol=0, atol=1e-3)
        assert float((soft(x) - model(x)).abs().max()) > 0.05
    assert [type(m) for m in model.modules()].count(nn.ReLU) == 2
    assert [type(m) for m in sharp.modules()].count(nn.Softplus) == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no nn.ReLU"):
        sm.softplus_copy(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), 5.0)
    with pytest.raises(ValueError, match="beta"):
        sm.softplus_copy(model, 0.0)


def test_best_beta_picks_the_largest_cosine(seeded):
    model, x = relu_cnn(), torch.rand(2, 3, 4, 4, generator=seeded(11))
    target = vanilla_gradient(sm.softplus_copy(model, 3.0), x, 0)
    betas = [1.0, 3.0, 10.0, 100.0]
    cosines = sm.softplus_cosines(model, x, 0, reference=target, betas=betas)
    beta, best = sm.best_beta(cosines, betas)
    assert beta.tolist() == [3.0, 3.0] and torch.allclose(best, torch.ones(2, dtype=best.dtype))


def test_stein_against_smoothgrad_is_the_two_estimators_compared_element_by_element(seeded):
    model, x = relu_cnn(), torch.rand(2, 3, 4, 4, generator=seeded(20))
    generators = [seeded(22 + r) for r in range(3)]
    result = sm.stein_against_smoothgrad(
        model,
        x,
        1,
        smoothgrad_samples=40,
        stein_samples=60,
        runs=3,
        sigma=0.3,
        generator=seeded(21),
        stein_generators=generators,
    )
    sg = smoothgrad_estimate(model, x, 1, n_samples=40, aggregate="raw", sigma=0.3, generator=seeded(21))
    runs = [sm.stein_gradient(model, x, 1, n_samples=60, sigma=0.3, generator=seeded(22 + r)) for r in range(3)]
    assert torch.equal(result.smoothgrad.mean, sg.mean) and torch.equal(result.smoothgrad.stderr, sg.stderr)
    pooled = torch.stack([r.mean for r in runs]).mean(0)
    pooled_err = torch.stack([r.stderr for r in runs]).square().mean(0).div(3).sqrt()
    assert torch.equal(result.stein.mean, pooled) and torch.equal(result.stein.stderr, pooled_err)
    assert result.stein.n_samples.tolist() == [180, 180]
    z2 = ((pooled - sg.mean) ** 2 / (pooled_err**2 + sg.stderr**2)).flatten(1).mean(1)
    assert torch.allclose(result.z2, z2)
    unit = sg.mean.flatten(1) / sg.mean.flatten(1).norm(dim=1, keepdim=True)
    for r, run in enumerate(runs):
        along = (run.mean.flatten(1) * unit).sum(1) / sg.mean.flatten(1).norm(dim=1)
        assert torch.allclose(result.along[r], along)
    assert result.along.shape == (3, 2) and torch.allclose(result.along_mean, result.along.mean(0))
    assert torch.allclose(result.along_stderr, result.along.std(0) / 3**0.5)
    ratio = pooled_err.flatten(1).square().sum(1) * 3 * 60 / (sg.stderr.flatten(1).square().sum(1) * 40)
    assert torch.allclose(result.samples_ratio, ratio)


def test_stein_against_smoothgrad_agrees_on_a_quadratic_and_stein_costs_far_more_samples(quadratic_model, seeded):
    """Both estimate 2 a x + b: z^2 near 1 over many elements, the component along SmoothGrad near 1."""
    model, x = quadratic_model(1, shape=(3, 8, 8), linear_seed=2), torch.rand(1, 3, 8, 8, generator=seeded(30))
    result = sm.stein_against_smoothgrad(
        model,
        x,
        0,
        smoothgrad_samples=64,
        stein_samples=2000,
        runs=4,
        sigma=0.1,
        generator=seeded(31),
        stein_generators=[seeded(32 + r) for r in range(4)],
    )
    assert 0.7 < float(result.z2[0]) < 1.3
    assert abs(float(result.along_mean[0]) - 1) < 4 * float(result.along_stderr[0]) + 0.05
    assert float(result.samples_ratio[0]) > 10


def test_stein_against_smoothgrad_rejects_a_single_image_and_mismatched_generators(seeded):
    with pytest.raises(ValueError, match="B, C, H, W"):
        sm.stein_against_smoothgrad(relu_cnn(), torch.rand(3, 4, 4), 0, sigma=0.1)
    with pytest.raises(ValueError, match="one generator per run"):
        sm.stein_against_smoothgrad(relu_cnn(), torch.rand(1, 3, 4, 4), 0, sigma=0.1, stein_generators=[seeded(1)])
    with pytest.raises(ValueError, match="runs"):
        sm.stein_against_smoothgrad(relu_cnn(), torch.rand(1, 3, 4, 4), 0, sigma=0.1, runs=1)
