"""lrp.lrp (Captum's LRP, epsilon rule): exact cases on linear models, conservation, LRP-0 = Gradient x Input on
ReLU networks, the shapes twin, the refusal of EfficientNet-Lite0, and its opt-in registry entry."""

import copy

import pytest
import torch
from torch import nn

from smoothgrad_lib import vanilla_gradient
from smoothgrad_lib.lrp import LRP_EPSILON, lrp, lrp_problems
from smoothgrad_lib.methods import FAMILIES, all_attributions, attribution_methods
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.twins import load_twin


def zero_bias_linear(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 3, bias=False)).eval()


def test_lrp_of_a_zero_bias_linear_model():
    # z = w . x; the epsilon rule gives R_i = x_i w_i z / (z + eps sign z): Gradient x Input as eps -> 0.
    model = zero_bias_linear()
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    gradient_x_input = x * vanilla_gradient(model, x, 1)
    torch.testing.assert_close(lrp(model, x, 1, epsilon=1e-9), gradient_x_input, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        z = model(x)[:, 1]
    shrink = (z / (z + LRP_EPSILON * z.sign()))[:, None, None, None]
    torch.testing.assert_close(lrp(model, x, 1), gradient_x_input * shrink, rtol=1e-5, atol=1e-7)


def test_conservation_in_a_zero_bias_relu_network():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 6, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 4, bias=False),
        ).eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    relevance = lrp(model, x, target, epsilon=1e-9)
    torch.testing.assert_close(relevance.flatten(1).sum(1), logits[torch.arange(3), target], rtol=1e-4, atol=1e-6)
    # A positive epsilon absorbs relevance: the total shrinks towards 0.
    assert (lrp(model, x, target).flatten(1).sum(1).abs() < logits[torch.arange(3), target].abs()).all()


def test_lrp_runs_on_the_relu_twin_and_its_lrp0_is_gradient_x_input():
    # With batch norm and biases the total is not conserved, but LRP-0 = x * gradient still holds (Ancona et al.).
    model, x = load_twin("relu"), make_shapes(2, seed=3).images
    before = copy.deepcopy(model.state_dict())
    relevance = lrp(model, x)
    assert relevance.shape == x.shape and torch.isfinite(relevance).all() and not relevance.requires_grad
    lrp0 = lrp(model, x, epsilon=1e-9)
    gradient_x_input = x * vanilla_gradient(model, x)
    assert (lrp0 - gradient_x_input).norm() / gradient_x_input.norm() < 1e-4
    assert (relevance - gradient_x_input).norm() / gradient_x_input.norm() > 0.1  # epsilon changes the map
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(hasattr(m, "rule") for m in model.modules()) and lrp_problems(model, x) == []


def test_lrp_refuses_lite0_and_says_why():
    from smoothgrad_lib.models import load_model

    model = load_model(device="cpu").model
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="ReLU6") as error:
        lrp(model, x, 281)
    for name in ("ZeroPad2d", "Identity", "Normalize", "Conv2dStaticSamePadding", "more than once"):
        assert name in str(error.value), name


def test_lrp_refuses_in_place_relu_and_reused_modules():
    relu = nn.ReLU()
    reused = nn.Sequential(nn.Conv2d(3, 3, 1), relu, nn.Conv2d(3, 3, 1), relu, nn.Flatten(), nn.Linear(12, 2)).eval()
    x = torch.rand(1, 3, 2, 2)
    with pytest.raises(ValueError, match="more than once"):
        lrp(reused, x, 0)
    inplace = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(12, 2)).eval()
    with pytest.raises(ValueError, match="in-place"):
        lrp(inplace, x, 0)


def test_lrp_is_one_opt_in_registry_entry():
    model, x = load_twin("relu"), make_shapes(2, seed=3).images
    assert "lrp" not in FAMILIES and "lrp" not in attribution_methods(gradcam_layer="14")
    assert list(attribution_methods(gradcam_layer="14", include=("lrp",)))[-1] == "lrp"
    default = all_attributions(model, x, gradcam_layer="14", levels={}, ig_steps=2, methods=None)
    assert "lrp" not in default
    out = all_attributions(model, x, None, gradcam_layer="14", levels={}, methods=("lrp",), batch_size=1)
    torch.testing.assert_close(out["lrp"], lrp(model, x), rtol=1e-4, atol=1e-6)
