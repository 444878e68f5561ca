"""montecarlo: standard errors from drawn gradients, SNR maps, predicting N, repeat errors, antithetic gain."""

import math

import numpy as np
import pytest
import torch

from smoothgrad_lib import Estimate, noisy_gradients, smoothgrad_estimate
from smoothgrad_lib import montecarlo as mc
from smoothgrad_lib.aggregates import estimate_from_gradients, relative_error, snr_map
from smoothgrad_lib.montecarlo import (
    mean_norm,
    mean_norm_ratio,
    pairwise_error,
    pixel_snr,
    running_mean,
    running_norm,
    samples_for_reliability,
    split_half_correlation,
    stability_against_n,
    variance_against_n,
)
from smoothgrad_lib.noise import seeded_generator as generator
from smoothgrad_lib.stats import loglog_slope, spearman_brown

SMALL = (2, 4, 4)  # (C, H, W) of the Monte-Carlo test gradients


@pytest.mark.parametrize("sampling", ["iid", "antithetic"])
@pytest.mark.parametrize("aggregate", ["raw", "abs", "square"])
def test_estimate_from_gradients_matches_the_library(aggregate, sampling, seeded, tiny_cnn):
    model, x = tiny_cnn(), torch.rand(2, 3, 4, 4, generator=seeded(2))
    kwargs = dict(n_samples=12, noise_level=0.3, sampling=sampling)
    grads = noisy_gradients(model, x, 0, **kwargs, generator=seeded(3))
    library = smoothgrad_estimate(model, x, 0, **kwargs, aggregate=aggregate, generator=seeded(3))
    ours = estimate_from_gradients(grads, aggregate, sampling)
    torch.testing.assert_close(ours.mean, library.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.stderr, library.stderr, rtol=1e-4, atol=1e-6)
    assert ours.n_samples.tolist() == [12, 12]


def test_estimate_from_gradients_rejects_odd_pairs_and_vargrad():
    grads = torch.zeros(1, 5, 3, 2, 2)
    with pytest.raises(ValueError, match="odd"):
        estimate_from_gradients(grads, "raw", "antithetic")
    with pytest.raises(ValueError, match="aggregate"):
        estimate_from_gradients(grads, "vargrad")


def test_snr_map_is_the_shown_channels_ratio():
    mean = torch.tensor([[[[2.0, -1.0]], [[-6.0, 0.5]]]])  # (1, 2, 1, 2): channel 1 wins pixel 0, channel 0 pixel 1
    stderr = torch.tensor([[[[1.0, 4.0]], [[3.0, 1.0]]]])
    assert snr_map(mean, stderr).tolist() == [[[2.0, 0.25]]]
    with pytest.raises(ValueError, match="B, C, H, W"):
        snr_map(mean[0], stderr[0])


def test_snr_of_the_quadratic_is_its_closed_form(quadratic_model, seeded):
    """raw: mean 2a(x) and stderr 2|a| sigma / sqrt(N), so SNR = |x| sqrt(N) / sigma per element."""
    model, x = quadratic_model(2, shape=(3, 4, 4)), torch.rand(1, 3, 4, 4, generator=seeded(4)) + 0.5
    n, sigma = 2000, 0.5
    estimate = smoothgrad_estimate(model, x, 0, n_samples=n, sigma=sigma, aggregate="raw", generator=seeded(5))
    channel = estimate.mean.abs().argmax(1, keepdim=True)
    expected = x.gather(1, channel)[:, 0] * math.sqrt(n) / sigma
    ratio = snr_map(estimate.mean, estimate.stderr) / expected
    assert 0.9 < float(ratio.min()) and float(ratio.max()) < 1.1


def test_predict_samples_on_a_gaussian_case(seeded):
    """Draws m + s z per element: the relative error at N is ||s|| / (||m|| sqrt(N)); the pilot predicts that N."""
    generator = seeded(6)
    signal, spread = torch.randn(1, 1, 3, 20, 20, generator=generator), 2.0
    pilot = signal + spread * torch.randn(1, 30, 3, 20, 20, generator=generator)
    estimate = estimate_from_gradients(pilot, "raw")
    predicted = float(mc.predict_samples(estimate, 0.1))
    truth = spread**2 * signal.numel() / (0.1**2 * float(signal.square().sum()))
    assert abs(predicted / truth - 1) < 0.1
    # without the noise correction the pilot's ||m||^2 is inflated by ||s||^2 and the prediction too small
    naive = 30 * float(relative_error(estimate.mean, estimate.stderr)) ** 2 / 0.1**2
    assert naive < 0.9 * truth
    # and it checks out on independent draws of the predicted size
    runs = (signal + spread * torch.randn(8, round(predicted), 3, 20, 20, generator=generator)).mean(1)
    assert abs(float(mc.repeat_error(runs[:, None])) / 0.1 - 1) < 0.2


def test_predict_samples_gives_inf_for_pure_noise():
    estimate = Estimate(torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0), torch.tensor([10]))
    assert math.isinf(float(mc.predict_samples(estimate, 0.1)))
    with pytest.raises(ValueError, match="tolerance"):
        mc.predict_samples(estimate, 1.5)


def test_error_against_reference_removes_the_reference_noise(seeded):
    generator = seeded(7)
    truth = torch.randn(1, 3000, generator=generator)
    reference = Estimate(truth + 0.5 * torch.randn(1, 3000, generator=generator), torch.full((1, 3000), 0.5), 1)
    run = truth + 0.3 * torch.randn(1, 3000, generator=generator)
    expected = 0.3 * math.sqrt(3000) / float(truth.norm())
    assert abs(float(mc.error_against_reference(run, reference)) / expected - 1) < 0.1


def test_antithetic_gain_is_exact_for_a_quadratic_and_one_for_pure_noise(quadratic_model, seeded):
    """Linear-in-noise gradients cancel in every pair (raw gain infinite); independent halves give gain 1."""
    model, x = quadratic_model(2, shape=(3, 4, 4)), torch.rand(1, 3, 4, 4, generator=seeded(8))
    grads = noisy_gradients(model, x, 0, n_samples=64, sigma=0.2, sampling="antithetic", generator=seeded(9))
    assert float(mc.antithetic_gain(grads, "raw")) > 1e6
    # vargrad is even in the noise: (H eps)^2 is the same in both halves of a pair, so the gain is 1/2
    assert abs(float(mc.antithetic_gain(grads, "vargrad")) - 0.5) < 0.1
    independent = torch.randn(3, 4000, 2, 5, generator=seeded(10))
    gains = mc.antithetic_gain(independent, "abs")
    assert float((gains - 1).abs().max()) < 0.1
    with pytest.raises(ValueError, match="aggregate"):
        mc.antithetic_gain(grads, "median")


def test_check_prediction_is_exact_when_the_runs_spread_as_the_pilot_predicts_for_raw_and_abs():
    """A pilot of 4 gradients S + d, S - d, S + d, S - d: per-element variance 4 d^2 / 3, so its standard error is
    d^2 / 3 and it predicts N = 4 (||d||^2 / 3) / (tol^2 (||S||^2 - ||d||^2 / 3)), its own noise taken out of the
    signal. Two runs of 2 gradients whose maps are S + r and S - r with ||r||^2 = ||d||^2 / 3 measure exactly that N
    by the 1/N law. S > |r| + |d| everywhere, so abs changes nothing."""
    g = torch.Generator().manual_seed(0)
    signal = 1 + torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    d = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) - 0.5
    r = d / 3**0.5
    pilot = [signal + d, signal - d, signal + d, signal - d]
    runs = [signal + r + d, signal + r - d, signal - r + d, signal - r - d]
    grads = torch.stack(pilot + runs, 1)  # (B=2, N=8, C, H, W)
    tolerance = 0.01
    d2, s2 = d.flatten(1).square().sum(1), signal.flatten(1).square().sum(1)
    exact = (4 * d2 / 3 / (tolerance**2 * (s2 - d2 / 3))).numpy()
    for aggregate in ("raw", "abs"):
        wanted, needed = mc.check_prediction_on_draws(grads, aggregate, tolerance, pilot_n=4, run_n=2)
        assert wanted.shape == needed.shape == (2,)
        np.testing.assert_allclose(wanted, exact, rtol=1e-9)
        np.testing.assert_allclose(needed, exact, rtol=1e-9)
    maps = torch.stack([torch.ones(2, 5), torch.ones(2, 5) * 1.2])
    assert mc.samples_needed(maps, 10, 0.5).shape == (2,)


def test_running_mean_matches_prefix_means():
    samples = torch.randn(7, 3, 2, generator=generator(0))
    running = running_mean(samples, dim=0)
    for n in (1, 4, 7):
        torch.testing.assert_close(running[n - 1], samples[:n].mean(0))
    torch.testing.assert_close(running_mean(samples.transpose(0, 1), dim=1).transpose(0, 1), running)


def test_samples_for_reliability_inverts_spearman_brown():
    n = samples_for_reliability(0.5, 50, wanted=0.9)
    assert n == pytest.approx(450.0)
    assert spearman_brown(0.5, n / 50) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="wanted"):
        samples_for_reliability(0.5, 50, wanted=1.0)


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


def test_mean_norm_ratio_of_a_fixed_multiple_is_exact():
    samples = torch.randn(64, 50, generator=torch.Generator().manual_seed(0)) + 1.0
    ratio, stderr = mean_norm_ratio(3 * samples, samples)
    assert ratio == pytest.approx(3.0, rel=1e-7) and stderr == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="same samples"):
        mean_norm_ratio(samples, samples[:32])


def test_mean_norm_ratio_stderr_is_calibrated(seeded):
    """E|G| / |E G| from the same gradients: the jackknife's error matches the spread over independent pools."""
    mu = torch.full((400,), 0.2)
    ratios, stderrs = [], []
    for seed in range(40):
        samples = mu + torch.randn(64, 400, generator=seeded(100 + seed))
        ratio, stderr = mean_norm_ratio(samples.abs(), samples)
        ratios.append(ratio)
        stderrs.append(stderr)
    assert 0.7 < np.sqrt(np.mean(np.square(stderrs))) / np.std(ratios, ddof=1) < 1.4


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


def test_stability_against_n_is_one_for_the_same_draws_about_zero_on_a_null_and_grows_with_n():
    generator = torch.Generator().manual_seed(0)
    draws = torch.randn(3, 16, 3, 24, 24, generator=generator)
    ns = [1, 4, 16]
    # The same gradients at x and at the nudged input: every map agrees exactly.
    np.testing.assert_allclose(stability_against_n(draws, draws, ns), 1.0, atol=1e-9)
    # Null: no signal and independent noise, so the two maps are unrelated at every n.
    other = torch.randn(draws.shape, generator=generator)
    null = stability_against_n(draws, other, ns, aggregate="raw")
    assert null.shape == (3, 3) and np.abs(null).max() < 0.15
    # A fixed signal under independent noise: the maps agree more as n grows (the Monte-Carlo noise averages out).
    signal = torch.linspace(0, 3, 24).expand(3, 1, 3, 24, 24)
    rising = stability_against_n(signal + draws, signal + other, ns, aggregate="raw").mean(1)
    assert rising[0] < rising[1] < rising[2] and rising[2] > 0.8
    with pytest.raises(ValueError, match="between 1 and"):
        stability_against_n(draws, draws, [32])
