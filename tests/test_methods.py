"""smoothgrad_lib.methods: shapes, determinism, Captum's completeness, hand-computed Grad-CAM, Guided Backprop and
blurred vanilla, the ReLU6 guard of Guided Backprop, smoothed methods against Captum's NoiseTunnel and a closed form,
and all_attributions against the functions it stands for."""

import copy
from collections.abc import Callable

import captum.attr
import pytest
import torch
from captum.attr import NoiseTunnel
from torch import nn

from smoothgrad_lib import methods as methods_module
from smoothgrad_lib import smoothgrad, vanilla_gradient
from smoothgrad_lib.aggregates import AGGREGATES
from smoothgrad_lib.methods import (
    FAMILIES,
    REGISTRY,
    MethodSpec,
    all_attributions,
    attribute,
    attribution_methods,
    entries,
    parse_entry,
    register,
    smoothed,
    smoothed_aggregates,
)
from smoothgrad_lib.noise import NormalStream
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.twins import load_twin

SHAPES_LAYER = "14"  # the last ReLU of ShapesCNN, 8x8


def seeded_net(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``build()`` in eval mode, its weights from ``seed`` rather than the global random state (left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


@pytest.fixture(scope="module")
def twin():
    return load_twin("relu"), make_shapes(2, seed=11).images


def test_registry_names():
    names = list(attribution_methods(gradcam_layer=SHAPES_LAYER, levels=(0.1, 0.2), aggregates=("abs", "square")))
    assert names == [
        "vanilla",
        "smoothgrad_abs_0.1",
        "smoothgrad_square_0.1",
        "smoothgrad_abs_0.2",
        "smoothgrad_square_0.2",
        "integrated_gradients",
        "gradient_x_input",
        "grad_cam",
        "guided_backprop",
        "blurred_vanilla",
        "random",
    ]


def test_parse_entry_inverts_entries_for_every_registry_method():
    levels = {0.05: AGGREGATES, 0.3: ("abs",), 1.25e-3: ("raw",)}
    for name, spec, own in entries(REGISTRY.values(), levels):
        assert parse_entry(name) == (spec, own)
    for bad in (
        "smoothgrad",
        "smoothgrad_abs",
        "smoothgrad_max_0.15",
        "smoothgrad_abs_0.150",
        "vanilla_abs_0.15",
        "smoothgrad_abs_x",
        "random_abs_0.15",
        "nope",
    ):
        with pytest.raises(ValueError, match="unknown method"):
            parse_entry(bad)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_every_method_has_the_right_shape_is_deterministic_and_leaves_model_and_x_alone(twin):
    model, x = twin
    x_before, params_before = x.clone(), [p.clone() for p in model.parameters()]
    methods = attribution_methods(gradcam_layer=SHAPES_LAYER, n_samples=4, aggregates=("abs",), ig_steps=8)
    one_value_per_pixel = {"grad_cam", "blurred_vanilla", "random"}
    for name, method in methods.items():
        first = method(model, x, None, generator=torch.Generator().manual_seed(0))
        again = method(model, x, None, generator=torch.Generator().manual_seed(0))
        channels = 1 if name in one_value_per_pixel else 3
        assert first.shape == (2, channels, 64, 64) and torch.isfinite(first).all() and not first.requires_grad, name
        assert torch.equal(first, again), name
        if name == "random" or name.startswith("smoothgrad"):
            assert not torch.equal(first, method(model, x, None, generator=torch.Generator().manual_seed(1))), name
    assert torch.equal(x, x_before)
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), params_before, strict=True))


def test_smoothed_aggregates_equal_the_registry_entries(twin):
    model, x = twin
    spec = REGISTRY["smoothgrad"]
    shared = smoothed_aggregates(
        spec, model, x, n_samples=6, noise_level=0.2, generator=torch.Generator().manual_seed(3)
    )
    methods = attribution_methods(gradcam_layer=SHAPES_LAYER, n_samples=6, levels=(0.2,))
    for aggregate, value in shared.items():
        alone = methods[f"smoothgrad_{aggregate}_0.2"](model, x, None, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(value, alone, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="not a smoothed method"):
        smoothed_aggregates(REGISTRY["vanilla"], model, x)


def test_smoothgrad_is_smoothed_vanilla_and_bitwise_saliency_smoothgrad(twin):
    model, x = twin
    spec = REGISTRY["smoothgrad"]
    assert spec.smooths is REGISTRY["vanilla"] and REGISTRY["vanilla"].function is vanilla_gradient
    for aggregate in AGGREGATES:
        options = {"n_samples": 5, "noise_level": 0.2, "aggregate": aggregate, "batch_size": 3}
        ours = attribute(spec, model, x, 1, generator=torch.Generator().manual_seed(4), **options)
        assert torch.equal(ours, smoothgrad(model, x, 1, generator=torch.Generator().manual_seed(4), **options))


def _on_captum_noise(monkeypatch, seed: int, x: torch.Tensor) -> None:
    """Make Captum's NoiseTunnel draw its noise from noise.NormalStream as smoothgrad does (one partition)."""
    stream = NormalStream(x.shape[1:], torch.Generator().manual_seed(seed), x.device, x.dtype)

    def add_noise(inputs: torch.Tensor, stdev: float, copies: int) -> torch.Tensor:
        return inputs.repeat_interleave(copies, dim=0) + stdev * stream.take(len(inputs) * copies)

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))


@pytest.mark.parametrize(
    "name, captum_options", [("integrated_gradients", {"n_steps": 4, "baselines": 0.0}), ("gradient_x_input", {})]
)
@pytest.mark.parametrize(
    "aggregate, nt_type", [("raw", "smoothgrad"), ("square", "smoothgrad_sq"), ("vargrad", "vargrad")]
)
def test_smoothed_methods_equal_captum_noise_tunnel_on_the_same_noise(
    twin, monkeypatch, name, captum_options, aggregate, nt_type
):
    model, x = twin
    x = x.clone()
    x[:, :, 0, 0], x[:, :, -1, -1] = 0.0, 1.0  # every image's range is 1, so noise_level is Captum's stdevs
    spec = REGISTRY[f"smoothgrad_{name}"]
    ours = attribute(
        spec,
        model,
        x,
        [1, 2],
        n_samples=5,
        noise_level=0.2,
        aggregate=aggregate,
        ig_steps=4,
        batch_size=3,
        generator=torch.Generator().manual_seed(7),
    )
    _on_captum_noise(monkeypatch, 7, x)
    captum_method = {
        "integrated_gradients": captum.attr.IntegratedGradients,
        "gradient_x_input": captum.attr.InputXGradient,
    }[name](model)
    theirs = NoiseTunnel(captum_method).attribute(
        x.clone().requires_grad_(True),
        nt_type=nt_type,
        nt_samples=5,
        stdevs=0.2,
        target=torch.tensor([1, 2]),
        **captum_options,
    )
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-6)


def test_raw_smoothgrad_of_gradient_x_input_of_a_linear_model_is_x_times_w():
    # A(x) = x * w for f(x) = w . x + b: the mean of (x + eps_i) * w is x * w + w * mean(eps_i); antithetic pairs
    # cancel mean(eps_i) exactly, iid draws within a few standard errors of it.
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    expected = x * model[1].weight[2].reshape(1, 3, 2, 2)
    spec = smoothed(REGISTRY["gradient_x_input"])
    exact = attribute(
        spec,
        model,
        x,
        2,
        n_samples=8,
        aggregate="raw",
        sampling="antithetic",
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(exact, expected)
    drawn = attribute(
        spec, model, x, 2, n_samples=400, noise_level=0.1, aggregate="raw", generator=torch.Generator().manual_seed(1)
    )
    sigma = 0.1 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).reshape(-1, 1, 1, 1)
    stderr = sigma * model[1].weight[2].abs().reshape(1, 3, 2, 2) / 400**0.5
    assert ((drawn - expected).abs() <= 4 * stderr + 1e-6).all()


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
@pytest.mark.parametrize("name", [name for name, spec in REGISTRY.items() if spec.smooths is not None])
def test_every_smoothed_method_is_independent_of_the_batch_size(twin, name):
    model, x = twin
    options = {"n_samples": 4, "noise_level": 0.2, "aggregate": "abs", "ig_steps": 3, "gradcam_layer": SHAPES_LAYER}
    runs = [
        attribute(REGISTRY[name], model, x, 1, batch_size=size, generator=torch.Generator().manual_seed(2), **options)
        for size in (1, 3, 8)
    ]
    assert runs[0].shape[0] == 2 and torch.isfinite(runs[0]).all()
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], rtol=1e-4, atol=1e-6)


def test_smoothed_refuses_a_random_method_and_attribute_unknown_options(twin):
    model, x = twin
    with pytest.raises(ValueError, match="is random"):
        smoothed(REGISTRY["random"])
    with pytest.raises(ValueError, match="unknown options"):
        attribute(REGISTRY["vanilla"], model, x, seed=3)
    with pytest.raises(ValueError, match="smoothed methods only"):
        attribute(REGISTRY["vanilla"], model, x, sampling="antithetic")


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
    total = ig(model, x).flatten(1).sum(1)
    error = (total - difference).abs() / difference.abs()
    assert error.max() < tolerance, error


def test_grad_cam_of_a_global_average_pooling_network_is_the_class_activation_map():
    # logit_c = sum_k w_ck mean_ij A_k(i, j): Grad-CAM's weight of channel k is w_ck / (h w), so its map is
    # ReLU(sum_k w_ck A_k) / (h w) (Zhou et al.'s CAM over h w), at the input's size (padding 1: no upsampling).
    model = seeded_net(
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
        )
    )
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        activations = model[1](model[0](x))
    expected = (activations * model[4].weight[1].reshape(1, 4, 1, 1)).sum(1, keepdim=True).relu() / 36
    cam = attribute(REGISTRY["grad_cam"], model, x, 1, gradcam_layer="1")
    assert expected.flatten(1).amax(1).gt(0).all()
    torch.testing.assert_close(cam, expected)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_guided_backprop_of_a_two_layer_network_by_hand():
    # y = W2 ReLU(W1 x + b1): the gradient passes the ReLU where z > 0; Guided Backprop passes only the positive
    # part of the incoming gradient there, dx = W1^T ((z > 0) * max(W2_c, 0)).
    model = seeded_net(lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)))
    x = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gate = (model[1](x.flatten(1)) > 0).float()
    w1, w2 = model[1].weight.detach(), model[3].weight[0].detach()
    expected = ((gate * w2.clamp_min(0)) @ w1).reshape(1, 3, 2, 2)
    guided = attribute(REGISTRY["guided_backprop"], model, x, 0)
    torch.testing.assert_close(guided, expected)
    assert not torch.allclose(guided, ((gate * w2) @ w1).reshape(1, 3, 2, 2))  # the vanilla gradient differs


def test_blurred_vanilla_of_a_one_pixel_gradient_is_the_gaussian_kernel():
    # f(x) = 2 x[c=1, 8, 8]: the vanilla map is 2 at one pixel, its blur is 2 x the normalised Gaussian of
    # sigma 1.5 pixels truncated at ceil(3 sigma) = 5 pixels, centred there.
    weight = torch.zeros(2, 3 * 16 * 16)
    weight[0, 1 * 256 + 8 * 16 + 8] = -2.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2, bias=False)).eval()
    model[1].weight.data = weight
    offsets = torch.arange(-5, 6, dtype=torch.float32)
    kernel = (-0.5 * (offsets / 1.5) ** 2).exp()
    kernel /= kernel.sum()
    expected = torch.zeros(1, 1, 16, 16)
    expected[0, 0, 3:14, 3:14] = 2 * torch.outer(kernel, kernel)
    blurred = attribute(REGISTRY["blurred_vanilla"], model, torch.rand(1, 3, 16, 16), 0, blur_sigma=1.5)
    torch.testing.assert_close(blurred, expected)


def test_lite0_grad_cam_works_and_guided_backprop_refuses_relu6():
    from smoothgrad_lib.models import load_model

    model = load_model(device="cpu").model
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    methods = attribution_methods(gradcam_layer="1._bn1")
    assert methods["grad_cam"](model, x, 281).shape == (1, 1, 224, 224)
    with pytest.raises(ValueError, match="ReLU6"):
        methods["guided_backprop"](model, x, 281)


def test_bad_layer_and_input():
    model, x = load_twin("relu"), make_shapes(1, seed=0).images
    with pytest.raises(AttributeError):
        attribution_methods(gradcam_layer="nope")["grad_cam"](model, x)
    with pytest.raises(ValueError, match="batch axis"):
        attribution_methods(gradcam_layer=SHAPES_LAYER)["gradient_x_input"](model, x[0])


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
        expected = registry[name](model, x, target, generator=generator)
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


def test_all_attributions_noise_device_cpu_draws_from_cpu_generators(twin, monkeypatch):
    """On the CPU both choices are the same generators, so the same maps, bit for bit; ``"cpu"`` asks for a CPU
    generator for every random method and level (on CUDA, tests/test_cuda.py compares the maps with the CPU's)."""
    model, x = twin
    kwargs = {"gradcam_layer": SHAPES_LAYER, "seed": 2, "levels": {0.2: ("abs",), 0.1: ("raw",)}, "n_samples": 3}
    kwargs |= {"methods": ("smoothgrad", "random")}
    default = all_attributions(model, x, **kwargs)
    asked = []
    make = methods_module.noise_generator
    monkeypatch.setattr(
        methods_module, "noise_generator", lambda seed, x, where: asked.append((seed, where)) or make(seed, x, where)
    )
    on_cpu = all_attributions(model, x, noise_device="cpu", **kwargs)
    assert sorted(asked) == [(2, "cpu"), (3, "cpu"), (4, "cpu")]
    assert list(on_cpu) == list(default) and all(torch.equal(on_cpu[k], default[k]) for k in default)
    with pytest.raises(ValueError, match="noise_device must be 'input' .* or 'cpu'"):
        all_attributions(model, x, noise_device="cuda", **kwargs)


def test_a_new_method_is_one_registry_entry(twin, monkeypatch):
    """Register a toy method (it takes only what it needs): all_attributions and attribution_methods pick it up."""
    model, x = twin
    monkeypatch.setattr(methods_module, "REGISTRY", dict(methods_module.REGISTRY))
    seen = {}

    def sign_of_input(model, x, classes, *, generator=None):
        seen["classes"], seen["draw"] = classes, torch.rand(1, generator=generator)
        return x.sign()

    register(MethodSpec("sign_of_input", sign_of_input, takes=("generator",)))
    out = all_attributions(model, x, 1, gradcam_layer=SHAPES_LAYER, seed=5, levels={}, methods=("sign_of_input",))
    assert list(out) == ["sign_of_input"] and torch.equal(out["sign_of_input"], x.sign())
    assert seen["classes"].tolist() == [1] * len(x)
    assert torch.equal(seen["draw"], torch.rand(1, generator=torch.Generator().manual_seed(5)))
    assert list(all_attributions(model, x, gradcam_layer=SHAPES_LAYER, levels={}))[-1] == "sign_of_input"
    assert "sign_of_input" in attribution_methods(gradcam_layer=SHAPES_LAYER)
    with pytest.raises(ValueError, match="already registered"):
        register(MethodSpec("sign_of_input", sign_of_input))
    with pytest.raises(ValueError, match="unknown options"):
        MethodSpec("needs_too_much", sign_of_input, takes=("temperature",))
