"""Shared test helpers: seeded generators, random images, small models with known gradients, the shipped models.

Factories are fixtures that return functions, so a test asks for ``seeded`` and calls ``seeded(3)``. Models are
built inside ``torch.random.fork_rng``: a helper never changes the global random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from smoothgrad_lib.models import LoadedModel, load_model
from smoothgrad_lib.precision import current_settings

SHAPE = (3, 6, 5)  # (C, H, W) of the small random images: odd sizes catch transposed axes


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def seeded() -> Callable[..., torch.Generator]:
    """``seeded(seed=0)``: a fresh CPU ``torch.Generator`` seeded with ``seed``."""
    return _seeded


@pytest.fixture
def random_images() -> Callable[..., torch.Tensor]:
    """``random_images(batch=2, seed=0, shape=SHAPE)``: (batch, *shape) uniform in [0, 1), from ``seeded(seed)``."""

    def make(batch: int = 2, seed: int = 0, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
        return torch.rand(batch, *shape, generator=_seeded(seed))

    return make


def _built_with_seed(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with the default CPU generator seeded with ``seed``, leaving the global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build().eval()


@pytest.fixture
def linear_model() -> Callable[..., nn.Module]:
    """``linear_model(n_classes=4, seed=0, shape=SHAPE)``: flatten then ``nn.Linear``, in eval mode.

    The gradient of logit k with respect to the input is ``model[1].weight[k].reshape(shape)``, everywhere.
    """

    def make(n_classes: int = 4, seed: int = 0, shape: tuple[int, ...] = SHAPE) -> nn.Module:
        return _built_with_seed(seed, lambda: nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), n_classes)))

    return make


@pytest.fixture
def small_cnn() -> Callable[..., nn.Module]:
    """``small_cnn(activation=nn.Softplus, seed=0, second_activation=None)``: two 3x3 convolutions (8 channels),
    pooling to 2x2, 5 logits. ``second_activation`` (default: ``activation``) follows the second convolution.
    """

    def make(
        activation: type[nn.Module] = nn.Softplus, seed: int = 0, second_activation: type[nn.Module] | None = None
    ) -> nn.Module:
        return _built_with_seed(
            seed,
            lambda: nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                activation(),
                nn.Conv2d(8, 8, 3, padding=1),
                (second_activation or activation)(),
                nn.AdaptiveAvgPool2d(2),
                nn.Flatten(),
                nn.Linear(32, 5),
            ),
        )

    return make


class Quadratic(nn.Module):
    """logit_k(x) = sum over pixels of a_k x^2 (+ b_k x): d logit_k / dx = 2 a_k x (+ b_k), linear in x.

    So the noisy gradient 2 a_k (x + eps) (+ b_k) is linear in the noise: every SmoothGrad aggregate has a closed
    form, and the smoothed gradient equals the gradient for any sigma.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor | None = None) -> None:
        super().__init__()
        self.a = nn.Parameter(a)
        self.b = None if b is None else nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("kchw,bchw->bk", self.a, x.square())
        return logits if self.b is None else logits + torch.einsum("kchw,bchw->bk", self.b, x)


@pytest.fixture
def quadratic_model() -> Callable[..., Quadratic]:
    """``quadratic_model(n_classes=3, shape=SHAPE, seed=1, linear_seed=None)``: a ``Quadratic`` in eval mode.

    Its coefficients ``a`` (n_classes, *shape) are standard normal from ``seeded(seed)``; with ``linear_seed`` it
    also has a linear term ``b`` of the same shape from ``seeded(linear_seed)``, else ``b`` is None.
    """

    def make(
        n_classes: int = 3, shape: tuple[int, ...] = SHAPE, seed: int = 1, linear_seed: int | None = None
    ) -> Quadratic:
        a = torch.randn(n_classes, *shape, generator=_seeded(seed))
        b = None if linear_seed is None else torch.randn(n_classes, *shape, generator=_seeded(linear_seed))
        return Quadratic(a, b).eval()

    return make


@pytest.fixture(scope="session")
def lite0() -> LoadedModel:
    """The default model (EfficientNet-Lite0) on the CPU, loaded once per session: do not modify it."""
    return load_model("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="session")
def relu_twin() -> LoadedModel:
    """The shipped ReLU shapes twin on the CPU, loaded once per session: do not modify it."""
    return load_model("shapes-relu", device="cpu")


@pytest.fixture
def tiny_cnn() -> Callable[[], nn.Module]:
    """``tiny_cnn()``: a ReLU convolution and a linear layer for (3, 4, 4) images, 3 logits, in eval mode."""
    return lambda: _built_with_seed(
        0, lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    )


@pytest.fixture
def linear_contributions() -> Callable[..., tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """``linear_contributions(seed=0, channels=2, size=6)``: (model, x, w) with 4 images x and logits
    (w.x - 10, 0), so p(class 0) = sigmoid(w.x - 10), with w.x = 20 on average and every w_i x_i > 0."""

    def make(seed: int = 0, channels: int = 2, size: int = 6) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        g = _seeded(seed)
        x = torch.rand(4, channels, size, size, generator=g) + 0.1
        w = torch.rand(channels, size, size, generator=g) + 0.01
        w = w * 20 / (w * x).flatten(1).sum(1).mean()
        linear = nn.Linear(channels * size * size, 2)
        with torch.no_grad():
            linear.weight.copy_(torch.stack([w.flatten(), torch.zeros(w.numel())]))
            linear.bias.copy_(torch.tensor([-10.0, 0.0]))
        return nn.Sequential(nn.Flatten(), linear).eval(), x, w

    return make


class Biased(nn.Module):
    """Logits (x_mean, 0, bias): class 2 is top-1 whatever the input; class 0 beats class 1 when the mean is > 0."""

    def __init__(self, bias: float) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1)
        return torch.stack([mean, torch.zeros_like(mean), self.bias.expand_as(mean)], 1)


@pytest.fixture
def biased_model() -> Callable[[float], Biased]:
    """``biased_model(bias)``: a ``Biased`` in eval mode."""
    return lambda bias: Biased(bias).eval()


class Cubic(nn.Module):
    """logit_k(x) = sum a_k x^3: gradient 3 a_k x^2, and E[grad(x + eps)] = 3 a_k (x^2 + sigma^2)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(2, *shape, generator=_seeded(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kchw,bchw->bk", self.a, x**3)


@pytest.fixture
def cubic_model() -> Callable[..., Cubic]:
    """``cubic_model(shape=(2, 4, 4))``: a ``Cubic`` with 2 logits, coefficients standard normal from ``seeded(0)``."""
    return lambda shape=(2, 4, 4): Cubic(shape).eval()


class SettingsProbe(nn.Module):
    """Runs the wrapped model and records the TF32 settings (``precision.current_settings()``) of every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(current_settings())
        return self.model(x)


@pytest.fixture
def settings_probe() -> Callable[[nn.Module], SettingsProbe]:
    """``settings_probe(model)``: a ``SettingsProbe`` around ``model``, in eval mode."""
    return lambda model: SettingsProbe(model).eval()
