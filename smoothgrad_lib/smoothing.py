"""SmoothGrad as the gradient of a smoothed model: Stein's lemma, and Softplus in place of ReLU.

SmoothGrad-raw estimates ``E[grad g(x + eps)] = grad (g * phi_sigma)(x)``, the
gradient of the target logit ``g`` convolved with the Gaussian density
``phi_sigma`` (eps ~ N(0, sigma^2 I)). Two other routes to a smoothed gradient:

* Stein's lemma: for a Gaussian eps, ``E[eps g(x + eps)] = sigma^2 E[grad g(x + eps)]``,
  so ``E[eps (g(x + eps) - g(x))] / sigma^2`` estimates the same vector from
  forward passes only (subtracting ``g(x)`` changes nothing in expectation,
  since ``E[eps] = 0``, and removes most of the variance).
* Softplus: ``softplus_beta(z) = log(1 + exp(beta z)) / beta`` is ReLU convolved
  with a logistic density of scale ``1 / beta`` (Dombrowski et al., 2019,
  "Explanations can be manipulated and geometry is to blame"), so swapping
  the ReLUs of a trained network for Softplus_beta smooths it without retraining.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ._checks import TargetType, as_batch, check_count, check_model, checked_logits, resolve_target
from .aggregates import Estimate
from .noise import NormalStream, check_generator, default_noise_std
from .precision import float32_precision
from .saliency import smoothgrad_estimate, vanilla_gradient
from .stats import cosine

__all__ = [
    "SteinComparison",
    "best_beta",
    "softplus_copy",
    "softplus_cosines",
    "stein_against_smoothgrad",
    "stein_gradient",
]


def stein_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int = 1000,
    noise_level: float | None = None,
    sigma: float | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> Estimate:
    """Gradient-free estimate of SmoothGrad-raw's expectation by Stein's lemma, with its standard error.

    ``(1/N) sum_i eps_i (g(x + eps_i) - g(x)) / sigma^2`` with
    ``eps_i ~ N(0, sigma^2 I)``: forward passes only, no backward. Its expectation is
    ``E[grad g(x + eps)]`` exactly, for any g with ``E|g(x + eps)| < inf``
    (a ReLU network included). Per element its variance is about
    ``||grad g||^2 / N``, so summed over the D elements of an image it is D times
    that of one gradient's: it needs far more samples than SmoothGrad.

    Args:
        model: classifier in eval mode; x: images (B, C, H, W) or one image (C, H, W).
        target: as in ``smoothgrad``; n_samples: N per image (>= 2).
        noise_level, sigma: as in ``smoothgrad`` (at most one; neither: ``noise_level=0.15``).
        batch_size: noisy copies per forward pass; it does not change the result (the
            noise comes from ``noise.NormalStream``, as ``smoothgrad``'s does).
        generator: the noise's ``torch.Generator``, on the device of x.

    Returns:
        ``Estimate(mean, stderr, n_samples)``: mean and stderr shaped like x, n_samples (B,) (an int for one image).
    """
    check_model(model, x)
    batch, single = as_batch(x)
    batch = batch.detach()
    check_count("n_samples", n_samples, 2)
    check_count("batch_size", batch_size)
    check_generator(generator, batch)
    stdev = default_noise_std(batch, noise_level, sigma)
    stream = NormalStream(batch.shape[1:], generator, batch.device, batch.dtype)
    with torch.no_grad(), float32_precision():
        clean = checked_logits(model, batch)
        classes = resolve_target(target, *clean.shape, predicted=clean).to(batch.device)
        base = clean.gather(1, classes[:, None])[:, 0].double()
        total = torch.zeros(batch.shape, dtype=torch.float64, device=batch.device)
        squares = torch.zeros_like(total)
        for b in range(batch.shape[0]):
            for start in range(0, n_samples, batch_size):
                eps = stdev[b] * stream.take(min(batch_size, n_samples - start))
                values = model(batch[b] + eps)[:, classes[b]].double() - base[b]
                terms = eps.double() * values.reshape(-1, 1, 1, 1) / stdev[b].double().square()
                total[b] += terms.sum(0)
                squares[b] += terms.square().sum(0)
    mean = total / n_samples
    stderr = ((squares - n_samples * mean.square()).clamp_min(0) / (n_samples - 1) / n_samples).sqrt()
    mean, stderr = mean.to(batch.dtype), stderr.to(batch.dtype)
    if single:
        return Estimate(mean[0], stderr[0], n_samples)
    return Estimate(mean, stderr, torch.full((batch.shape[0],), n_samples, dtype=torch.long))


class SteinComparison(NamedTuple):
    """Stein's estimator against SmoothGrad-raw on the same images (``stein_against_smoothgrad``).

    Attributes:
        smoothgrad: SmoothGrad-raw's ``Estimate`` (mean and per-element standard error), (B, C, H, W).
        stein: the mean of the Stein runs, with the standard error of that mean, (B, C, H, W).
        z2: (B,) mean over elements of ``(stein - smoothgrad)^2 / (s_stein^2 + s_smoothgrad^2)``: about 1
            where the two estimate the same vector and their error bars are honest.
        along: (runs, B) each Stein run's component along the SmoothGrad-raw map, over the map's norm: 1 if
            they agree.
        along_mean, along_stderr: (B,) its mean over the runs and the standard error of that mean.
        samples_ratio: (B,) how many times as many samples Stein needs as SmoothGrad for the same summed
            squared error (the ratio of their summed variances per sample).
    """

    smoothgrad: Estimate
    stein: Estimate
    z2: torch.Tensor
    along: torch.Tensor
    along_mean: torch.Tensor
    along_stderr: torch.Tensor
    samples_ratio: torch.Tensor


def stein_against_smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    smoothgrad_samples: int = 192,
    stein_samples: int = 384,
    runs: int = 4,
    noise_level: float | None = None,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
    stein_generators: Sequence[torch.Generator] | None = None,
) -> SteinComparison:
    """Check Stein's lemma on a model: Stein's gradient-free estimate against SmoothGrad-raw, and its cost.

    Both estimate ``E[grad g(x + eps)]``. SmoothGrad-raw (``smoothgrad_estimate(..., aggregate="raw")``) gets
    ``smoothgrad_samples`` gradients per image from ``generator``; ``stein_gradient`` runs ``runs`` times with
    ``stein_samples`` forward passes each, run r from ``stein_generators[r]``. The runs are pooled (their mean,
    with the standard error of the mean of ``runs`` independent estimates) for the agreement ``z2``, and kept
    apart for the component ``along`` the SmoothGrad map, whose spread over the runs gives its error bar.

    Args:
        model: classifier in eval mode; x: images (B, C, H, W); target: as in ``smoothgrad``.
        smoothgrad_samples, stein_samples: N per image of each estimator (>= 2); runs: Stein runs (>= 2).
        noise_level, sigma: as in ``smoothgrad`` (at most one; neither: ``noise_level=0.15``), the same for both.
        generator: SmoothGrad's noise; stein_generators: one per Stein run (None: the global generator).

    Returns:
        ``SteinComparison``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}.")
    check_count("runs", runs, 2)
    if stein_generators is not None and len(stein_generators) != runs:
        raise ValueError(f"stein_generators must hold one generator per run ({runs}), got {len(stein_generators)}.")
    generators = [None] * runs if stein_generators is None else list(stein_generators)
    noise = {"noise_level": noise_level, "sigma": sigma}
    sg = smoothgrad_estimate(
        model, x, target, n_samples=smoothgrad_samples, aggregate="raw", generator=generator, **noise
    )
    estimates = [stein_gradient(model, x, target, n_samples=stein_samples, generator=g, **noise) for g in generators]
    stein_mean = torch.stack([r.mean for r in estimates]).mean(0)
    stein_err = torch.stack([r.stderr for r in estimates]).square().mean(0).div(runs).sqrt()
    z2 = ((stein_mean - sg.mean) ** 2 / (stein_err**2 + sg.stderr**2)).flatten(1).mean(1)
    unit = sg.mean.flatten(1) / sg.mean.flatten(1).norm(dim=1, keepdim=True)
    along = torch.stack([(r.mean.flatten(1) * unit).sum(1) for r in estimates]) / sg.mean.flatten(1).norm(dim=1)
    samples_ratio = (stein_err.flatten(1).square().sum(1) * runs * stein_samples) / (
        sg.stderr.flatten(1).square().sum(1) * smoothgrad_samples
    )
    pooled = Estimate(stein_mean, stein_err, estimates[0].n_samples * runs)
    return SteinComparison(sg, pooled, z2, along, along.mean(0), along.std(0) / math.sqrt(runs), samples_ratio)


def softplus_copy(model: nn.Module, beta: float) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.ReLU`` replaced by ``nn.Softplus(beta)``; ``model`` is untouched.

    ``softplus_beta(z) = log(1 + exp(beta z)) / beta`` is within ``log(2) / beta``
    of ReLU everywhere (beta in 1 / pre-activation units), so beta -> inf gives
    back the ReLU network (torch's Softplus is the identity where ``beta z > 20``,
    an error below ``exp(-20) / beta``).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}.")
    swapped = copy.deepcopy(model)
    names = [name for name, module in swapped.named_modules() if type(module) is nn.ReLU]
    if not names:
        raise ValueError("model has no nn.ReLU modules to replace (ReLU6 and functional relu are not swapped).")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = swapped.get_submodule(parent_name) if parent_name else swapped
        setattr(parent, child, nn.Softplus(beta=float(beta)))
    return swapped.eval()


def softplus_cosines(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    reference: torch.Tensor,
    betas: np.ndarray | list[float],
) -> torch.Tensor:
    """``cosine(grad g_beta(x), reference)`` for each beta and image: (len(betas), B).

    ``g_beta`` is the target logit of ``softplus_copy(model, beta)``; ``reference``
    (B, C, H, W) is typically SmoothGrad-raw at some sigma.
    """
    return torch.stack([cosine(vanilla_gradient(softplus_copy(model, b), x, target), reference) for b in betas])


def best_beta(cosines: torch.Tensor, betas: np.ndarray | list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image, the beta of largest cosine and that cosine, from ``softplus_cosines`` output: ((B,), (B,))."""
    best, index = cosines.max(0)
    return torch.as_tensor(np.asarray(betas, dtype=float), device=index.device)[index], best
