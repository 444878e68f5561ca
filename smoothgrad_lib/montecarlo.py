"""Monte-Carlo error of SmoothGrad: variance against N, signal-to-noise, split-half reliability, the N a target
error needs, antithetic gain.

Notation as in ``smoothgrad_lib.saliency``: ``G_i`` are the noisy gradients of
one image, ``h`` the aggregate's function of them (``G`` for ``"raw"``, ``|G|``
for ``"abs"``, ``G^2`` for ``"square"``; ``aggregates.MEAN_OF``), ``m = mean_i h(G_i)`` the map and
``s`` its per-element standard error. The *relative error* of a map is
``aggregates.relative_error``, ``||s||_2 / ||m||_2`` over all its C x H x W elements, the quantity that
``smoothgrad_estimate(..., tolerance=...)`` drives down; for independent draws
it falls as ``N^(-1/2)``. A pool of draws is a tensor (M, C, H, W) of i.i.d.
noisy gradients; sums of many terms run in float64.

Two signal-to-noise ratios: ``pixel_snr`` is that of one draw, ``|E G| / sd(G)``
(it sets the N an element needs), ``snr_map`` that of an estimate, ``|m| / s``
(it grows as sqrt(N)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import integrate
from scipy import stats as scipy_stats
from torch import nn

from .aggregates import (
    MEAN_OF,
    Aggregate,
    Estimate,
    aggregate_samples,
    estimate_from_gradients,
    pair_units,
)
from .maps import saliency_map
from .noise import DEFAULT_NOISE_LEVEL, seeded_generator
from .saliency import smoothgrad, smoothgrad_estimate
from .stats import pearson

__all__ = [
    "antithetic_gain",
    "check_prediction",
    "check_prediction_on_draws",
    "error_against_reference",
    "mean_norm",
    "mean_norm_ratio",
    "pairwise_error",
    "pixel_snr",
    "predict_samples",
    "repeat_error",
    "running_mean",
    "running_norm",
    "samples_for_reliability",
    "samples_needed",
    "signed_split_half",
    "snr_null_fraction",
    "split_half_correlation",
    "stability_against_n",
    "variance_against_n",
]


def predict_samples(estimate: Estimate, tolerance: float) -> torch.Tensor:
    """Samples each image needs for a relative error of ``tolerance``, from a pilot ``Estimate`` with N samples: (B,).

    The total variance of one sample is ``N ||s||^2`` and ``||m||^2`` overstates the
    squared signal by its own noise, ``E||m||^2 = ||E m||^2 + ||s||^2``, so

        N_needed = N ||s||^2 / (tolerance^2 (||m||^2 - ||s||^2)).

    Without that correction a noisy pilot (relative error r) underestimates N by
    a factor ``1 + r^2``. An image whose pilot cannot tell the signal from the
    noise (``||m|| <= ||s||``) gets ``inf``: run a larger pilot.
    """
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be a relative error in (0, 1), got {tolerance!r}.")
    mean, stderr = estimate.mean, estimate.stderr
    if mean.ndim == 3:
        mean, stderr = mean[None], stderr[None]
    noise = stderr.flatten(1).double().square().sum(1)
    signal = mean.flatten(1).double().square().sum(1) - noise
    n = torch.as_tensor(estimate.n_samples, dtype=torch.float64, device=mean.device).reshape(-1)
    return torch.where(signal > 0, n * noise / (tolerance**2 * signal.clamp_min(1e-300)), math.inf)


def samples_needed(maps: torch.Tensor, n_samples: int, tolerance: float) -> np.ndarray:
    """The N that would have reached relative error ``tolerance``, from R independent maps (R, B, ...) of ``n_samples``.

    By the 1/N law, ``n_samples * (measured error / tolerance)^2`` with the error measured by ``repeat_error``: (B,).
    """
    return n_samples * (repeat_error(maps).cpu().numpy() / tolerance) ** 2


def check_prediction(
    model: nn.Module,
    images: torch.Tensor,
    aggregate: Aggregate,
    tolerance: float,
    *,
    pilot_n: int,
    runs: int,
    seed: int,
    noise_level: float = DEFAULT_NOISE_LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict each image's N for ``tolerance`` from a pilot, then measure the N actually needed on independent runs.

    The pilot is ``smoothgrad_estimate`` with ``pilot_n`` gradients (seed
    ``seed``); each image then gets ``runs`` independent ``smoothgrad`` runs
    of the predicted N (seeds ``seed + 100 + 10 b + r``), whose spread gives
    the N needed (``samples_needed``). Returns (predicted N, needed N), each (B,).
    """
    device = images.device
    pilot = smoothgrad_estimate(
        model,
        images,
        n_samples=pilot_n,
        aggregate=aggregate,
        noise_level=noise_level,
        generator=seeded_generator(seed, device),
    )
    wanted = predict_samples(pilot, tolerance).cpu().numpy()
    needed = []
    for b, image in enumerate(images):
        n = int(np.ceil(wanted[b]))
        maps = torch.stack(
            [
                smoothgrad(
                    model,
                    image[None],
                    n_samples=n,
                    aggregate=aggregate,
                    noise_level=noise_level,
                    generator=seeded_generator(seed + 100 + 10 * b + r, device),
                )
                for r in range(runs)
            ]
        )
        needed.append(samples_needed(maps, n, tolerance)[0])
    return wanted, np.array(needed)


def check_prediction_on_draws(
    grads: torch.Tensor, aggregate: str, tolerance: float, pilot_n: int, run_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``check_prediction`` on gradients already drawn (B, N, C, H, W): the first ``pilot_n`` are the pilot, the rest
    make independent runs of ``run_n``; the needed N is extrapolated by the 1/N law. Returns (predicted, needed)."""
    wanted = predict_samples(estimate_from_gradients(grads[:, :pilot_n], aggregate), tolerance).cpu().numpy()
    rest = grads[:, pilot_n:].unflatten(1, (-1, run_n))  # (B, runs, n, C, H, W)
    maps = estimate_from_gradients(rest.flatten(0, 1), aggregate).mean.unflatten(0, rest.shape[:2]).transpose(0, 1)
    return wanted, samples_needed(maps, run_n, tolerance)


def repeat_error(means: torch.Tensor) -> torch.Tensor:
    """The relative error of one run, measured from R independent runs' maps (R, B, ...): (B,).

    ``sqrt(sum of the per-element variance over runs) / ||signal||``, with the
    signal's squared norm ``||mean of runs||^2`` less its own noise (total variance / R).
    Needs no reference map and no standard errors: it checks them.
    """
    if means.shape[0] < 2:
        raise ValueError(f"need at least two independent runs, got {means.shape[0]}.")
    flat = means.flatten(2).double()
    noise = flat.var(0).sum(-1)
    signal = flat.mean(0).square().sum(-1) - noise / means.shape[0]
    return (noise / signal).sqrt()


def error_against_reference(mean: torch.Tensor, reference: Estimate) -> torch.Tensor:
    """Relative error ``||m - E m|| / ||E m||`` of maps (B, ...), measured against a large-N reference ``Estimate``.

    Returns (B,).

    ``||m - ref||^2`` also holds the reference's own error; its expected share,
    ``||s_ref||^2``, is subtracted (floored at 0), and ``||ref||^2 - ||s_ref||^2`` is the signal.
    """
    ref, ref_err = reference.mean.flatten(1).double(), reference.stderr.flatten(1).double()
    own = ref_err.square().sum(1)
    distance = (mean.flatten(1).double() - ref).square().sum(1) - own
    return (distance.clamp_min(0) / (ref.square().sum(1) - own)).sqrt()


def antithetic_gain(grads: torch.Tensor, aggregate: str = "raw") -> torch.Tensor:
    """Variance of the iid N-sample map over that of the antithetic one at the same N, from antithetic draws: (B,).

    ``grads`` (B, N, C, H, W) come from ``noisy_gradients(..., sampling="antithetic")``:
    samples 2k and 2k+1 are ``G(x + eps_k)`` and ``G(x - eps_k)``. Each is marginally
    an iid draw, so with ``h`` the aggregate's per-sample quantity,

        gain = sum_e Var[h(G)] / N  /  (sum_e Var[(h(G+) + h(G-)) / 2] / (N / 2)),

    which does not depend on N (summed over elements e). For ``"vargrad"``,
    ``h = G^2 - 2 mean(G) G``, its delta-method linearisation. A gain above 1
    means antithetic pairs need ``gain`` times fewer gradients for the same error.
    """
    if aggregate == "vargrad":
        centre = grads.double().mean(1, keepdim=True)
        values = grads.double().square() - 2 * centre * grads.double()
    elif aggregate in MEAN_OF:
        values = MEAN_OF[aggregate](grads.double())
    else:
        raise ValueError(f"aggregate must be one of {(*MEAN_OF, 'vargrad')}, got {aggregate!r}.")
    pairs = pair_units(values, "antithetic")
    if pairs.shape[1] < 2:
        raise ValueError(f"need at least two antithetic pairs, got {pairs.shape[1]}.")
    single = (pairs[:, :, 0].var(1) + pairs[:, :, 1].var(1)).flatten(1).sum(1) / 2
    paired = pairs.mean(2).var(1).flatten(1).sum(1)
    return single / (2 * paired)


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
    values = MEAN_OF[aggregate](samples.double())
    repeats = len(values) // sum(ns)
    if repeats < 2:
        raise ValueError(f"need at least 2 * sum(ns) = {2 * sum(ns)} samples for disjoint groups, got {len(values)}.")
    totals, start = [], 0
    for n in ns:
        estimates = values[start : start + repeats * n].reshape(repeats, n, -1).mean(1)
        totals.append(float(estimates.var(0).sum()))
        start += repeats * n
    return np.array(totals)


def running_norm(samples: torch.Tensor) -> np.ndarray:
    """L2 norm (over all elements) of the running mean ``(1/n) sum_{i<=n} G_i`` of samples (M, ...), n = 1..M: (M,)."""
    total = torch.zeros(samples.shape[1:], dtype=torch.float64, device=samples.device)
    norms = []
    for n, sample in enumerate(samples.detach(), start=1):
        total += sample.double()
        norms.append(float(total.norm()) / n)
    return np.array(norms)


def _norms_left_out(samples: torch.Tensor, groups: int) -> tuple[float, np.ndarray]:
    """``mean_norm``'s estimate from all samples (M, ...) and from each of ``groups`` delete-a-group subsets."""
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
    return full, left_out


def _jackknife_stderr(left_out: np.ndarray) -> float:
    groups = len(left_out)
    return float(np.sqrt((groups - 1) / groups * np.square(left_out - left_out.mean()).sum()))


def mean_norm(samples: torch.Tensor, groups: int = 8) -> tuple[float, float]:
    """``||E[G]||`` (L2 over all elements) from i.i.d. samples (M, ...), without the Monte-Carlo floor; with its s.e.

    The naive ``||mean G||^2`` is biased upwards: ``E||mean G||^2 = ||E G||^2 + sum Var[G] / M``.
    Subtracting the estimated variance term gives the unbiased U-statistic
    ``(||sum_i G_i||^2 - sum_i ||G_i||^2) / (M (M - 1))`` (the mean of
    ``G_i . G_j`` over pairs i != j); the estimate is its square root, floored
    at 0. The standard error is a delete-a-group jackknife over ``groups``
    equal consecutive groups of samples (M must be a multiple of ``groups``).
    """
    full, left_out = _norms_left_out(samples, groups)
    return full, _jackknife_stderr(left_out)


def mean_norm_ratio(numerator: torch.Tensor, denominator: torch.Tensor, groups: int = 8) -> tuple[float, float]:
    """``mean_norm(numerator) / mean_norm(denominator)`` for two functions of the SAME samples (e.g. ``|G_i|`` and
    ``G_i``), with its delete-a-group jackknife standard error.

    Both norms are recomputed without the same group of samples, so the
    correlation between them (they come from the same gradients) is in the
    error; adding their relative errors in quadrature would assume independence.
    """
    if numerator.shape != denominator.shape:
        raise ValueError(
            f"numerator and denominator must be the same samples, got {tuple(numerator.shape)} and "
            f"{tuple(denominator.shape)}."
        )
    top, top_left_out = _norms_left_out(numerator, groups)
    bottom, bottom_left_out = _norms_left_out(denominator, groups)
    return top / bottom, _jackknife_stderr(top_left_out / bottom_left_out)


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


def running_mean(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Means of the first 1, 2, ..., N samples along ``dim``, in float64, cast back to the dtype of ``samples``.

    ``running_mean(G)[n - 1]`` is the N = n estimate from the first n of the
    samples: what ``smoothgrad(..., aggregate="raw")`` would give with n
    samples of the same noise. Apply ``.abs()`` first for ``"abs"``.
    """
    counts = torch.arange(1, samples.shape[dim] + 1, device=samples.device, dtype=torch.float64)
    shape = [1] * samples.ndim
    shape[dim] = -1
    return (samples.detach().double().cumsum(dim) / counts.reshape(shape)).to(samples.dtype)


def samples_for_reliability(
    split_half: torch.Tensor | float, n_samples: int, wanted: float = 0.9
) -> torch.Tensor | float:
    """Samples an estimate needs for a reliability ``wanted``, from the split-half correlation of two N-sample maps.

    Two independent N-sample maps correlate with r = their reliability (the
    share of their variance that is not Monte-Carlo noise). By Spearman-Brown,
    k times as many samples give ``k r / (1 + (k - 1) r)``; solving for
    ``wanted`` gives ``k = wanted (1 - r) / (r (1 - wanted))`` and returns ``k N``.
    A split-half correlation ``r <= 0`` (no signal measured) gives ``inf``.

    The split-half correlation must be one whose null is 0: that of the
    signed maps (``signed_split_half``), not of ``|raw|`` maps, whose shared
    envelope correlates even when the mean gradient is zero.
    """
    if not 0 < wanted < 1:
        raise ValueError(f"wanted must be in (0, 1), got {wanted!r}.")
    if isinstance(split_half, torch.Tensor):
        r = split_half.double()
        return torch.where(r > 0, n_samples * wanted * (1 - r) / (r.clamp_min(1e-300) * (1 - wanted)), math.inf)
    if split_half <= 0:
        return math.inf
    return n_samples * wanted * (1 - split_half) / (split_half * (1 - wanted))


def signed_split_half(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Split-half reliability of the signed (``raw``) map from two independent sets of gradients (B, N, C, H, W): (B,).

    Pearson correlation, over all C x H x W elements, of the two sets' mean
    gradients, signs kept: no absolute value, channel maximum or clipping.
    Its null is 0: where ``E G = 0`` the two means are independent noise,
    whatever the gradients' spatial envelope. A correlation of the displayed
    ``|raw|`` maps instead picks up that envelope (``|.|`` of noise is large
    where the noise is), and reports agreement without any signal.
    ``split_half_correlation`` is the same statistic for one pool of draws.
    """
    if first.shape != second.shape or first.ndim != 5:
        shapes = f"{tuple(first.shape)} and {tuple(second.shape)}"
        raise ValueError(f"need two sets of gradients of the same shape (B, N, C, H, W), got {shapes}.")
    return pearson(first.detach().double().mean(1), second.detach().double().mean(1))


def stability_against_n(
    at_x: torch.Tensor, at_nudged: torch.Tensor, ns: Sequence[int], aggregate: Aggregate = "abs"
) -> np.ndarray:
    """Correlation between the map at x and the map at a nudged input, made from the first n gradients of each.

    ``at_x`` and ``at_nudged`` are noisy gradients (B, M, C, H, W) at x and at x + a small change. Drawn with the
    same generator and sigma, the i-th draws share their noise (common random numbers): the correlation then
    measures the map's response to the input alone, at N = n. Drawn independently, it is what a user who does
    not fix the seed sees: Monte-Carlo noise included. For each n in ``ns``, the maps are
    ``saliency_map(aggregate of the first n, normalize="percentile")`` (the displayed map) and the score is
    Pearson's r over pixels, per image. Returns (len(ns), B).
    """
    if at_x.shape != at_nudged.shape or at_x.ndim != 5:
        shapes = f"{tuple(at_x.shape)} and {tuple(at_nudged.shape)}"
        raise ValueError(f"need two sets of gradients of the same shape (B, M, C, H, W), got {shapes}.")
    if not ns or min(ns) < 1 or max(ns) > at_x.shape[1]:
        raise ValueError(f"every n must be between 1 and the {at_x.shape[1]} gradients given, got {list(ns)}.")

    def displayed(grads: torch.Tensor) -> torch.Tensor:
        return saliency_map(aggregate_samples(grads, aggregate), normalize="percentile")

    return np.stack([pearson(displayed(at_x[:, :n]), displayed(at_nudged[:, :n])).cpu().numpy() for n in ns])


def snr_null_fraction(threshold: float = 2.0, channels: int = 3, n_samples: int | None = None) -> float:
    """Share of pixels with ``snr_map >= threshold`` when the estimate has no signal (``E G = 0`` everywhere).

    ``snr_map`` takes, at each pixel, the channel with the largest ``|m|`` and
    returns its ``|m| / s``. With independent Gaussian channels of equal
    variance and zero mean, that channel's ``|m|`` is the largest of
    ``channels`` half-normals and its standard error s is independent of it,
    so the null share is

    * ``n_samples=None`` (s known, large N): ``1 - (2 Phi(threshold) - 1)^channels``;
    * ``n_samples = N`` (s estimated from N i.i.d. draws, N - 1 degrees of freedom):
      ``E_V[1 - (2 Phi(threshold sqrt(V / (N - 1))) - 1)^channels]`` with
      ``V ~ chi^2_{N-1}``, by numerical integration; for one channel this is
      ``P(|t_{N-1}| >= threshold)``.

    A map's share of pixels above the threshold means something only against
    this floor. Correlated channels give a smaller floor (fully correlated: the one-channel value).
    """
    if threshold <= 0 or channels < 1:
        raise ValueError(f"need threshold > 0 and channels >= 1, got {threshold!r} and {channels!r}.")

    def above(scale: float) -> float:
        inside = 2 * scipy_stats.norm.cdf(threshold * scale) - 1
        return 1 - inside**channels

    if n_samples is None:
        return float(above(1.0))
    if n_samples < 2:
        raise ValueError(f"an estimated standard error needs n_samples >= 2, got {n_samples!r}.")
    dof = n_samples - 1
    # E over V as an integral over its quantiles u in (0, 1): smooth, and the mass cannot be missed at any dof
    value, _ = integrate.quad(lambda u: above(math.sqrt(scipy_stats.chi2.ppf(u, dof) / dof)), 0, 1, limit=200)
    return float(value)
