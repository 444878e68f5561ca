"""Measurements that test the theory behind SmoothGrad: Taylor bias, Monte-Carlo error against N, signal-to-noise.

Notation. ``G_i = grad g(x + eps_i)``, ``eps_i ~ N(0, sigma^2 I)`` i.i.d., are
the noisy gradients of the target logit g at one image x; a pool of them is a
tensor (M, C, H, W) (any trailing shape works where the docstring says so).
An N-sample SmoothGrad estimate is the mean of N of them (``raw``) or of their
absolute values (``abs``). Everything is deterministic given the pool or an
explicit ``torch.Generator``; sums of many terms run in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats as scipy_stats
from torch import nn

from .experiments import gate_fractions, gradients_at
from .maps import saliency_map
from .saliency import vanilla_gradient
from .stats import pearson


def taylor_bias(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    sigmas: Sequence[float],
    n_pairs: int,
    generator: torch.Generator,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Relative bias of the SmoothGrad mean, ``||E[grad g(x + eps)] - grad g(x)|| / ||grad g(x)||``, against sigma.

    The expectation is estimated with antithetic pairs ``(G(x + eps) + G(x - eps)) / 2``:
    same mean, but the first-order noise term ``H eps`` cancels in each pair,
    so the Monte-Carlo error is small enough to see the bias itself. For a
    smooth g the bias is ``sigma^2 / 2 * grad(laplacian g)(x) + O(sigma^4)``.

    Args:
        x: one image (C, H, W); sigmas: absolute noise standard deviations (input units).

    Returns arrays over sigmas: ``bias`` (relative, corrected for the
    Monte-Carlo error's own contribution, floored at 0), ``raw`` (relative
    norm of the estimated difference) and ``mc_error`` (relative standard
    error of the estimated mean).
    """
    base = vanilla_gradient(model, x, target)
    scale = float(base.norm())
    raw, mc = [], []
    for sigma in sigmas:
        eps = sigma * torch.randn((n_pairs, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
        plus = gradients_at(model, x[None] + eps, target, batch_size)
        minus = gradients_at(model, x[None] - eps, target, batch_size)
        pairs = (plus + minus).double() / 2
        raw.append(float((pairs.mean(0) - base).norm()) / scale)
        mc.append(float(pairs.var(0).sum().div(n_pairs).sqrt()) / scale)
    raw_a, mc_a = np.array(raw), np.array(mc)
    return {"bias": np.sqrt(np.clip(raw_a**2 - mc_a**2, 0, None)), "raw": raw_a, "mc_error": mc_a}


def gate_flips(
    model: nn.Module, x: torch.Tensor, *, sigmas: Sequence[float], n_samples: int, generator: torch.Generator
) -> np.ndarray:
    """Expected number of ReLU/ReLU6 units whose gate at ``x + eps`` differs from their gate at x, for each sigma.

    For one image x (C, H, W): ``sum_u P(gate_u(x + eps) != gate_u(x))``,
    estimated from ``n_samples`` noisy copies per sigma (absolute standard
    deviation, input units). It counts the kinks of the piecewise-linear
    network that the noise crosses.
    """
    counts = []
    for sigma in sigmas:
        clean, fractions = gate_fractions(model, x, float(sigma), n_samples, generator)
        counts.append(float((fractions.double() - clean.double()).abs().sum()))
    return np.array(counts)


def variance_against_n(samples: torch.Tensor, ns: Sequence[int], aggregate: str = "raw") -> np.ndarray:
    """Total variance (summed over elements) of the N-sample estimate, for each N in ``ns``, from disjoint samples.

    ``samples`` (M, ...) are i.i.d. noisy gradients. The pool is cut into one
    block per N, in order and without overlap, so the points for different N
    share no sample; block N holds R groups of N, with ``R = M // sum(ns)``
    for every N. Each group gives one estimate ``mean(G)`` (``"raw"``) or
    ``mean(|G|)`` (``"abs"``); the unbiased variance over the R estimates is
    summed over elements. For i.i.d. draws it is ``sum Var[G] / N`` whatever
    the model: an identity, so this checks the sampler, not the network.
    """
    if aggregate not in ("raw", "abs"):
        raise ValueError(f"aggregate must be 'raw' or 'abs', got {aggregate!r}.")
    values = samples.double().abs() if aggregate == "abs" else samples.double()
    repeats = len(values) // sum(ns)
    if repeats < 2:
        raise ValueError(f"need at least 2 * sum(ns) = {2 * sum(ns)} samples for disjoint groups, got {len(values)}.")
    totals, start = [], 0
    for n in ns:
        estimates = values[start : start + repeats * n].reshape(repeats, n, -1).mean(1)
        totals.append(float(estimates.var(0).sum()))
        start += repeats * n
    return np.array(totals)


def loglog_slope(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Least-squares slope of log y against log x, with a two-sided confidence interval (Student t, len(x) - 2 d.o.f.).

    The interval assumes independent points scattered around a straight line;
    it is too narrow when the points share data or the curve bends.
    """
    if len(x) < 3:
        raise ValueError(f"a slope with a confidence interval needs at least 3 points, got {len(x)}.")
    fit = scipy_stats.linregress(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(x) - 2) * fit.stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


def running_norm(samples: torch.Tensor) -> np.ndarray:
    """L2 norm (over all elements) of the running mean ``(1/n) sum_{i<=n} G_i`` of samples (M, ...), n = 1..M: (M,)."""
    total = torch.zeros(samples.shape[1:], dtype=torch.float64, device=samples.device)
    norms = []
    for n, sample in enumerate(samples.detach(), start=1):
        total += sample.double()
        norms.append(float(total.norm()) / n)
    return np.array(norms)


def mean_norm(samples: torch.Tensor, groups: int = 8) -> tuple[float, float]:
    """``||E[G]||`` (L2 over all elements) from i.i.d. samples (M, ...), without the Monte-Carlo floor; with its s.e.

    The naive ``||mean G||^2`` is biased upwards: ``E||mean G||^2 = ||E G||^2 + sum Var[G] / M``.
    Subtracting the estimated variance term gives the unbiased U-statistic
    ``(||sum_i G_i||^2 - sum_i ||G_i||^2) / (M (M - 1))`` (the mean of
    ``G_i . G_j`` over pairs i != j); the estimate is its square root, floored
    at 0. The standard error is a delete-a-group jackknife over ``groups``
    equal consecutive groups of samples (M must be a multiple of ``groups``).
    """
    m = len(samples)
    if groups < 2 or m % groups or m // groups < 1 or m < 2 * groups:
        raise ValueError(f"need at least 2 samples in each of {groups} groups (groups >= 2, M a multiple), got M={m}.")
    values = samples.detach().double().flatten(1)
    group_sums = values.reshape(groups, m // groups, -1).sum(1)
    group_squares = values.square().sum(1).reshape(groups, -1).sum(1)

    def estimate(sums: torch.Tensor, squares: torch.Tensor, count: int) -> float:
        u_statistic = (float(sums.square().sum()) - float(squares)) / (count * (count - 1))
        return max(u_statistic, 0.0) ** 0.5

    full = estimate(group_sums.sum(0), group_squares.sum(), m)
    left_out = np.array(
        [
            estimate(group_sums.sum(0) - group_sums[k], group_squares.sum() - group_squares[k], m - m // groups)
            for k in range(groups)
        ]
    )
    stderr = float(np.sqrt((groups - 1) / groups * np.square(left_out - left_out.mean()).sum()))
    return full, stderr


def pixel_snr(samples: torch.Tensor) -> torch.Tensor:
    """Per-element signal-to-noise ratio ``|E G| / sd(G)`` from i.i.d. samples (M, ...): shaped like one sample.

    ``|E G|`` is estimated without the Monte-Carlo floor,
    ``sqrt(max(mean^2 - s^2 / M, 0))`` with s the sample standard deviation,
    so an element whose mean is zero gives about 0 rather than ``1 / sqrt(M)``.
    It sets the N an element needs: the N-sample mean has relative standard
    error ``1 / (SNR sqrt(N))``, so a relative error e needs ``N = 1 / (SNR^2 e^2)``.
    Elements with zero spread get SNR = inf (or NaN if also zero mean).
    """
    m = len(samples)
    if m < 2:
        raise ValueError(f"a standard deviation needs at least 2 samples, got {m}.")
    values = samples.detach().double()
    variance = values.var(0)
    signal = (values.mean(0).square() - variance / m).clamp_min(0).sqrt()
    return signal / variance.sqrt()


def split_half_correlation(samples: torch.Tensor) -> float:
    """Pearson correlation, over all elements, between the means of the first and second half of samples (M, ...).

    The two halves are independent M/2-sample estimates of the same map, so
    this is the map's split-half reliability at N = M/2 (1: the Monte-Carlo
    noise is negligible; 0: the map is all noise).
    """
    half = len(samples) // 2
    if half < 1:
        raise ValueError(f"need at least 2 samples, got {len(samples)}.")
    return float(pearson(samples[:half].double().mean(0)[None], samples[half : 2 * half].double().mean(0)[None])[0])


def pairwise_error(
    samples: torch.Tensor, ns: Sequence[int], *, pairs: int, reduce: str | None = "max"
) -> dict[str, np.ndarray]:
    """Relative RMS Monte-Carlo error of N-sample maps against N, without a reference map.

    ``samples`` (M, C, H, W) are i.i.d. values to average (noisy gradients,
    or their absolute values for the ``abs`` aggregate). For each N, ``2 * pairs``
    disjoint groups of N samples are taken from a block of the pool that no
    other N uses; each group's mean is turned into a map (``saliency_map`` with
    ``reduce`` over channels and no normalisation; ``reduce=None`` keeps the
    (C, H, W) mean). Two independent maps of the same N satisfy
    ``E||M_a - M_b||^2 = 2 E||M_a - E M_a||^2``, so the RMS error of one map is
    ``sqrt(mean over pairs of ||M_a - M_b||^2 / 2)``. It is divided by the
    norm of the map made from the whole pool.

    Returns arrays over ns: ``error`` (relative RMS error), ``low`` and
    ``high`` (95% Student-t interval for the mean of ``||M_a - M_b||^2 / 2``
    over the pairs, floored at 0, then square-rooted and divided like the error).
    """
    need = 2 * pairs * sum(ns)
    if pairs < 2 or len(samples) < need:
        raise ValueError(
            f"need pairs >= 2 and 2 * pairs * sum(ns) = {need} samples, got pairs={pairs}, M={len(samples)}."
        )
    values = samples.detach()

    def to_map(estimate: torch.Tensor) -> torch.Tensor:
        return estimate if reduce is None else saliency_map(estimate, reduce=reduce, normalize=None)

    scale = float(to_map(values.sum(0, dtype=torch.float64) / len(values)).norm())
    error, low, high, start = [], [], [], 0
    for n in ns:
        block = values[start : start + 2 * pairs * n].reshape(2 * pairs, n, *values.shape[1:])
        maps = to_map(block.sum(1, dtype=torch.float64) / n)
        half_squares = (maps[0::2] - maps[1::2]).flatten(1).square().sum(1) / 2
        mean = float(half_squares.mean())
        half = scipy_stats.t.ppf(0.975, pairs - 1) * float(half_squares.std()) / pairs**0.5
        error.append(np.sqrt(mean) / scale)
        low.append(np.sqrt(max(mean - half, 0.0)) / scale)
        high.append(np.sqrt(mean + half) / scale)
        start += 2 * pairs * n
    return {"error": np.array(error), "low": np.array(low), "high": np.array(high)}
