"""Gradient saliency estimators: Vanilla Gradient and SmoothGrad.

Notation. A classifier maps an image batch ``x`` of shape (B, C, H, W) to
pre-softmax logits of shape (B, K). For image ``b`` and its target class
``c_b`` let ``g(x_b) = f_{c_b}(x_b)`` be the target logit.

* Vanilla Gradient: ``G(x_b) = d g / d x_b``, shape (C, H, W).
* SmoothGrad (Smilkov et al., 2017): draw ``eps_i ~ N(0, sigma_b^2 I)``,
  ``i = 1..N``, and average a function of the noisy gradients
  ``G_i = G(x_b + eps_i)``.

``sigma_b`` is either given in absolute input units (``sigma``, Captum's
``stdevs``) or as a fraction of image ``b``'s own range
(``noise_level``: ``sigma_b = noise_level * (max x_b - min x_b)``, the paper's
convention and PAIR's ``stdev_spread``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

AGGREGATES = ("abs", "square", "raw", "vargrad")
DEFAULT_NOISE_LEVEL = 0.15

# Elements (noisy copies x C x H x W) per forward pass when batch_size=None.
# On a 2-core CPU, chunks of about ten 3x224x224 copies were the fastest or
# within a few percent of it for EfficientNet-Lite0 and ResNet-18, while one
# batch of 50 was up to 2-3x slower (benchmarks/bench_smoothgrad.py); on an
# accelerator larger batches keep the device busy.
_ELEMENTS_PER_BATCH = {"cpu": 10 * 3 * 224 * 224, "cuda": 64 * 3 * 224 * 224, "mps": 32 * 3 * 224 * 224}


def vanilla_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient of each image's target logit with respect to the input.

    Args:
        model: classifier in eval mode mapping (B, C, H, W) to logits (B, K).
        x: float images, (B, C, H, W) or a single (C, H, W) image.
        target: None for each image's predicted class, one int for all
            images, or one class index per image.

    Returns:
        ``d f_{c_b}(x_b) / d x_b`` with the shape of ``x``; its units are
        logit per input unit. Only the input gradient is computed: no
        parameter ``.grad`` is created or changed.
    """
    _check_model(model)
    batch, single = _as_batch(x)
    inputs = batch.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = _logits(model, inputs)
        classes = resolve_target(logits, target)
        selected = logits.gather(1, classes[:, None]).sum()
        (grad,) = torch.autograd.grad(selected, inputs)
    return grad[0] if single else grad


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    n_samples: int = 50,
    noise_level: float | None = DEFAULT_NOISE_LEVEL,
    sigma: float | None = None,
    aggregate: str = "abs",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SmoothGrad: an average over gradients of Gaussian-noised copies of ``x``.

    With ``G_i = d f_c(x + eps_i) / dx`` and ``eps_i ~ N(0, sigma^2 I)``,
    ``i = 1..N`` (``N = n_samples``), the aggregates are

    * ``"abs"``: ``(1/N) sum_i |G_i|`` (the seed chapter's formula, Captum's default);
    * ``"square"``: ``(1/N) sum_i G_i^2`` (PAIR ``magnitude=True``, Captum ``smoothgrad_sq``);
    * ``"raw"``: ``(1/N) sum_i G_i``, the paper's equation. It estimates
      ``E[G(x + eps)]``, which is the gradient of the Gaussian-smoothed
      function ``(g * N(0, sigma^2))(x)``, not ``G(x)`` itself;
    * ``"vargrad"``: ``(1/N) sum_i (G_i - mean_i G_i)^2``, the population
      variance (Adebayo et al., 2018).

    Args:
        model: classifier in eval mode mapping (B, C, H, W) to logits (B, K).
        x: float images, (B, C, H, W) or a single (C, H, W) image.
        target: None for each image's predicted class on the clean image, one
            int for all images, or one class index per image.
        n_samples: N, the number of noisy copies per image (>= 1).
        noise_level: sigma as a fraction of each image's range,
            ``sigma_b = noise_level * (max x_b - min x_b)``; 0 gives the
            vanilla gradient under each aggregate.
        sigma: absolute standard deviation of the noise, in input units. It
            replaces the default ``noise_level``; giving another
            ``noise_level`` as well is an error.
        aggregate: one of ``"abs"``, ``"square"``, ``"raw"``, ``"vargrad"``.
        batch_size: noisy copies per forward pass; bounds peak memory. None
            picks a size that is fast on the device of ``x``. The result does
            not depend on it beyond float rounding. On the CPU the copies
            reach a convolutional model in the faster channels_last layout.
        generator: ``torch.Generator`` on the device of ``x``; None uses the
            global generator (so ``torch.manual_seed`` applies). The same seed
            gives bitwise the same result on the CPU; on CUDA, cuDNN's
            backward kernels can differ in the last bits between runs unless
            ``torch.use_deterministic_algorithms(True)`` is set.

    Returns:
        Tensor with the shape and dtype of ``x``.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}.")
    batch, single = _as_batch(x)
    # Accumulate in float64 where the device has it, so that neither the order
    # of summation (set by batch_size) nor E[G^2] - E[G]^2 loses precision.
    acc_dtype = torch.float32 if batch.device.type == "mps" else torch.float64
    first = torch.zeros(batch.shape, dtype=acc_dtype, device=batch.device)
    second = torch.zeros_like(first) if aggregate == "vargrad" else None
    transform = {"abs": torch.abs, "square": torch.square}.get(aggregate, lambda g: g)
    chunks = _noisy_gradient_chunks(model, batch, target, n_samples, noise_level, sigma, batch_size, generator)
    for start, grads in chunks:
        grads = grads.to(acc_dtype)
        # Copies of one image are contiguous: plain sums over slices (no atomics, so bitwise reproducible on GPUs too).
        for image, rows in _rows_per_image(start, len(grads), n_samples):
            first[image] += transform(grads[rows]).sum(0)
            if second is not None:
                second[image] += grads[rows].square().sum(0)
    result = first / n_samples
    if second is not None:
        result = (second / n_samples - result.square()).clamp_min(0)
    result = result.to(batch.dtype)
    return result[0] if single else result


def noisy_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    n_samples: int = 50,
    noise_level: float | None = DEFAULT_NOISE_LEVEL,
    sigma: float | None = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The individual noisy gradients ``G_i`` that ``smoothgrad`` aggregates.

    Same arguments and the same noise as ``smoothgrad`` (with the same
    generator state, ``smoothgrad(..., aggregate="raw")`` equals the mean of
    this over samples). Returns (B, N, C, H, W), or (N, C, H, W) for a single
    image: memory grows with ``n_samples``, so this is for experiments on the
    distribution of ``G_i``, not for computing maps.
    """
    batch, single = _as_batch(x)
    out = torch.empty((batch.shape[0] * n_samples, *batch.shape[1:]), dtype=batch.dtype, device=batch.device)
    for start, grads in _noisy_gradient_chunks(model, batch, target, n_samples, noise_level, sigma, batch_size, generator):
        out[start : start + len(grads)] = grads
    out = out.reshape(batch.shape[0], n_samples, *batch.shape[1:])
    return out[0] if single else out


def _noisy_gradient_chunks(
    model: nn.Module,
    batch: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None,
    n_samples: int,
    noise_level: float | None,
    sigma: float | None,
    batch_size: int | None,
    generator: torch.Generator | None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Validate the arguments, then iterate over (start, gradients) for chunks of at most batch_size noisy copies.

    Copy ``j`` is sample ``j % N`` of image ``j // N``; a chunk holds copies
    ``start, start + 1, ...`` in order. Each copy's noise is drawn on its own,
    so the noise, and hence any aggregate, does not depend on ``batch_size``.
    """
    _check_model(model)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}.")
    if sigma is not None and noise_level == DEFAULT_NOISE_LEVEL:
        noise_level = None
    stdev = noise_std(batch, noise_level=noise_level, sigma=sigma)
    if generator is not None and generator.device.type != batch.device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {batch.device}: "
            "create it with torch.Generator(device=x.device)."
        )
    batch = batch.detach()
    layout, clean_logits = _clean_forward(model, batch)
    classes = resolve_target(clean_logits, target)
    total = batch.shape[0] * n_samples
    step = batch_size or default_batch_size(batch)

    def chunks() -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, total, step):
            owner = torch.arange(start, min(start + step, total), device=batch.device) // n_samples
            noise = torch.stack(
                [torch.randn(batch.shape[1:], generator=generator, device=batch.device, dtype=batch.dtype) for _ in owner]
            )
            noisy = (batch[owner] + stdev[owner] * noise).contiguous(memory_format=layout).requires_grad_(True)
            with torch.enable_grad():
                logits = _logits(model, noisy)
                selected = logits.gather(1, classes[owner][:, None]).sum()
                (grads,) = torch.autograd.grad(selected, noisy)
            yield start, grads

    return chunks()


def _clean_forward(model: nn.Module, batch: torch.Tensor) -> tuple[torch.memory_format, torch.Tensor]:
    """The memory layout in which the noisy copies go through ``model``, and the logits (B, K) of the clean images.

    The layout is channels_last (NHWC) for a convolutional model on the CPU,
    where oneDNN's NHWC kernels ran EfficientNet-Lite0 about 1.3x faster than
    NCHW (benchmarks/bench_smoothgrad.py), provided the clean forward pass in
    it succeeds; it is the default layout on other devices, for models without
    ``nn.Conv2d``, and for a model that cannot take NHWC input (a ``.view`` of
    its feature maps raises). The layout changes each gradient by float
    rounding (relative 1e-6), which in a deep ReLU6 network can flip a gate
    that sits at its threshold: on EfficientNet-Lite0 about one noisy gradient
    in five moved by 0.1-0.5% relative (chelsea, 50 copies).
    """
    with torch.no_grad():
        if batch.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
            try:
                return torch.channels_last, _logits(model, batch.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                pass
        return torch.contiguous_format, _logits(model, batch)


def _rows_per_image(start: int, count: int, n_samples: int) -> Iterator[tuple[int, slice]]:
    """For copies ``start .. start + count - 1``: each image index with the slice of the chunk holding its copies."""
    end = start + count
    for image in range(start // n_samples, (end - 1) // n_samples + 1):
        yield image, slice(max(start, image * n_samples) - start, min(end, (image + 1) * n_samples) - start)


def noise_std(x: torch.Tensor, noise_level: float | None = None, sigma: float | None = None) -> torch.Tensor:
    """Per-image noise standard deviation, shape (B, 1, 1, 1), for a batch (B, C, H, W).

    Exactly one of ``noise_level`` (fraction of each image's range
    ``max x_b - min x_b``) and ``sigma`` (absolute, input units) must be given.
    """
    if noise_level is not None and sigma is not None:
        raise ValueError(
            "Give either noise_level (a fraction of each image's range) or sigma "
            "(an absolute standard deviation), not both."
        )
    if noise_level is None and sigma is None:
        raise ValueError("Give noise_level (e.g. 0.15) or sigma (e.g. 0.1).")
    name, value = ("sigma", sigma) if sigma is not None else ("noise_level", noise_level)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if sigma is not None:
        return torch.full((x.shape[0], 1, 1, 1), float(sigma), dtype=x.dtype, device=x.device)
    flat = x.detach().flatten(1)
    spread = flat.amax(1) - flat.amin(1)
    return (noise_level * spread).reshape(-1, 1, 1, 1)


def default_batch_size(x: torch.Tensor) -> int:
    """Noisy copies per forward pass chosen for the device of ``x`` (B, C, H, W)."""
    budget = _ELEMENTS_PER_BATCH.get(x.device.type, _ELEMENTS_PER_BATCH["cpu"])
    return max(1, budget // x[0].numel())


def resolve_target(
    logits: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None,
) -> torch.Tensor:
    """Class index per image as a long tensor (B,), checked against the images' ``logits`` (B, K).

    ``None`` takes the arg-max of ``logits``; an int applies to every image; a
    sequence or tensor gives one class per image.
    """
    n_images, n_classes = logits.shape
    if target is None:
        return logits.detach().argmax(1)
    if isinstance(target, bool):
        raise TypeError("target must be None, an int, or one int per image; got a bool.")
    if isinstance(target, int):
        classes = torch.full((n_images,), target, dtype=torch.long)
    else:
        classes = torch.as_tensor(target)
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {classes.dtype}.")
        classes = classes.reshape(-1).long()
        if classes.numel() != n_images:
            raise ValueError(
                f"target has {classes.numel()} entries but x holds {n_images} image(s): "
                "give one class per image, a single int, or None."
            )
    if classes.numel() and (classes.min() < 0 or classes.max() >= n_classes):
        raise ValueError(f"target {classes.tolist()} is outside the model's classes 0..{n_classes - 1}.")
    return classes.to(logits.device)


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Validate ``x`` and return it as (B, C, H, W), with whether it was a single image."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W) or (C, H, W), got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}: convert it, e.g. x.float() / 255.")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must have shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}.")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}).")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf values: clean the input before explaining it.")
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if any(module.training for module in model.modules()):
        raise ValueError(
            "model is in training mode (dropout and batch-norm statistics would make the "
            "gradients random and couple the images of a batch): call model.eval() first."
        )


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model must return logits of shape (B, classes) = ({x.shape[0]}, K); got {shape}."
        )
    return logits
