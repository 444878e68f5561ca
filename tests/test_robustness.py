"""Robustness metrics of explanations (robustness.max_sensitivity, robustness.local_lipschitz, faithfulness.infidelity):
against Captum on the same perturbations, on exact cases, and with every method of the registry."""

import pytest
import torch
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max
from torch import nn

from smoothgrad_lib import methods as methods_module
from smoothgrad_lib import vanilla_gradient
from smoothgrad_lib.faithfulness import gaussian_perturbations, infidelities, infidelity
from smoothgrad_lib.methods import attribution_methods, explanation_function, explanation_functions
from smoothgrad_lib.models import load_model
from smoothgrad_lib.robustness import (
    class_sensitivity,
    explanation_robustness,
    local_lipschitz,
    max_sensitivity,
    uniform_ball_noise,
)
from smoothgrad_lib.shapes import make_shapes


def tiny_relu_net(seed: int = 0) -> nn.Module:
    """A small ReLU CNN of modules Captum's LRP supports, (B, 3, 8, 8) -> 3 logits; "3" is its last ReLU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 3),
        ).eval()


def linear_model(seed: int = 0, shape: tuple[int, ...] = (3, 4, 5), classes: int = 3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), classes)).eval()


def images(batch: int = 2, shape: tuple[int, ...] = (3, 8, 8), seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))


def unpacked(explain):
    """Captum hands the explanation function a tuple of inputs and expects a tuple back."""
    return lambda inputs: (explain(inputs[0] if isinstance(inputs, tuple) else inputs),)


def replayed(draw, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Our n perturbations of the batch (n draws of x's shape from one generator), in Captum's expanded order:
    image-major, (B n, C, H, W) with row b n + k = sample k of image b (``repeat_interleave``)."""
    generator = torch.Generator().manual_seed(seed)
    steps = torch.stack([draw(x, generator) for _ in range(n)], 1)  # (B, n, C, H, W)
    return steps.reshape(-1, *x.shape[1:])


def test_max_sensitivity_equals_captums_sensitivity_max_on_the_same_perturbations():
    model, x, n, radius = tiny_relu_net(), images(3), 6, 0.05
    steps = replayed(lambda x, g: uniform_ball_noise(x, radius, g), x, n, seed=4)

    def explain(inputs):
        return vanilla_gradient(model, inputs, 1)

    ours = max_sensitivity(explain, x, radius, n, generator=torch.Generator().manual_seed(4))
    theirs = sensitivity_max(unpacked(explain), x, perturb_func=lambda inputs: inputs + steps, n_perturb_samples=n)
    torch.testing.assert_close(ours, theirs.reshape(-1), rtol=1e-5, atol=1e-7)
    assert (ours > 0).all()
    unnormalised = max_sensitivity(explain, x, radius, n, generator=torch.Generator().manual_seed(4), normalize=False)
    torch.testing.assert_close(unnormalised, ours * explain(x).flatten(1).norm(dim=1))


def test_max_sensitivity_with_captums_own_sampling_agrees_in_distribution():
    # Captum draws from the global generator: same distribution, other draws. The maximum over 50 draws of a
    # smooth function of the perturbation is close for both.
    model, x = tiny_relu_net(), images(2)

    def explain(inputs):
        return vanilla_gradient(model, inputs, 0)

    ours = max_sensitivity(explain, x, 0.05, 50, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        theirs = sensitivity_max(unpacked(explain), x, perturb_radius=0.05, n_perturb_samples=50).reshape(-1)
    torch.testing.assert_close(ours, theirs, rtol=0.25, atol=0)


def test_a_linear_models_gradient_has_zero_sensitivity_and_lipschitz_constant():
    model, x = linear_model(), images(2, (3, 4, 5))

    def explain(inputs):
        return vanilla_gradient(model, inputs, 2)

    generator = torch.Generator().manual_seed(0)
    assert torch.equal(max_sensitivity(explain, x, 0.1, 5, generator=generator), torch.zeros(2))
    assert torch.equal(local_lipschitz(explain, x, 0.1, 5, generator=generator), torch.zeros(2))


def test_the_identity_explanation_has_lipschitz_constant_one_and_a_scaled_map_scales_it():
    x = images(3)
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(local_lipschitz(lambda z: z, x, 0.1, 4, generator=generator), torch.ones(3))
    torch.testing.assert_close(local_lipschitz(lambda z: 3 * z, x, 0.1, 4, generator=generator), torch.full((3,), 3.0))


def test_local_lipschitz_is_the_largest_ratio_over_the_documented_draws():
    model, x, n = tiny_relu_net(), images(2), 5

    def explain(inputs):
        return vanilla_gradient(model, inputs, 1)

    generator = torch.Generator().manual_seed(9)
    expected = []
    for _ in range(n):
        step = uniform_ball_noise(x, 0.05, generator)
        expected.append((explain(x + step) - explain(x)).flatten(1).norm(dim=1) / step.flatten(1).norm(dim=1))
    ours = local_lipschitz(explain, x, 0.05, n, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours, torch.stack(expected).amax(0))


def test_explanation_robustness_is_both_metrics_from_one_set_of_explanations():
    model, x, calls = tiny_relu_net(), images(3), []

    def explain(inputs):
        calls.append(1)
        return vanilla_gradient(model, inputs, 2)

    both = explanation_robustness(explain, x, 0.05, 4, generator=torch.Generator().manual_seed(3))
    assert len(calls) == 5  # x and its 4 perturbations, shared by the two metrics
    alone = {
        "max_sensitivity": max_sensitivity(explain, x, 0.05, 4, generator=torch.Generator().manual_seed(3)),
        "local_lipschitz": local_lipschitz(explain, x, 0.05, 4, generator=torch.Generator().manual_seed(3)),
    }
    assert set(both) == set(alone)
    for name, value in alone.items():
        torch.testing.assert_close(both[name], value)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captums_on_the_same_perturbations(normalize):
    model, x, n, std = tiny_relu_net(), images(3), 7, 0.1
    steps = replayed(lambda x, g: gaussian_perturbations(x, std, g), x, n, seed=2)

    def explain(inputs):
        return vanilla_gradient(model, inputs, 2)

    ours = infidelity(
        model,
        explain,
        x,
        2,
        n_samples=n,
        noise_std=std,
        generator=torch.Generator().manual_seed(2),
        normalize=normalize,
    )
    theirs = captum_infidelity(
        model,
        lambda inputs: (steps, inputs - steps),
        x,
        explain(x),
        target=2,
        n_perturb_samples=n,
        normalize=normalize,
    )
    torch.testing.assert_close(ours, theirs.reshape(-1), rtol=1e-5, atol=1e-9)
    assert (ours > 0).all()


def test_infidelity_of_a_linear_models_gradient_is_zero():
    # f(x) - f(x - I) = w . I exactly for f(x) = w . x + b, so every sample's error is 0 (up to float rounding).
    model, x = linear_model(), images(2, (3, 4, 5))
    value = infidelity(
        model, lambda z: vanilla_gradient(model, z, 1), x, 1, n_samples=8, generator=torch.Generator().manual_seed(0)
    )
    assert value.abs().max() < 1e-10
    wrong = infidelity(model, lambda z: z, x, 1, n_samples=8, generator=torch.Generator().manual_seed(0))
    assert (wrong > 1e-4).all()


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_every_registry_method_works_with_every_robustness_metric():
    model, x = tiny_relu_net(), images(2)
    names = list(attribution_methods(gradcam_layer="3", n_samples=2, aggregates=("abs",), include=("lrp",)))
    assert "lrp" in names and "grad_cam" in names and "random" in names
    for name in names:
        options = {"gradcam_layer": "3", "n_samples": 2, "ig_steps": 4, "aggregates": ("abs",)}
        explain = explanation_function(name, model, 1, **options)
        gen = torch.Generator().manual_seed(0)
        scores = [
            max_sensitivity(explain, x, 0.02, 2, generator=gen),
            local_lipschitz(explain, x, 0.02, 2, generator=gen),
            infidelity(model, explain, x, 1, n_samples=2, generator=gen),
            class_sensitivity(explain, x, 0, 1),
        ]
        for score in scores[:3]:
            assert score.shape == (2,) and torch.isfinite(score).all() and (score >= 0).all(), name
        assert scores[3].shape == (2,), name


def test_explanation_function_common_and_independent_noise():
    model, x = tiny_relu_net(), images(2)
    common = explanation_function("smoothgrad_abs_0.15", model, 0, n_samples=3, seed=5)
    independent = explanation_function("smoothgrad_abs_0.15", model, 0, n_samples=3, seed=5, common_noise=False)
    first = common(x)
    assert torch.equal(first, common(x)) and torch.equal(first, independent(x))
    assert not torch.equal(first, independent(x))
    assert max_sensitivity(common, x, 1e-12, 2, generator=torch.Generator().manual_seed(0)).max() < 1e-4
    with pytest.raises(ValueError, match="unknown method"):
        explanation_function("saliency", model)


def test_explanation_function_draws_from_a_cpu_generator_on_request(monkeypatch):
    model, x = tiny_relu_net(), images(2)
    default = explanation_function("smoothgrad_abs_0.15", model, 0, n_samples=3, seed=5)(x)
    asked = []
    make = methods_module.noise_generator
    monkeypatch.setattr(
        methods_module, "noise_generator", lambda seed, x, where: asked.append((seed, where)) or make(seed, x, where)
    )
    explain = explanation_functions(
        {"sg": ("smoothgrad_abs_0.15", {"n_samples": 3}, True)}, model, 0, seed=5, noise_device="cpu"
    )["sg"]
    assert torch.equal(explain(x), default) and asked == [(5, "cpu")]
    with pytest.raises(ValueError, match="noise_device must be"):
        explanation_function("smoothgrad_abs_0.15", model, noise_device="gpu")


def test_bad_arguments():
    x = images(2)
    with pytest.raises(ValueError, match="radius"):
        max_sensitivity(lambda z: z, x, 0.0)
    with pytest.raises(ValueError, match="n_samples"):
        local_lipschitz(lambda z: z, x, 0.1, 0)
    with pytest.raises(ValueError, match="one attribution per image"):
        max_sensitivity(lambda z: z[0], x, 0.1, 1)
    with pytest.raises(ValueError, match="noise_std"):
        infidelity(tiny_relu_net(), lambda z: z, x, 0, noise_std=0)


class HalfSquare(torch.nn.Module):
    """f_k(x) = ||x||^2 / 2 for both classes: the gradient at x is x itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).square().sum(1, keepdim=True).expand(-1, 2) / 2


def test_a_pinned_sigma_gives_both_ends_the_same_noise():
    """Raw SmoothGrad of f = ||x||^2 / 2 with N = 1 is x + eps: at x + delta it is x + delta + eps' exactly, and
    eps' = eps only if the draw and sigma are the same at both ends. A perturbation that widens the image's range
    changes sigma unless it is pinned to the clean image."""
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    delta = torch.zeros_like(x)
    delta[:, 0, 0, 0] = 0.5  # widens each image's range
    pinned, floating = (
        explanation_function("smoothgrad_raw_0.15", HalfSquare().eval(), 0, n_samples=1, sigma_from=s)
        for s in (x, None)
    )
    assert torch.allclose(pinned(x + delta) - pinned(x), delta, atol=1e-6)
    assert not torch.allclose(floating(x + delta) - floating(x), delta, atol=1e-3)
    assert torch.equal(pinned(x), floating(x))  # at the clean images, pinning changes nothing


def test_the_map_representation_is_the_channel_maximum_of_the_absolute_attribution():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    x = torch.rand(2, 3, 2, 2)
    shown = explanation_function("vanilla", model, 1, representation="map")(x)
    assert torch.equal(shown, model[1].weight[1].reshape(1, 3, 2, 2).abs().amax(1, keepdim=True).expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="representation"):
        explanation_function("vanilla", model, 1, representation="display")


def test_infidelities_of_several_maps_equal_each_map_scored_alone_on_the_same_perturbations():
    model = load_model("shapes-relu", device="cpu").model
    data = make_shapes(4, seed=3)
    maps = {
        "gradient": vanilla_gradient(model, data.images, data.labels),
        "constant": torch.ones(4, 1, 64, 64),
        "zero": torch.zeros(4, 1, 64, 64),
    }
    options = dict(n_samples=5, noise_std=0.05)
    together = infidelities(
        model, maps, data.images, data.labels, **options, generator=torch.Generator().manual_seed(1)
    )
    for label, attribution in maps.items():
        alone = infidelities(
            model, {label: attribution}, data.images, data.labels, **options, generator=torch.Generator().manual_seed(1)
        )
        assert torch.equal(together[label], alone[label]), label
    assert float(together["zero"].min()) > 0 and float(together["gradient"].mean()) < float(together["zero"].mean())
    with pytest.raises(ValueError, match="attribution must be"):
        infidelities(model, {"bad": torch.zeros(3, 1, 64, 64)}, data.images, data.labels)
