"""robustness.class_sensitivity: Spearman over pixels between the maps of two classes, on exact cases."""

import torch
from scipy.stats import spearmanr
from torch import nn

from smoothgrad_lib import vanilla_gradient
from smoothgrad_lib.methods import explanation_function
from smoothgrad_lib.robustness import class_sensitivity


def test_a_method_that_ignores_the_class_scores_exactly_one():
    x = torch.rand(3, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(class_sensitivity(lambda z, target: z, x, 0, 1), torch.ones(3, dtype=torch.float64))


def test_a_linear_models_gradient_with_orthogonal_class_weights():
    # One channel, 2 x 2 pixels; w_a . w_b = 2 - 2 + 12 - 12 = 0. The gradient of class c is w_c whatever x.
    # Ranks (1, 2, 3, 4) and (3, 2, 4, 1): rho = 1 - 6 (4 + 0 + 1 + 9) / (4 (16 - 1)) = -0.4.
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, -1.0, 4.0, -3.0]])
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(w)
    x = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    value = class_sensitivity(lambda z, target: vanilla_gradient(model, z, target), x, 0, 1)
    torch.testing.assert_close(value, torch.full((2,), -0.4, dtype=torch.float64))
    assert abs(spearmanr(w[0], w[1]).statistic - -0.4) < 1e-12


def test_the_registry_helper_takes_the_class():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, -1.0, 4.0, -3.0]])
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(w)
    x = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    explain = explanation_function("vanilla", model)
    for c in (0, 1):
        assert torch.equal(explain(x, c), vanilla_gradient(model, x, c))
    torch.testing.assert_close(class_sensitivity(explain, x, 0, 1), torch.full((2,), -0.4, dtype=torch.float64))
