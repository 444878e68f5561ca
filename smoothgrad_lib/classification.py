"""How a classifier classifies images: the rank of the target class among the logits of noisy copies, and accuracy.

The model layer (``train``, ``twins``) may depend on this module: it needs only the kernel (``_checks``,
``noise``, ``precision``). The noise follows SmoothGrad's convention and is drawn through
``smoothgrad_lib.noise``, so with the same generator the copies are the ones ``smoothgrad`` differentiates at.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import TargetType, as_batch, check_count, check_model, checked_logits, clean_classes
from .noise import NormalStream, Sampling, check_generator, check_sampling, noise_std, noisy_copies, owners
from .precision import float32_precision

__all__ = ["accuracy", "noisy_ranks"]


def noisy_ranks(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int,
    noise_level: float,
    sampling: Sampling = "iid",
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Rank of the target class among the logits of N noisy copies ``x + eps`` of each image: (B, N) long, 0 = top-1.

    The noise follows SmoothGrad's convention, ``eps ~ N(0, sigma_b^2 I)`` with
    ``sigma_b = noise_level * (max x_b - min x_b)`` (``noise.noise_std``),
    drawn by ``noise.noisy_copies`` from ``generator`` as ``smoothgrad`` draws
    it (``sampling`` too: ``"antithetic"`` gives pairs ``x + eps, x - eps``): with
    the same seed these are the very copies ``smoothgrad(x, n_samples=N)``
    differentiates at. ``target`` as in ``smoothgrad`` (None: each clean image's
    predicted class). ``(ranks == 0).float().mean(1)`` is the share of copies
    still classified as the target; ``(ranks < 5)`` the share with the target in the top 5.
    """
    check_model(model, x)
    batch = as_batch(x)[0].detach()
    check_count("n_samples", n_samples)
    check_count("batch_size", batch_size)
    antithetic = check_sampling(sampling, n_samples)
    check_generator(generator, batch)
    step = max(2, batch_size - batch_size % 2) if antithetic else batch_size
    stdev = noise_std(batch, noise_level=noise_level)
    classes = clean_classes(model, batch, target)
    stream = NormalStream(batch.shape[1:], generator, batch.device, batch.dtype)
    everyone = owners(torch.full((len(batch),), n_samples, dtype=torch.long), batch.device)
    ranks = []
    with torch.no_grad(), float32_precision():
        for owner in everyone.split(step):
            logits = checked_logits(model, noisy_copies(batch, stdev, owner, stream, antithetic))
            chosen = logits.gather(1, classes[owner][:, None])
            ranks.append((logits > chosen).sum(1))
    return torch.cat(ranks).reshape(len(batch), n_samples)


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    noise_level: float = 0.0,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> float:
    """Share of ``images`` (B, C, H, W), or of N noisy copies of each, that ``model`` classifies as ``labels`` (B,).

    The package's one accuracy. With ``noise_level=0`` the clean accuracy (top-1 class == label; no noise is
    drawn); otherwise the accuracy on the noisy copies of :func:`noisy_ranks` (SmoothGrad's noise, same seed, same
    copies). ``batch_size``: images or copies per forward pass (memory only).
    """
    check_model(model)
    check_count("batch_size", batch_size)
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    if noise_level == 0:
        with torch.no_grad(), float32_precision():
            predicted = torch.cat([checked_logits(model, chunk).argmax(1) for chunk in images.split(batch_size)])
        return float((predicted == labels).float().mean())
    ranks = noisy_ranks(
        model,
        images,
        labels,
        n_samples=n_samples,
        noise_level=noise_level,
        generator=generator,
        batch_size=batch_size,
    )
    return float((ranks == 0).float().mean())
