"""Measurements behind the report: gradients along a line, gate states, map statistics, noisy copies, localisation.

All functions take a classifier in eval mode and images as in
``smoothgrad_lib.saliency``; all randomness comes from an explicit
``torch.Generator`` so that every number in the report is reproducible.
Maps are (B, H, W) tensors as made by ``saliency_map``; masks (B, H, W) bool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .evaluation import dilate, mask_auc, relevance_mass
from .precision import float32_precision
from .saliency import (
    TargetType,
    _as_batch,
    _check_model,
    _NormalStream,
    noise_std,
    noisy_gradients,
    resolve_target,
    vanilla_gradient,
)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``: one per measurement, each reproducible alone."""
    return torch.Generator(device=device).manual_seed(seed)


# d activation / d input is a 0/1 gate for these piecewise-linear activations.
GATES = {nn.ReLU: lambda z: z > 0, nn.ReLU6: lambda z: (z > 0) & (z < 6)}


def gradients_at(model: nn.Module, points: torch.Tensor, target: int, batch_size: int = 64) -> torch.Tensor:
    """Vanilla gradients of logit ``target`` at many points (M, C, H, W), ``batch_size`` at a time."""
    return torch.cat([vanilla_gradient(model, chunk, target) for chunk in points.split(batch_size)])


def directional_slice(
    model: nn.Module, x: torch.Tensor, target: int, direction: torch.Tensor, ts: torch.Tensor, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target logit ``g(x + t d)`` and its derivative ``d/dt g(x + t d) = grad g(x + t d) . d`` along a line.

    Args:
        x: one image (C, H, W); direction: d, same shape; ts: the T values of t;
        batch_size: points per forward and backward pass (bounds memory).

    Returns:
        (logits (T,), directional derivatives (T,)), each from one forward and backward pass per point.
    """
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
    noise = torch.randn((n_samples, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    clean = activation_gates(model, x[None])[0]
    noisy = torch.cat([activation_gates(model, chunk) for chunk in (x[None] + sigma * noise).split(64)])
    return clean, noisy.float().mean(0)


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


def relative_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||b - a|| / ||a||`` per item of a batch (B, ...), in float64: (B,)."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    x, y = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    return (y - x).norm(dim=1) / x.norm(dim=1)


def neighbour_difference(maps: torch.Tensor) -> torch.Tensor:
    """Mean |difference| between horizontally and vertically adjacent pixels of maps (B, H, W): (B,).

    The average of the two directions' means, in the units of the map (for
    maps in [0, 1]: a fraction of the colour scale). Lower is smoother; it
    measures high spatial frequency, not how a map changes with the input.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (B, H, W), got {tuple(maps.shape)}.")
    maps = maps.detach()
    return (maps.diff(dim=1).abs().mean((1, 2)) + maps.diff(dim=2).abs().mean((1, 2))) / 2


def brightest_share(maps: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """Share of each map's total (B, H, W), maps >= 0, held by its ``fraction`` brightest pixels: (B,).

    A uniform map gives ``fraction``; a map whose saliency sits on a few pixels gives nearly 1.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    flat = maps.detach().flatten(1).sort(dim=1, descending=True).values
    count = max(1, round(fraction * flat.shape[1]))
    return flat[:, :count].sum(1) / flat.sum(1)


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


def aggregate_samples(samples: torch.Tensor, aggregate: str, dim: int = 1) -> torch.Tensor:
    """SmoothGrad's aggregates of noisy gradients ``G_i`` stacked along ``dim`` (as ``noisy_gradients`` returns them).

    ``"raw"`` mean of G_i, ``"abs"`` mean of |G_i|, ``"square"`` mean of
    G_i^2, ``"vargrad"`` population variance of G_i, summed in float64 and
    cast back: the same definitions as ``smoothgrad(..., aggregate=...)``.
    """
    values = samples.detach().double()
    if aggregate == "raw":
        result = values.mean(dim)
    elif aggregate == "abs":
        result = values.abs().mean(dim)
    elif aggregate == "square":
        result = values.square().mean(dim)
    elif aggregate == "vargrad":
        result = values.var(dim, correction=0)
    else:
        raise ValueError(f"aggregate must be one of 'raw', 'abs', 'square', 'vargrad', got {aggregate!r}.")
    return result.to(samples.dtype)


def samples_for_reliability(
    split_half: torch.Tensor | float, n_samples: int, wanted: float = 0.9
) -> torch.Tensor | float:
    """Samples an estimate needs for a reliability ``wanted``, from the split-half correlation of two N-sample maps.

    Two independent N-sample maps correlate with r = their reliability (the
    share of their variance that is not Monte-Carlo noise). By Spearman-Brown,
    k times as many samples give ``k r / (1 + (k - 1) r)``; solving for
    ``wanted`` gives ``k = wanted (1 - r) / (r (1 - wanted))`` and returns ``k N``.
    """
    if not 0 < wanted < 1:
        raise ValueError(f"wanted must be in (0, 1), got {wanted!r}.")
    return n_samples * wanted * (1 - split_half) / (split_half * (1 - wanted))


def noisy_ranks(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int,
    noise_level: float,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Rank of the target class among the logits of N noisy copies ``x + eps`` of each image: (B, N) long, 0 = top-1.

    The noise follows SmoothGrad's convention, ``eps ~ N(0, sigma_b^2 I)`` with
    ``sigma_b = noise_level * (max x_b - min x_b)`` (``saliency.noise_std``),
    drawn from ``generator`` in the same order as ``smoothgrad``: with the same
    seed these are the very copies ``smoothgrad(x, n_samples=N)`` differentiates
    at. ``target`` as in ``smoothgrad`` (None: each clean image's predicted class).
    ``(ranks == 0).float().mean(1)`` is the share of copies still classified as
    the target; ``(ranks < 5)`` the share with the target in the top 5.
    """
    _check_model(model)
    batch = _as_batch(x)[0].detach()
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}.")
    stdev = noise_std(batch, noise_level=noise_level)
    with torch.no_grad():
        clean = model(batch)
        classes = resolve_target(target, *clean.shape, predicted=clean).to(batch.device)
        noise = _NormalStream(batch.shape[1:], generator, batch.device, batch.dtype)
        owners = torch.arange(len(batch), device=batch.device).repeat_interleave(n_samples)
        ranks = []
        for owner in owners.split(batch_size):
            logits = model(batch[owner] + stdev[owner] * noise.take(len(owner)))
            chosen = logits.gather(1, classes[owner][:, None])
            ranks.append((logits > chosen).sum(1))
    return torch.cat(ranks).reshape(len(batch), n_samples)


def noisy_gradients_and_ranks(
    model: nn.Module, x: torch.Tensor, target: TargetType = None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``noisy_gradients(model, x, target, **kwargs)`` and, from the same forward passes, the rank of the target.

    Returns (gradients (B, N, C, H, W), ranks (B, N) long, 0 = top-1): the
    rank of the target class among the logits of each noisy copy that the
    gradients are taken at, as ``noisy_ranks`` gives it for the same noise, at
    no extra forward pass. (N, C, H, W) and (N,) for a single image (C, H, W).
    """
    _check_model(model)
    batch, single = _as_batch(x)
    if target is None:  # the predicted classes, once: the same for the gradients and the ranks
        with torch.no_grad():
            clean = model(batch.detach())
        target = resolve_target(None, *clean.shape, predicted=clean)
    grads, logits = noisy_gradients(model, x, target, return_logits=True, **kwargs)
    logits = logits[None] if single else logits
    classes = resolve_target(target, len(batch), logits.shape[2]).to(logits.device)
    chosen = logits.gather(2, classes[:, None, None].expand(-1, logits.shape[1], 1))
    ranks = (logits > chosen).sum(2)
    return grads, (ranks[0] if single else ranks)


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    noise_level: float = 0.0,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> float:
    """Share of ``images`` (B, C, H, W), or of N noisy copies of each, that ``model`` classifies as ``labels`` (B,).

    With ``noise_level=0`` the clean accuracy; otherwise the accuracy on the
    noisy copies of ``noisy_ranks`` (SmoothGrad's noise, same seed, same copies).
    """
    device = next(model.parameters()).device
    ranks = noisy_ranks(
        model, images.to(device), labels.to(device), n_samples=n_samples, noise_level=noise_level, generator=generator
    )
    return float((ranks == 0).float().mean())


def far_share(maps: torch.Tensor, masks: torch.Tensor, distance: float = 4.0) -> torch.Tensor:
    """Share of each map's out-of-mask saliency that lies more than ``distance`` pixels from the mask: (B,).

    ``sum_{p : d(p) > distance} M_p / sum_{p not in mask} M_p`` for maps M >= 0,
    with ``d(p)`` the Euclidean distance from pixel p to the nearest mask pixel
    (``scipy.ndimage.distance_transform_edt``). A blur of a map that sits on
    the mask keeps its spill-over near the mask (a small share); saliency
    spread evenly over the image puts most of it far away. NaN for a map with
    nothing outside the mask.
    """
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be (B, H, W), got {tuple(maps.shape)} and {tuple(masks.shape)}.")
    outside = ~masks.detach().cpu().numpy().astype(bool)
    distances = np.stack([ndimage.distance_transform_edt(item) for item in outside])
    far = torch.from_numpy(distances > distance).to(maps.device)
    values = maps.detach().clamp_min(0)
    return (values * far).flatten(1).sum(1) / (values * torch.from_numpy(outside).to(maps.device)).flatten(1).sum(1)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each map (B, H, W) convolved with a 2-D Gaussian of standard deviation ``sigma`` pixels (edges reflected).

    A real spatial smoothing, to compare with what SmoothGrad's input-space noise does to a map.
    """
    blurred = ndimage.gaussian_filter(maps.detach().cpu().double().numpy(), sigma=(0, sigma, sigma), mode="reflect")
    return torch.from_numpy(blurred).to(maps.dtype).to(maps.device)


def localisation(
    maps: torch.Tensor, masks: torch.Tensor, dilation: int = 2, far: float = 4.0
) -> dict[str, torch.Tensor]:
    """Per-image localisation scores of maps (B, H, W) >= 0 against evidence masks (B, H, W): a dict of (B,) tensors.

    * ``"auc"``: ROC-AUC of the map as a detector of mask pixels (rank-based,
      unchanged by any increasing transform of the map; 0.5 is chance);
    * ``"auc_dilated"``: the same against the mask grown by ``dilation`` pixels;
    * ``"mass"``, ``"mass_dilated"``: share of the map's total inside the mask
      / the dilated mask (``relevance_mass``; changes under transforms like squaring);
    * ``"far"``: share of the out-of-mask saliency more than ``far`` pixels from the mask (``far_share``).
    """
    grown = dilate(masks, dilation)
    return {
        "auc": mask_auc(maps, masks),
        "auc_dilated": mask_auc(maps, grown),
        "mass": relevance_mass(maps, masks),
        "mass_dilated": relevance_mass(maps, grown),
        "far": far_share(maps, masks, far),
    }
