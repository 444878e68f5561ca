"""Measurements behind the report: roughness of gradients, gate states, Taylor bias, variance against N.

All functions take a classifier in eval mode and images as in
``smoothgrad_lib.saliency``; all randomness comes from an explicit
``torch.Generator`` so that every number in the report is reproducible.
"""

from __future__ import annotations

import torch
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


def mask_mass(saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's total saliency (B, H, W) that falls inside the evidence mask (B, H, W)."""
    saliency = saliency.detach().clamp_min(0)
    inside = (saliency * masks).flatten(1).sum(1)
    return inside / saliency.flatten(1).sum(1).clamp_min(torch.finfo(saliency.dtype).tiny)
