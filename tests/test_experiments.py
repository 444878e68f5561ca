"""The measurement helpers on cases with known answers."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from smoothgrad_lib import load_model, noisy_gradients, smoothgrad
from smoothgrad_lib.aggregates import aggregate_samples
from smoothgrad_lib.faithfulness import gaussian_blur
from smoothgrad_lib.metrics import brightest_share, far_share, localisation, neighbour_difference
from smoothgrad_lib.montecarlo import running_mean, samples_for_reliability
from smoothgrad_lib.noise import seeded_generator as generator
from smoothgrad_lib.probes import (
    accuracy,
    activation_gates,
    directional_slice,
    gate_fractions,
    increment_scaling,
    noisy_gradients_and_ranks,
    noisy_ranks,
)
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.stats import relative_change, spearman_brown

SHAPE = (2, 4, 4)


def test_directional_slice_of_a_linear_model_is_a_line_with_constant_slope():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 3)).eval()
    x, d = torch.rand(*SHAPE), torch.randn(*SHAPE)
    ts = torch.linspace(-1, 1, 11)
    logits, slope = directional_slice(model, x, 1, d, ts)
    expected_slope = float((model[1].weight[1].detach() * d.flatten()).sum())
    torch.testing.assert_close(slope, torch.full((11,), expected_slope))
    torch.testing.assert_close(logits.diff(), torch.full((10,), expected_slope * 0.2), rtol=1e-4, atol=1e-5)
    assert increment_scaling(logits, strides=(2, 1))[1] == pytest.approx(1.0, abs=1e-3)


def test_increment_scaling_separates_smooth_curves_from_jumps():
    t = torch.linspace(-1, 1, 801, dtype=torch.float64)
    largest, exponent = increment_scaling(t**2)  # increments 2 t h + h^2: the largest shrinks like h
    assert exponent == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(largest, [2 * 0.04 - 0.04**2, 2 * 0.01 - 0.01**2, 2 * 0.0025 - 0.0025**2])
    largest, exponent = increment_scaling(t + (t > 0.3).double())  # a unit jump: the largest stays above 1
    assert exponent == pytest.approx(0.0, abs=0.02) and (largest > 1).all()
    assert np.isnan(increment_scaling(torch.zeros(17))[1])


def test_activation_gates_match_the_preactivations():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(32, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU6(), nn.Linear(4, 2)
    ).eval()
    x = torch.randn(3, *SHAPE) * 3
    gates = activation_gates(model, x)
    first = model[1](model[0](x))
    second = model[3](model[2](first))
    expected = torch.cat([first > 0, (second > 0) & (second < 6)], 1)
    assert torch.equal(gates, expected)
    clean, fractions = gate_fractions(model, x[0], sigma=0.0, n_samples=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fractions, clean.float())
    with pytest.raises(ValueError, match="no ReLU"):
        activation_gates(nn.Sequential(nn.Flatten(), nn.Linear(32, 2)).eval(), x)


def test_relative_change_and_neighbour_difference_by_hand():
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 5.0]])
    assert relative_change(a, b).item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same shape"):
        relative_change(a, b[:, :1])
    maps = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])  # rows: |0-0|, |1-0| -> 0.5; columns: |1-0|, |0-0| -> 0.5
    assert neighbour_difference(maps).item() == pytest.approx(0.5)
    assert neighbour_difference(torch.ones(2, 5, 5)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="B, H, W"):
        neighbour_difference(torch.ones(5, 5))


def test_brightest_share():
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, 0] = 1.0  # all of it in the brightest pixel
    maps[1] = 1.0  # uniform: the brightest 1% hold 1%
    torch.testing.assert_close(brightest_share(maps), torch.tensor([1.0, 0.01]))
    with pytest.raises(ValueError, match="fraction"):
        brightest_share(maps, 0.0)


def test_running_mean_matches_prefix_means():
    samples = torch.randn(7, 3, 2, generator=generator(0))
    running = running_mean(samples, dim=0)
    for n in (1, 4, 7):
        torch.testing.assert_close(running[n - 1], samples[:n].mean(0))
    torch.testing.assert_close(running_mean(samples.transpose(0, 1), dim=1).transpose(0, 1), running)


def test_aggregate_samples_equals_smoothgrad_for_every_aggregate():
    model = load_model("shapes-relu", device="cpu").model
    x = make_shapes(2, seed=0).images
    samples = noisy_gradients(model, x, n_samples=6, noise_level=0.1, generator=generator(3))
    for name in ("raw", "abs", "square", "vargrad"):
        expected = smoothgrad(model, x, n_samples=6, noise_level=0.1, aggregate=name, generator=generator(3))
        assert relative_change(expected, aggregate_samples(samples, name)).max() < 1e-5
    with pytest.raises(ValueError, match="aggregate must be"):
        aggregate_samples(samples, "median")


def test_samples_for_reliability_inverts_spearman_brown():
    n = samples_for_reliability(0.5, 50, wanted=0.9)
    assert n == pytest.approx(450.0)
    assert spearman_brown(0.5, n / 50) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="wanted"):
        samples_for_reliability(0.5, 50, wanted=1.0)


class Biased(nn.Module):
    """Logits (x_mean, 0, bias): class 2 is top-1 whatever the input; class 0 beats class 1 when the mean is > 0."""

    def __init__(self, bias: float) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1)
        return torch.stack([mean, torch.zeros_like(mean), self.bias.expand_as(mean)], 1)


def test_noisy_ranks_and_accuracy():
    model = Biased(10.0).eval()
    x = torch.rand(2, 1, 8, 8, generator=generator(0)) + 0.5
    ranks = noisy_ranks(model, x, 2, n_samples=5, noise_level=0.5, generator=generator(1))
    assert ranks.shape == (2, 5) and (ranks == 0).all()
    assert (noisy_ranks(model, x, [0, 1], n_samples=3, noise_level=0.0) == torch.tensor([[1], [2]])).all()
    # A mean-zero image of range 2 plus noise: class 0 beats class 1 in about half the copies, putting class 1 third.
    centred = torch.tensor([-1.0, 1.0]).repeat(32).reshape(1, 1, 8, 8)
    below = noisy_ranks(model, centred, 1, n_samples=2000, noise_level=0.3, generator=generator(2))
    assert 0.45 < float((below == 2).float().mean()) < 0.55 and set(below.unique().tolist()) == {1, 2}
    again = noisy_ranks(model, x, 0, n_samples=5, noise_level=0.5, generator=generator(1))
    assert torch.equal(
        again, noisy_ranks(model, x, 0, n_samples=5, noise_level=0.5, generator=generator(1), batch_size=3)
    )
    assert accuracy(model, x, torch.tensor([2, 2])) == 1.0
    assert accuracy(model, x, torch.tensor([2, 0]), noise_level=0.1, n_samples=4, generator=generator(0)) == 0.5
    with pytest.raises(ValueError, match="n_samples"):
        noisy_ranks(model, x, 0, n_samples=0, noise_level=0.1)


def test_noisy_gradients_and_ranks_match_the_separate_calls():
    model = load_model("shapes-relu", device="cpu").model
    x = make_shapes(3, seed=1).images
    labels = make_shapes(3, seed=1).labels
    for target in (None, labels):
        grads, ranks = noisy_gradients_and_ranks(
            model, x, target, n_samples=5, noise_level=0.3, generator=generator(4), batch_size=4
        )
        expected = noisy_gradients(model, x, target, n_samples=5, noise_level=0.3, generator=generator(4))
        assert grads.shape == expected.shape and relative_change(grads, expected).max() < 1e-5
        separate = noisy_ranks(model, x, target, n_samples=5, noise_level=0.3, generator=generator(4))
        assert ranks.shape == (3, 5) and torch.equal(ranks, separate)
    one_grads, one_ranks = noisy_gradients_and_ranks(model, x[0], 0, n_samples=4, noise_level=0.0)
    assert one_grads.shape == (4, *x.shape[1:]) and one_ranks.shape == (4,)
    assert (one_ranks == noisy_ranks(model, x[0], 0, n_samples=4, noise_level=0.0)[0]).all()
    training = copy.deepcopy(model).train()
    for call in (noisy_ranks, noisy_gradients_and_ranks):  # checked before any forward pass, as in smoothgrad
        with pytest.raises(ValueError, match=r"model\.eval\(\)"):
            call(training, x, n_samples=2, noise_level=0.1)
        with pytest.raises(TypeError, match="torch.Tensor"):
            call(model, x.numpy(), n_samples=2, noise_level=0.1)


def test_far_share_and_localisation_by_hand():
    masks = torch.zeros(1, 12, 12, dtype=torch.bool)
    masks[0, 5:7, 5:7] = True
    maps = torch.zeros(1, 12, 12)
    maps[0, 5:7, 5:7] = 1.0  # inside
    maps[0, 4, 5] = 1.0  # one pixel away from the mask
    maps[0, 0, 0] = 2.0  # about 7 pixels away
    assert far_share(maps, masks, 4.0).item() == pytest.approx(2.0 / 3.0)
    scores = localisation(maps, masks, dilation=1, far=4.0)
    assert scores["mass"].item() == pytest.approx(4.0 / 7.0)
    assert scores["mass_dilated"].item() == pytest.approx(5.0 / 7.0)
    assert scores["far"].item() == pytest.approx(2.0 / 3.0)
    assert 0.5 < scores["auc"].item() < 1.0
    # Squaring the map changes the mass but not the rank-based AUC.
    squared = localisation(maps**2, masks, dilation=1)
    assert squared["auc"].item() == pytest.approx(scores["auc"].item())
    assert squared["mass"].item() != pytest.approx(scores["mass"].item())


def test_gaussian_blur_keeps_the_total_and_spreads_a_point():
    maps = torch.zeros(1, 21, 21, dtype=torch.float64)
    maps[0, 10, 10] = 1.0
    blurred = gaussian_blur(maps, 2.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-6)
    # A 2-D Gaussian of sd 2: the centre holds 1 / (2 pi 4) of the mass, sampled on the grid.
    assert blurred[0, 10, 10].item() == pytest.approx(1 / (8 * math.pi), rel=0.02)
    assert torch.equal(gaussian_blur(maps, 0.0), maps)
