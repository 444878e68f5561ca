"""smoothgrad_lib.probes on cases with known answers: lines, gates, Taylor bias, noisy-copy ranks."""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from smoothgrad_lib import load_model, noisy_gradients
from smoothgrad_lib.classification import noisy_ranks
from smoothgrad_lib.noise import seeded_generator as generator
from smoothgrad_lib.probes import (
    activation_gates,
    directional_slice,
    gate_flips,
    gate_fractions,
    increment_scaling,
    noisy_gradients_and_ranks,
    taylor_bias,
)
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.stats import loglog_slope, relative_change

SHAPE = (2, 4, 4)


def test_directional_slice_of_a_linear_model_is_a_line_with_constant_slope():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 3)).eval()
    x, d = torch.rand(*SHAPE), torch.randn(*SHAPE)
    ts = torch.linspace(-1, 1, 11)
    logits, slope = directional_slice(model, x, 1, direction=d, ts=ts)
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


def test_taylor_bias_of_a_cubic_is_sigma_squared(seeded, cubic_model):
    model, x = cubic_model(), torch.rand(*SHAPE) + 0.5
    a = model.a[0].detach().double()
    sigmas = [0.05, 0.1, 0.2]
    result = taylor_bias(model, x, 0, sigmas=sigmas, n_pairs=4000, generator=seeded(1))
    grad = 3 * a * x.double() ** 2
    truth = np.array([float((3 * a * s**2).norm() / grad.norm()) for s in sigmas])
    assert np.all(np.abs(result["raw"] - truth) < 4 * result["mc_error"] + 1e-6)
    slope, low, high = loglog_slope(sigmas, result["bias"])
    assert low <= 2 <= high or abs(slope - 2) < 0.05


def test_gate_flips_of_one_relu_layer_match_the_normal_tail(seeded):
    # Unit u flips when w_u . eps crosses -z_u, with w_u . eps ~ N(0, sigma^2 |w_u|^2): P = Phi(-|z_u| / (sigma |w_u|)).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 6), nn.ReLU()).eval()
    x = torch.rand(*SHAPE)
    layer = model[1]
    with torch.no_grad():
        z = layer(x.flatten()[None])[0].double()
        w = layer.weight.double().norm(dim=1)
    sigmas = [0.0, 0.05, 0.2]
    counts = gate_flips(model, x, sigmas=sigmas, n_samples=4000, generator=seeded(2))
    expected = [0.0] + [float(norm.cdf(-(z.abs() / (s * w)).numpy()).sum()) for s in sigmas[1:]]
    assert counts[0] == 0.0
    np.testing.assert_allclose(counts[1:], expected[1:], atol=0.07)  # sd of the sum of 6 shares <= 0.02
    assert counts[2] > counts[1] > 0
