"""Figures for the report and the explain command: grids of images and maps, overlays, explain's four panels."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from .aggregates import display_error_map
from .maps import saliency_map

PERCENTILE = 99.0  # explain's clip, as in the notebooks: saliency_map(..., normalize="percentile")
TITLE_SIZE = 11  # explain's panel titles: three short lines fit above a panel without running into a colour bar
# explain's trust panel: a fixed log scale, so that a reliable map looks dark whatever its own spread of errors.
ERROR_SCALE = (0.01, 1.0)
UNITS = {
    "abs": "logit per unit of pixel intensity",
    "raw": "logit per unit of pixel intensity",
    "square": "(logit per unit of pixel intensity)²",
    "vargrad": "(logit per unit of pixel intensity)²",
}


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


def explain_figure(image: torch.Tensor, mean: torch.Tensor, stderr: torch.Tensor, aggregate: str, title: str) -> Figure:
    """explain's four panels: the image (3, H, W), the map of ``mean`` (C, H, W), the overlay, and the trust panel.

    The map and the overlay are ``saliency_map(mean, normalize="percentile")``: scaled so the map's 99th
    percentile is 1, clipped above. The trust panel is ``display_error_map`` on the fixed log scale
    ``ERROR_SCALE``. Built without pyplot: nothing global, no window.
    """
    mean, stderr, image = mean.cpu(), stderr.cpu(), image.cpu()
    fig = Figure(figsize=(17, 5.2), layout="constrained")
    axes = fig.subplots(1, 4)
    _input_panel(axes[0], image)
    _map_panels(fig, axes[1:3], image, mean, aggregate)
    _trust_panel(fig, axes[3], display_error_map(mean[None], stderr[None])[0])
    for ax in axes:
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    fig.suptitle(title)
    return fig


def _input_panel(ax: plt.Axes, image: torch.Tensor) -> None:
    height, width = image.shape[1:]
    ax.imshow(to_numpy_image(image).clip(0, 1))
    ax.set_title(f"the model's input\n({width}x{height} px)", fontsize=TITLE_SIZE)


def _map_panels(fig: Figure, axes: Sequence[plt.Axes], image: torch.Tensor, mean: torch.Tensor, aggregate: str) -> None:
    """The map of ``mean`` clipped at its 99th percentile, and the same over the greyed ``image``."""
    raw_map = saliency_map(mean, reduce="max", normalize=None)
    unit_map = saliency_map(mean, reduce="max", normalize="percentile", percentile=PERCENTILE)
    clip = float(torch.quantile(raw_map.flatten().float(), PERCENTILE / 100))
    shown = axes[0].imshow(to_numpy_image(unit_map), cmap="inferno", vmin=0, vmax=1)
    axes[0].set_title(
        f"SmoothGrad ({aggregate}), max over\nchannels, clipped at its\n99th percentile", fontsize=TITLE_SIZE
    )
    fig.colorbar(shown, ax=axes[0], shrink=0.85, label=f"1 = 99th percentile = {clip:.3g}\n{UNITS[aggregate]}")
    axes[1].imshow(overlay(image, unit_map))
    axes[1].set_title("the map over the greyed image\n(the same 99th-percentile clip)", fontsize=TITLE_SIZE)
    fig.colorbar(ScalarMappable(Normalize(0, 1), "inferno"), ax=axes[1], shrink=0.85, label="map / 99th percentile")


def _trust_panel(fig: Figure, ax: plt.Axes, error: torch.Tensor) -> None:
    """``display_error_map`` (H, W) on the log scale ``ERROR_SCALE``; NaN (no error estimate) drawn grey."""
    low, high = ERROR_SCALE
    shown = ax.imshow(
        to_numpy_image(error.clamp(low, high)),
        cmap=colormaps["viridis"].with_extremes(bad="lightgrey"),
        norm=LogNorm(low, high),
    )
    fig.colorbar(
        shown,
        ax=ax,
        shrink=0.85,
        extend="both",
        label="stderr / contrast of the map shown\n(1: the error is as large as the contrast)",
    )
    ax.set_title(
        "where the map can be trusted:\nerror / the map's contrast\n(bright: not yet; grey: unknown)",
        fontsize=TITLE_SIZE,
    )
    if not bool(torch.isfinite(error).any()):
        height, width = error.shape
        ax.text(width / 2, height / 2, "unknown: needs more gradients", ha="center", va="center")
