"""smoothgrad_lib.aggregates: the four aggregates of noisy gradients."""

import math

import pytest
import torch

from smoothgrad_lib import load_model, noisy_gradients, smoothgrad
from smoothgrad_lib.aggregates import Estimate, aggregate_samples, relative_error, without_offset
from smoothgrad_lib.montecarlo import predict_samples
from smoothgrad_lib.noise import seeded_generator as generator
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.stats import relative_change


def test_aggregate_samples_equals_smoothgrad_for_every_aggregate():
    model = load_model("shapes-relu", device="cpu").model
    x = make_shapes(2, seed=0).images
    samples = noisy_gradients(model, x, n_samples=6, noise_level=0.1, generator=generator(3))
    for name in ("raw", "abs", "square", "vargrad"):
        expected = smoothgrad(model, x, n_samples=6, noise_level=0.1, aggregate=name, generator=generator(3))
        assert relative_change(expected, aggregate_samples(samples, name)).max() < 1e-5
    with pytest.raises(ValueError, match="aggregate must be"):
        aggregate_samples(samples, "median")


def test_without_offset_counts_only_what_a_displayed_map_shows():
    generator = torch.Generator().manual_seed(0)
    signal = torch.rand(2, 3, 8, 8, generator=generator)
    stderr = torch.full_like(signal, 0.01)
    base = Estimate(signal, stderr, 32)
    lifted = Estimate(signal + 5.0, stderr, 32)  # a constant offset, like abs's E|G| floor
    # The offset-free estimate is the same whatever constant is added, and its mean is 0 on each image.
    torch.testing.assert_close(without_offset(lifted).mean, without_offset(base).mean)
    torch.testing.assert_close(without_offset(base).mean.flatten(1).mean(1), torch.zeros(2), atol=1e-6, rtol=0)
    assert without_offset(base).stderr is stderr
    # Counted as signal, the offset makes the map look far better determined, and predicts far fewer samples.
    assert relative_error(lifted.mean, stderr).max() < relative_error(without_offset(lifted).mean, stderr).min() / 5
    n_lifted, n_free = predict_samples(lifted, 0.1), predict_samples(without_offset(lifted), 0.1)
    assert (n_free > 50 * n_lifted).all()  # N grows as the squared relative error
    # A single (C, H, W) image works the same way.
    single = Estimate(signal[0] + 1, stderr[0], 32)
    torch.testing.assert_close(without_offset(single).mean, without_offset(base).mean[0])


def test_relative_error_is_zero_when_exact_inf_on_a_zero_mean_and_nan_when_unknown():
    mean = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    stderr = torch.tensor([[0.3, 0.4], [0.0, 0.0], [0.1, 0.0], [float("nan"), 0.1], [0.0, 0.0]])
    error = relative_error(mean, stderr)
    assert error.dtype == torch.float64 and error.shape == (5,)
    assert error[0].item() == pytest.approx(0.1)  # ||(0.3, 0.4)|| / ||(3, 4)|| = 0.5 / 5
    assert error[1].item() == 0.0  # every draw agreed on a zero mean: exact, not 0/0
    assert error[2].item() == math.inf  # a zero mean with a non-zero error
    assert math.isnan(error[3].item())  # an unknown standard error (too few units)
    assert error[4].item() == 0.0
    # over all elements of each image, whatever its shape
    torch.testing.assert_close(
        relative_error(mean.reshape(5, 1, 2, 1), stderr.reshape(5, 1, 2, 1)), error, equal_nan=True
    )
