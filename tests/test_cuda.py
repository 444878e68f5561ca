"""On a CUDA GPU: the same numbers as on the CPU, reproducible runs, scoped TF32, memory set by batch_size.

Skipped without a GPU (``-m cuda`` selects these tests; ``-m "not cuda"`` leaves them out).
Tolerances, and why they hold on both devices:

* Gradients in full float32 differ between devices only by summation order
  (about 1e-7 relative per operation): 1e-5 relative for the shapes twins, which
  have four convolutions and (for the data used here) no ReLU gate within
  rounding of its threshold. EfficientNet-Lite0 is deep enough that a few
  ReLU6 gates at their thresholds flip: 0.3% was measured on an H200 with TF32
  off (14% with it on), so it gets 1%.
* SmoothGrad on the two devices draws different noise (CPU and CUDA generators
  differ), so either the noisy points are drawn once on the CPU and the
  gradients compared point by point, or a CPU generator serves both devices
  (the same points again), or the two means are compared within their
  Monte-Carlo standard errors.
* Forward passes alone (deletion curves, ``top_k``) compare probabilities:
  1e-4 absolute, ten times the float32 rounding of logits of a few units.
"""

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from smoothgrad_lib import load_image, load_model, smoothgrad, smoothgrad_estimate, vanilla_gradient
from smoothgrad_lib.faithfulness import deletion_curve
from smoothgrad_lib.methods import all_attributions, explanation_function
from smoothgrad_lib.noise import NormalStream, noise_std, random_draws
from smoothgrad_lib.noise import seeded_generator as generator
from smoothgrad_lib.precision import current_settings, float32_precision
from smoothgrad_lib.probes import directional_slice, gradients_at, increment_scaling
from smoothgrad_lib.shapes import make_shapes

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
TWINS = ("shapes-relu", "shapes-softplus")


@pytest.fixture(scope="module")
def twins() -> dict[str, tuple[nn.Module, nn.Module]]:
    """Each shapes twin as (CPU model, CUDA copy)."""
    models = {}
    for name in TWINS:
        model = load_model(name, device="cpu").model
        models[name] = (model, copy.deepcopy(model).to(CUDA))
    return models


@pytest.fixture(scope="module")
def lite0() -> tuple[nn.Module, nn.Module]:
    model = load_model("efficientnet-lite0", device="cpu").model
    return model, copy.deepcopy(model).to(CUDA)


@pytest.fixture(scope="module")
def shapes() -> torch.Tensor:
    return make_shapes(8, seed=0).images


@pytest.fixture
def deterministic(monkeypatch):
    """``torch.use_deterministic_algorithms(True)`` for one test; the caller's setting comes back afterwards."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it in deterministic mode
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image ``||a - b|| / ||b||`` over C x H x W, on the CPU: (B,)."""
    a, b = a.detach().cpu().double().flatten(1), b.detach().cpu().double().flatten(1)
    return (a - b).norm(dim=1) / b.norm(dim=1)


@pytest.mark.parametrize("name", TWINS)
def test_vanilla_gradients_of_the_twins_match_the_cpu_even_with_the_callers_tf32_on(name, twins, shapes):
    cpu_model, cuda_model = twins[name]
    on_cpu = vanilla_gradient(cpu_model, shapes)
    with float32_precision(tf32=True):  # the caller allows TF32 (PyTorch's own default for cuDNN)
        on_cuda = vanilla_gradient(cuda_model, shapes.to(CUDA))
    assert on_cuda.device.type == "cuda"
    assert relative_l2(on_cuda, on_cpu).max() <= 1e-5


def test_lite0_gradient_matches_the_cpu_within_one_percent(lite0):
    x = torch.stack([load_image(name) for name in ("chelsea", "coffee")])
    on_cpu = vanilla_gradient(lite0[0], x)
    on_cuda = vanilla_gradient(lite0[1], x.to(CUDA))
    assert relative_l2(on_cuda, on_cpu).max() <= 1e-2  # H200, TF32 off: 0.3%; TF32 on: 14%


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0), reason="TF32 needs Ampere or later"
)
def test_tf32_opt_in_changes_the_lite0_gradient(lite0):
    """The opt-in is real: TF32 moves Lite0's gradient by far more than float32 rounding does."""
    x = load_image("chelsea").to(CUDA)
    full, fast = vanilla_gradient(lite0[1], x[None]), vanilla_gradient(lite0[1], x[None], tf32=True)
    assert relative_l2(fast, full).item() > 1e-3


@pytest.mark.parametrize("name", TWINS)
def test_notebook_01_line_has_the_cpu_increment_scaling(name, twins, shapes):
    """Notebook 01: the logit and its derivative along a random line, and how their increments scale.

    With TF32 the twins' logits became jagged on an H200; in full float32 the
    increment-scaling exponent (1 = smooth, 0 = jumps) must match the CPU's.
    """
    ts = torch.linspace(-0.02, 0.02, 201)
    direction = torch.randn(shapes[0].shape, generator=generator(0))
    target = int(twins[name][0](shapes[:1]).argmax())
    curves = []
    for model in twins[name]:
        device = next(model.parameters()).device
        curves.append(
            directional_slice(model, shapes[0].to(device), target, direction=direction.to(device), ts=ts.to(device))
        )
    (logit_cpu, slope_cpu), (logit_cuda, slope_cuda) = curves
    for on_cpu, on_cuda in ((logit_cpu, logit_cuda), (slope_cpu, slope_cuda)):
        assert increment_scaling(on_cuda)[1] == pytest.approx(increment_scaling(on_cpu)[1], abs=0.05)
    assert torch.allclose(slope_cuda.cpu(), slope_cpu, rtol=1e-4, atol=1e-4 * float(slope_cpu.abs().max()))


@pytest.mark.parametrize(("name", "tolerance"), [("shapes-softplus", 1e-5), ("shapes-relu", 1e-4)])
def test_smoothgrad_at_the_same_noisy_points_matches_the_cpu(name, tolerance, twins, shapes):
    """The noise is drawn once on the CPU; every noisy gradient and the SmoothGrad mean (abs) agree.

    1e-5 relative for the smooth twin; among 32 noisy points x ~100k ReLU units a
    gate within float rounding of zero can flip, moving one gradient by about
    one unit's share (~1e-5), hence 1e-4 for the ReLU twin.
    """
    x, n = shapes[0], 32
    sigma = noise_std(x[None], noise_level=0.15)[0]
    points = x[None] + sigma * torch.randn((n, *x.shape), generator=generator(1))
    target = int(twins[name][0](x[None]).argmax())
    on_cpu = gradients_at(twins[name][0], points, target)
    on_cuda = gradients_at(twins[name][1], points.to(CUDA), target)
    assert relative_l2(on_cuda, on_cpu).max() <= tolerance
    assert relative_l2(on_cuda.abs().mean(0, keepdim=True), on_cpu.abs().mean(0, keepdim=True)).item() <= tolerance


def test_cpu_draws_reach_cuda_bit_for_bit_through_pinned_memory():
    shape = (3, 5, 7)
    moved = random_draws(torch.randn, shape, generator(7), CUDA, torch.float32)
    assert moved.device.type == "cuda" and torch.equal(moved.cpu(), torch.randn(shape, generator=generator(7)))
    copies = torch.Size((3, 64, 64))
    on_cuda = NormalStream(copies, generator(8), CUDA, torch.float32).take(100)  # two blocks
    on_cpu = NormalStream(copies, generator(8), torch.device("cpu"), torch.float32).take(100)
    assert on_cuda.device.type == "cuda" and torch.equal(on_cuda.cpu(), on_cpu)


@pytest.mark.parametrize(("name", "tolerance"), [("shapes-softplus", 1e-5), ("shapes-relu", 1e-4)])
def test_smoothgrad_with_a_cpu_generator_on_cuda_is_the_cpu_run(name, tolerance, twins, shapes):
    """A CPU generator gives x on CUDA the CPU's noisy points: the CPU's result to float rounding (the tolerances of
    the same noisy points above); a CUDA generator's different noise lands much further away."""
    cpu_model, cuda_model = twins[name]
    x, kwargs = shapes[:2], {"n_samples": 16, "noise_level": 0.15, "batch_size": 8}
    on_cpu = smoothgrad(cpu_model, x, **kwargs, generator=generator(6))
    on_cuda = smoothgrad(cuda_model, x.to(CUDA), **kwargs, generator=generator(6))
    assert on_cuda.device.type == "cuda"
    assert relative_l2(on_cuda, on_cpu).max() <= tolerance
    cuda_noise = smoothgrad(cuda_model, x.to(CUDA), **kwargs, generator=generator(6, "cuda"))
    assert relative_l2(cuda_noise, on_cpu).min() > 100 * tolerance


def test_all_attributions_and_explanation_functions_with_cpu_noise_match_the_cpu(twins, shapes):
    """``noise_device="cpu"``: the random map is the CPU's bit for bit, the smoothed maps to float rounding."""
    cpu_model, cuda_model = twins["shapes-softplus"]
    x = shapes[:2]
    kwargs = {"gradcam_layer": "", "levels": {0.15: ("abs", "raw"), 0.3: ("abs",)}, "n_samples": 8}
    kwargs |= {"methods": ("smoothgrad", "random"), "noise_device": "cpu"}
    on_cpu = all_attributions(cpu_model, x, **kwargs)
    on_cuda = all_attributions(cuda_model, x.to(CUDA), **kwargs)
    assert list(on_cuda) == list(on_cpu) and torch.equal(on_cuda["random"].cpu(), on_cpu["random"])
    for name in ("smoothgrad_abs_0.15", "smoothgrad_raw_0.15", "smoothgrad_abs_0.3"):
        assert relative_l2(on_cuda[name], on_cpu[name]).max() <= 1e-4, name
    explain = {
        model: explanation_function("smoothgrad_abs_0.15", model, 0, n_samples=8, seed=3, noise_device="cpu")
        for model in (cpu_model, cuda_model)
    }
    assert relative_l2(explain[cuda_model](x.to(CUDA)), explain[cpu_model](x)).max() <= 1e-4


@pytest.mark.parametrize("name", TWINS)
def test_deletion_curves_match_the_cpu_even_with_the_callers_tf32_on(name, twins, shapes):
    """Full float32 forward passes and blurred baseline: the CPU's probabilities, whatever the caller allows."""
    cpu_model, cuda_model = twins[name]
    x = shapes[:4]
    maps = vanilla_gradient(cpu_model, x).abs().amax(1)
    on_cpu = deletion_curve(cpu_model, x, maps, baseline="blur", steps=16, generator=generator(9))
    with float32_precision(tf32=True):  # the caller allows TF32 (PyTorch's own default for cuDNN)
        on_cuda = deletion_curve(
            cuda_model, x.to(CUDA), maps.to(CUDA), baseline="blur", steps=16, generator=generator(9)
        )
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=0, atol=1e-4)


def test_lite0_top_k_matches_the_cpu_even_with_the_callers_tf32_on(lite0):
    on_cpu = load_model("efficientnet-lite0", device="cpu")
    on_cuda = replace(on_cpu, model=lite0[1])
    x = torch.stack([load_image(name) for name in ("chelsea", "coffee", "rocket")])
    expected = on_cpu.top_k(x, k=5)
    with float32_precision(tf32=True):  # the caller allows TF32 (PyTorch's own default for cuDNN)
        found = on_cuda.top_k(x.to(CUDA), k=5)
    for row_cpu, row_cuda in zip(expected, found, strict=True):
        assert [name for name, _ in row_cuda] == [name for name, _ in row_cpu]
        assert [p for _, p in row_cuda] == pytest.approx([p for _, p in row_cpu], abs=1e-4)


@pytest.mark.parametrize("aggregate", ["abs", "raw"])
def test_smoothgrad_means_agree_within_their_monte_carlo_error(aggregate, twins, shapes):
    """Different generators, so different noise: ``||m_cuda - m_cpu||^2`` is about ``||se_cuda||^2 + ||se_cpu||^2``.

    A device-dependent bias (TF32, a wrong noise scale) would make the ratio
    much larger than 1; 2 leaves room for the pixels' correlation.
    """
    cpu_model, cuda_model = twins["shapes-relu"]
    x, n = shapes[:2], 200
    kwargs = {"n_samples": n, "aggregate": aggregate, "noise_level": 0.15}
    on_cpu = smoothgrad_estimate(cpu_model, x, **kwargs, generator=generator(2, "cpu"))
    on_cuda = smoothgrad_estimate(cuda_model, x.to(CUDA), **kwargs, generator=generator(2, "cuda"))
    difference = (on_cuda.mean.cpu() - on_cpu.mean).double().flatten(1).square().sum(1)
    expected = (on_cuda.stderr.cpu().double().square() + on_cpu.stderr.double().square()).flatten(1).sum(1)
    assert (difference / expected).max() <= 2


@pytest.mark.parametrize("model_name", ["shapes-relu", "efficientnet-lite0"])
def test_deterministic_algorithms_give_bitwise_equal_runs(model_name, twins, lite0, shapes, deterministic):
    """cuDNN's default backward kernels are not bitwise reproducible; with deterministic algorithms they are."""
    if model_name == "efficientnet-lite0":
        model, x = lite0[1], load_image("chelsea")[None].to(CUDA)
    else:
        model, x = twins[model_name][1], shapes.to(CUDA)

    def run() -> torch.Tensor:
        return smoothgrad(model, x, n_samples=16, batch_size=8, generator=generator(3, "cuda"))

    assert torch.equal(run(), run())


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batch_size_does_not_change_the_result(batch_size, twins, shapes):
    """Noise comes in fixed blocks, so only float rounding depends on batch_size (Softplus: no gate can flip)."""
    model = twins["shapes-softplus"][1]
    x = shapes[:3].to(CUDA)
    reference = smoothgrad(model, x, n_samples=24, batch_size=24, generator=generator(4, "cuda"))
    chunked = smoothgrad(model, x, n_samples=24, batch_size=batch_size, generator=generator(4, "cuda"))
    assert relative_l2(chunked, reference).max() <= 1e-5


class SettingsProbe(nn.Module):
    """Records the TF32 settings in force during each forward pass of the wrapped model; can fail on demand."""

    def __init__(self, model: nn.Module, fail: bool = False) -> None:
        super().__init__()
        self.model, self.fail, self.seen = model, fail, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(current_settings())
        if self.fail:
            raise RuntimeError("model failed")
        return self.model(x)


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_is_scoped_to_cuda_calls_and_the_callers_flags_come_back(tf32, twins, shapes):
    x = shapes[:2].to(CUDA)
    with float32_precision(tf32=True):
        inside_tf32 = current_settings()
    with float32_precision(tf32=False):
        inside_ieee = current_settings()
    with float32_precision(tf32=not tf32):  # the caller's own, opposite choice
        callers = current_settings()
        probe = SettingsProbe(twins["shapes-relu"][1]).eval()
        vanilla_gradient(probe, x, tf32=tf32)
        smoothgrad_estimate(probe, x, n_samples=4, tf32=tf32)
        assert current_settings() == callers
        assert probe.seen and set(probe.seen) == {inside_tf32 if tf32 else inside_ieee}
        with pytest.raises(RuntimeError, match="model failed"):
            smoothgrad(SettingsProbe(twins["shapes-relu"][1], fail=True).eval(), x, n_samples=4, tf32=tf32)
        assert current_settings() == callers


def peak_mib(model: nn.Module, x: torch.Tensor, n_samples: int, batch_size: int) -> float:
    """Peak CUDA memory allocated during one smoothgrad call, above what was allocated before it, in MiB.

    An explicit target (class 0) skips the clean forward pass, so only the noisy copies are measured.
    """
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    smoothgrad(model, x, 0, n_samples=n_samples, batch_size=batch_size, generator=generator(5, "cuda"))
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def test_peak_memory_grows_with_batch_size_not_with_n_samples_or_images(lite0):
    """Lite0 at 224x224: activations of ``batch_size`` copies dominate; N and the number of images only add sums."""
    model = lite0[1]
    one = load_image("chelsea")[None].to(CUDA)
    four = torch.stack([load_image(name) for name in ("chelsea", "coffee", "rocket", "camera")]).to(CUDA)
    peak_mib(model, one, n_samples=8, batch_size=8)  # warm-up: cuDNN and cuBLAS set themselves up once
    base = peak_mib(model, one, n_samples=32, batch_size=8)
    more_samples = peak_mib(model, one, n_samples=256, batch_size=8)
    more_images = peak_mib(model, four, n_samples=32, batch_size=8)
    bigger_batch = peak_mib(model, one, n_samples=64, batch_size=64)
    assert more_samples <= 1.1 * base
    assert more_images <= 1.1 * base + 16  # + four images' float64 sums (2 x 4 x 3 x 224 x 224 x 8 bytes = 9 MiB)
    assert bigger_batch >= 4 * base  # 8 times the copies; the fixed noise block and sums do not grow
