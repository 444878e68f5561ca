"""Gradient saliency estimators: Vanilla Gradient and SmoothGrad, with Monte-Carlo error bars.

Notation. A classifier maps an image batch ``x`` of shape (B, C, H, W) to
pre-softmax logits of shape (B, K). For image ``b`` and its target class
``c_b`` let ``g(x_b) = f_{c_b}(x_b)`` be the target logit.

* Vanilla Gradient: ``G(x_b) = d g / d x_b``, shape (C, H, W), in logit per
  input unit.
* SmoothGrad (Smilkov et al., 2017): draw ``eps_i ~ N(0, sigma_b^2 I)``,
  ``i = 1..N``, and average a function of the noisy gradients
  ``G_i = G(x_b + eps_i)``.

``sigma_b`` is either given in absolute input units (``sigma``, Captum's
``stdevs``) or as a fraction of image ``b``'s own range
(``noise_level``: ``sigma_b = noise_level * (max x_b - min x_b)``, the paper's
convention and PAIR's ``stdev_spread``).

On CUDA every gradient is computed in full IEEE float32 unless ``tf32=True``
(see ``smoothgrad_lib.precision``); the caller's global TF32 settings are
restored after each call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from tqdm import tqdm

from ._checks import (
    TargetType,
    as_batch,
    check_batch_size,
    check_count,
    check_model,
    checked_logits,
    clean_forward,
    resolve_target,
)
from .aggregates import Aggregate, Estimate, RunningMoments, check_aggregate
from .noise import (
    NormalStream,
    Sampling,
    check_generator,
    check_sampling,
    default_noise_std,
    noisy_copies,
    owners,
)
from .precision import float32_precision

Attribution = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``attribution(model, x, classes)`` -> (B, C, H, W) or (B, 1, H, W): an attribution of each image of x (B, C, H, W)
for its class ``classes[b]``; what SmoothGrad averages over noisy copies (default: ``vanilla_gradient``)."""

# Elements (noisy copies x C x H x W) per forward pass when batch_size=None, per device type.
# Chosen with benchmarks/bench_smoothgrad.py (the README has the table).
_ELEMENTS_PER_BATCH = {"cpu": 10 * 3 * 224 * 224, "cuda": 64 * 3 * 224 * 224, "mps": 32 * 3 * 224 * 224}


def vanilla_gradient(
    model: nn.Module, x: torch.Tensor, target: TargetType = None, *, tf32: bool = False
) -> torch.Tensor:
    """Gradient of each image's target logit with respect to the input.

    Args:
        model: classifier in eval mode mapping (B, C, H, W) to logits (B, K).
        x: float images, (B, C, H, W) or a single (C, H, W) image.
        target: None for each image's predicted class, one int for all
            images, or one class index per image.
        tf32: allow TensorFloat-32 convolutions and matrix products on CUDA
            (faster, about 3 significant digits); the default is full float32.

    Returns:
        ``d f_{c_b}(x_b) / d x_b`` with the shape of ``x``; its units are
        logit per input unit. Only the input gradient is computed: no
        parameter ``.grad`` is created or changed.

    Examples:
        >>> from smoothgrad_lib import load_model, vanilla_gradient
        >>> from smoothgrad_lib.shapes import make_shapes
        >>> model = load_model("shapes-relu", device="cpu").model
        >>> x = make_shapes(2, seed=0).images                  # (2, 3, 64, 64) in [0, 1]
        >>> vanilla_gradient(model, x).shape
        torch.Size([2, 3, 64, 64])
    """
    check_model(model, x)
    batch, single = as_batch(x)
    inputs = batch.detach().requires_grad_(True)
    with float32_precision(tf32), torch.enable_grad():
        logits = checked_logits(model, inputs)
        classes = resolve_target(target, *logits.shape, predicted=logits)
        selected = logits.gather(1, classes[:, None]).sum()
        (grad,) = torch.autograd.grad(selected, inputs)
    return grad[0] if single else grad


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int = 50,
    noise_level: float | None = None,
    sigma: float | torch.Tensor | None = None,
    aggregate: Aggregate = "abs",
    sampling: Sampling = "iid",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    tf32: bool = False,
    attribution: Attribution | None = None,
) -> torch.Tensor:
    """SmoothGrad: an average over gradients of Gaussian-noised copies of ``x``.

    With ``G_i = d f_c(x + eps_i) / dx`` and ``eps_i ~ N(0, sigma^2 I)``,
    ``i = 1..N`` (``N = n_samples``), the aggregates are

    * ``"abs"``: ``(1/N) sum_i |G_i|`` (Captum's default);
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
        n_samples: N, the number of noisy gradients per image (>= 1; even for antithetic sampling).
        noise_level: sigma as a fraction of each image's range,
            ``sigma_b = noise_level * (max x_b - min x_b)``; 0 gives the
            vanilla gradient under each aggregate. Default 0.15 when ``sigma`` is not given.
        sigma: absolute standard deviation of the noise, in input units: one number, or one per image (B,).
            Giving both ``sigma`` and ``noise_level`` is an error.
        aggregate: one of ``"abs"``, ``"square"``, ``"raw"``, ``"vargrad"``.
        sampling: ``"iid"`` (independent noise) or ``"antithetic"`` (noise in
            pairs ``eps, -eps``: the same expectation; the odd-order terms of
            the gradient's Taylor expansion, ``H eps`` included, cancel within
            each pair, which lowers the variance for smooth models at small sigma).
        batch_size: noisy copies per forward pass; bounds peak memory. None
            picks a size for the device of ``x``. The result does not depend
            on it beyond float rounding. On the CPU the copies reach a
            convolutional model in the channels_last layout (faster with oneDNN).
        generator: ``torch.Generator`` on the device of ``x``, or on the CPU
            (its draws are moved to x's device: a GPU run with the CPU run's
            noise); None uses the global generator of x's device (so
            ``torch.manual_seed`` applies). The same seed
            gives bitwise the same result on the CPU; on CUDA, cuDNN's
            backward kernels can differ in the last bits between runs unless
            ``torch.use_deterministic_algorithms(True)`` is set.
        progress: show a progress bar over the noisy copies (tqdm).
        tf32: allow TensorFloat-32 on CUDA (faster, about 3 significant
            digits per multiply); the default is full float32.
        attribution: what is averaged instead of the gradient, ``attribution(model, noisy, classes)``
            (an ``Attribution``, e.g. Integrated Gradients): its SmoothGrad, ``G_i = attribution(x + eps_i)``.
            None: ``vanilla_gradient``.

    Returns:
        Tensor with the shape and dtype of ``x`` (of the attribution, for one value per pixel: (B, 1, H, W)).
        ``smoothgrad_estimate`` gives the same tensor with its standard error.

    Examples:
        >>> import torch
        >>> from smoothgrad_lib import load_model, smoothgrad
        >>> from smoothgrad_lib.shapes import make_shapes
        >>> model = load_model("shapes-relu", device="cpu").model
        >>> x = make_shapes(2, seed=0).images
        >>> s = smoothgrad(model, x, n_samples=8, noise_level=0.1, generator=torch.Generator().manual_seed(0))
        >>> s.shape, bool((s >= 0).all())                      # "abs": a mean of |G_i|
        (torch.Size([2, 3, 64, 64]), True)
    """
    return smoothgrad_estimate(
        model,
        x,
        target,
        n_samples=n_samples,
        noise_level=noise_level,
        sigma=sigma,
        aggregate=aggregate,
        sampling=sampling,
        batch_size=batch_size,
        generator=generator,
        progress=progress,
        tf32=tf32,
        attribution=attribution,
    ).mean


def smoothgrad_estimate(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int = 50,
    noise_level: float | None = None,
    sigma: float | torch.Tensor | None = None,
    aggregate: Aggregate = "abs",
    sampling: Sampling = "iid",
    tolerance: float | None = None,
    max_samples: int = 1000,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    tf32: bool = False,
    attribution: Attribution | None = None,
) -> Estimate:
    """SmoothGrad with its per-element Monte-Carlo standard error, and optionally an adaptive N.

    The arguments shared with ``smoothgrad`` mean the same; with
    ``tolerance=None``, ``mean`` is bitwise what ``smoothgrad`` returns for
    the same arguments and generator state.

    Standard error. The draws are grouped in *units*: one gradient for
    ``sampling="iid"``, one pair ``(eps, -eps)`` for ``"antithetic"``; units
    are independent, a pair's two gradients are not. With ``K`` units per
    image and ``u_k`` a unit's mean of the aggregated quantity (``G``,
    ``|G|`` or ``G^2``), ``stderr = sqrt(s_u^2 / K)`` with ``s_u^2`` the
    unbiased variance of the ``u_k``. For ``"vargrad"``, ``V = p_bar - q_bar^2``
    with the unit means ``p_k`` of ``G^2`` and ``q_k`` of ``G``, the error is
    the jackknife over units: ``stderr^2 = (K-1)/K sum_k (V_(-k) - V_(.))^2``
    with ``V_(-k)`` computed without unit k. ``V_(-k)`` is quadratic in
    ``(p_k, q_k)``, so this is exact from running sums of ``q^j`` (j <= 4),
    ``p``, ``p^2``, ``pq`` and ``pq^2``. Unlike the delta method (which keeps the
    linear term only and underestimates at small K), the jackknife is
    conservative in expectation (Efron-Stein); it needs K >= 3 (NaN below).
    Only running sums over units are kept: memory is set by ``batch_size``, never by N.

    Adaptive N. With ``tolerance``, each image first gets ``n_samples``
    gradients; while its relative error ``||stderr||_2 / ||mean||_2`` (over
    all C x H x W elements) exceeds ``tolerance``, it gets more, as many as
    the 1/sqrt(N) law predicts are missing (at least a quarter of those it
    has), up to ``max_samples``. Images of a batch stop independently. A
    warning names the images that reach ``max_samples`` above tolerance.
    Stopping when the *estimated* error first falls below the tolerance
    favours runs whose error was underestimated, so the achieved error can
    exceed ``tolerance`` slightly; ``n_samples`` >= 20 keeps that small.

    Args:
        tolerance: target relative error per image, in (0, 1); None for a fixed ``n_samples``.
        max_samples: cap on gradients per image when ``tolerance`` is given.
        (the others: see ``smoothgrad``.)

    Returns:
        ``Estimate(mean, stderr, n_samples)``; mean and stderr shaped like ``x``.

    Examples:
        >>> import torch
        >>> from smoothgrad_lib import load_model, smoothgrad_estimate
        >>> from smoothgrad_lib.shapes import make_shapes
        >>> model = load_model("shapes-relu", device="cpu").model
        >>> x = make_shapes(2, seed=0).images
        >>> est = smoothgrad_estimate(model, x, aggregate="raw", n_samples=20, tolerance=0.2,
        ...                           generator=torch.Generator().manual_seed(0))
        >>> relative = est.stderr.flatten(1).norm(dim=1) / est.mean.flatten(1).norm(dim=1)
        >>> bool((relative <= 0.2).all()), est.n_samples.shape
        (True, torch.Size([2]))
    """
    run = _Run.prepare(
        model, x, target, n_samples, noise_level, sigma, aggregate, sampling, batch_size, generator, tf32, attribution
    )
    if tolerance is not None:
        _check_tolerance(tolerance, max_samples, n_samples, sampling, aggregate)
    n_images = run.batch.shape[0]
    sums = RunningMoments(n_images, aggregate, sampling == "antithetic")
    with tqdm(total=n_images * n_samples, unit="copy", disable=not progress) as bar:
        counts = torch.full((n_images,), n_samples, dtype=torch.long)
        while int(counts.sum()):
            for owner, grads, _ in run.gradients(counts):
                sums.add(owner, grads)
                bar.update(len(owner))
            if tolerance is None:
                break
            counts = _more_samples(sums, tolerance, max_samples, sampling)
            bar.total += int(counts.sum())
    if tolerance is not None:
        unmet = (sums.relative_error() > tolerance).nonzero().flatten().tolist()
        if unmet:
            warnings.warn(
                f"image(s) {unmet} reached max_samples={max_samples} with a relative error above "
                f"tolerance={tolerance}: raise max_samples or the tolerance.",
                stacklevel=2,
            )
    mean, stderr = sums.mean().to(run.batch.dtype), sums.stderr().to(run.batch.dtype)
    used = sums.gradients_per_image()
    return Estimate(mean[0], stderr[0], int(used[0])) if run.single else Estimate(mean, stderr, used)


def noisy_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int = 50,
    noise_level: float | None = None,
    sigma: float | torch.Tensor | None = None,
    sampling: Sampling = "iid",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    tf32: bool = False,
    return_logits: bool = False,
    attribution: Attribution | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The individual noisy gradients ``G_i`` that ``smoothgrad`` aggregates.

    Same arguments and the same noise as ``smoothgrad`` (with the same
    generator state, ``smoothgrad(..., aggregate="raw")`` equals the mean of
    this over samples). Returns (B, N, C, H, W), or (N, C, H, W) for a single
    image; with antithetic sampling, samples ``2k`` and ``2k + 1`` are a pair
    ``(eps, -eps)``. Memory grows with ``n_samples``: this is for experiments
    on the distribution of ``G_i``, not for computing maps.

    With ``return_logits=True``, returns ``(gradients, logits)``: also the
    model's logits at each noisy copy, (B, N, K) or (N, K), from the forward
    passes the gradients are taken through (no extra pass; the ``attribution``
    must then run the model once per chunk, as ``vanilla_gradient`` does).
    ``attribution``: see ``smoothgrad``.

    Examples:
        A linear model's gradient is its weight at every noisy copy:

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> grads = noisy_gradients(model, torch.zeros(1, 1, 2, 2), 1, n_samples=3, sigma=1.0,
        ...                         generator=torch.Generator().manual_seed(0))
        >>> grads.shape, bool((grads == model[1].weight[1].reshape(1, 1, 1, 2, 2)).all())
        (torch.Size([1, 3, 1, 2, 2]), True)
    """
    run = _Run.prepare(
        model, x, target, n_samples, noise_level, sigma, "raw", sampling, batch_size, generator, tf32, attribution
    )
    n_images = run.batch.shape[0]
    chunks, logits = [], []
    for _, grads, chunk_logits in run.gradients(torch.full((n_images,), n_samples, dtype=torch.long), return_logits):
        chunks.append(grads)
        logits.append(chunk_logits)
    out = torch.cat(chunks).contiguous().reshape(n_images, n_samples, *chunks[0].shape[1:])
    if not return_logits:
        return out[0] if run.single else out
    all_logits = torch.cat(logits).reshape(n_images, n_samples, -1)
    return (out[0], all_logits[0]) if run.single else (out, all_logits)


@dataclass
class _Run:
    """A validated call: the images, their noise scales and targets, and how copies go through the model."""

    model: nn.Module
    batch: torch.Tensor
    single: bool
    stdev: torch.Tensor
    classes: torch.Tensor  # range-checked by the attribution's forward pass when no clean pass ran (off the CPU)
    antithetic: bool
    step: int
    layout: torch.memory_format
    noise: NormalStream
    tf32: bool
    attribution: Attribution

    @classmethod
    def prepare(
        cls,
        model: nn.Module,
        x: torch.Tensor,
        target: TargetType,
        n_samples: int,
        noise_level: float | None,
        sigma: float | torch.Tensor | None,
        aggregate: str,
        sampling: str,
        batch_size: int | None,
        generator: torch.Generator | None,
        tf32: bool,
        attribution: Attribution | None,
    ) -> _Run:
        check_model(model, x)
        batch, single = as_batch(x)
        batch = batch.detach()
        check_aggregate(aggregate)
        check_count("n_samples", n_samples)
        antithetic = check_sampling(sampling, n_samples)
        check_batch_size(batch_size)
        stdev = default_noise_std(batch, noise_level, sigma)
        check_generator(generator, batch)
        step = batch_size or default_batch_size(batch)
        if antithetic:
            step = max(2, step - step % 2)  # whole pairs in every chunk
        layout, clean_logits = clean_forward(model, batch, need_logits=target is None, tf32=tf32)
        n_classes = None if clean_logits is None else clean_logits.shape[1]
        classes = resolve_target(target, batch.shape[0], n_classes, predicted=clean_logits).to(batch.device)
        noise = NormalStream(batch[0].shape, generator, batch.device, batch.dtype)
        attribute = partial(vanilla_gradient, tf32=tf32) if attribution is None else attribution
        return cls(model, batch, single, stdev, classes, antithetic, step, layout, noise, tf32, attribute)

    def gradients(
        self, counts: torch.Tensor, keep_logits: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Attributions at ``counts[b]`` new noisy copies of each image b, image by image, in chunks of ``step``.

        Yields (owner (n,), attributions (n, ...), logits (n, K) or None unless ``keep_logits``, detached) per
        chunk; copies of one image are contiguous and, for antithetic sampling, come in pairs ``x + eps, x - eps``.
        """
        everyone = owners(counts, self.batch.device)
        for start in range(0, len(everyone), self.step):
            owner = everyone[start : start + self.step]
            noisy = noisy_copies(self.batch, self.stdev, owner, self.noise, self.antithetic)
            yield owner, *self._attribute(noisy.contiguous(memory_format=self.layout), owner, keep_logits)

    def _attribute(
        self, noisy: torch.Tensor, owner: torch.Tensor, keep_logits: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attribution of noisy copies (n, C, H, W), and (``keep_logits``) the logits of its one forward pass."""
        seen: list[torch.Tensor] = []
        keep = lambda module, inputs, output: seen.append(output.detach())  # noqa: E731
        hook = self.model.register_forward_hook(keep) if keep_logits else None
        try:
            with float32_precision(self.tf32):
                attribution = self.attribution(self.model, noisy, self.classes[owner])
        finally:
            if hook is not None:
                hook.remove()
        if keep_logits and len(seen) != 1:
            raise ValueError(f"return_logits needs an attribution with one forward pass per chunk; it ran {len(seen)}.")
        return attribution.detach(), seen[0] if keep_logits else None


def _more_samples(sums: RunningMoments, tolerance: float, max_samples: int, sampling: str) -> torch.Tensor:
    """How many more gradients each image needs for its relative error to reach ``tolerance`` (0 when done)."""
    used = sums.gradients_per_image()
    error = sums.relative_error()
    wanted = (used.double() * (error / tolerance).square()).nan_to_num(posinf=float(max_samples)).ceil().long()
    extra = torch.maximum(wanted - used, (used + 3) // 4)
    extra = torch.minimum(extra, max_samples - used)
    if sampling == "antithetic":
        extra -= extra % 2
    return torch.where(error > tolerance, extra, 0).clamp_min(0)


def _check_tolerance(tolerance: float, max_samples: int, n_samples: int, sampling: str, aggregate: str) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be a relative error in (0, 1), e.g. 0.05; got {tolerance!r}.")
    units = n_samples // 2 if sampling == "antithetic" else n_samples
    needed = 3 if aggregate == "vargrad" else 2
    if units < needed:
        raise ValueError(
            f"tolerance needs an error estimate from at least {needed} independent units (gradients, or antithetic "
            f"pairs) for aggregate={aggregate!r}: n_samples={n_samples} is too few."
        )
    check_count("max_samples", max_samples, n_samples)


def default_batch_size(x: torch.Tensor) -> int:
    """Noisy copies per forward pass chosen for the device of ``x`` (B, C, H, W).

    Examples:
        The CPU budget is 10 images of 3x224x224 worth of elements, whatever the batch size of ``x``:

        >>> import torch
        >>> default_batch_size(torch.zeros(1, 3, 224, 224)), default_batch_size(torch.zeros(7, 3, 112, 112))
        (10, 40)
    """
    budget = _ELEMENTS_PER_BATCH.get(x.device.type, _ELEMENTS_PER_BATCH["cpu"])
    return max(1, budget // x[0].numel())
