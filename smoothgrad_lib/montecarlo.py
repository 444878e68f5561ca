"""Measuring the Monte-Carlo error of SmoothGrad: signal-to-noise maps, the N a target error needs, antithetic gain.

Notation as in ``smoothgrad_lib.saliency``: ``G_i`` are the noisy gradients of
one image, ``h`` the aggregate's function of them (``G`` for ``"raw"``, ``|G|``
for ``"abs"``, ``G^2`` for ``"square"``), ``m = mean_i h(G_i)`` the map and
``s`` its per-element standard error. The *relative error* of a map is
``||s||_2 / ||m||_2`` over all its C x H x W elements, the quantity that
``smoothgrad_estimate(..., tolerance=...)`` drives down; for independent draws
it falls as ``N^(-1/2)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .experiments import generator
from .saliency import Estimate, smoothgrad, smoothgrad_estimate

_TRANSFORMS = {"raw": lambda g: g, "abs": torch.abs, "square": torch.square}


def estimate_from_gradients(grads: torch.Tensor, aggregate: str = "abs", sampling: str = "iid") -> Estimate:
    """Mean and standard error of one aggregate from gradients already drawn, (B, N, C, H, W) from ``noisy_gradients``.

    The same statistics as ``smoothgrad_estimate`` (units are single
    gradients for iid sampling, consecutive pairs for antithetic sampling),
    so that several aggregates can be read off one set of draws. Only the
    means of a function of G: ``"raw"``, ``"abs"``, ``"square"``.
    """
    if aggregate not in _TRANSFORMS:
        raise ValueError(f"aggregate must be one of {tuple(_TRANSFORMS)}, got {aggregate!r}.")
    units = _units(grads, sampling)
    values = _TRANSFORMS[aggregate](units.double())
    if sampling == "antithetic":
        values = values.mean(2)
    if values.shape[1] < 2:
        raise ValueError(f"a standard error needs at least two independent units, got {values.shape[1]}.")
    mean = values.mean(1)
    stderr = (values.var(1) / values.shape[1]).sqrt()
    n = torch.full((grads.shape[0],), grads.shape[1], dtype=torch.long)
    return Estimate(mean.to(grads.dtype), stderr.to(grads.dtype), n)


def relative_error(mean: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """``||stderr||_2 / ||mean||_2`` per image, for maps (B, ...): (B,)."""
    return stderr.flatten(1).double().norm(dim=1) / mean.flatten(1).double().norm(dim=1)


def snr_map(mean: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """Per-pixel signal-to-noise ratio ``|m| / s`` of maps (B, C, H, W), in the channel the map shows: (B, H, W).

    ``saliency_map(..., reduce="max")`` shows, at each pixel, the channel with the largest
    ``|m|``; this is that channel's ``|m| / s``. A pixel with SNR below about 2 has a
    value (for ``raw``, a sign) that the next run can change.
    """
    if mean.shape != stderr.shape or mean.ndim != 4:
        shapes = f"{tuple(mean.shape)} and {tuple(stderr.shape)}"
        raise ValueError(f"mean and stderr must both be (B, C, H, W), got {shapes}.")
    channel = mean.abs().argmax(1, keepdim=True)
    return (mean.gather(1, channel).abs() / stderr.gather(1, channel))[:, 0]


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
    n = torch.as_tensor(estimate.n_samples, dtype=torch.float64).reshape(-1)
    return torch.where(signal > 0, n * noise / (tolerance**2 * signal.clamp_min(1e-300)), math.inf)


def samples_needed(maps: torch.Tensor, n_samples: int, tolerance: float) -> np.ndarray:
    """The N that would have reached relative error ``tolerance``, from R independent maps (R, B, ...) of ``n_samples``.

    By the 1/N law, ``n_samples * (measured error / tolerance)^2`` with the error measured by ``repeat_error``: (B,).
    """
    return n_samples * (repeat_error(maps).numpy() / tolerance) ** 2


def check_prediction(
    model: nn.Module,
    images: torch.Tensor,
    aggregate: str,
    tolerance: float,
    *,
    pilot_n: int,
    runs: int,
    seed: int,
    noise_level: float = 0.15,
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
        generator=generator(seed, device),
    )
    wanted = predict_samples(pilot, tolerance).numpy()
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
                    generator=generator(seed + 100 + 10 * b + r, device),
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
    wanted = predict_samples(estimate_from_gradients(grads[:, :pilot_n], aggregate), tolerance).numpy()
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
    elif aggregate in _TRANSFORMS:
        values = _TRANSFORMS[aggregate](grads.double())
    else:
        raise ValueError(f"aggregate must be one of {(*_TRANSFORMS, 'vargrad')}, got {aggregate!r}.")
    pairs = _units(values, "antithetic")
    if pairs.shape[1] < 2:
        raise ValueError(f"need at least two antithetic pairs, got {pairs.shape[1]}.")
    single = (pairs[:, :, 0].var(1) + pairs[:, :, 1].var(1)).flatten(1).sum(1) / 2
    paired = pairs.mean(2).var(1).flatten(1).sum(1)
    return single / (2 * paired)


def _units(grads: torch.Tensor, sampling: str) -> torch.Tensor:
    """(B, N, ...) -> (B, N, ...) for iid, (B, N/2, 2, ...) for antithetic pairs."""
    if grads.ndim < 3:
        raise ValueError(f"gradients must be (B, N, ...) from noisy_gradients, got shape {tuple(grads.shape)}.")
    if sampling == "iid":
        return grads
    if sampling != "antithetic":
        raise ValueError(f"sampling must be 'iid' or 'antithetic', got {sampling!r}.")
    if grads.shape[1] % 2:
        raise ValueError(f"antithetic draws come in pairs: N={grads.shape[1]} is odd.")
    return grads.unflatten(1, (-1, 2))
