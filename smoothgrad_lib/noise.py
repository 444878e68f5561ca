"""SmoothGrad's noise, drawn in one place: its scale, the stream of standard normal copies, the noisy copies.

Every function of the package that perturbs images with Gaussian noise
(``smoothgrad`` and every smoothed method, ``noisy_gradients``, ``noisy_ranks``, ``stein_gradient``, ``taylor_bias``,
``gate_fractions``, ``faithfulness.gaussian_perturbations``) or uniform noise (``robustness.uniform_ball_noise``,
the ``"random"`` map) draws it here, so that the same generator state gives the same copies
whatever the function and whatever its ``batch_size``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

DEFAULT_NOISE_LEVEL = 0.15
SAMPLINGS = ("iid", "antithetic")
Sampling = Literal["iid", "antithetic"]

# Noise is drawn in blocks of this many elements (at most NOISE_BLOCK_COPIES copies): one randn call per
# block instead of one per copy, and a sequence that does not depend on batch_size.
NOISE_BLOCK_ELEMENTS = 2**22
NOISE_BLOCK_COPIES = 64


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``: one per measurement, each reproducible alone."""
    return torch.Generator(device=device).manual_seed(seed)


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
    """``noise_std`` with SmoothGrad's default: ``noise_level=DEFAULT_NOISE_LEVEL`` when neither is given."""
    if noise_level is None and sigma is None:
        noise_level = DEFAULT_NOISE_LEVEL
    return noise_std(x, noise_level=noise_level, sigma=sigma)


def check_generator(generator: torch.Generator | None, x: torch.Tensor) -> None:
    """The generator must live on the device type of ``x`` (None: the global generator)."""
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {x.device}: "
            "create it with torch.Generator(device=x.device)."
        )


def check_sampling(sampling: str, n_samples: int) -> bool:
    """Whether ``sampling`` is antithetic, after checking it (antithetic needs an even ``n_samples``)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}.")
    antithetic = sampling == "antithetic"
    if antithetic and n_samples % 2:
        raise ValueError(f"antithetic sampling draws gradients in pairs: n_samples must be even, got {n_samples}.")
    return antithetic


class NormalStream:
    """Standard normal noise copies of one shape, drawn a block at a time.

    The values handed out depend only on the generator's state and the copy
    shape, not on how many copies each ``take`` asks for, so results do not
    depend on ``batch_size``.
    """

    def __init__(self, shape: torch.Size, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype):
        self.shape, self.generator, self.device, self.dtype = shape, generator, device, dtype
        self.block = max(1, min(NOISE_BLOCK_COPIES, NOISE_BLOCK_ELEMENTS // math.prod(shape)))
        self.buffer = torch.empty((0, *shape), device=device, dtype=dtype)

    def take(self, count: int) -> torch.Tensor:
        """The next ``count`` standard normal copies, (count, *shape)."""
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

    def take_pairs(self, count: int, antithetic: bool) -> torch.Tensor:
        """``count`` copies; antithetic: ``count / 2`` draws ``eps`` each followed by ``-eps``."""
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
    check_generator(generator, x)
    device = generator.device if generator is not None else x.device
    return torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def gaussian_noise(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise N(0, 1) with the shape and dtype of ``x``: drawn on the generator's device, moved to x's.

    Examples:
        >>> e = gaussian_noise(torch.zeros(1000), torch.Generator().manual_seed(0))
        >>> e.shape, abs(float(e.mean())) < 0.1, abs(float(e.std()) - 1) < 0.1
        (torch.Size([1000]), True, True)
    """
    check_generator(generator, x)
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def owners(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The image index of every noisy copy, ``counts[b]`` copies of image b in a row: (sum counts,) long."""
    return torch.repeat_interleave(torch.arange(len(counts)), counts).to(device)


def noisy_copies(
    batch: torch.Tensor, stdev: torch.Tensor, owner: torch.Tensor, stream: NormalStream, antithetic: bool = False
) -> torch.Tensor:
    """``x_b + sigma_b eps`` for the image ``b = owner[i]`` of every copy i, the noise taken from ``stream``.

    ``batch`` (B, C, H, W), ``stdev`` (B, 1, 1, 1) from ``noise_std``, ``owner``
    (n,) image indices (from ``owners``, in chunks); with ``antithetic`` the
    copies come in pairs ``x + eps, x - eps`` (``owner`` must hold whole pairs).
    """
    return batch[owner] + stdev[owner] * stream.take_pairs(len(owner), antithetic)
