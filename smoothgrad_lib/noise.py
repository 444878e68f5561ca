"""SmoothGrad's noise, drawn in one place: its scale, the stream of standard normal copies, the noisy copies.

Every function of the package that perturbs images with Gaussian noise
(``smoothgrad`` and every smoothed method, ``noisy_gradients``, ``noisy_ranks``, ``stein_gradient``, ``taylor_bias``,
``gate_fractions``, ``faithfulness.gaussian_perturbations``) or uniform noise (``robustness.uniform_ball_noise``,
the ``"random"`` map) draws it here, so that the same generator state gives the same copies
whatever the function and whatever its ``batch_size``.

Devices: noise is drawn on the generator's device and handed out on the device of ``x``. A generator on x's device
(``torch.Generator(device=x.device)``) draws there; a CPU generator (``torch.Generator()``) serves x on any device,
drawing on the CPU and moving the draws (through pinned memory, without blocking, to CUDA), so that a GPU run gets
exactly the noise of a CPU run with the same seed (``noise_generator(seed, x, "cpu")``). A generator on an
accelerator is refused for x on another device type.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

DEFAULT_NOISE_LEVEL = 0.15
SAMPLINGS = ("iid", "antithetic")
Sampling = Literal["iid", "antithetic"]
NOISE_DEVICES = ("input", "cpu")
NoiseDevice = Literal["input", "cpu"]

# Noise is drawn in blocks of this many elements (at most NOISE_BLOCK_COPIES copies): one randn call per
# block instead of one per copy, and a sequence that does not depend on batch_size.
NOISE_BLOCK_ELEMENTS = 2**22
NOISE_BLOCK_COPIES = 64


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``: one per measurement, each reproducible alone.

    Examples:
        >>> torch.equal(torch.rand(3, generator=seeded_generator(0)), torch.rand(3, generator=seeded_generator(0)))
        True
    """
    return torch.Generator(device=device).manual_seed(seed)


def check_noise_device(noise_device: str) -> None:
    """``noise_device`` must be one of ``NOISE_DEVICES``: ``"input"`` (x's device) or ``"cpu"``.

    Examples:
        >>> check_noise_device("cpu")
        >>> check_noise_device("cuda")
        Traceback (most recent call last):
            ...
        ValueError: noise_device must be 'input' (draw on x's device) or 'cpu' (draw on the CPU), got 'cuda'.
    """
    if noise_device not in NOISE_DEVICES:
        raise ValueError(
            f"noise_device must be 'input' (draw on x's device) or 'cpu' (draw on the CPU), got {noise_device!r}."
        )


def noise_generator(seed: int, x: torch.Tensor, noise_device: NoiseDevice = "input") -> torch.Generator:
    """``seeded_generator(seed)`` on x's device (``"input"``) or on the CPU (``"cpu"``).

    With ``"cpu"`` the noise for x on any device is the CPU's draws for that seed, moved to x's device: a GPU run
    explains with exactly the noise of the CPU run. ``"input"`` draws on x's device (on a GPU, the GPU generator's
    own, different sequence).

    Examples:
        >>> x = torch.zeros(2, device="meta")             # any device; "meta" stands in for a GPU here
        >>> noise_generator(0, x, "cpu").device, noise_generator(0, torch.zeros(2)).device
        (device(type='cpu'), device(type='cpu'))
    """
    check_noise_device(noise_device)
    return seeded_generator(seed, x.device if noise_device == "input" else "cpu")


def noise_std(
    x: torch.Tensor, noise_level: float | None = None, sigma: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Per-image noise standard deviation, shape (B, 1, 1, 1), for a batch (B, C, H, W).

    Exactly one of ``noise_level`` (fraction of each image's range
    ``max x_b - min x_b``) and ``sigma`` (absolute, input units: one number, or a tensor of one per image, (B,))
    must be given. A per-image ``sigma`` pins the noise to other images than ``x``: ``noise_std(clean, 0.15)``
    reused at ``clean + delta`` gives both ends the same sigma (``methods.explanation_function(sigma_from=...)``).

    Examples:
        >>> import torch
        >>> x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        >>> x[0, 0, 0, 0] = 2.0                                   # image 0 spans [0, 2], image 1 is constant
        >>> noise_std(x, noise_level=0.15).flatten().tolist()
        [0.30000001192092896, 0.0]
        >>> noise_std(x, sigma=torch.tensor([0.1, 0.2])).flatten().tolist()
        [0.10000000149011612, 0.20000000298023224]
    """
    if noise_level is not None and sigma is not None:
        raise ValueError(
            "Give either noise_level (a fraction of each image's range) or sigma "
            "(an absolute standard deviation), not both."
        )
    if noise_level is None and sigma is None:
        raise ValueError("Give noise_level (e.g. 0.15) or sigma (e.g. 0.1).")
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != x.shape[0] or (sigma.dim() > 1 and sigma.squeeze().dim() > 1):
            raise ValueError(
                f"sigma must be a number or one per image ({x.shape[0]},), got shape {tuple(sigma.shape)}."
            )
        if not torch.isfinite(sigma).all() or (sigma < 0).any():
            raise ValueError("sigma must be finite and >= 0 for every image.")
        return sigma.detach().reshape(-1, 1, 1, 1).to(device=x.device, dtype=x.dtype)
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


def default_noise_std(x: torch.Tensor, noise_level: float | None, sigma: float | torch.Tensor | None) -> torch.Tensor:
    """``noise_std`` with SmoothGrad's default: ``noise_level=DEFAULT_NOISE_LEVEL`` when neither is given.

    Examples:
        >>> x = torch.zeros(1, 1, 2, 2)
        >>> x[0, 0, 0, 0] = 2.0                                   # the image spans [0, 2]
        >>> round(float(default_noise_std(x, None, None)), 6), float(default_noise_std(x, None, 0.5))
        (0.3, 0.5)
    """
    if noise_level is None and sigma is None:
        noise_level = DEFAULT_NOISE_LEVEL
    return noise_std(x, noise_level=noise_level, sigma=sigma)


def check_generator(generator: torch.Generator | None, x: torch.Tensor | torch.device) -> None:
    """The generator must be on the CPU or on the device type of ``x`` (a tensor or a device; None: the global one).

    A CPU generator serves x on any device (its draws are moved, ``random_draws``); a generator on an accelerator
    serves x on that device type only: a CUDA generator for a CPU x is an error.

    Examples:
        >>> check_generator(torch.Generator(), torch.zeros(2))                   # both on the CPU
        >>> check_generator(torch.Generator(), torch.zeros(2, device="meta"))    # drawn on the CPU, then moved
    """
    device = x if isinstance(x, torch.device) else x.device
    if generator is not None and generator.device.type not in ("cpu", device.type):
        raise ValueError(
            f"generator is on {generator.device} but x is on {device}: use a generator on x's device "
            "(torch.Generator(device=x.device)) or on the CPU (torch.Generator(), its draws moved to x's device)."
        )


def random_draws(
    sample: Callable[..., torch.Tensor],
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``sample(shape)`` (``torch.randn`` or ``torch.rand``) by ``generator`` on its device, returned on ``device``.

    The values are the generator's on its device: a CPU generator gives the CPU's draws on any device (drawn into
    pinned memory and copied without blocking when ``device`` is CUDA). None draws from ``device``'s global
    generator. The generator is checked first (``check_generator``).

    Examples:
        A CPU generator serves another device (PyTorch's "meta" stands in for a GPU) and advances exactly as for a
        draw on the CPU:

        >>> moved, here = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        >>> random_draws(torch.randn, (2, 3), moved, torch.device("meta"), torch.float32).device
        device(type='meta')
        >>> _ = random_draws(torch.randn, (2, 3), here, torch.device("cpu"), torch.float32)
        >>> torch.equal(torch.rand(4, generator=moved), torch.rand(4, generator=here))
        True
    """
    check_generator(generator, device)
    source = device if generator is None else generator.device
    pinned = source.type == "cpu" and device.type == "cuda"
    draws = sample(shape, generator=generator, device=source, dtype=dtype, pin_memory=pinned)
    return draws.to(device, non_blocking=pinned)


def check_sampling(sampling: str, n_samples: int) -> bool:
    """Whether ``sampling`` is antithetic, after checking it (antithetic needs an even ``n_samples``).

    Examples:
        >>> check_sampling("iid", 3), check_sampling("antithetic", 4)
        (False, True)
        >>> check_sampling("antithetic", 3)
        Traceback (most recent call last):
            ...
        ValueError: antithetic sampling draws gradients in pairs: n_samples must be even, got 3.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}.")
    antithetic = sampling == "antithetic"
    if antithetic and n_samples % 2:
        raise ValueError(f"antithetic sampling draws gradients in pairs: n_samples must be even, got {n_samples}.")
    return antithetic


class NormalStream:
    """Standard normal noise copies of one shape on ``device``, drawn a block at a time on the generator's device.

    The values handed out depend only on the generator's state and the copy
    shape, not on how many copies each ``take`` asks for, so results do not
    depend on ``batch_size``. A CPU generator gives the CPU's copies on any
    ``device`` (``random_draws``).
    """

    def __init__(self, shape: torch.Size, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype):
        self.shape, self.generator, self.device, self.dtype = shape, generator, device, dtype
        self.block = max(1, min(NOISE_BLOCK_COPIES, NOISE_BLOCK_ELEMENTS // math.prod(shape)))
        self.buffer = torch.empty((0, *shape), device=device, dtype=dtype)

    def take(self, count: int) -> torch.Tensor:
        """The next ``count`` standard normal copies, (count, *shape).

        Examples:
            The same copies whatever the chunks they are taken in (100 copies span two blocks of 64):

            >>> shape, cpu = torch.Size([2]), torch.device("cpu")
            >>> a, b = (NormalStream(shape, torch.Generator().manual_seed(0), cpu, torch.float32) for _ in range(2))
            >>> torch.equal(a.take(100), torch.cat([b.take(30), b.take(70)]))
            True
        """
        parts = []
        while count > 0:
            if not len(self.buffer):
                self.buffer = random_draws(
                    torch.randn, (self.block, *self.shape), self.generator, self.device, self.dtype
                )
            part, self.buffer = self.buffer[:count], self.buffer[count:]
            parts.append(part)
            count -= len(part)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def take_pairs(self, count: int, antithetic: bool) -> torch.Tensor:
        """``count`` copies; antithetic: ``count / 2`` draws ``eps`` each followed by ``-eps``.

        Examples:
            >>> generator = torch.Generator().manual_seed(0)
            >>> stream = NormalStream(torch.Size([3]), generator, torch.device("cpu"), torch.float32)
            >>> eps = stream.take_pairs(4, antithetic=True)
            >>> eps.shape, torch.equal(eps[1], -eps[0]), torch.equal(eps[3], -eps[2])
            (torch.Size([4, 3]), True, True)
        """
        if not antithetic:
            return self.take(count)
        half = self.take(count // 2)
        return torch.stack((half, -half), 1).flatten(0, 1)


def uniform_noise(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise in [0, 1) with the shape and dtype of ``x``: drawn on the generator's device, moved to x's.

    Examples:
        >>> u = uniform_noise(torch.zeros(2, 3), torch.Generator().manual_seed(0))
        >>> u.shape, bool(((0 <= u) & (u < 1)).all())
        (torch.Size([2, 3]), True)
    """
    return random_draws(torch.rand, x.shape, generator, x.device, x.dtype)


def gaussian_noise(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise N(0, 1) with the shape and dtype of ``x``: drawn on the generator's device, moved to x's.

    Examples:
        >>> e = gaussian_noise(torch.zeros(1000), torch.Generator().manual_seed(0))
        >>> e.shape, abs(float(e.mean())) < 0.1, abs(float(e.std()) - 1) < 0.1
        (torch.Size([1000]), True, True)
    """
    return random_draws(torch.randn, x.shape, generator, x.device, x.dtype)


def owners(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The image index of every noisy copy, ``counts[b]`` copies of image b in a row: (sum counts,) long.

    Examples:
        >>> owners(torch.tensor([2, 0, 3]), torch.device("cpu")).tolist()
        [0, 0, 2, 2, 2]
    """
    return torch.repeat_interleave(torch.arange(len(counts)), counts).to(device)


def noisy_copies(
    batch: torch.Tensor, stdev: torch.Tensor, owner: torch.Tensor, stream: NormalStream, antithetic: bool = False
) -> torch.Tensor:
    """``x_b + sigma_b eps`` for the image ``b = owner[i]`` of every copy i, the noise taken from ``stream``.

    ``batch`` (B, C, H, W), ``stdev`` (B, 1, 1, 1) from ``noise_std``, ``owner``
    (n,) image indices (from ``owners``, in chunks); with ``antithetic`` the
    copies come in pairs ``x + eps, x - eps`` (``owner`` must hold whole pairs).

    Examples:
        Image 0 with sigma 0 is copied unchanged; an antithetic pair of image 1 averages back to it:

        >>> x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        >>> stream = NormalStream(x.shape[1:], torch.Generator().manual_seed(0), x.device, x.dtype)
        >>> stdev, owner = torch.tensor([0.0, 0.5]).reshape(2, 1, 1, 1), owners(torch.tensor([2, 2]), x.device)
        >>> copies = noisy_copies(x, stdev, owner, stream, antithetic=True)
        >>> torch.equal(copies[:2], x[[0, 0]]), torch.allclose(copies[2:].mean(0), x[1])
        (True, True)
    """
    return batch[owner] + stdev[owner] * stream.take_pairs(len(owner), antithetic)
