"""montecarlo: standard errors from drawn gradients, SNR maps, predicting N, repeat errors, antithetic gain."""

import math

import pytest
import torch
from torch import nn

from smoothgrad_lib import Estimate, noisy_gradients, smoothgrad_estimate
from smoothgrad_lib import montecarlo as mc


def tiny_cnn() -> nn.Module:
    """A ReLU convolution and a linear layer for (3, 4, 4) images, 3 logits (not conftest's ``small_cnn``)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()


@pytest.mark.parametrize("sampling", ["iid", "antithetic"])
@pytest.mark.parametrize("aggregate", ["raw", "abs", "square"])
def test_estimate_from_gradients_matches_the_library(aggregate, sampling, seeded):
    model, x = tiny_cnn(), torch.rand(2, 3, 4, 4, generator=seeded(2))
    kwargs = dict(n_samples=12, noise_level=0.3, sampling=sampling)
    grads = noisy_gradients(model, x, 0, **kwargs, generator=seeded(3))
    library = smoothgrad_estimate(model, x, 0, **kwargs, aggregate=aggregate, generator=seeded(3))
    ours = mc.estimate_from_gradients(grads, aggregate, sampling)
    torch.testing.assert_close(ours.mean, library.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.stderr, library.stderr, rtol=1e-4, atol=1e-6)
    assert ours.n_samples.tolist() == [12, 12]


def test_estimate_from_gradients_rejects_odd_pairs_and_vargrad():
    grads = torch.zeros(1, 5, 3, 2, 2)
    with pytest.raises(ValueError, match="odd"):
        mc.estimate_from_gradients(grads, "raw", "antithetic")
    with pytest.raises(ValueError, match="aggregate"):
        mc.estimate_from_gradients(grads, "vargrad")


def test_snr_map_is_the_shown_channels_ratio():
    mean = torch.tensor([[[[2.0, -1.0]], [[-6.0, 0.5]]]])  # (1, 2, 1, 2): channel 1 wins pixel 0, channel 0 pixel 1
    stderr = torch.tensor([[[[1.0, 4.0]], [[3.0, 1.0]]]])
    assert mc.snr_map(mean, stderr).tolist() == [[[2.0, 0.25]]]
    with pytest.raises(ValueError, match="B, C, H, W"):
        mc.snr_map(mean[0], stderr[0])


def test_snr_of_the_quadratic_is_its_closed_form(quadratic_model, seeded):
    """raw: mean 2a(x) and stderr 2|a| sigma / sqrt(N), so SNR = |x| sqrt(N) / sigma per element."""
    model, x = quadratic_model(2, shape=(3, 4, 4)), torch.rand(1, 3, 4, 4, generator=seeded(4)) + 0.5
    n, sigma = 2000, 0.5
    estimate = smoothgrad_estimate(model, x, 0, n_samples=n, sigma=sigma, aggregate="raw", generator=seeded(5))
    channel = estimate.mean.abs().argmax(1, keepdim=True)
    expected = x.gather(1, channel)[:, 0] * math.sqrt(n) / sigma
    ratio = mc.snr_map(estimate.mean, estimate.stderr) / expected
    assert 0.9 < float(ratio.min()) and float(ratio.max()) < 1.1


def test_predict_samples_on_a_gaussian_case(seeded):
    """Draws m + s z per element: the relative error at N is ||s|| / (||m|| sqrt(N)); the pilot predicts that N."""
    generator = seeded(6)
    signal, spread = torch.randn(1, 1, 3, 20, 20, generator=generator), 2.0
    pilot = signal + spread * torch.randn(1, 30, 3, 20, 20, generator=generator)
    estimate = mc.estimate_from_gradients(pilot, "raw")
    predicted = float(mc.predict_samples(estimate, 0.1))
    truth = spread**2 * signal.numel() / (0.1**2 * float(signal.square().sum()))
    assert abs(predicted / truth - 1) < 0.1
    # without the noise correction the pilot's ||m||^2 is inflated by ||s||^2 and the prediction too small
    naive = 30 * float(mc.relative_error(estimate.mean, estimate.stderr)) ** 2 / 0.1**2
    assert naive < 0.9 * truth
    # and it checks out on independent draws of the predicted size
    runs = (signal + spread * torch.randn(8, round(predicted), 3, 20, 20, generator=generator)).mean(1)
    assert abs(float(mc.repeat_error(runs[:, None])) / 0.1 - 1) < 0.2


def test_predict_samples_gives_inf_for_pure_noise():
    estimate = Estimate(torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0), torch.tensor([10]))
    assert math.isinf(float(mc.predict_samples(estimate, 0.1)))
    with pytest.raises(ValueError, match="tolerance"):
        mc.predict_samples(estimate, 1.5)


def test_error_against_reference_removes_the_reference_noise(seeded):
    generator = seeded(7)
    truth = torch.randn(1, 3000, generator=generator)
    reference = Estimate(truth + 0.5 * torch.randn(1, 3000, generator=generator), torch.full((1, 3000), 0.5), 1)
    run = truth + 0.3 * torch.randn(1, 3000, generator=generator)
    expected = 0.3 * math.sqrt(3000) / float(truth.norm())
    assert abs(float(mc.error_against_reference(run, reference)) / expected - 1) < 0.1


def test_antithetic_gain_is_exact_for_a_quadratic_and_one_for_pure_noise(quadratic_model, seeded):
    """Linear-in-noise gradients cancel in every pair (raw gain infinite); independent halves give gain 1."""
    model, x = quadratic_model(2, shape=(3, 4, 4)), torch.rand(1, 3, 4, 4, generator=seeded(8))
    grads = noisy_gradients(model, x, 0, n_samples=64, sigma=0.2, sampling="antithetic", generator=seeded(9))
    assert float(mc.antithetic_gain(grads, "raw")) > 1e6
    # vargrad is even in the noise: (H eps)^2 is the same in both halves of a pair, so the gain is 1/2
    assert abs(float(mc.antithetic_gain(grads, "vargrad")) - 0.5) < 0.1
    independent = torch.randn(3, 4000, 2, 5, generator=seeded(10))
    gains = mc.antithetic_gain(independent, "abs")
    assert float((gains - 1).abs().max()) < 0.1
    with pytest.raises(ValueError, match="aggregate"):
        mc.antithetic_gain(grads, "median")


def test_check_prediction_on_a_linear_model_is_exact_for_raw_abs():
    """A linear model's noisy gradients are constant: the pilot's error is 0, so 1 sample is predicted and needed."""
    import numpy as np

    from smoothgrad_lib.montecarlo import check_prediction_on_draws, samples_needed

    grads = torch.randn(2, 1, 3, 4, 4, generator=torch.Generator().manual_seed(0)).expand(2, 24, 3, 4, 4)
    noise = 0.1 * torch.randn(2, 24, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    wanted, needed = check_prediction_on_draws(grads + noise, "raw", 0.1, pilot_n=8, run_n=4)
    assert wanted.shape == needed.shape == (2,)
    assert np.all(np.abs(needed / wanted - 1) < 0.6)  # 4 runs of 4: a rough but real check of the 1/N law
    maps = torch.stack([torch.ones(2, 5), torch.ones(2, 5) * 1.2])
    assert samples_needed(maps, 10, 0.5).shape == (2,)
