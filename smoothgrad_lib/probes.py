"""Probes of a network around an image: gradients along a line, gates and their flips, Taylor bias, noisy copies.

All functions take a classifier in eval mode and check it and their images
(as ``smoothgrad`` does); all randomness comes from an explicit
``torch.Generator``, and noise is drawn through ``smoothgrad_lib.noise``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ._checks import (
    TargetType,
    as_batch,
    check_count,
    check_image,
    check_model,
    clean_classes,
    resolve_target,
)
from .noise import NormalStream
from .precision import float32_precision
from .saliency import noisy_gradients, vanilla_gradient

# d activation / d input is a 0/1 gate for these piecewise-linear activations.
GATES = {nn.ReLU: lambda z: z > 0, nn.ReLU6: lambda z: (z > 0) & (z < 6)}


def gradients_at(model: nn.Module, points: torch.Tensor, target: int, *, batch_size: int = 64) -> torch.Tensor:
    """Vanilla gradients of logit ``target`` at many points (M, C, H, W), ``batch_size`` at a time."""
    return torch.cat([vanilla_gradient(model, chunk, target) for chunk in points.split(batch_size)])


def directional_slice(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    direction: torch.Tensor,
    ts: torch.Tensor,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target logit ``g(x + t d)`` and its derivative ``d/dt g(x + t d) = grad g(x + t d) . d`` along a line.

    Args:
        x: one image (C, H, W); direction: d, same shape; ts: the T values of t;
        batch_size: points per forward and backward pass (bounds memory).

    Returns:
        (logits (T,), directional derivatives (T,)), each from one forward and backward pass per point.
    """
    check_model(model, x)
    check_image(x)
    if not isinstance(direction, torch.Tensor) or direction.shape != x.shape:
        raise ValueError(
            f"direction must have the shape of x {tuple(x.shape)}, got {getattr(direction, 'shape', None)}."
        )
    check_count("batch_size", batch_size)
    logits, derivatives = [], []
    for chunk in ts.to(x).split(batch_size):
        points = (x.detach()[None] + chunk.reshape(-1, 1, 1, 1) * direction[None]).requires_grad_(True)
        with torch.enable_grad(), float32_precision():  # full float32 on CUDA, as the library's gradients
            selected = model(points)[:, target]
            (grads,) = torch.autograd.grad(selected.sum(), points)
        logits.append(selected.detach())
        derivatives.append((grads * direction[None]).flatten(1).sum(1))
    return torch.cat(logits), torch.cat(derivatives)


def activation_gates(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The 0/1 gate (derivative) of every ReLU and ReLU6 unit of ``model`` at each image of x (B, C, H, W).

    Returns a bool tensor (B, U) with one column per unit and call (a module
    applied twice contributes twice).
    """
    check_model(model, x)
    as_batch(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch (B, C, H, W), got shape {tuple(x.shape)}: use x[None] for one image.")
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
    """For one image x (C, H, W): each unit's gate at x (U,) and the share of N noisy copies ``x + eps`` opening it."""
    check_model(model, x)
    check_image(x)
    check_count("n_samples", n_samples)
    return _gate_fractions(model, x, sigma, n_samples, NormalStream(x.shape, generator, x.device, x.dtype))


def _gate_fractions(
    model: nn.Module, x: torch.Tensor, sigma: float, n_samples: int, stream: NormalStream
) -> tuple[torch.Tensor, torch.Tensor]:
    clean = activation_gates(model, x[None])[0]
    copies = x[None] + sigma * stream.take(n_samples)
    noisy = torch.cat([activation_gates(model, chunk) for chunk in copies.split(64)])
    return clean, noisy.float().mean(0)


def gate_flips(
    model: nn.Module, x: torch.Tensor, *, sigmas: Sequence[float], n_samples: int, generator: torch.Generator
) -> np.ndarray:
    """Expected number of ReLU/ReLU6 units whose gate at ``x + eps`` differs from their gate at x, for each sigma.

    For one image x (C, H, W): ``sum_u P(gate_u(x + eps) != gate_u(x))``,
    estimated from ``n_samples`` noisy copies per sigma (absolute standard
    deviation, input units). It counts the kinks of the piecewise-linear
    network that the noise crosses.
    """
    check_model(model, x)
    check_image(x)
    check_count("n_samples", n_samples)
    stream, counts = NormalStream(x.shape, generator, x.device, x.dtype), []
    for sigma in sigmas:
        clean, fractions = _gate_fractions(model, x, float(sigma), n_samples, stream)
        counts.append(float((fractions.double() - clean.double()).abs().sum()))
    return np.array(counts)


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
    check_model(model, x)
    check_image(x)
    check_count("n_pairs", n_pairs, 2)
    base = vanilla_gradient(model, x, target)
    scale = float(base.norm())
    stream, raw, mc = NormalStream(x.shape, generator, x.device, x.dtype), [], []
    for sigma in sigmas:
        eps = sigma * stream.take(n_pairs)
        plus = gradients_at(model, x[None] + eps, target, batch_size=batch_size)
        minus = gradients_at(model, x[None] - eps, target, batch_size=batch_size)
        pairs = (plus + minus).double() / 2
        raw.append(float((pairs.mean(0) - base).norm()) / scale)
        mc.append(float(pairs.var(0).sum().div(n_pairs).sqrt()) / scale)
    raw_a, mc_a = np.array(raw), np.array(mc)
    return {"bias": np.sqrt(np.clip(raw_a**2 - mc_a**2, 0, None)), "raw": raw_a, "mc_error": mc_a}


def increment_scaling(curve: torch.Tensor, strides: Sequence[int] = (16, 4, 1)) -> tuple[np.ndarray, float]:
    """How the largest step-to-step change of a sampled curve shrinks as the sampling is refined.

    ``curve`` (T,) holds values on an evenly spaced grid; for each stride s the
    curve is read every s-th point (nested grids with step s h) and its largest
    increment ``max_k |v_{k+1} - v_k|`` is taken. For a differentiable curve
    the increments shrink like the step (exponent 1); a jump keeps them at the
    jump's size however fine the grid (exponent 0); many small jumps with
    random signs, denser than the grid, shrink like the square root of the step.

    Returns:
        (largest increment for each stride, the least-squares slope of log
        largest increment against log step). The slope is NaN if a curve is
        flat at some stride.
    """
    values = curve.detach().double().cpu()
    largest = np.array([float(values[::stride].diff().abs().max()) for stride in strides])
    if (largest <= 0).any():
        return largest, float("nan")
    return largest, float(np.polyfit(np.log(np.asarray(strides, float)), np.log(largest), 1)[0])


def noisy_gradients_and_ranks(
    model: nn.Module, x: torch.Tensor, target: TargetType = None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``noisy_gradients(model, x, target, **kwargs)`` and, from the same forward passes, the rank of the target.

    Returns (gradients (B, N, C, H, W), ranks (B, N) long, 0 = top-1): the
    rank of the target class among the logits of each noisy copy that the
    gradients are taken at, as ``classification.noisy_ranks`` gives it for the same noise, at
    no extra forward pass. (N, C, H, W) and (N,) for a single image (C, H, W).
    """
    check_model(model, x)
    batch, single = as_batch(x)
    if target is None:  # the predicted classes, once: the same for the gradients and the ranks
        target = clean_classes(model, batch.detach(), None)
    grads, logits = noisy_gradients(model, x, target, return_logits=True, **kwargs)
    logits = logits[None] if single else logits
    classes = resolve_target(target, len(batch), logits.shape[2]).to(logits.device)
    chosen = logits.gather(2, classes[:, None, None].expand(-1, logits.shape[1], 1))
    ranks = (logits > chosen).sum(2)
    return grads, (ranks[0] if single else ranks)
