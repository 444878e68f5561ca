"""smoothgrad_lib.aggregates: the four aggregates of noisy gradients."""

import pytest

from smoothgrad_lib import load_model, noisy_gradients, smoothgrad
from smoothgrad_lib.aggregates import aggregate_samples
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
