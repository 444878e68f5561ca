"""Every statistic on a null where the answer is known: Holm's family-wise error, disattenuation, split-half
reliability and Spearman-Brown, and the share of pixels with SNR >= 2.

The synthetic "gradients" are (B, N, C, H, W) tensors drawn from seeded
generators: a fixed signed pattern plus noise, both shaped by one spatial
envelope (large in the middle of the image, small at the edges), as a real
gradient's magnitude is concentrated on the object.
"""

import math

import numpy as np
import pytest
import torch

from smoothgrad_lib.aggregates import aggregate_samples, estimate_from_gradients, snr_map
from smoothgrad_lib.maps import saliency_map
from smoothgrad_lib.montecarlo import (
    samples_for_reliability,
    signed_split_half,
    snr_null_fraction,
    split_half_correlation,
)
from smoothgrad_lib.stats import disattenuated_correlation, holm, paired_test, pearson, spearman_brown

SHAPE = (3, 32, 32)  # C, H, W
ELEMENTS = math.prod(SHAPE)


def envelope(height: int = 32, width: int = 32) -> torch.Tensor:
    """A smooth spatial envelope (H, W): a Gaussian blob of width 6 px over a floor of 0.05."""
    y, x = torch.meshgrid(torch.arange(height) - height / 2, torch.arange(width) - width / 2, indexing="ij")
    return (0.05 + torch.exp(-(x.double() ** 2 + y.double() ** 2) / (2 * 6.0**2))).double()


def draws(seed: int, images: int, n: int, *, signal: float, random_sign: bool) -> torch.Tensor:
    """Gradients (images, n, C, H, W): ``s_i * envelope * (signal * Z0 + Z_i)``, Z standard normal.

    Z0 is each image's fixed pattern (the same for every ``seed``: calls with different seeds are independent sets
    of draws for the same images); with ``random_sign`` every draw gets an independent sign s_i = +-1, so E G = 0
    exactly whatever ``signal``.
    """
    pattern = torch.randn(images, 1, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images, n, *SHAPE, generator=g, dtype=torch.float64)
    grads = envelope() * (signal * pattern + noise)
    if random_sign:
        grads = grads * (torch.randint(0, 2, (images, n, 1, 1, 1), generator=g) * 2 - 1)
    return grads


def displayed_agreement(first: torch.Tensor, second: torch.Tensor) -> dict[str, torch.Tensor]:
    """Notebook 02 section 3's procedure on two independent sets of gradients (B, N, C, H, W).

    Maps as displayed (``saliency_map(aggregate, normalize="percentile")``: |.|, channel max, clip at the 99th
    percentile); split-half reliabilities of ``raw`` and ``abs``; their correlation across the sets, averaged both
    ways; and that correlation disattenuated. Returns (B,) tensors.
    """
    halves = {
        name: [saliency_map(aggregate_samples(g, name), normalize="percentile") for g in (first, second)]
        for name in ("raw", "abs")
    }
    reliability = {name: pearson(*maps) for name, maps in halves.items()}
    across = (pearson(halves["raw"][0], halves["abs"][1]) + pearson(halves["raw"][1], halves["abs"][0])) / 2
    corrected = disattenuated_correlation(across, reliability["raw"], reliability["abs"])
    return {"raw": reliability["raw"], "abs": reliability["abs"], "across": across, "disattenuated": corrected}


# Holm


def test_holm_on_a_hand_computed_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.5, 0.9]), [1.0, 1.0, 1.0])  # capped at 1, ties kept together
    np.testing.assert_allclose(holm([0.2]), [0.2])  # a family of one is not adjusted
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        holm([])


def test_holm_properties_on_random_families():
    p = np.random.default_rng(0).uniform(0, 0.2, size=(200, 12)) ** 2
    adjusted = holm(p)
    k = p.shape[1]
    assert (adjusted >= p).all() and (adjusted <= 1).all()
    assert (adjusted <= np.minimum(k * p, 1) + 1e-15).all()  # never more conservative than Bonferroni
    order = np.argsort(p, axis=1)
    assert (np.diff(np.take_along_axis(adjusted, order, axis=1), axis=1) >= 0).all()  # keeps the raw p-values' order
    smallest = np.take_along_axis(adjusted, order[:, :1], axis=1)[:, 0]
    np.testing.assert_allclose(smallest, np.minimum(k * p.min(axis=1), 1))  # the smallest gets Bonferroni's k p
    np.testing.assert_allclose(adjusted[7], holm(p[7]))  # several families at once = one at a time


@pytest.mark.parametrize("shared_reference", [False, True])
def test_holm_keeps_the_family_wise_error_rate_on_nulls(shared_reference):
    """10 null comparisons of 12 paired images, 20000 families. Without adjustment some test rejects in about 40%
    of the families; with Holm in at most 5% (Monte-Carlo s.e. 0.0015), whether the comparisons are independent or
    all share one reference method (as 04's contrasts against vanilla do, which correlates their p-values)."""
    rng = np.random.default_rng(21 + shared_reference)
    families, tests, images = 20000, 10, 12
    methods = rng.normal(size=(families, tests, images))
    if shared_reference:
        reference = np.broadcast_to(rng.normal(size=(families, 1, images)), methods.shape)
    else:
        reference = rng.normal(size=methods.shape)
    p = paired_test(methods, reference)
    assert p.shape == (families, tests)
    assert 0.047 < (p < 0.05).mean() < 0.053  # each test alone is exact
    unadjusted = (p < 0.05).any(axis=1).mean()
    family_wise = (holm(p) < 0.05).any(axis=1).mean()
    assert unadjusted > 0.25
    assert family_wise <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / families)


# Disattenuation, split-half reliability, Spearman-Brown


def test_disattenuation_of_two_maps_with_unrelated_signals_is_zero():
    """a = A + noise, b = B + noise with A, B independent: two measurements of each; disattenuated r(a, b) ~ 0.
    Positive control: b measures the same A, and the disattenuated correlation is ~1 although the raw one is not."""
    g = torch.Generator().manual_seed(3)
    images, pixels = 40, 2000
    truth_a, truth_b = torch.randn(2, images, pixels, generator=g, dtype=torch.float64)

    def measured(truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(truth + torch.randn(truth.shape, generator=g, dtype=torch.float64) for _ in range(2))

    a1, a2 = measured(truth_a)
    rel_a = pearson(a1, a2)  # about 1 / (1 + 1) = 0.5
    for truth, expected in ((truth_b, 0.0), (truth_a, 1.0)):
        b1, b2 = measured(truth)
        across = (pearson(a1, b2) + pearson(a2, b1)) / 2
        corrected = disattenuated_correlation(across, rel_a, pearson(b1, b2))
        # per image the sampling s.d. of r is about 1 / sqrt(pixels) before the division by ~0.5
        assert float((corrected - expected).abs().max()) < 8 / math.sqrt(pixels)
        assert abs(float(corrected.mean()) - expected) < 3 / math.sqrt(pixels * images) / 0.5
    assert 0.45 < float(rel_a.mean()) < 0.55 and 0.4 < float(across.mean()) < 0.6  # raw r: attenuated by half


def test_the_displayed_maps_report_agreement_on_the_random_sign_null():
    """The artefact of 02 section 3. Signed noise with a shared spatial envelope and nothing else (E G = 0): the
    displayed |raw| maps (|.|, channel max, clip) take the envelope, which the abs maps share, so the |raw| split-half
    "reliability" is far above 0 and the disattenuated raw-vs-abs agreement about 1 although raw holds no signal.
    This statistic must not be used on |raw| maps; the signed split-half reliability is 0 here, as it should be."""
    first, second = (draws(seed, 4, 16, signal=0.0, random_sign=True) for seed in (1, 2))
    displayed = displayed_agreement(first, second)
    assert float(displayed["raw"].min()) > 0.5  # a "reliability" where there is nothing to measure
    assert float((displayed["disattenuated"] - 1).abs().max()) < 0.05  # "raw agrees with abs"
    # Spearman-Brown turns the inflated reliability into a finite N for 0.9, though no N ever gets there
    assert bool(torch.isfinite(samples_for_reliability(displayed["raw"], 16)).all())
    signed = signed_split_half(first, second)
    assert float(signed.abs().max()) < 4 / math.sqrt(ELEMENTS)
    assert bool(torch.isinf(samples_for_reliability(torch.tensor(-0.01), 16)))


def test_random_signs_on_a_real_pattern_give_agreement_without_signal():
    """The issue's null: a gradient with a real pattern, each G_i given an independent random sign (E G = 0 exactly).
    Per image, the halves' sign imbalances leave +-(pattern) in both means, so the signed split-half of one image
    scatters around 0; over images its mean is 0. The displayed statistic reports agreement on every image."""
    first, second = (draws(seed, 32, 16, signal=1.0, random_sign=True) for seed in (3, 4))
    displayed = displayed_agreement(first, second)
    assert float(displayed["disattenuated"].mean()) > 0.9 and float(displayed["raw"].min()) > 0.5
    signed = signed_split_half(first, second)
    assert abs(float(signed.mean())) < 3 * float(signed.std()) / math.sqrt(len(signed))
    # the same pattern without the random signs: a real signal, and the signed statistic finds it on every image
    real = signed_split_half(*(draws(seed, 32, 16, signal=1.0, random_sign=False) for seed in (3, 4)))
    assert float(real.min()) > 0.9


def test_signed_split_half_is_high_with_a_real_signal_and_follows_spearman_brown():
    """G_i = envelope * (Z0 + Z_i): the N-sample mean's reliability over elements is about 1 / (1 + 1 / N) when the
    pattern and the noise have the same envelope. The signed split-half measures it, Spearman-Brown extrapolates it."""
    first, second = (draws(seed, 4, 8, signal=1.0, random_sign=False) for seed in (5, 6))
    signed = signed_split_half(first, second)
    assert float((signed - 8 / 9).abs().max()) < 0.03
    # the N = 32 maps' reliability, predicted from N = 8 and measured on fresh independent sets
    wide = [draws(seed, 4, 32, signal=1.0, random_sign=False) for seed in (7, 8)]
    measured = signed_split_half(*wide)
    assert float((spearman_brown(signed, 4) - measured).abs().max()) < 0.02
    assert float((samples_for_reliability(signed, 8, wanted=0.9) - 9).abs().max()) < 2.5  # 1 / (1 + 1/N) = 0.9
    # one pool split in two halves gives the same statistic (montecarlo.split_half_correlation)
    pool = torch.cat([first, second], dim=1)[0]
    assert split_half_correlation(pool) == pytest.approx(float(signed[0]))
    with pytest.raises(ValueError, match="B, N, C, H, W"):
        signed_split_half(first[0], second[0])


def test_split_half_and_spearman_brown_on_pure_noise_are_zero():
    noise = draws(9, 4, 32, signal=0.0, random_sign=False)
    r = torch.tensor([split_half_correlation(images) for images in noise])
    assert float(r.abs().max()) < 4 / math.sqrt(ELEMENTS)
    assert float(spearman_brown(r, 10).abs().max()) < 40 / math.sqrt(ELEMENTS)  # 10 r / (1 + 9 r) stays near 0


# The share of pixels with SNR >= 2


@pytest.mark.parametrize("n", [8, 16, 64])
def test_snr_null_fraction_matches_pure_noise_estimates(n):
    """Zero-mean gradients: the share of pixels whose shown channel has |m| / s >= 2 is snr_null_fraction (0.13 for
    three channels at large N, more at small N because s is estimated), far above the one channel's 0.046."""
    g = torch.Generator().manual_seed(n)
    grads = torch.randn(1, n, 3, 96, 96, generator=g, dtype=torch.float64) * envelope(96, 96)
    estimate = estimate_from_gradients(grads, "raw")
    share = float((snr_map(estimate.mean, estimate.stderr) >= 2).double().mean())
    expected = snr_null_fraction(2.0, channels=3, n_samples=n)
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / 96**2)
    # three copies of one channel: the null of a single channel, P(|t_{n-1}| >= 2)
    same = estimate_from_gradients(grads[:, :, :1].expand(-1, -1, 3, -1, -1), "raw")
    one = float((snr_map(same.mean, same.stderr) >= 2).double().mean())
    assert abs(one - snr_null_fraction(2.0, channels=1, n_samples=n)) < 4 * math.sqrt(0.1 * 0.9 / 96**2)


def test_snr_null_fraction_closed_forms():
    assert snr_null_fraction(2.0, 3) == pytest.approx(1 - (1 - 0.0455003) ** 3, abs=1e-6)  # 0.1304
    assert snr_null_fraction(2.0, 1) == pytest.approx(0.0455003, abs=1e-6)
    assert snr_null_fraction(2.0, 1, n_samples=16) == pytest.approx(0.063945, abs=1e-5)  # 2 P(t_15 >= 2)
    assert snr_null_fraction(2.0, 3, n_samples=10**6) == pytest.approx(snr_null_fraction(2.0, 3), abs=1e-5)
    assert snr_null_fraction(2.0, 3, 8) > snr_null_fraction(2.0, 3, 64) > snr_null_fraction(2.0, 3)
    with pytest.raises(ValueError, match="n_samples"):
        snr_null_fraction(2.0, 3, n_samples=1)
    with pytest.raises(ValueError, match="threshold"):
        snr_null_fraction(0.0)
