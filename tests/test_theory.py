"""The theory measurements (Taylor bias, gate flips, Monte-Carlo error against N, SNR) on cases with known answers."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from smoothgrad_lib.montecarlo import (
    mean_norm,
    pairwise_error,
    pixel_snr,
    running_norm,
    split_half_correlation,
    variance_against_n,
)
from smoothgrad_lib.plotting import loglog_axes
from smoothgrad_lib.probes import gate_flips, taylor_bias
from smoothgrad_lib.stats import loglog_slope

SHAPE = (2, 4, 4)


class Cubic(nn.Module):
    """logit_k(x) = sum a_k x^3: gradient 3 a_k x^2, and E[grad(x + eps)] = 3 a_k (x^2 + sigma^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kchw,bchw->bk", self.a, x**3)


def test_taylor_bias_of_a_cubic_is_sigma_squared(seeded):
    model, x = Cubic().eval(), torch.rand(*SHAPE) + 0.5
    a = model.a[0].detach().double()
    sigmas = [0.05, 0.1, 0.2]
    result = taylor_bias(model, x, 0, sigmas=sigmas, n_pairs=4000, generator=seeded(1))
    grad = 3 * a * x.double() ** 2
    truth = np.array([float((3 * a * s**2).norm() / grad.norm()) for s in sigmas])
    assert np.all(np.abs(result["raw"] - truth) < 4 * result["mc_error"] + 1e-6)
    slope, low, high = loglog_slope(sigmas, result["bias"])
    assert low <= 2 <= high or abs(slope - 2) < 0.05


def test_gate_flips_of_one_relu_layer_match_the_normal_tail(seeded):
    # Unit u flips when w_u . eps crosses -z_u, with w_u . eps ~ N(0, sigma^2 |w_u|^2): P = Phi(-|z_u| / (sigma |w_u|)).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 6), nn.ReLU()).eval()
    x = torch.rand(*SHAPE)
    layer = model[1]
    with torch.no_grad():
        z = layer(x.flatten()[None])[0].double()
        w = layer.weight.double().norm(dim=1)
    sigmas = [0.0, 0.05, 0.2]
    counts = gate_flips(model, x, sigmas=sigmas, n_samples=4000, generator=seeded(2))
    expected = [0.0] + [float(norm.cdf(-(z.abs() / (s * w)).numpy()).sum()) for s in sigmas[1:]]
    assert counts[0] == 0.0
    np.testing.assert_allclose(counts[1:], expected[1:], atol=0.07)  # sd of the sum of 6 shares <= 0.02
    assert counts[2] > counts[1] > 0


def test_variance_against_n_follows_one_over_n_for_iid_samples(seeded):
    samples = torch.randn(6400, 3, 4, 4, generator=seeded(0)) * 2
    ns = [1, 2, 4, 8, 16, 32, 64]
    totals = variance_against_n(samples, ns, "raw")  # R = 6400 // 127 = 50 estimates per N
    expected = 4 * 48 / np.array(ns)
    assert np.all(np.abs(totals / expected - 1) < 0.45)  # relative sd of a variance from 50 values: sqrt(2/49) = 0.2
    _, low, high = loglog_slope(ns, totals)
    assert low < -1 < high
    # |G| of a mean-zero normal has variance (1 - 2/pi) * 4 per element.
    abs_totals = variance_against_n(samples, ns, "abs")
    np.testing.assert_allclose(abs_totals[0], (1 - 2 / math.pi) * 4 * 48, rtol=0.45)
    with pytest.raises(ValueError, match="disjoint"):
        variance_against_n(samples[:200], ns)
    with pytest.raises(ValueError, match="aggregate"):
        variance_against_n(samples, ns, "square")


def test_variance_against_n_uses_a_separate_block_for_each_n():
    ns = [1, 2, 4]
    samples = torch.zeros(2 * 7, 1)
    samples[2:6, 0] = torch.tensor([0.0, 2.0, 0.0, 4.0])  # the N=2 block (after 2 samples for N=1)
    totals = variance_against_n(samples, ns)
    np.testing.assert_allclose(totals, [0.0, 0.5, 0.0])  # N=2: group means 1 and 2, unbiased variance 0.5


def test_loglog_slope_of_an_exact_power_law():
    slope, low, high = loglog_slope([1, 2, 4, 8], [3, 12, 48, 192])
    assert slope == pytest.approx(2.0) and low == pytest.approx(2.0) and high == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 3"):
        loglog_slope([1, 2], [1, 2])


def test_running_norm_by_hand():
    samples = torch.tensor([[1.0, 0.0], [3.0, 4.0], [-4.0, -4.0]])  # running means (1, 0), (2, 2), (0, 0)
    np.testing.assert_allclose(running_norm(samples), [1.0, math.sqrt(8), 0.0])


def test_mean_norm_by_hand():
    # U = (10^2 - 30) / (4 * 3); leaving out (1, 2): (49 - 25) / 2 = 12; leaving out (3, 4): (9 - 5) / 2 = 2.
    estimate, stderr = mean_norm(torch.tensor([[1.0], [2.0], [3.0], [4.0]]), groups=2)
    assert estimate == pytest.approx(math.sqrt(70 / 12))
    assert stderr == pytest.approx(math.sqrt(0.5 * 2 * ((math.sqrt(12) - math.sqrt(2)) / 2) ** 2))
    with pytest.raises(ValueError, match="groups"):
        mean_norm(torch.zeros(10, 3), groups=4)


def test_mean_norm_removes_the_monte_carlo_floor_and_its_stderr_is_calibrated(seeded):
    mu = torch.full((1000,), 0.3)
    truth = float(mu.norm())  # 9.49, while E ||mean||^2 = 90 + 1000 / 64: the naive norm is about 10.3
    runs = [mu + torch.randn(64, 1000, generator=seeded(seed)) for seed in range(20)]
    estimates, stderrs = np.array([mean_norm(samples) for samples in runs]).T
    naive = np.array([float(samples.mean(0).norm()) for samples in runs])
    assert abs(estimates.mean() - truth) < 3 * estimates.std() / np.sqrt(20)
    assert naive.mean() > truth + 0.5
    assert 0.7 < np.sqrt(np.mean(stderrs**2)) / estimates.std() < 1.4
    zero, _ = mean_norm(torch.randn(64, 1000, generator=seeded(40)))
    assert zero < 2.0 < float(torch.randn(64, 1000, generator=seeded(40)).mean(0).norm())


def test_pixel_snr_recovers_mean_over_sd(seeded):
    mu = torch.tensor([0.0, 0.5, 2.0, -4.0])
    samples = mu + 2.0 * torch.randn(20000, 4, generator=seeded(5))
    snr = pixel_snr(samples)
    np.testing.assert_allclose(snr[1:].numpy(), [0.25, 1.0, 2.0], rtol=0.05)
    assert float(snr[0]) < 0.02  # the naive |mean| / sd would sit near 1 / sqrt(M) * sqrt(2 / pi) = 0.0056 -> floored
    with pytest.raises(ValueError, match="at least 2"):
        pixel_snr(samples[:1])


def test_split_half_correlation_matches_the_reliability_formula(seeded):
    signal = torch.randn(20000, generator=seeded(6))
    samples = signal + 2.0 * torch.randn(16, 20000, generator=seeded(7))  # halves of 8: noise variance 4 / 8
    assert split_half_correlation(samples) == pytest.approx(1 / (1 + 0.5), abs=0.02)
    assert split_half_correlation(signal.expand(4, -1)) == pytest.approx(1.0)
    assert abs(split_half_correlation(torch.randn(16, 20000, generator=seeded(8)))) < 0.03


def test_pairwise_error_is_sqrt_of_variance_over_n(seeded):
    mu = torch.full((2, 8, 8), 1.0)
    samples = mu + 0.5 * torch.randn(2 * 4 * 31, 2, 8, 8, generator=seeded(9))
    ns = [1, 2, 4, 8, 16]
    result = pairwise_error(samples, ns, pairs=4, reduce=None)
    truth = 0.5 / np.sqrt(ns)  # per element sd 0.5 / sqrt(N); relative to |mu| = 1 per element
    assert np.all(result["low"] <= result["error"]) and np.all(result["error"] <= result["high"])
    np.testing.assert_allclose(result["error"], truth, rtol=0.15)
    _, low, high = loglog_slope(ns, result["error"])
    assert low < -0.5 < high
    channel_max = pairwise_error(samples, ns, pairs=4)  # maps (H, W): max over the 2 channels
    assert channel_max["error"].shape == (5,)
    with pytest.raises(ValueError, match="samples"):
        pairwise_error(samples, [1, 64], pairs=4)


def test_loglog_axes():
    fig, ax = plt.subplots()
    x = np.array([1.0, 2.0, 4.0, 8.0])
    ax.errorbar(x, 3 / np.sqrt(x), yerr=0.1, marker="o", label="data")
    loglog_axes(ax, "N", "error", title="t", guides=[(-0.5, (1.0, 3.0), "N^-1/2"), (-1.0, (1.0, 3.0), "1/N")], xbase=2)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "N" and ax.get_ylabel() == "error" and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["N^-1/2", "1/N", "data"]
    guide = ax.get_lines()[-2]
    xs, ys = guide.get_data()
    assert xs[0] == pytest.approx(1.0) and xs[-1] == pytest.approx(8.0)
    np.testing.assert_allclose(ys, 3 / np.sqrt(xs))
    plt.close(fig)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="plot the data"):
        loglog_axes(ax, "N", "error")
    plt.close(fig)
