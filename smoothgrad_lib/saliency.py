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

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

import torch
from torch import nn
from tqdm import tqdm

from .precision import float32_precision

TargetType: TypeAlias = int | Sequence[int] | torch.Tensor | None
"""None (each image's predicted class), one int for every image, or one class index per image."""

AGGREGATES = ("abs", "square", "raw", "vargrad")
SAMPLINGS = ("iid", "antithetic")
DEFAULT_NOISE_LEVEL = 0.15

# Elements (noisy copies x C x H x W) per forward pass when batch_size=None, per device type.
# Chosen with benchmarks/bench_smoothgrad.py; the README has the measured table.
_ELEMENTS_PER_BATCH = {"cpu": 10 * 3 * 224 * 224, "cuda": 64 * 3 * 224 * 224, "mps": 32 * 3 * 224 * 224}
# Noise is drawn in blocks of this many elements (at most _NOISE_BLOCK_COPIES copies): one randn call per
# block instead of one per copy, and a sequence that does not depend on batch_size.
_NOISE_BLOCK_ELEMENTS = 2**22
_NOISE_BLOCK_COPIES = 64


class Estimate(NamedTuple):
    """A SmoothGrad estimate with its Monte-Carlo error.

    Attributes:
        mean: the estimate, shaped like ``x``; exactly what ``smoothgrad`` returns.
        stderr: its per-element Monte-Carlo standard error, shaped like ``x``
            (NaN where fewer than two independent units were drawn).
        n_samples: gradients used per image, a long tensor (B,), or an int for a single (C, H, W) image.
    """

    mean: torch.Tensor
    stderr: torch.Tensor
    n_samples: torch.Tensor | int


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
    _check_model(model)
    batch, single = _as_batch(x)
    inputs = batch.detach().requires_grad_(True)
    with float32_precision(tf32), torch.enable_grad():
        logits = _logits(model, inputs)
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
    sigma: float | None = None,
    aggregate: str = "abs",
    sampling: str = "iid",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    tf32: bool = False,
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
        sigma: absolute standard deviation of the noise, in input units.
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
        generator: ``torch.Generator`` on the device of ``x``; None uses the
            global generator (so ``torch.manual_seed`` applies). The same seed
            gives bitwise the same result on the CPU; on CUDA, cuDNN's
            backward kernels can differ in the last bits between runs unless
            ``torch.use_deterministic_algorithms(True)`` is set.
        progress: show a progress bar over the noisy copies (tqdm).
        tf32: allow TensorFloat-32 on CUDA (faster, about 3 significant
            digits per multiply); the default is full float32.

    Returns:
        Tensor with the shape and dtype of ``x``. ``smoothgrad_estimate`` gives
        the same tensor with its standard error.

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
    ).mean


def smoothgrad_estimate(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    n_samples: int = 50,
    noise_level: float | None = None,
    sigma: float | None = None,
    aggregate: str = "abs",
    sampling: str = "iid",
    tolerance: float | None = None,
    max_samples: int = 1000,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    tf32: bool = False,
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
        model, x, target, n_samples, noise_level, sigma, aggregate, sampling, batch_size, generator, tf32
    )
    if tolerance is not None:
        _check_tolerance(tolerance, max_samples, n_samples, sampling, aggregate)
    n_images = run.batch.shape[0]
    sums = _Sums(run.batch.shape, aggregate, sampling == "antithetic")
    with tqdm(total=n_images * n_samples, unit="copy", disable=not progress) as bar:
        counts = torch.full((n_images,), n_samples, dtype=torch.long)
        while int(counts.sum()):
            for owner, grads, _ in run.gradients(counts):
                sums.add(owner, grads)
                bar.update(len(owner))
            counts = _more_samples(sums, tolerance, max_samples, sampling) if tolerance is not None else counts * 0
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
    sigma: float | None = None,
    sampling: str = "iid",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    tf32: bool = False,
    return_logits: bool = False,
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
    passes the gradients are taken through (no extra pass).
    """
    run = _Run.prepare(model, x, target, n_samples, noise_level, sigma, "raw", sampling, batch_size, generator, tf32)
    n_images, shape = run.batch.shape[0], run.batch.shape[1:]
    out = torch.empty((n_images * n_samples, *shape), dtype=run.batch.dtype, device=run.batch.device)
    logits = []
    start = 0
    for owner, grads, chunk_logits in run.gradients(torch.full((n_images,), n_samples, dtype=torch.long)):
        out[start : start + len(owner)] = grads
        if return_logits:
            logits.append(chunk_logits)
        start += len(owner)
    out = out.reshape(n_images, n_samples, *shape)
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
    classes: torch.Tensor | None  # None until the first forward pass (explicit target off the CPU)
    target: TargetType
    antithetic: bool
    step: int
    layout: torch.memory_format
    noise: _NormalStream
    tf32: bool

    @classmethod
    def prepare(
        cls,
        model: nn.Module,
        x: torch.Tensor,
        target: TargetType,
        n_samples: int,
        noise_level: float | None,
        sigma: float | None,
        aggregate: str,
        sampling: str,
        batch_size: int | None,
        generator: torch.Generator | None,
        tf32: bool,
    ) -> _Run:
        _check_model(model)
        batch, single = _as_batch(x)
        batch = batch.detach()
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}.")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}.")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}.")
        antithetic = sampling == "antithetic"
        if antithetic and n_samples % 2:
            raise ValueError(f"antithetic sampling draws gradients in pairs: n_samples must be even, got {n_samples}.")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}.")
        if noise_level is None and sigma is None:
            noise_level = DEFAULT_NOISE_LEVEL
        stdev = noise_std(batch, noise_level=noise_level, sigma=sigma)
        if generator is not None and generator.device.type != batch.device.type:
            raise ValueError(
                f"generator is on {generator.device} but x is on {batch.device}: "
                "create it with torch.Generator(device=x.device)."
            )
        step = batch_size or default_batch_size(batch)
        if antithetic:
            step = max(2, step - step % 2)  # whole pairs in every chunk
        with float32_precision(tf32):
            layout, clean_logits = _clean_forward(model, batch, need_logits=target is None)
        classes = None
        if clean_logits is not None:
            classes = resolve_target(target, *clean_logits.shape, predicted=clean_logits)
        elif target is not None:
            resolve_target(target, batch.shape[0], None)  # the count and dtype now; the class range at the first chunk
        noise = _NormalStream(batch[0].shape, generator, batch.device, batch.dtype)
        return cls(model, batch, single, stdev, classes, target, antithetic, step, layout, noise, tf32)

    def gradients(self, counts: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Gradients at ``counts[b]`` new noisy copies of each image b, image by image, in chunks of ``step``.

        Yields (owner (n,), gradients (n, C, H, W), logits (n, K), detached) per chunk; copies of one
        image are contiguous and, for antithetic sampling, come in pairs
        ``x + eps, x - eps``.
        """
        owners = torch.repeat_interleave(torch.arange(len(counts)), counts).to(self.batch.device)
        for start in range(0, len(owners), self.step):
            owner = owners[start : start + self.step]
            if self.antithetic:
                half = self.noise.take(len(owner) // 2)
                noise = torch.stack((half, -half), 1).flatten(0, 1)
            else:
                noise = self.noise.take(len(owner))
            noisy = (self.batch[owner] + self.stdev[owner] * noise).contiguous(memory_format=self.layout)
            yield owner, *self._input_gradient(noisy.requires_grad_(True), owner)

    def _input_gradient(self, noisy: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with float32_precision(self.tf32), torch.enable_grad():
            logits = _logits(self.model, noisy)
            if self.classes is None:
                self.classes = resolve_target(self.target, self.batch.shape[0], logits.shape[1]).to(logits.device)
            selected = logits.gather(1, self.classes[owner][:, None]).sum()
            (grads,) = torch.autograd.grad(selected, noisy)
        return grads, logits.detach()


class _NormalStream:
    """Standard normal noise copies of one shape, drawn a block at a time.

    The values handed out depend only on the generator's state and the copy
    shape, not on how many copies each ``take`` asks for, so results do not
    depend on ``batch_size``.
    """

    def __init__(self, shape: torch.Size, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype):
        self.shape, self.generator, self.device, self.dtype = shape, generator, device, dtype
        self.block = max(1, min(_NOISE_BLOCK_COPIES, _NOISE_BLOCK_ELEMENTS // math.prod(shape)))
        self.buffer = torch.empty((0, *shape), device=device, dtype=dtype)

    def take(self, count: int) -> torch.Tensor:
        parts = []
        while count > 0:
            if not len(self.buffer):
                self.buffer = torch.randn(
                    (self.block, *self.shape), generator=self.generator, device=self.device, dtype=self.dtype
                )
            part, self.buffer = self.buffer[:count], self.buffer[count:]
            parts.append(part)
            count -= len(part)
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class _Sums:
    """Running sums over units (one gradient, or one antithetic pair) per image, in float64 where the device has it.

    Float64 keeps both the order of summation (set by batch_size) and the
    differences E[u^2] - E[u]^2 from losing precision.
    """

    def __init__(self, shape: torch.Size, aggregate: str, paired: bool) -> None:
        self.aggregate, self.paired = aggregate, paired
        self.dtype = torch.float64
        self.units = torch.zeros(shape[0], dtype=torch.long)
        self.device: torch.device | None = None
        self.shape = shape
        names = ("q", "p", "qq", "pp", "pq", "qqq", "qqqq", "pqq") if aggregate == "vargrad" else ("u", "uu")
        self.sums: dict[str, torch.Tensor] = dict.fromkeys(names)  # allocated on the first chunk's device

    def add(self, owner: torch.Tensor, grads: torch.Tensor) -> None:
        if self.device is None:
            self.device = grads.device
            self.dtype = torch.float32 if grads.device.type == "mps" else torch.float64
            self.sums = {name: torch.zeros(self.shape, dtype=self.dtype, device=self.device) for name in self.sums}
        grads = grads.to(self.dtype)
        images, lengths = torch.unique_consecutive(owner.cpu(), return_counts=True)
        for image, rows in zip(images.tolist(), grads.split(lengths.tolist()), strict=True):
            self.units[image] += len(rows) // (2 if self.paired else 1)
            if self.aggregate == "vargrad":
                q, p = self._unit_means(rows), self._unit_means(rows.square())
                qq = q * q
                powers = (("q", q), ("p", p), ("qq", qq), ("pp", p * p), ("pq", p * q))
                for name, value in (*powers, ("qqq", qq * q), ("qqqq", qq * qq), ("pqq", p * qq)):
                    self.sums[name][image] += value.sum(0)
            else:
                u = self._unit_means({"abs": torch.abs, "square": torch.square}.get(self.aggregate, _identity)(rows))
                self.sums["u"][image] += u.sum(0)
                self.sums["uu"][image] += u.square().sum(0)

    def _unit_means(self, values: torch.Tensor) -> torch.Tensor:
        return values.unflatten(0, (-1, 2)).mean(1) if self.paired else values

    def _per_unit(self, name: str) -> torch.Tensor:
        return self.sums[name] / self._units()

    def _units(self) -> torch.Tensor:
        return self.units.to(self.device, self.dtype).reshape(-1, *([1] * (len(self.shape) - 1)))

    def _variance(self) -> torch.Tensor:
        """Unbiased variance of the unit values ``u_k``."""
        k, u = self._units(), self._per_unit("u")
        return (self.sums["uu"] - k * u * u) / (k - 1)

    def mean(self) -> torch.Tensor:
        if self.aggregate == "vargrad":
            return (self._per_unit("p") - self._per_unit("q").square()).clamp_min(0)
        return self._per_unit("u")

    def stderr(self) -> torch.Tensor:
        k = self._units()
        if self.aggregate == "vargrad":
            return torch.where(k >= 3, self._jackknife_vargrad().clamp_min(0).sqrt(), math.nan)
        return torch.where(k >= 2, (self._variance().clamp_min(0) / k).sqrt(), math.nan)

    def _jackknife_vargrad(self) -> torch.Tensor:
        """Jackknife variance of ``V = p_bar - q_bar^2`` over the K units, from power sums.

        With ``a_k = p_k - p_bar``, ``b_k = q_k - q_bar`` and ``d_k = a_k - 2 q_bar b_k``,
        ``V_(-k) - V_(.) = -d_k / (K-1) - (b_k^2 - mean b^2) / (K-1)^2``; its sum of
        squares needs the central sums of d^2, d b^2 and b^4, expanded below.
        """
        k, s = self._units(), self.sums
        q, p = self._per_unit("q"), self._per_unit("p")
        bb = s["qq"] - k * q * q
        bbb = s["qqq"] - 3 * q * s["qq"] + 2 * k * q**3
        bbbb = s["qqqq"] - 4 * q * s["qqq"] + 6 * q * q * s["qq"] - 3 * k * q**4
        abb = s["pqq"] - 2 * q * s["pq"] + q * q * s["p"] - p * bb
        dd = (s["pp"] - k * p * p) - 4 * q * (s["pq"] - k * p * q) + 4 * q * q * bb
        dbb = abb - 2 * q * bbb
        bb_spread = bbbb - bb * bb / k
        m = k - 1
        return (m / k) * (dd / m**2 + 2 * dbb / m**3 + bb_spread / m**4)

    def relative_error(self) -> torch.Tensor:
        """``||stderr||_2 / ||mean||_2`` per image (B,), on the CPU; inf for a zero mean with a non-zero error."""
        stderr, mean = self.stderr().flatten(1).norm(dim=1), self.mean().flatten(1).norm(dim=1)
        return torch.where(stderr > 0, stderr / mean, torch.zeros_like(stderr)).nan_to_num(nan=math.inf).cpu()

    def gradients_per_image(self) -> torch.Tensor:
        return self.units * (2 if self.paired else 1)


def _identity(values: torch.Tensor) -> torch.Tensor:
    return values


def _more_samples(sums: _Sums, tolerance: float, max_samples: int, sampling: str) -> torch.Tensor:
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
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < n_samples:
        raise ValueError(f"max_samples must be an int >= n_samples={n_samples}, got {max_samples!r}.")


def _clean_forward(
    model: nn.Module, batch: torch.Tensor, need_logits: bool
) -> tuple[torch.memory_format, torch.Tensor | None]:
    """The memory layout in which the noisy copies go through ``model``, and the logits (B, K) of the clean images.

    The layout is channels_last (NHWC) for a convolutional model on the CPU,
    where oneDNN's NHWC kernels are faster (the README's benchmark table),
    provided the clean forward pass in it succeeds; it is the default layout
    on other devices, for models without ``nn.Conv2d``, and for a model that
    cannot take NHWC input (a ``.view`` of its feature maps raises). The
    layout changes each gradient by float rounding (relative 1e-6), which in a
    deep ReLU6 network can flip a gate that sits at its threshold and so move
    a single noisy gradient by a visible amount. Off the CPU the clean forward
    pass runs only when the targets are the predicted classes (``need_logits``).
    """
    with torch.no_grad():
        if batch.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
            try:
                return torch.channels_last, _logits(model, batch.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                pass
        return torch.contiguous_format, (_logits(model, batch) if need_logits or batch.device.type == "cpu" else None)


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
    target: TargetType, n_images: int, n_classes: int | None, predicted: torch.Tensor | None = None
) -> torch.Tensor:
    """Class index per image as a long tensor (B,), checked against ``n_images`` and the model's ``n_classes``.

    ``None`` takes the arg-max of the ``predicted`` logits (B, K); an int
    applies to every image; a sequence or tensor gives one class per image.
    ``n_classes=None`` skips the range check (done later, once the model's output is known).
    """
    device = predicted.device if predicted is not None else None
    if target is None:
        if predicted is None:
            raise ValueError("target=None needs the clean images' logits to pick the predicted classes.")
        return predicted.detach().argmax(1)
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
    if n_classes is not None and classes.numel() and (classes.min() < 0 or classes.max() >= n_classes):
        raise ValueError(f"target {classes.tolist()} is outside the model's classes 0..{n_classes - 1}.")
    return classes.to(device) if device is not None else classes


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
        raise ValueError(f"model must return logits of shape (B, classes) = ({x.shape[0]}, K); got {shape}.")
    return logits
