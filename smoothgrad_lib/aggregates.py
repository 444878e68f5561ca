"""SmoothGrad's four aggregates, defined once, and the statistics of a Monte-Carlo estimate.

With noisy gradients ``G_i``, ``i = 1..N``, each aggregate is a mean over i:

* ``"abs"``: mean of ``|G_i|`` (Captum's default);
* ``"square"``: mean of ``G_i^2`` (PAIR ``magnitude=True``, Captum ``smoothgrad_sq``);
* ``"raw"``: mean of ``G_i``, the paper's equation;
* ``"vargrad"``: ``mean G_i^2 - (mean G_i)^2``, the population variance (Adebayo et al., 2018).

The first three are means of ``h(G_i)`` with ``h = MEAN_OF[aggregate]``.
Draws come in *units*: one gradient for iid sampling, one pair ``(eps, -eps)``
for antithetic sampling; units are independent, a pair's two gradients are not.

Relative error. ``relative_error(mean, stderr) = ||stderr||_2 / ||mean||_2``
per image, over all its elements, in float64. Convention: 0 where the error
is 0 (every draw agreed, even for a zero mean: the estimate is exact), ``inf``
where the mean is 0 and the error is not, NaN where the error is unknown
(NaN standard errors: too few units).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch

AGGREGATES = ("abs", "square", "raw", "vargrad")
Aggregate = Literal["abs", "square", "raw", "vargrad"]
# h of the aggregates that are a mean of h(G_i); torch.positive returns its argument (the raw gradient).
MEAN_OF = {"raw": torch.positive, "abs": torch.abs, "square": torch.square}


class Estimate(NamedTuple):
    """A SmoothGrad estimate with its Monte-Carlo error.

    Attributes:
        mean: the estimate, shaped like ``x``; exactly what ``smoothgrad`` returns.
        stderr: its per-element Monte-Carlo standard error, shaped like ``x``
            (NaN where fewer than two independent units were drawn).
        n_samples: gradients used per image, a long tensor (B,), or an int for a single (C, H, W) image.
    """

    mean: torch.Tensor
    stderr: torch.Tensor
    n_samples: torch.Tensor | int


def check_aggregate(aggregate: str, allowed: tuple[str, ...] = AGGREGATES) -> None:
    """Raise a ValueError that lists the choices unless ``aggregate`` is one of ``allowed``.

    Examples:
        >>> check_aggregate("abs")
        >>> check_aggregate("mean")
        Traceback (most recent call last):
            ...
        ValueError: aggregate must be one of ('abs', 'square', 'raw', 'vargrad'), got 'mean'.
    """
    if aggregate not in allowed:
        raise ValueError(f"aggregate must be one of {allowed}, got {aggregate!r}.")


def relative_error(mean: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """``||stderr||_2 / ||mean||_2`` per image, for estimates (B, ...): (B,) float64 (the module's convention).

    Examples:
        An error of norm 0.5 on a mean of norm 5; an exact estimate; an error on a zero mean:

        >>> mean = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
        >>> relative_error(mean, torch.tensor([[0.5, 0.0], [0.0, 0.0], [1.0, 0.0]])).tolist()
        [0.1, 0.0, inf]
    """
    error, signal = stderr.flatten(1).double().norm(dim=1), mean.flatten(1).double().norm(dim=1)
    return torch.where(error == 0, torch.zeros_like(error), error / signal)


def without_offset(estimate: Estimate) -> Estimate:
    """The estimate less each image's mean over its (C, H, W) elements, with the same standard errors.

    A display that maps a map's range onto a colour scale shows its contrast, not its level: any constant added
    to the map (``abs``'s floor ``E|G|``, say) is invisible there. The mean is the constant whose removal leaves
    the least (in L2), so ``relative_error`` and ``montecarlo.predict_samples`` of this estimate measure the error
    against what a reader can see. The mean is treated as fixed (its own Monte-Carlo error, ``||s|| / sqrt(CHW)``,
    is negligible). Accepts (B, C, H, W) or (C, H, W).

    Examples:
        >>> estimate = Estimate(torch.tensor([[[1.0, 3.0]]]), torch.ones(1, 1, 2), 4)   # one (C, H, W) = (1, 1, 2) map
        >>> without_offset(estimate).mean.tolist(), torch.equal(without_offset(estimate).stderr, estimate.stderr)
        ([[[-1.0, 1.0]]], True)
    """
    mean = estimate.mean
    batch = mean if mean.ndim == 4 else mean[None]
    level = batch.flatten(1).mean(1)[:, None, None, None]
    return estimate._replace(mean=(batch - level).reshape(mean.shape))


def snr_map(mean: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """Per-pixel signal-to-noise ratio ``|m| / s`` of maps (B, C, H, W), in the channel the map shows: (B, H, W).

    ``saliency_map(..., reduce="max")`` shows, at each pixel, the channel with the largest
    ``|m|``; this is that channel's ``|m| / s``. A pixel with SNR below about 2 has a
    value (for ``raw``, a sign) that the next run can change.

    Examples:
        The pixel shows channel 1 (``|-4| > |3|``), whose SNR is 4 / 2:

        >>> mean, stderr = torch.tensor([3.0, -4.0]).reshape(1, 2, 1, 1), torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1)
        >>> snr_map(mean, stderr).tolist()
        [[[2.0]]]
    """
    if mean.shape != stderr.shape or mean.ndim != 4:
        shapes = f"{tuple(mean.shape)} and {tuple(stderr.shape)}"
        raise ValueError(f"mean and stderr must both be (B, C, H, W), got {shapes}.")
    channel = mean.abs().argmax(1, keepdim=True)
    return (mean.gather(1, channel).abs() / stderr.gather(1, channel))[:, 0]


def display_error_map(mean: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """Each pixel's Monte-Carlo error relative to the contrast of the map on display: (B, C, H, W) -> (B, H, W).

    ``saliency_map(..., reduce="max")`` shows, at each pixel, ``max_c |m_c|``; the error of that pixel is the
    standard error ``s_c`` of the channel shown. The contrast is the standard deviation of the shown map over its
    pixels: what a colour scale spreads out. Their ratio does not change when a constant is added to the map
    (``abs``'s floor ``E|G|``, say), unlike ``snr_map``, which is about that floor there; so it says, for the
    aggregate displayed, where a pixel's shade could change on the next run (near 1) and where it cannot (near 0).
    A map without contrast gives infinity (NaN where ``s`` is 0 too).

    Examples:
        The shown map [1, 3] has contrast (standard deviation) 1; a constant added to it changes nothing:

        >>> mean, stderr = torch.tensor([[[[1.0, 3.0]]]]), torch.full((1, 1, 1, 2), 0.5)
        >>> shown = display_error_map(mean, stderr)
        >>> shown.tolist(), torch.equal(display_error_map(mean + 10, stderr), shown)
        ([[[0.5, 0.5]]], True)
    """
    if mean.shape != stderr.shape or mean.ndim != 4:
        shapes = f"{tuple(mean.shape)} and {tuple(stderr.shape)}"
        raise ValueError(f"mean and stderr must both be (B, C, H, W), got {shapes}.")
    channel = mean.abs().argmax(1, keepdim=True)
    shown = mean.gather(1, channel).abs()[:, 0]
    contrast = shown.flatten(1).std(1, correction=0)[:, None, None]
    return stderr.gather(1, channel)[:, 0] / contrast


def aggregate_samples(samples: torch.Tensor, aggregate: Aggregate, dim: int = 1) -> torch.Tensor:
    """SmoothGrad's aggregates of noisy gradients ``G_i`` stacked along ``dim`` (as ``noisy_gradients`` returns them).

    The module's definitions, summed in float64 and cast back (``"vargrad"``:
    the population variance), as ``smoothgrad(..., aggregate=...)`` computes them.

    Examples:
        Gradients -1 and 3: mean |G| = 2, mean G^2 = 5, mean G = 1, variance 5 - 1 = 4:

        >>> samples = torch.tensor([[-1.0, 3.0]])                # (B, N) = (1, 2)
        >>> [aggregate_samples(samples, aggregate).item() for aggregate in AGGREGATES]
        [2.0, 5.0, 1.0, 4.0]
    """
    check_aggregate(aggregate)
    values = samples.detach().double()
    result = values.var(dim, correction=0) if aggregate == "vargrad" else MEAN_OF[aggregate](values).mean(dim)
    return result.to(samples.dtype)


def pair_units(grads: torch.Tensor, sampling: str) -> torch.Tensor:
    """(B, N, ...) -> (B, N, ...) for iid draws, (B, N/2, 2, ...) for antithetic pairs.

    Examples:
        >>> pair_units(torch.zeros(1, 4, 3), "iid").shape, pair_units(torch.zeros(1, 4, 3), "antithetic").shape
        (torch.Size([1, 4, 3]), torch.Size([1, 2, 2, 3]))
    """
    if grads.ndim < 3:
        raise ValueError(f"gradients must be (B, N, ...) from noisy_gradients, got shape {tuple(grads.shape)}.")
    if sampling == "iid":
        return grads
    if sampling != "antithetic":
        raise ValueError(f"sampling must be 'iid' or 'antithetic', got {sampling!r}.")
    if grads.shape[1] % 2:
        raise ValueError(f"antithetic draws come in pairs: N={grads.shape[1]} is odd.")
    return grads.unflatten(1, (-1, 2))


def estimate_from_gradients(
    grads: torch.Tensor, aggregate: Literal["raw", "abs", "square"] = "abs", sampling: str = "iid"
) -> Estimate:
    """Mean and standard error of one aggregate from gradients already drawn, (B, N, C, H, W) from ``noisy_gradients``.

    The same statistics as ``smoothgrad_estimate`` (units are single
    gradients for iid sampling, consecutive pairs for antithetic sampling),
    so that several aggregates can be read off one set of draws. Only the
    means of a function of G: ``"raw"``, ``"abs"``, ``"square"``.

    Examples:
        Gradients 1, 3, 5, 7: iid, the standard error is ``sd / sqrt(4) = sqrt(20 / 3) / 2``; antithetic, the pair means
        2 and 6 are the units, with standard error ``sqrt(8 / 2) = 2``:

        >>> grads = torch.tensor([1.0, 3.0, 5.0, 7.0]).reshape(1, 4, 1, 1, 1)      # (B, N, C, H, W)
        >>> iid, pairs = estimate_from_gradients(grads, "raw"), estimate_from_gradients(grads, "raw", "antithetic")
        >>> iid.mean.item(), round(iid.stderr.item(), 5), round((20 / 3) ** 0.5 / 2, 5), pairs.stderr.item()
        (4.0, 1.29099, 1.29099, 2.0)
    """
    check_aggregate(aggregate, tuple(MEAN_OF))
    units = pair_units(grads, sampling)
    values = MEAN_OF[aggregate](units.double())
    if sampling == "antithetic":
        values = values.mean(2)
    if values.shape[1] < 2:
        raise ValueError(f"a standard error needs at least two independent units, got {values.shape[1]}.")
    mean = values.mean(1)
    stderr = (values.var(1) / values.shape[1]).sqrt()
    n = torch.full((grads.shape[0],), grads.shape[1], dtype=torch.long)
    return Estimate(mean.to(grads.dtype), stderr.to(grads.dtype), n)


class RunningMoments:
    """Running sums over units (one gradient, or one antithetic pair) per image, in float64 where the device has it.

    Float64 keeps both the order of summation (set by batch_size) and the
    differences E[u^2] - E[u]^2 from losing precision. Only these sums are
    kept: memory does not grow with the number of draws.

    Standard error. With ``K`` units per image and ``u_k`` a unit's mean of
    ``h(G)``, ``stderr = sqrt(s_u^2 / K)`` with ``s_u^2`` the unbiased
    variance of the ``u_k`` (NaN below K = 2). For ``"vargrad"``,
    ``V = p_bar - q_bar^2`` with the unit means ``p_k`` of ``G^2`` and ``q_k``
    of ``G``; its error is the jackknife over units,
    ``stderr^2 = (K-1)/K sum_k (V_(-k) - V_(.))^2``, exact from running sums
    of ``q^j`` (j <= 4), ``p``, ``p^2``, ``pq`` and ``pq^2`` (NaN below K = 3).
    """

    def __init__(self, n_images: int, aggregate: Aggregate, paired: bool) -> None:
        self.aggregate, self.paired = aggregate, paired
        self.dtype = torch.float64
        self.units = torch.zeros(n_images, dtype=torch.long)
        self.device: torch.device | None = None
        self.shape = torch.Size((n_images,))
        names = ("q", "p", "qq", "pp", "pq", "qqq", "qqqq", "pqq") if aggregate == "vargrad" else ("u", "uu")
        self.sums: dict[str, torch.Tensor] = dict.fromkeys(names)  # allocated on the first chunk's device and shape

    def add(self, owner: torch.Tensor, grads: torch.Tensor) -> None:
        """Add the gradients (n, ...) of the images ``owner`` (n,), contiguous per image, whole pairs if paired.

        Examples:
            >>> moments = RunningMoments(2, "raw", paired=False)
            >>> moments.add(torch.tensor([0, 0, 1]), torch.tensor([[1.0], [3.0], [5.0]]))   # image 0: 1, 3; image 1: 5
            >>> moments.add(torch.tensor([1]), torch.tensor([[7.0]]))                        # image 1: 7
            >>> moments.mean().flatten().tolist(), moments.gradients_per_image().tolist()
            ([2.0, 6.0], [2, 2])
        """
        if self.device is None:
            self.device, self.shape = grads.device, torch.Size((len(self.units), *grads.shape[1:]))
            self.dtype = torch.float32 if grads.device.type == "mps" else torch.float64
            self.sums = {name: torch.zeros(self.shape, dtype=self.dtype, device=self.device) for name in self.sums}
        grads = grads.to(self.dtype)
        images, lengths = torch.unique_consecutive(owner.cpu(), return_counts=True)
        for image, rows in zip(images.tolist(), grads.split(lengths.tolist()), strict=True):
            self.units[image] += len(rows) // (2 if self.paired else 1)
            if self.aggregate == "vargrad":
                q, p = self._unit_means(rows), self._unit_means(rows.square())
                qq = q * q
                powers = (("q", q), ("p", p), ("qq", qq), ("pp", p * p), ("pq", p * q))
                for name, value in (*powers, ("qqq", qq * q), ("qqqq", qq * qq), ("pqq", p * qq)):
                    self.sums[name][image] += value.sum(0)
            else:
                u = self._unit_means(MEAN_OF[self.aggregate](rows))
                self.sums["u"][image] += u.sum(0)
                self.sums["uu"][image] += u.square().sum(0)

    def _unit_means(self, values: torch.Tensor) -> torch.Tensor:
        return values.unflatten(0, (-1, 2)).mean(1) if self.paired else values

    def _per_unit(self, name: str) -> torch.Tensor:
        return self.sums[name] / self._units()

    def _units(self) -> torch.Tensor:
        return self.units.to(self.device, self.dtype).reshape(-1, *([1] * (len(self.shape) - 1)))

    def _variance(self) -> torch.Tensor:
        """Unbiased variance of the unit values ``u_k``."""
        k, u = self._units(), self._per_unit("u")
        return (self.sums["uu"] - k * u * u) / (k - 1)

    def mean(self) -> torch.Tensor:
        """The current estimate per image, (B, ...): the mean of the units (``"vargrad"``: ``p_bar - q_bar^2``).

        Examples:
            >>> moments = RunningMoments(1, "square", paired=False)
            >>> moments.add(torch.zeros(2, dtype=torch.long), torch.tensor([[1.0], [-3.0]]))
            >>> moments.mean().flatten().tolist()                    # (1 + 9) / 2
            [5.0]
        """
        if self.aggregate == "vargrad":
            return (self._per_unit("p") - self._per_unit("q").square()).clamp_min(0)
        return self._per_unit("u")

    def stderr(self) -> torch.Tensor:
        """Its Monte-Carlo standard error, (B, ...): see the class (NaN below 2 units, 3 for ``"vargrad"``).

        Examples:
            For ``"vargrad"`` of gradients 0, 2, 4: V = 20/3 - 4 = 8/3, and the leave-one-out variances 1, 4, 1 give the
            jackknife ``sqrt(2/3 * (1 + 4 + 1)) = 2``:

            >>> moments = RunningMoments(1, "vargrad", paired=False)
            >>> moments.add(torch.zeros(3, dtype=torch.long), torch.tensor([[0.0], [2.0], [4.0]]))
            >>> round(moments.mean().item(), 6), round(moments.stderr().item(), 6)
            (2.666667, 2.0)
        """
        k = self._units()
        if self.aggregate == "vargrad":
            return torch.where(k >= 3, self._jackknife_vargrad().clamp_min(0).sqrt(), math.nan)
        return torch.where(k >= 2, (self._variance().clamp_min(0) / k).sqrt(), math.nan)

    def _jackknife_vargrad(self) -> torch.Tensor:
        """Jackknife variance of ``V = p_bar - q_bar^2`` over the K units, from power sums.

        With ``a_k = p_k - p_bar``, ``b_k = q_k - q_bar`` and ``d_k = a_k - 2 q_bar b_k``,
        ``V_(-k) - V_(.) = -d_k / (K-1) - (b_k^2 - mean b^2) / (K-1)^2``; its sum of
        squares needs the central sums of d^2, d b^2 and b^4, expanded below.
        """
        k, s = self._units(), self.sums
        q, p = self._per_unit("q"), self._per_unit("p")
        bb = s["qq"] - k * q * q
        bbb = s["qqq"] - 3 * q * s["qq"] + 2 * k * q**3
        bbbb = s["qqqq"] - 4 * q * s["qqq"] + 6 * q * q * s["qq"] - 3 * k * q**4
        abb = s["pqq"] - 2 * q * s["pq"] + q * q * s["p"] - p * bb
        dd = (s["pp"] - k * p * p) - 4 * q * (s["pq"] - k * p * q) + 4 * q * q * bb
        dbb = abb - 2 * q * bbb
        bb_spread = bbbb - bb * bb / k
        m = k - 1
        return (m / k) * (dd / m**2 + 2 * dbb / m**3 + bb_spread / m**4)

    def relative_error(self) -> torch.Tensor:
        """``relative_error`` of the current estimate per image (B,), on the CPU.

        Examples:
            Gradients 1 and 3: mean 2, standard error ``sqrt(2 / 2) = 1``:

            >>> moments = RunningMoments(1, "raw", paired=False)
            >>> moments.add(torch.zeros(2, dtype=torch.long), torch.tensor([[1.0], [3.0]]))
            >>> moments.relative_error().tolist()
            [0.5]
        """
        return relative_error(self.mean(), self.stderr()).cpu()

    def gradients_per_image(self) -> torch.Tensor:
        """Gradients added per image so far, (B,) long: the units, twice them for antithetic pairs.

        Examples:
            >>> moments = RunningMoments(1, "abs", paired=True)
            >>> moments.add(torch.zeros(4, dtype=torch.long), torch.tensor([[1.0], [-1.0], [2.0], [-2.0]]))  # two pairs
            >>> moments.units.tolist(), moments.gradients_per_image().tolist()
            ([2], [4])
        """
        return self.units * (2 if self.paired else 1)
