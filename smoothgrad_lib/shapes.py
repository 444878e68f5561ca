"""Synthetic images whose evidence is known: one class-defining shape over a label-free background.

Each image (3, S, S) in [0, 1] holds exactly one class-defining shape (circle,
square, triangle or cross) with random position, size, rotation and colour,
drawn over a cluttered background of colour gradients, stripes and soft
distractor blobs. The background is drawn from its own random stream, before
and independently of the label, so it carries no class information; the mask
(S, S) marks the pixels of the shape, i.e. all the evidence there is, and the
background (3, S, S) is the same image without its shape.

The small CNNs trained on these images are in :mod:`smoothgrad_lib.twins`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

CLASSES = ("circle", "square", "triangle", "cross")


class ShapesBatch(NamedTuple):
    """images (n, 3, S, S) float32 in [0, 1]; labels (n,) int64; masks (n, S, S) bool; backgrounds like images.

    ``backgrounds[i]`` is ``images[i]`` without its shape: equal to it outside ``masks[i]``, the background's own
    pixels inside. It is independent of ``labels``, so replacing pixels of an image by its background removes their
    evidence without leaving the data distribution (an "on-manifold" deletion baseline).
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    backgrounds: torch.Tensor


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
        torch.from_numpy(background),
    )


def write_shapes(folder: str | Path, n: int, seed: int = 0, size: int = 64) -> Path:
    """Write ``make_shapes(n, seed, size)`` to ``folder`` as 8-bit PNG files ``<class>_<i>.png`` (i = 0..n-1, zero
    padded), and ``labels.csv`` beside them (columns ``image,label``, the label a class name); returns that CSV's path.

    A folder of images with known classes, for ``smoothgrad evaluate``; the PNGs round each value to 1/255.

    Examples:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     labels = write_shapes(folder, 2)
        ...     first = labels.read_text().splitlines()[1]
        ...     print(first, Image.open(labels.parent / first.split(",")[0]).size)
        triangle_0.png,triangle (64, 64)
    """
    from PIL import Image  # here: the data layer itself needs no image library

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    batch = make_shapes(n, seed, size)
    pixels = (batch.images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    rows = ["image,label"]
    for i, (image, label) in enumerate(zip(pixels, batch.labels.tolist(), strict=True)):
        name = f"{CLASSES[label]}_{i:0{len(str(n - 1))}d}.png"
        Image.fromarray(image).save(folder / name)
        rows.append(f"{name},{CLASSES[label]}")
    labels = folder / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


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
