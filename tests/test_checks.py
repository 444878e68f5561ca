"""The front-door checks every public estimator, method and probe runs before any forward pass: the images must be
where the model is, of its dtype, channels first, and gradients must be possible (no inference mode).

On the CPU a model on the ``meta`` device stands in for a CUDA or MPS model: without the check the user gets an
error from inside PyTorch instead of the library's advice."""

from functools import partial

import pytest
import torch
from torch import nn

from smoothgrad_lib import noisy_gradients, smoothgrad, smoothgrad_estimate, vanilla_gradient
from smoothgrad_lib.faithfulness import deletion_curve, infidelity
from smoothgrad_lib.lrp import lrp
from smoothgrad_lib.methods import all_attributions
from smoothgrad_lib.probes import taylor_bias
from smoothgrad_lib.smoothing import stein_gradient

ESTIMATORS = {
    "vanilla_gradient": vanilla_gradient,
    "smoothgrad": partial(smoothgrad, n_samples=2),
    "smoothgrad_estimate": partial(smoothgrad_estimate, n_samples=2),
    "noisy_gradients": partial(noisy_gradients, n_samples=2),
    "stein_gradient": partial(stein_gradient, n_samples=2),
    "all_attributions": partial(all_attributions, levels={}, gradcam_layer="2"),
    "deletion_curve": lambda model, x: deletion_curve(
        model, x, torch.rand(x.shape[0], *x.shape[2:]), 0, baseline="black", steps=2
    ),
    "lrp": lrp,
    "infidelity": lambda model, x: infidelity(model, lambda images: images, x, 0, n_samples=2),
    "taylor_bias": lambda model, x: taylor_bias(
        model, x[0], 0, sigmas=[0.1], n_pairs=2, generator=torch.Generator().manual_seed(0)
    ),
}


@pytest.fixture
def model_and_images(small_cnn, random_images):
    return small_cnn(nn.ReLU), random_images(2)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_images_on_another_device_than_the_model_are_refused_with_the_fix(name, model_and_images):
    model, x = model_and_images
    on_meta = model.to("meta")  # stands in for cuda / mps: a CPU image must not reach it
    with pytest.raises(ValueError, match=r"x is on cpu but the model is on meta: .*x\.to\('meta'\)"):
        ESTIMATORS[name](on_meta, x)


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_images_of_another_dtype_than_the_model_are_refused_with_the_fix(name, dtype, model_and_images):
    model, x = model_and_images
    with pytest.raises(TypeError, match=rf"x is {dtype} but the model's weights are torch.float32: .*x\.float\(\)"):
        ESTIMATORS[name](model, x.to(dtype))


def test_a_float64_model_asks_for_its_own_dtype(model_and_images):
    model, x = model_and_images
    with pytest.raises(TypeError, match=r"x = x.to\(torch.float64\)"):
        vanilla_gradient(model.double(), x)


@pytest.mark.parametrize(
    ("shape", "fix"), [((6, 5, 3), r"x\.permute\(2, 0, 1\)"), ((2, 6, 5, 3), r"x\.permute\(0, 3, 1, 2\)")]
)
def test_channels_last_images_are_recognised(shape, fix, small_cnn):
    with pytest.raises(ValueError, match=rf"channels last, as images are stored \(H, W, C\).*{fix}"):
        smoothgrad(small_cnn(), torch.rand(shape), n_samples=2)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_inference_mode_is_detected_with_advice(name, model_and_images):
    model, x = model_and_images
    with torch.inference_mode(), pytest.raises(ValueError, match=r"inside torch.inference_mode\(\).*outside"):
        ESTIMATORS[name](model, x)


def test_images_made_in_inference_mode_are_refused_with_the_fix(model_and_images):
    model, x = model_and_images
    with torch.inference_mode():
        frozen = x.clone()
    with pytest.raises(ValueError, match=r"made inside torch.inference_mode\(\).*x\.clone\(\)"):
        smoothgrad(model, frozen, n_samples=2)
    assert smoothgrad(model, frozen.clone(), n_samples=2).shape == x.shape


def test_no_grad_around_a_call_is_fine(model_and_images):
    model, x = model_and_images
    with torch.no_grad():
        inside = vanilla_gradient(model, x)
    assert torch.equal(inside, vanilla_gradient(model, x))


def test_the_checks_let_a_correct_call_through_unchanged(model_and_images):
    model, x = model_and_images
    before = x.clone()
    assert vanilla_gradient(model, x).shape == x.shape
    assert torch.equal(x, before)


def test_a_model_with_buffers_only_is_checked_too(random_images):
    from smoothgrad_lib.models import IMAGENET_MEAN, IMAGENET_STD, Normalize

    normalise_only = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD)).eval().to("meta")
    assert not list(normalise_only.parameters()) and list(normalise_only.buffers())
    with pytest.raises(ValueError, match=r"x is on cpu but the model is on meta"):
        vanilla_gradient(normalise_only, random_images(2))


def test_a_model_of_mixed_dtypes_takes_the_dtype_of_any_of_its_layers(random_images):
    class MixedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(5, dtype=torch.float64))  # registered first, float64
            self.conv = nn.Conv2d(3, 5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3)).double() * self.scale

    x = random_images(2)
    assert vanilla_gradient(MixedHead().eval(), x).shape == x.shape  # float32 images are right for its conv


def test_channels_last_is_judged_by_the_first_convolution(random_images):
    multispectral = nn.Sequential(nn.Conv2d(13, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.rand(2, 13, 8, 4)  # 13 bands, 8 x 4 pixels: channels first although its last axis is 4
    assert vanilla_gradient(multispectral, x).shape == x.shape


def test_complex_images_get_their_own_advice(model_and_images):
    model, x = model_and_images
    with pytest.raises(TypeError, match=r"real floating-point tensor.*x\.real or x\.abs\(\)"):
        vanilla_gradient(model, torch.complex(x, x))
