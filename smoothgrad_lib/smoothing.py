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

import numpy as np
import torch
from torch import nn

from .saliency import Estimate, TargetType, noise_std, resolve_target, vanilla_gradient


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
        model: classifier in eval mode; x: images (B, C, H, W).
        target: as in ``smoothgrad``; n_samples: N per image.
        noise_level, sigma: as in ``smoothgrad`` (exactly one; ``noise_level`` is
            a fraction of each image's range).
        batch_size: noisy copies per forward pass; generator: the noise's ``torch.Generator``.

    Returns:
        ``Estimate(mean, stderr, n_samples)``: mean and stderr (B, C, H, W), n_samples (B,).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a batch (B, C, H, W), got shape {tuple(x.shape)}.")
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 for a standard error, got {n_samples}.")
    stdev = noise_std(x, noise_level=noise_level, sigma=sigma)
    with torch.no_grad():
        clean = model(x)
        classes = resolve_target(target, *clean.shape, predicted=clean)
        base = clean.gather(1, classes[:, None])[:, 0].double()
        total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        squares = torch.zeros_like(total)
        for b in range(x.shape[0]):
            for start in range(0, n_samples, batch_size):
                count = min(batch_size, n_samples - start)
                noise = torch.randn((count, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
                eps = stdev[b] * noise
                values = model(x[b] + eps)[:, classes[b]].double() - base[b]
                terms = eps.double() * values.reshape(-1, 1, 1, 1) / stdev[b].double().square()
                total[b] += terms.sum(0)
                squares[b] += terms.square().sum(0)
    mean = total / n_samples
    stderr = ((squares - n_samples * mean.square()).clamp_min(0) / (n_samples - 1) / n_samples).sqrt()
    counts = torch.full((x.shape[0],), n_samples, dtype=torch.long)
    return Estimate(mean.to(x.dtype), stderr.to(x.dtype), counts)


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


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of corresponding items of ``a`` and ``b`` (B, ...), over all their other axes: (B,)."""
    return nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def softplus_cosines(
    model: nn.Module, x: torch.Tensor, target: TargetType, reference: torch.Tensor, betas: np.ndarray | list[float]
) -> torch.Tensor:
    """``cosine(grad g_beta(x), reference)`` for each beta and image: (len(betas), B).

    ``g_beta`` is the target logit of ``softplus_copy(model, beta)``; ``reference``
    (B, C, H, W) is typically SmoothGrad-raw at some sigma.
    """
    return torch.stack([cosine(vanilla_gradient(softplus_copy(model, b), x, target), reference) for b in betas])


def best_beta(cosines: torch.Tensor, betas: np.ndarray | list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image, the beta of largest cosine and that cosine, from ``softplus_cosines`` output: ((B,), (B,))."""
    best, index = cosines.max(0)
    return torch.as_tensor(np.asarray(betas, dtype=float))[index], best
