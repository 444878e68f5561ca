"""smoothgrad_lib.methods: shapes, determinism, Captum's completeness, the ReLU6 guard of Guided Backprop, and
all_attributions against the functions it stands for."""

import copy

import pytest
import torch
from torch import nn

from smoothgrad_lib import methods as methods_module
from smoothgrad_lib import saliency_map, smoothgrad, vanilla_gradient
from smoothgrad_lib.aggregates import AGGREGATES
from smoothgrad_lib.faithfulness import blur
from smoothgrad_lib.methods import (
    FAMILIES,
    MethodSpec,
    all_attributions,
    attribution_methods,
    register,
    smoothgrad_aggregates,
)
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.twins import load_twin

SHAPES_LAYER = "14"  # the last ReLU of ShapesCNN, 8x8


@pytest.fixture(scope="module")
def twin():
    return load_twin("relu"), make_shapes(2, seed=11).images


def test_registry_names():
    names = list(attribution_methods(gradcam_layer=SHAPES_LAYER, levels=(0.1, 0.2), aggregates=("abs", "square")))
    assert names == [
        "vanilla",
        "smoothgrad_abs_0.1",
        "smoothgrad_abs_0.2",
        "smoothgrad_square_0.1",
        "smoothgrad_square_0.2",
        "integrated_gradients",
        "gradient_x_input",
        "grad_cam",
        "guided_backprop",
        "blurred_vanilla",
        "random",
    ]


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_every_method_has_the_right_shape_is_deterministic_and_leaves_model_and_x_alone(twin):
    model, x = twin
    x_before, params_before = x.clone(), [p.clone() for p in model.parameters()]
    methods = attribution_methods(gradcam_layer=SHAPES_LAYER, n_samples=4, aggregates=("abs",), ig_steps=8)
    one_value_per_pixel = {"grad_cam", "blurred_vanilla", "random"}
    for name, method in methods.items():
        first = method(model, x, None, torch.Generator().manual_seed(0))
        again = method(model, x, None, torch.Generator().manual_seed(0))
        channels = 1 if name in one_value_per_pixel else 3
        assert first.shape == (2, channels, 64, 64) and torch.isfinite(first).all() and not first.requires_grad, name
        assert torch.equal(first, again), name
        if name == "random" or name.startswith("smoothgrad"):
            assert not torch.equal(first, method(model, x, None, torch.Generator().manual_seed(1))), name
    assert torch.equal(x, x_before)
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), params_before, strict=True))


def test_smoothgrad_aggregates_equal_the_registry_entries(twin):
    model, x = twin
    shared = smoothgrad_aggregates(model, x, None, torch.Generator().manual_seed(3), n_samples=6, noise_level=0.2)
    methods = attribution_methods(gradcam_layer=SHAPES_LAYER, n_samples=6, levels=(0.2,))
    for aggregate, value in shared.items():
        alone = methods[f"smoothgrad_{aggregate}_0.2"](model, x, None, torch.Generator().manual_seed(3))
        torch.testing.assert_close(value, alone, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("activation, tolerance", [("softplus", 0.001), ("relu", 0.03)])
def test_integrated_gradients_completeness(activation, tolerance):
    # Sum of attributions = f(x) - f(0) for the target logit, up to the error of the 64-point Gauss-Legendre rule.
    # The Softplus twin's integrand is smooth and the rule converges fast; the ReLU twin's is piecewise constant
    # along the path (a jump at every gate that flips), so its error falls only like 1/n: on these images
    # (predicted classes) it measured 0.02% and 0.01% for Softplus, 0.3% and 1.4% for ReLU, which is not monotone
    # in n (0.7% and 0.08% at 32 points).
    model, x = load_twin(activation), make_shapes(2, seed=11).images
    ig = attribution_methods(gradcam_layer=SHAPES_LAYER, ig_steps=64)["integrated_gradients"]
    with torch.no_grad():
        logits = model(x)
        target = logits.argmax(1)
        difference = (logits - model(torch.zeros_like(x)))[torch.arange(len(x)), target]
    total = ig(model, x, None, None).flatten(1).sum(1)
    error = (total - difference).abs() / difference.abs()
    assert error.max() < tolerance, error


def test_grad_cam_and_blurred_vanilla_definitions(twin):
    model, x = twin
    methods = attribution_methods(gradcam_layer=SHAPES_LAYER)
    cam = methods["grad_cam"](model, x, 2, None)
    assert (cam >= 0).all() and cam.flatten(1).amax(1).gt(0).all()
    vanilla_map = saliency_map(vanilla_gradient(model, x, 2), normalize=None)[:, None]
    torch.testing.assert_close(methods["blurred_vanilla"](model, x, 2, None), blur(vanilla_map, 1.5))


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_guided_backprop_rewrites_the_relus_of_the_twin(twin):
    model, x = twin
    guided = attribution_methods(gradcam_layer=SHAPES_LAYER)["guided_backprop"](model, x, None, None)
    assert not torch.allclose(guided, vanilla_gradient(model, x))


def test_lite0_grad_cam_works_and_guided_backprop_refuses_relu6():
    from smoothgrad_lib.models import load_model

    model = load_model(device="cpu").model
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    methods = attribution_methods(gradcam_layer="1._bn1")
    assert methods["grad_cam"](model, x, 281, None).shape == (1, 1, 224, 224)
    with pytest.raises(ValueError, match="ReLU6"):
        methods["guided_backprop"](model, x, 281, None)


def test_bad_layer_and_input():
    model, x = load_twin("relu"), make_shapes(1, seed=0).images
    with pytest.raises(AttributeError):
        attribution_methods(gradcam_layer="nope")["grad_cam"](model, x, None, None)
    with pytest.raises(ValueError, match="batch axis"):
        attribution_methods(gradcam_layer=SHAPES_LAYER)["gradient_x_input"](model, x[0], None, None)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_all_attributions_smoothgrad_entries_are_smoothgrad_with_the_documented_seeds(twin):
    # Level k draws its noise from seed + 1 + k: four aggregates from one gradient set at 0.2, |G| alone at 0.1.
    model, x = twin
    levels = {0.2: AGGREGATES, 0.1: ("abs",)}
    out = all_attributions(model, x, None, gradcam_layer=SHAPES_LAYER, seed=5, levels=levels, n_samples=6, batch_size=5)
    names = [name for name in out if name.startswith("smoothgrad")]
    assert names == [f"smoothgrad_{a}_0.2" for a in AGGREGATES] + ["smoothgrad_abs_0.1"]
    for k, (level, aggregates) in enumerate(levels.items()):
        for aggregate in aggregates:
            alone = smoothgrad(
                model,
                x,
                n_samples=6,
                noise_level=level,
                aggregate=aggregate,
                generator=torch.Generator().manual_seed(6 + k),
            )
            torch.testing.assert_close(out[f"smoothgrad_{aggregate}_{level:g}"], alone, rtol=1e-5, atol=1e-7)
    other_seed = all_attributions(model, x, gradcam_layer=SHAPES_LAYER, seed=6, levels=levels, n_samples=6)
    assert not torch.allclose(other_seed["smoothgrad_abs_0.2"], out["smoothgrad_abs_0.2"])


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_all_attributions_equal_the_registry_in_any_chunks_and_leave_model_and_x_alone(twin):
    model, x = twin
    x_before, params_before = x.clone(), [p.clone() for p in model.parameters()]
    target = torch.tensor([2, 0])
    kwargs = {"gradcam_layer": SHAPES_LAYER, "seed": 3, "levels": {}, "ig_steps": 4}
    one_at_a_time = all_attributions(model, x, target, batch_size=1, **kwargs)
    together = all_attributions(model, x, target, **kwargs)
    assert list(one_at_a_time) == [name for name in FAMILIES if name != "smoothgrad"]
    registry = attribution_methods(gradcam_layer=SHAPES_LAYER, ig_steps=4)
    for name, value in together.items():
        generator = torch.Generator().manual_seed(3) if name == "random" else None
        expected = registry[name](model, x, target, generator)
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(one_at_a_time[name], expected, rtol=1e-4, atol=1e-6, msg=name)
        assert value.is_contiguous() and not value.requires_grad, name
    torch.testing.assert_close(together["vanilla"], vanilla_gradient(model, x, target))
    assert torch.equal(x, x_before)
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), params_before, strict=True))


def test_all_attributions_resolves_the_predicted_class_once_for_every_method(twin):
    model, x = twin
    with torch.no_grad():
        predicted = model(x).argmax(1)
    kwargs = {
        "gradcam_layer": SHAPES_LAYER,
        "levels": {0.15: ("raw",)},
        "n_samples": 3,
        "methods": ("vanilla", "smoothgrad"),
    }
    for name, value in all_attributions(model, x, None, **kwargs).items():
        torch.testing.assert_close(value, all_attributions(model, x, predicted, **kwargs)[name], msg=name)


def test_all_attributions_leaves_guided_backprop_out_of_a_relu6_model(twin):
    model, x = twin
    relu6 = copy.deepcopy(model)
    for index, module in enumerate(relu6):
        if isinstance(module, nn.ReLU):
            relu6[index] = nn.ReLU6()
    relu6.eval()
    out = all_attributions(relu6, x, gradcam_layer=SHAPES_LAYER, levels={}, ig_steps=2)
    assert "guided_backprop" not in out and list(out) == [
        f for f in FAMILIES if f not in ("smoothgrad", "guided_backprop")
    ]
    with pytest.raises(ValueError, match="ReLU6"):
        all_attributions(relu6, x, gradcam_layer=SHAPES_LAYER, methods=("guided_backprop",))


def test_all_attributions_rejects_bad_arguments(twin):
    model, x = twin
    with pytest.raises(ValueError, match="unknown methods"):
        all_attributions(model, x, gradcam_layer=SHAPES_LAYER, methods=("vanilla", "saliency"))
    with pytest.raises(TypeError, match="not a string"):
        all_attributions(model, x, gradcam_layer=SHAPES_LAYER, methods="vanilla")
    for levels in ({0.1: ("abs", "abs")}, {0.1: ("mean",)}, {0.1: ()}):
        with pytest.raises(ValueError, match="distinct aggregates"):
            all_attributions(model, x, gradcam_layer=SHAPES_LAYER, levels=levels)
    with pytest.raises(ValueError, match="batch_size"):
        all_attributions(model, x, gradcam_layer=SHAPES_LAYER, batch_size=0)
    with pytest.raises(ValueError, match="batch axis"):
        all_attributions(model, x[0], gradcam_layer=SHAPES_LAYER)
    with pytest.raises(ValueError, match="outside the model's classes"):
        all_attributions(model, x, 7, gradcam_layer=SHAPES_LAYER, methods=("vanilla",))  # the twins have 4 classes


def test_a_new_method_is_one_registry_entry(twin, monkeypatch):
    """Register a toy method (it takes only what it needs): all_attributions and attribution_methods pick it up."""
    model, x = twin
    monkeypatch.setattr(methods_module, "REGISTRY", dict(methods_module.REGISTRY))
    seen = {}

    def sign_of_input(model, x, classes, *, seed):
        seen["classes"], seen["seed"] = classes, seed
        return x.sign()

    register(MethodSpec("sign_of_input", sign_of_input, takes=("seed",)))
    out = all_attributions(model, x, 1, gradcam_layer=SHAPES_LAYER, seed=5, levels={}, methods=("sign_of_input",))
    assert list(out) == ["sign_of_input"] and torch.equal(out["sign_of_input"], x.sign())
    assert seen["classes"].tolist() == [1] * len(x) and seen["seed"] == 5
    assert list(all_attributions(model, x, gradcam_layer=SHAPES_LAYER, levels={}))[-1] == "sign_of_input"
    assert "sign_of_input" in attribution_methods(gradcam_layer=SHAPES_LAYER)
    with pytest.raises(ValueError, match="already registered"):
        register(MethodSpec("sign_of_input", sign_of_input))
    with pytest.raises(ValueError, match="unknown options"):
        MethodSpec("needs_too_much", sign_of_input, takes=("temperature",))
