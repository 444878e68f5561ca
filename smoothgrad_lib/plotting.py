"""Figures for the report: grids of images and maps, overlays."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W) tensor -> (H, W, 3) or (H, W) numpy array for ``imshow``."""
    array = image.detach().cpu().float().numpy()
    return np.transpose(array, (1, 2, 0)) if array.ndim == 3 else array


def overlay(image: torch.Tensor, saliency: torch.Tensor, cmap: str = "inferno", alpha: float = 0.6) -> np.ndarray:
    """Blend a saliency map (H, W) in [0, 1], coloured by ``cmap``, over a greyed image (3, H, W): (H, W, 3)."""
    grey = to_numpy_image(image).mean(2, keepdims=True).repeat(3, 2)
    heat = plt.get_cmap(cmap)(to_numpy_image(saliency).clip(0, 1))[..., :3]
    return (1 - alpha) * grey + alpha * heat


def image_grid(
    panels: Sequence[Sequence[torch.Tensor | np.ndarray]],
    titles: Sequence[Sequence[str]] | None = None,
    row_labels: Sequence[str] | None = None,
    suptitle: str | None = None,
    cmap: str = "inferno",
    colorbar: str | None = None,
    size: float = 2.2,
) -> Figure:
    """Rows of panels: RGB images (3, H, W) / (H, W, 3) and maps (H, W) with values in [0, 1].

    Maps share one colour scale [0, 1]; ``colorbar`` labels a shared colour bar for them.
    """
    n_rows, n_cols = len(panels), max(len(row) for row in panels)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)
    mappable = None
    for r, row in enumerate(panels):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            panel = row[c]
            array = to_numpy_image(panel) if isinstance(panel, torch.Tensor) else np.asarray(panel)
            if array.ndim == 2:
                mappable = ax.imshow(array, cmap=cmap, vmin=0, vmax=1)
            else:
                ax.imshow(array.clip(0, 1))
            if titles is not None and c < len(titles[r]):
                ax.set_title(titles[r][c], fontsize=9)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    if colorbar and mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, label=colorbar)
    return fig


def loglog_axes(
    ax: plt.Axes,
    xlabel: str,
    ylabel: str,
    *,
    title: str | None = None,
    guides: Sequence[tuple[float, tuple[float, float], str]] = (),
    xbase: float = 10,
) -> plt.Axes:
    """Finish a log-log plot of a power law: log scales, axis labels, guide lines ``y = y0 (x / x0)^slope``, legend.

    Plot the data on ``ax`` first; each guide ``(slope, (x0, y0), label)`` is
    drawn as a thin dashed line over the x-range of the data already plotted,
    so a measured slope can be compared with the predicted one by eye.
    ``xbase`` is the base of the x-axis ticks (2 for N = 1, 2, 4, ...).
    """
    if not ax.has_data():
        raise ValueError("plot the data on ax before calling loglog_axes: the guide lines span the data's x-range.")
    ax.set_xscale("log", base=xbase)
    ax.set_yscale("log")
    low, high = ax.dataLim.intervalx
    xs = np.geomspace(low, high, 50)
    for i, (slope, (x0, y0), label) in enumerate(guides):
        ax.plot(xs, y0 * (xs / x0) ** slope, color="k", ls=("--", ":", "-.")[i % 3], lw=1, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
