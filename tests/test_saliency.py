"""The estimators against closed forms, Captum, and their own contracts."""

import math

import pytest
import torch
from torch import nn

from smoothgrad_lib import smoothgrad, vanilla_gradient
from smoothgrad_lib.aggregates import AGGREGATES
from smoothgrad_lib.noise import noise_std
from smoothgrad_lib.saliency import default_batch_size, noisy_gradients

SHAPE = (3, 6, 5)  # conftest's default image shape


# --- analytic cases -------------------------------------------------------------------------


def test_linear_vanilla_gradient_is_the_weight_row(linear_model, random_images):
    model, x = linear_model(), random_images(3)
    targets = [0, 2, 3]
    grad = vanilla_gradient(model, x, targets)
    expected = model[1].weight[targets].reshape(3, *SHAPE)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("noise_level", [0.05, 0.5, 2.0])
def test_linear_smoothgrad_aggregates(noise_level, linear_model, random_images, seeded):
    model, x = linear_model(), random_images(2)
    w = model[1].weight[1].reshape(*SHAPE).expand(2, *SHAPE)
    results = {
        agg: smoothgrad(model, x, 1, n_samples=7, noise_level=noise_level, aggregate=agg, generator=seeded())
        for agg in AGGREGATES
    }
    torch.testing.assert_close(results["raw"], w)
    torch.testing.assert_close(results["abs"], w.abs())
    torch.testing.assert_close(results["square"], w.square())
    torch.testing.assert_close(results["vargrad"], torch.zeros_like(w), atol=1e-10, rtol=0)


def folded_normal_mean(mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """E|Y| for Y ~ N(mu, sigma^2)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    return sigma * math.sqrt(2 / math.pi) * torch.exp(-mu.square() / (2 * sigma**2)) + mu * (
        1 - 2 * normal.cdf(-mu / sigma)
    )


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_quadratic_matches_closed_form(aggregate, quadratic_model, random_images, seeded):
    """G_i = 2a(x + eps): each aggregate has a closed-form mean and a known Monte-Carlo standard error."""
    model = quadratic_model()
    x = random_images(1, seed=3) * 2 - 0.5  # range about 2, values on both sides of 0
    level, n = 0.2, 4000
    sigma = level * float(x.max() - x.min())  # the noise_level convention under test
    a = model.a[2].detach()
    xs = x[0].double()
    a2 = a.double()
    if aggregate == "raw":
        mean, se = 2 * a2 * xs, 2 * a2.abs() * sigma / math.sqrt(n)
    elif aggregate == "abs":
        folded = folded_normal_mean(xs, sigma)
        mean = 2 * a2.abs() * folded
        se = 2 * a2.abs() * torch.sqrt((xs.square() + sigma**2 - folded.square()) / n)
    elif aggregate == "square":
        mean = 4 * a2.square() * (xs.square() + sigma**2)
        se = 4 * a2.square() * torch.sqrt((4 * xs.square() * sigma**2 + 2 * sigma**4) / n)
    else:  # population variance: expectation (N - 1) / N * Var G
        mean = 4 * a2.square() * sigma**2 * (n - 1) / n
        se = 4 * a2.square() * sigma**2 * math.sqrt(2 / (n - 1))
    result = smoothgrad(model, x, 2, n_samples=n, noise_level=level, aggregate=aggregate, generator=seeded(5))
    z = (result[0].double() - mean) / se
    assert z.abs().max() < 5, f"worst deviation {z.abs().max():.2f} standard errors"


def test_quadratic_detects_wrong_sigma_convention(quadratic_model, random_images, seeded):
    """With sigma = noise_level (not x range) the square aggregate would be off by many standard errors."""
    model, x = quadratic_model(), random_images(1, seed=3) * 2 - 0.5
    result = smoothgrad(model, x, 0, n_samples=4000, noise_level=0.2, aggregate="square", generator=seeded())
    a2, xs = model.a[0].detach().double(), x[0].double()
    wrong = 4 * a2.square() * (xs.square() + 0.2**2)
    right_sigma = 0.2 * float(x.max() - x.min())
    right = 4 * a2.square() * (xs.square() + right_sigma**2)
    err_right = (result[0].double() - right).abs().sum()
    err_wrong = (result[0].double() - wrong).abs().sum()
    assert err_right < 0.2 * err_wrong


def test_absolute_sigma_matches_noise_level_on_unit_range_image(small_cnn, random_images, seeded):
    model = small_cnn()
    x = random_images(1)
    x = (x - x.min()) / (x.max() - x.min())  # range exactly 1
    by_level = smoothgrad(model, x, 0, n_samples=5, noise_level=0.3, generator=seeded())
    by_sigma = smoothgrad(model, x, 0, n_samples=5, sigma=0.3, generator=seeded())
    torch.testing.assert_close(by_level, by_sigma)


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_zero_noise_is_vanilla_gradient(aggregate, small_cnn, random_images):
    model, x = small_cnn(nn.ReLU), random_images(2)
    grad = vanilla_gradient(model, x)
    expected = {"raw": grad, "abs": grad.abs(), "square": grad.square(), "vargrad": torch.zeros_like(grad)}
    result = smoothgrad(model, x, n_samples=4, noise_level=0.0, aggregate=aggregate)
    torch.testing.assert_close(result, expected[aggregate], atol=1e-7, rtol=1e-5)


# --- Captum ---------------------------------------------------------------------------------

captum_attr = pytest.importorskip("captum.attr")


def test_captum_saliency_equals_vanilla_gradient(small_cnn, random_images):
    model, x = small_cnn(nn.ReLU), random_images(3)
    targets = torch.tensor([0, 4, 2])
    theirs = captum_attr.Saliency(model).attribute(x, target=targets, abs=False)
    torch.testing.assert_close(vanilla_gradient(model, x, targets), theirs)


def test_captum_noise_tunnel_one_sample_no_noise(small_cnn, random_images):
    model, x = small_cnn(nn.ReLU), random_images(2)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
    theirs = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=1, stdevs=0.0, target=1, abs=False)
    torch.testing.assert_close(vanilla_gradient(model, x, 1), theirs)


@pytest.mark.parametrize(
    ("aggregate", "nt_type", "abs_flag"),
    [
        ("abs", "smoothgrad", True),
        ("raw", "smoothgrad", False),
        ("square", "smoothgrad_sq", False),
        ("vargrad", "vargrad", False),
    ],
)
def test_captum_noise_tunnel_agrees_in_distribution(aggregate, nt_type, abs_flag, small_cnn, random_images, seeded):
    """Two independent estimates differ by Monte-Carlo error only; ours vs Captum's must too."""
    model, x, sigma, n = small_cnn(), random_images(1), 0.3, 1000
    ours = [smoothgrad(model, x, 3, n_samples=n, sigma=sigma, aggregate=aggregate, generator=seeded(s)) for s in (1, 2)]
    torch.manual_seed(3)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
    theirs = tunnel.attribute(
        x, nt_type=nt_type, nt_samples=n, nt_samples_batch_size=250, stdevs=sigma, target=3, abs=abs_flag
    )
    own_spread = (ours[0] - ours[1]).norm()
    assert (ours[0] - theirs).norm() < 3 * own_spread
    assert own_spread < 0.1 * ours[0].norm()  # the comparison is sharp: MC error is small


# --- contracts ------------------------------------------------------------------------------


def test_same_seed_same_result_bitwise_and_other_seed_differs(small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(2)
    first = smoothgrad(model, x, n_samples=6, generator=seeded(7))
    again = smoothgrad(model, x, n_samples=6, generator=seeded(7))
    other = smoothgrad(model, x, n_samples=6, generator=seeded(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_global_seed_makes_it_reproducible(small_cnn, random_images):
    model, x = small_cnn(), random_images(1)
    torch.manual_seed(11)
    first = smoothgrad(model, x, n_samples=4)
    torch.manual_seed(11)
    assert torch.equal(first, smoothgrad(model, x, n_samples=4))


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_batch_size_does_not_change_the_result(aggregate, small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(3)
    reference = smoothgrad(model, x, n_samples=10, aggregate=aggregate, batch_size=30, generator=seeded())
    for batch_size in (1, 4, 7, None):
        result = smoothgrad(model, x, n_samples=10, aggregate=aggregate, batch_size=batch_size, generator=seeded())
        torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-8)


def test_batch_of_images_equals_first_image_alone(small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(3)
    together = smoothgrad(model, x, n_samples=5, generator=seeded())
    alone = smoothgrad(model, x[0], n_samples=5, generator=seeded())
    torch.testing.assert_close(together[0], alone)


def test_single_image_in_single_image_out(small_cnn, random_images):
    model, x = small_cnn(), random_images(1)[0]
    assert vanilla_gradient(model, x).shape == x.shape
    assert smoothgrad(model, x, n_samples=2).shape == x.shape


def test_targets_none_int_and_per_image(small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(3)
    predicted = model(x).argmax(1)
    torch.testing.assert_close(vanilla_gradient(model, x), vanilla_gradient(model, x, predicted))
    torch.testing.assert_close(vanilla_gradient(model, x, 2), vanilla_gradient(model, x, [2, 2, 2]))
    per_image = vanilla_gradient(model, x, [0, 1, 4])
    for b, target in enumerate([0, 1, 4]):
        torch.testing.assert_close(per_image[b], vanilla_gradient(model, x[b], target))
    none_sg = smoothgrad(model, x, None, n_samples=3, generator=seeded())
    torch.testing.assert_close(none_sg, smoothgrad(model, x, predicted, n_samples=3, generator=seeded()))


def test_no_side_effects_on_input_or_model(small_cnn, random_images):
    model, x = small_cnn(), random_images(2)
    x.requires_grad_(True)
    before_x = x.detach().clone()
    before_params = [p.detach().clone() for p in model.parameters()]
    model[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    vanilla_gradient(model, x)
    for aggregate in AGGREGATES:
        smoothgrad(model, x, n_samples=3, aggregate=aggregate)
    assert torch.equal(x.detach(), before_x) and x.requires_grad and x.grad is None
    assert not model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    for p, before in zip(model.parameters(), before_params, strict=True):
        assert torch.equal(p, before) and p.grad is None


class FlattenedCNN(nn.Module):
    """Convolution, then a flatten of the whole (B, 8, H, W) feature map by ``.view`` or ``.reshape``.

    ``.view`` refuses a channels_last feature map; ``.reshape`` copies it.
    Records the memory layout in which each forward pass receives its input.
    """

    def __init__(self, flatten: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.flatten = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 6 * 5, 4), flatten
        self.layouts: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layouts.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        h = torch.tanh(self.conv(x))
        return self.fc(getattr(h, self.flatten)(h.shape[0], -1))


def test_cpu_layout_channels_last_where_the_model_takes_it_same_result_either_way(random_images, seeded):
    x = random_images(2)
    by_reshape, by_view = FlattenedCNN("reshape").eval(), FlattenedCNN("view").eval()
    results = [noisy_gradients(m, x, n_samples=5, generator=seeded()) for m in (by_reshape, by_view)]
    assert by_reshape.layouts[-1] and not by_view.layouts[-1]  # NHWC copies, and the .view model's fallback
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-7)
    assert results[0].is_contiguous() and x.is_contiguous()


def test_noise_std_per_image():
    x = torch.stack([torch.zeros(*SHAPE), torch.ones(*SHAPE)])
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 2.0, -3.0
    torch.testing.assert_close(noise_std(x, noise_level=0.1).flatten(), torch.tensor([0.2, 0.4]))
    torch.testing.assert_close(noise_std(x, sigma=0.5).flatten(), torch.tensor([0.5, 0.5]))


def test_default_batch_size_scales_with_image_size():
    assert default_batch_size(torch.zeros(1, 3, 224, 224)) == 10
    assert default_batch_size(torch.zeros(1, 3, 64, 64)) > 100


# --- bad input ------------------------------------------------------------------------------


class Unbatched(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum((1, 2, 3))


BAD_CALLS = [
    (TypeError, "torch.Tensor", lambda m, x: vanilla_gradient(m, x.numpy())),
    (TypeError, "floating-point", lambda m, x: vanilla_gradient(m, (x * 255).to(torch.uint8))),
    (ValueError, "shape", lambda m, x: vanilla_gradient(m, x[0, 0])),
    (ValueError, "shape", lambda m, x: smoothgrad(m, x[None])),
    (
        ValueError,
        "NaN or inf",
        lambda m, x: vanilla_gradient(m, x.index_put((torch.tensor(0),), torch.tensor(float("nan")))),
    ),
    (ValueError, "NaN or inf", lambda m, x: smoothgrad(m, x / 0.0)),
    (ValueError, "n_samples", lambda m, x: smoothgrad(m, x, n_samples=0)),
    (ValueError, "n_samples", lambda m, x: smoothgrad(m, x, n_samples=2.5)),
    (ValueError, "noise_level", lambda m, x: smoothgrad(m, x, noise_level=-0.1)),
    (ValueError, "sigma", lambda m, x: smoothgrad(m, x, sigma=-1.0)),
    (ValueError, "not both", lambda m, x: smoothgrad(m, x, noise_level=0.2, sigma=0.1)),
    (ValueError, "aggregate", lambda m, x: smoothgrad(m, x, aggregate="mean")),
    (ValueError, "batch_size", lambda m, x: smoothgrad(m, x, batch_size=0)),
    (ValueError, "outside the model's classes", lambda m, x: vanilla_gradient(m, x, 5)),
    (ValueError, "outside the model's classes", lambda m, x: smoothgrad(m, x, -1, n_samples=2)),
    (ValueError, "one class per image", lambda m, x: vanilla_gradient(m, x, [0, 1, 2])),
    (TypeError, "integer class indices", lambda m, x: vanilla_gradient(m, x, torch.tensor([0.0, 1.0]))),
    (TypeError, "nn.Module", lambda m, x: vanilla_gradient(lambda t: t, x)),
    (ValueError, "model.eval()", lambda m, x: vanilla_gradient(m.train(), x)),
    (ValueError, "model.eval()", lambda m, x: smoothgrad(m.train(), x)),
    (ValueError, r"\(B, classes\)", lambda m, x: vanilla_gradient(Unbatched().eval(), x)),
    (ValueError, r"\(B, classes\)", lambda m, x: smoothgrad(Unbatched().eval(), x, target=0)),
]


@pytest.mark.parametrize(("error", "message", "call"), BAD_CALLS)
def test_bad_input_is_a_clear_error(error, message, call, small_cnn, random_images):
    model, x = small_cnn(), random_images(2)
    with pytest.raises(error, match=message):
        call(model, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device type (CUDA) for the generator")
def test_a_cuda_generator_for_a_cpu_x_is_a_clear_error(small_cnn, random_images):
    with pytest.raises(ValueError, match="generator is on cuda:0 but x is on cpu: use a generator on x's device"):
        smoothgrad(small_cnn(), random_images(1), generator=torch.Generator(device="cuda"))


def test_training_mode_is_never_switched_silently(small_cnn, random_images):
    model = small_cnn().train()
    with pytest.raises(ValueError, match="training mode"):
        smoothgrad(model, random_images(1))
    assert model.training


def test_noisy_gradients_are_what_smoothgrad_aggregates(small_cnn, random_images, seeded):
    model, x = small_cnn(), random_images(2)
    samples = noisy_gradients(model, x, n_samples=6, batch_size=5, generator=seeded(4))
    assert samples.shape == (2, 6, *SHAPE)
    for aggregate, reduce in {"raw": lambda g: g, "abs": torch.abs, "square": torch.square}.items():
        expected = reduce(samples).mean(1)
        result = smoothgrad(model, x, n_samples=6, aggregate=aggregate, generator=seeded(4))
        torch.testing.assert_close(result, expected)
    vargrad = smoothgrad(model, x, n_samples=6, aggregate="vargrad", generator=seeded(4))
    torch.testing.assert_close(vargrad, samples.var(1, unbiased=False), rtol=1e-4, atol=1e-9)
    assert noisy_gradients(model, x[0], n_samples=3).shape == (3, *SHAPE)
    with pytest.raises(ValueError, match="n_samples"):
        noisy_gradients(model, x, n_samples=0)


def test_noisy_gradients_return_the_logits_of_the_copies_they_differentiate(quadratic_model, random_images, seeded):
    # Quadratic: G_i = 2 a_t (x + eps_i), so each noisy copy is G_i / (2 a_t) and its logits are known.
    model, x, targets = quadratic_model(), random_images(2), torch.tensor([2, 0])
    grads, logits = noisy_gradients(
        model, x, targets, n_samples=5, noise_level=0.2, batch_size=3, generator=seeded(5), return_logits=True
    )
    assert logits.shape == (2, 5, 3) and not logits.requires_grad
    copies = grads / (2 * model.a[targets][:, None])
    with torch.no_grad():
        expected = model(copies.flatten(0, 1)).reshape(2, 5, 3)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        grads, noisy_gradients(model, x, targets, n_samples=5, noise_level=0.2, generator=seeded(5))
    )
    one_grads, one_logits = noisy_gradients(model, x[0], 1, n_samples=2, noise_level=0.0, return_logits=True)
    assert one_grads.shape == (2, *SHAPE) and one_logits.shape == (2, 3)
    torch.testing.assert_close(one_logits, model(x[:1]).detach().expand(2, 3))
