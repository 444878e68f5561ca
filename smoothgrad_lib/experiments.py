"""Measurements behind the report: roughness of gradients, gate states, Taylor bias, variance against N.

All functions take a classifier in eval mode and images as in
``smoothgrad_lib.saliency``; all randomness comes from an explicit
``torch.Generator`` so that every number in the report is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from .saliency import vanilla_gradient

def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``: one per measurement, so each is reproducible alone."""
    return torch.Generator(device=device).manual_seed(seed)


# d activation / d input is a 0/1 gate for these piecewise-linear activations.
GATES = {nn.ReLU: lambda z: z > 0, nn.ReLU6: lambda z: (z > 0) & (z < 6)}


def gradients_at(model: nn.Module, points: torch.Tensor, target: int, batch_size: int = 64) -> torch.Tensor:
    """Vanilla gradients of logit ``target`` at many points (M, C, H, W), ``batch_size`` at a time."""
    return torch.cat([vanilla_gradient(model, chunk, target) for chunk in points.split(batch_size)])


def directional_slice(
    model: nn.Module, x: torch.Tensor, target: int, direction: torch.Tensor, ts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target logit ``g(x + t d)`` and its derivative ``d/dt g(x + t d) = grad g(x + t d) . d`` along a line.

    Args:
        x: one image (C, H, W); direction: d, same shape; ts: the T values of t.

    Returns:
        (logits (T,), directional derivatives (T,)).
    """
    points = x.detach()[None] + ts.reshape(-1, 1, 1, 1).to(x) * direction[None]
    with torch.no_grad():
        logits = torch.cat([model(chunk)[:, target] for chunk in points.split(64)])
    derivative = (gradients_at(model, points, target) * direction[None]).flatten(1).sum(1)
    return logits, derivative


def roughness(values: torch.Tensor) -> float:
    """Total variation of a sampled curve divided by its range: 1 for a monotone curve, large when it jumps up and down."""
    values = values.detach().double()
    span = float(values.max() - values.min())
    return float(values.diff().abs().sum()) / span if span > 0 else 0.0


def activation_gates(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The 0/1 gate (derivative) of every ReLU and ReLU6 unit of ``model`` at each image of x (B, C, H, W).

    Returns a bool tensor (B, U) with one column per unit and call (a module
    applied twice contributes twice).
    """
    found: list[torch.Tensor] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        found.append(GATES[type(module)](inputs[0].detach()).flatten(1))

    hooks = [m.register_forward_hook(record) for m in model.modules() if type(m) in GATES]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    if not found:
        raise ValueError("model has no ReLU or ReLU6 modules whose gates could be recorded.")
    return torch.cat(found, 1)


def gate_fractions(
    model: nn.Module, x: torch.Tensor, sigma: float, n_samples: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """For one image x (C, H, W): each unit's gate at x (U,) and the fraction of N noisy copies ``x + eps`` in which it is open."""
    noise = torch.randn((n_samples, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    clean = activation_gates(model, x[None])[0]
    noisy = torch.cat([activation_gates(model, chunk) for chunk in (x[None] + sigma * noise).split(64)])
    return clean, noisy.float().mean(0)


def taylor_bias(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
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


def variance_against_n(samples: torch.Tensor, ns: Sequence[int], aggregate: str = "raw") -> np.ndarray:
    """Total variance (summed over pixels) of the N-sample estimate, for each N in ``ns``.

    ``samples`` (M, C, H, W) are i.i.d. noisy gradients. For each N the pool is
    cut into R = M // max(ns) disjoint groups of N (the same R for every N),
    each group gives one estimate ``mean(G)`` (``"raw"``) or ``mean(|G|)``
    (``"abs"``), and the unbiased variance over the R estimates is summed over pixels.
    """
    if aggregate not in ("raw", "abs"):
        raise ValueError(f"aggregate must be 'raw' or 'abs', got {aggregate!r}.")
    values = samples.double().abs() if aggregate == "abs" else samples.double()
    repeats = len(values) // max(ns)
    if repeats < 2:
        raise ValueError(f"need at least 2 * max(ns) = {2 * max(ns)} samples, got {len(values)}.")
    totals = []
    for n in ns:
        estimates = values[: repeats * n].reshape(repeats, n, -1).mean(1)
        totals.append(float(estimates.var(0).sum()))
    return np.array(totals)


def loglog_slope(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Least-squares slope of log y against log x, with a two-sided confidence interval (Student t)."""
    fit = stats.linregress(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)))
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 2) * fit.stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


def mask_mass(saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's total saliency (B, H, W) that falls inside the evidence mask (B, H, W)."""
    saliency = saliency.detach().clamp_min(0)
    inside = (saliency * masks).flatten(1).sum(1)
    return inside / saliency.flatten(1).sum(1).clamp_min(torch.finfo(saliency.dtype).tiny)
