"""The measurement helpers on cases with known answers."""

import pytest
import torch
from torch import nn

from smoothgrad_lib import saliency_map
from smoothgrad_lib.experiments import (
    activation_gates,
    directional_slice,
    gate_fractions,
    mask_mass,
    roughness,
)

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
    assert roughness(logits) == pytest.approx(1.0)


def test_roughness():
    assert roughness(torch.tensor([0.0, 1.0, 0.0, 1.0])) == pytest.approx(3.0)
    assert roughness(torch.tensor([2.0, 2.0])) == 0.0


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


def test_mask_mass():
    saliency = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])
    mask = torch.tensor([[[False, True], [False, False]]])
    assert mask_mass(saliency, mask).item() == pytest.approx(0.75)
    assert mask_mass(saliency_map(torch.zeros(1, 3, 2, 2)), mask).item() == 0.0
