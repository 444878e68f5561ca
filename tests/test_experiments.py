"""The measurement helpers on cases with known answers."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from smoothgrad_lib import saliency_map
from smoothgrad_lib.experiments import (
    activation_gates,
    directional_slice,
    gate_fractions,
    loglog_slope,
    mask_mass,
    roughness,
    taylor_bias,
    variance_against_n,
)

SHAPE = (2, 4, 4)


class Cubic(nn.Module):
    """logit_k(x) = sum a_k x^3: gradient 3 a_k x^2, and E[grad(x + eps)] = 3 a_k (x^2 + sigma^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kchw,bchw->bk", self.a, x**3)


def test_directional_slice_of_a_linear_model_is_a_line_with_constant_slope():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 3)).eval()
    x, d = torch.rand(*SHAPE), torch.randn(*SHAPE)
    ts = torch.linspace(-1, 1, 11)
    logits, slope = directional_slice(model, x, 1, d, ts)
    expected_slope = float((model[1].weight[1].detach() * d.flatten()).sum())
    torch.testing.assert_close(slope, torch.full((11,), expected_slope))
    torch.testing.assert_close(logits.diff(), torch.full((10,), expected_slope * 0.2), rtol=1e-4, atol=1e-5)
    assert roughness(logits) == pytest.approx(1.0)


def test_roughness():
    assert roughness(torch.tensor([0.0, 1.0, 0.0, 1.0])) == pytest.approx(3.0)
    assert roughness(torch.tensor([2.0, 2.0])) == 0.0


def test_activation_gates_match_the_preactivations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU6(), nn.Linear(4, 2)).eval()
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


def test_taylor_bias_of_a_cubic_is_sigma_squared():
    model, x = Cubic().eval(), torch.rand(*SHAPE) + 0.5
    a = model.a[0].detach().double()
    sigmas = [0.05, 0.1, 0.2]
    result = taylor_bias(model, x, 0, sigmas, n_pairs=4000, generator=torch.Generator().manual_seed(1))
    grad = 3 * a * x.double() ** 2
    truth = np.array([float((3 * a * s**2).norm() / grad.norm()) for s in sigmas])
    assert np.all(np.abs(result["raw"] - truth) < 4 * result["mc_error"] + 1e-6)
    slope, low, high = loglog_slope(sigmas, result["bias"])
    assert low <= 2 <= high or abs(slope - 2) < 0.05


def test_variance_against_n_follows_one_over_n_for_iid_samples():
    samples = torch.randn(6400, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2
    ns = [1, 2, 4, 8, 16, 32, 64]
    totals = variance_against_n(samples, ns, "raw")
    expected = 4 * 48 / np.array(ns)
    assert np.all(np.abs(totals / expected - 1) < 0.35)  # R = 100 estimates per N: relative sd about sqrt(2/99)
    slope, low, high = loglog_slope(ns, totals)
    assert low < -1 < high
    # |G| of a mean-zero normal has variance (1 - 2/pi) * 4 per pixel.
    abs_totals = variance_against_n(samples, ns, "abs")
    np.testing.assert_allclose(abs_totals[0], (1 - 2 / math.pi) * 4 * 48, rtol=0.35)
    with pytest.raises(ValueError):
        variance_against_n(samples[:100], ns)


def test_loglog_slope_of_an_exact_power_law():
    slope, low, high = loglog_slope([1, 2, 4, 8], [3, 12, 48, 192])
    assert slope == pytest.approx(2.0) and low == pytest.approx(2.0) and high == pytest.approx(2.0)


def test_mask_mass():
    saliency = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])
    mask = torch.tensor([[[False, True], [False, False]]])
    assert mask_mass(saliency, mask).item() == pytest.approx(0.75)
    assert mask_mass(saliency_map(torch.zeros(1, 3, 2, 2)), mask).item() == 0.0
