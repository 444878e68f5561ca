"""Synthetic images whose evidence is known, and the two small CNNs trained on them.

Each image (3, S, S) in [0, 1] holds exactly one class-defining shape (circle,
square, triangle or cross) with random position, size, rotation and colour,
drawn over a cluttered background of colour gradients, stripes and soft
distractor blobs. The background is drawn from its own random stream, before
and independently of the label, so it carries no class information; the mask
(S, S) marks the pixels of the shape, i.e. all the evidence there is.

Two CNNs share one architecture and differ only in their activation: ReLU
(piecewise linear, Hessian zero almost everywhere) and Softplus (smooth, with
a non-zero Hessian). Train them with ``python -m smoothgrad_lib train-shapes``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

CLASSES = ("circle", "square", "triangle", "cross")
# Softplus_beta(z) = log(1 + exp(beta z)) / beta: smooth everywhere, within log(2)/beta of ReLU.
ACTIVATIONS = {"relu": nn.ReLU, "softplus": partial(nn.Softplus, beta=5.0)}
WEIGHTS_DIR = Path(__file__).parent / "weights"
CHECKSUMS = WEIGHTS_DIR / "sha256.json"


class ShapesBatch(NamedTuple):
    """images (n, 3, S, S) float32 in [0, 1]; labels (n,) int64; masks (n, S, S) bool."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor


def make_shapes(n: int, seed: int = 0, size: int = 64) -> ShapesBatch:
    """Draw ``n`` synthetic images, deterministically from ``seed``.

    Image ``i`` depends on ``(seed, i)`` only through three independent random
    streams: background, label, and shape geometry/colour.
    """
    if n < 1 or size < 32:
        raise ValueError(f"need n >= 1 and size >= 32, got n={n}, size={size}.")
    streams = np.random.SeedSequence(seed).spawn(3)
    background = _background(np.random.default_rng(streams[0]), n, size)
    labels = np.random.default_rng(streams[1]).integers(0, len(CLASSES), n)
    masks, colours = _shapes(np.random.default_rng(streams[2]), labels, background, size)
    images = np.where(masks[:, None], colours[:, :, None, None].astype(np.float32), background)
    return ShapesBatch(
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.int64)),
        torch.from_numpy(masks),
    )


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float32) + 0.5
    return coords[None, :, None], coords[None, None, :]  # (1, S, 1) rows, (1, 1, S) columns


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Colour gradient + stripes + 3 soft blobs + pixel noise, (n, 3, S, S) float32 in [0.15, 0.85]."""

    def uniform(low: float, high: float, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(low, high, shape).astype(np.float32)

    rows, cols = _grid(size)
    rows, cols = rows[:, None] / size, cols[:, None] / size  # (1, 1, S, 1), (1, 1, 1, S) in (0, 1)
    tilt = uniform(-0.15, 0.15, (n, 3, 2, 1, 1))
    image = uniform(0.35, 0.65, (n, 3, 1, 1)) + tilt[:, :, 0] * (rows - 0.5) + tilt[:, :, 1] * (cols - 0.5)
    angle = uniform(0, np.pi, (n, 1, 1, 1))
    frequency = uniform(4, 12, (n, 1, 1, 1))
    phase = uniform(0, 2 * np.pi, (n, 1, 1, 1))
    # sin(a + b) = sin a cos b + cos a sin b: separable stripes, computed on rows and columns only.
    along_rows = 2 * np.pi * frequency * np.cos(angle) * rows + phase
    along_cols = 2 * np.pi * frequency * np.sin(angle) * cols
    wave = np.sin(along_rows) * np.cos(along_cols) + np.cos(along_rows) * np.sin(along_cols)
    image += uniform(0.0, 0.08, (n, 3, 1, 1)) * wave
    for _ in range(3):
        centre = uniform(0, 1, (n, 2, 1, 1, 1))
        width = uniform(0.04, 0.12, (n, 1, 1, 1))
        blob = np.exp(-((rows - centre[:, 0]) ** 2) / (2 * width**2)) * np.exp(
            -((cols - centre[:, 1]) ** 2) / (2 * width**2)
        )
        image += uniform(-0.3, 0.3, (n, 3, 1, 1)) * blob
    image += 0.02 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0.15, 0.85, out=image)


def _shapes(
    rng: np.random.Generator, labels: np.ndarray, background: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Masks (n, S, S) of the class shapes and their colours (n, 3)."""
    n = len(labels)
    rows, cols = _grid(size)
    radius = (rng.uniform(0.12, 0.2, n) * size).astype(np.float32)
    margin = radius * math.sqrt(2) + 1
    centre_r = rng.uniform(margin, size - margin)
    centre_c = rng.uniform(margin, size - margin)
    centre_r, centre_c = centre_r.astype(np.float32), centre_c.astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    # Rotated coordinates relative to the centre, in units of the radius.
    dr = (rows - centre_r[:, None, None]) / radius[:, None, None]
    dc = (cols - centre_c[:, None, None]) / radius[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = cos * dc + sin * dr, -sin * dc + cos * dr
    masks = np.empty(u.shape, dtype=bool)
    for label, inside in enumerate((_circle, _square, _triangle, _cross)):
        chosen = labels == label
        masks[chosen] = inside(u[chosen], v[chosen])
    # Colour: at least 0.3 brighter or darker than the local background mean.
    local = (background * masks[:, None]).sum((2, 3)) / masks.sum((1, 2))[:, None]
    sign = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)[:, None]
    colours = np.clip(local + sign * rng.uniform(0.3, 0.5, (n, 1)) + rng.uniform(-0.1, 0.1, (n, 3)), 0, 1)
    return masks, colours


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u**2 + v**2 <= 1


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Equilateral triangle inscribed in the unit circle: three half-planes."""
    inside = np.ones(u.shape, dtype=bool)
    for k in range(3):
        theta = 2 * np.pi * k / 3
        inside &= np.cos(theta) * u + np.sin(theta) * v <= 0.5
    return inside


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1))


class ShapesCNN(nn.Sequential):
    """Four 3x3 conv blocks (16, 32, 64, 64 channels) with batch norm, 2x2 average pooling, global average pooling, linear.

    Input (B, 3, S, S) in [0, 1], output logits (B, 4); about 61k parameters.
    Every layer but the activation is linear (pooling is by averaging, not
    max), so with Softplus the whole network is infinitely differentiable and
    with ReLU it is piecewise linear.
    """

    def __init__(self, activation: str = "relu") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}.")
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        channels = [3, 16, 32, 64, 64]
        for index, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act()]
            if index < 3:
                layers.append(nn.AvgPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], len(CLASSES))]
        super().__init__(*layers)
        self.activation = activation


def weights_path(activation: str) -> Path:
    return WEIGHTS_DIR / f"shapes-{activation}.pt"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_shapes_model(activation: str = "relu", path: Path | None = None) -> ShapesCNN:
    """The trained twin in eval mode; its weights file is checked against the shipped sha256 first."""
    model = ShapesCNN(activation)
    path = weights_path(activation) if path is None else Path(path)
    expected = json.loads(CHECKSUMS.read_text())[weights_path(activation).name]
    actual = sha256(path)
    if actual != expected:
        raise ValueError(
            f"checksum mismatch for {path}: sha256 {actual} but {expected} was shipped. "
            "The weights file is corrupt or was replaced: reinstall the package or retrain "
            "with `python -m smoothgrad_lib train-shapes`."
        )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def accuracy(model: nn.Module, data: ShapesBatch, batch_size: int = 500) -> float:
    """Fraction of ``data`` classified correctly by ``model`` (in eval mode, on any device)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        predictions = torch.cat([model(chunk.to(device)).argmax(1).cpu() for chunk in data.images.split(batch_size)])
    return float((predictions == data.labels).float().mean())


def train(activation: str, n_train: int = 20000, epochs: int = 4, seed: int = 0) -> tuple[ShapesCNN, float]:
    """Train one twin deterministically (Adam, one-cycle schedule); returns it and its held-out accuracy."""
    torch.manual_seed(seed)
    data = make_shapes(n_train, seed=seed)
    held_out = make_shapes(2000, seed=seed + 1)
    model = ShapesCNN(activation)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps_per_epoch = math.ceil(n_train / 100)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 1e-2, total_steps=epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n_train, generator=shuffle)
        for batch in order.split(100):
            loss = nn.functional.cross_entropy(model(data.images[batch]), data.labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        model.eval()
        score = accuracy(model, held_out)
        print(
            f"{activation}: epoch {epoch + 1}/{epochs}, loss {loss.item():.3f}, "
            f"held-out accuracy {score:.3f}, {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return model, score
