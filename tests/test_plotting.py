"""Figures: the grid's layout, its shared colour bar, and what reaches imshow (finite, in range, right axes order)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from smoothgrad_lib.plotting import image_grid, loglog_axes, overlay, to_numpy_image


@pytest.fixture
def panels(random_images):
    """Row 1: an RGB image slightly outside [0, 1] and two maps; row 2: one map (a shorter row)."""
    rgb = random_images(1, shape=(3, 6, 5))[0] * 1.2 - 0.1
    maps = random_images(3, seed=1, shape=(6, 5))
    return [[rgb, maps[0], maps[1].numpy()], [maps[2]]]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _panel_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_grid_has_one_axes_per_cell_in_rows_and_columns(panels):
    fig = image_grid(panels, titles=[["image", "a", "b"], ["c"]], row_labels=["first", "second"], suptitle="grid")
    axes = _panel_axes(fig)
    assert len(fig.axes) == len(axes) == 6
    assert axes[0].get_subplotspec().get_gridspec().get_geometry() == (2, 3)
    assert [ax.get_title() for ax in axes if ax.axison] == ["image", "a", "b", "c"]
    assert [ax.axison for ax in axes] == [True, True, True, True, False, False], "unused cells are switched off"
    assert axes[0].get_ylabel() == "first" and axes[3].get_ylabel() == "second"
    assert fig.get_suptitle() == "grid"


def test_colour_bar_only_when_asked_and_only_for_maps(panels, random_images):
    assert len(image_grid(panels).axes) == 6
    fig = image_grid(panels, colorbar="saliency (normalised)")
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(fig.axes) == 7 and len(bars) == 1
    assert bars[0].get_ylabel() == "saliency (normalised)"
    assert len(image_grid([[random_images(1)[0]]], colorbar="unused").axes) == 1, "RGB images alone have no colour bar"


def test_imshow_receives_finite_images_in_range_with_channels_last(panels):
    fig = image_grid(panels)
    shown = [image for ax in fig.axes for image in ax.get_images()]
    assert len(shown) == 4
    arrays = [np.asarray(image.get_array()) for image in shown]
    assert arrays[0].shape == (6, 5, 3) and all(a.shape == (6, 5) for a in arrays[1:])
    assert all(np.isfinite(a).all() for a in arrays)
    assert arrays[0].min() >= 0 and arrays[0].max() <= 1, "RGB is clipped to [0, 1]"
    assert all(image.get_clim() == (0, 1) for image in shown[1:]), "maps share the colour scale [0, 1]"


def test_to_numpy_image_moves_channels_last_and_leaves_the_tensor_alone(random_images):
    image = random_images(1)[0].requires_grad_()
    array = to_numpy_image(image)
    assert array.shape == (6, 5, 3)
    np.testing.assert_array_equal(array[2, 4], image.detach()[:, 2, 4].numpy())
    assert to_numpy_image(image[0]).shape == (6, 5)


def test_overlay_blends_grey_image_and_coloured_map(random_images):
    image, saliency = random_images(1)[0], random_images(1, seed=1, shape=(6, 5))[0]
    grey = image.mean(0).numpy()
    np.testing.assert_allclose(overlay(image, saliency, alpha=0.0), np.repeat(grey[..., None], 3, 2), rtol=1e-6)
    heat = plt.get_cmap("viridis")(saliency.numpy())[..., :3]
    np.testing.assert_allclose(overlay(image, saliency, cmap="viridis", alpha=1.0), heat, rtol=1e-6)
    blended = overlay(image, torch.full((6, 5), 2.0))  # out-of-range saliency is clipped, not extrapolated
    assert blended.shape == (6, 5, 3) and np.isfinite(blended).all() and 0 <= blended.min() and blended.max() <= 1


def test_loglog_axes():
    fig, ax = plt.subplots()
    x = np.array([1.0, 2.0, 4.0, 8.0])
    ax.errorbar(x, 3 / np.sqrt(x), yerr=0.1, marker="o", label="data")
    loglog_axes(ax, "N", "error", title="t", guides=[(-0.5, (1.0, 3.0), "N^-1/2"), (-1.0, (1.0, 3.0), "1/N")], xbase=2)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "N" and ax.get_ylabel() == "error" and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["N^-1/2", "1/N", "data"]
    guide = ax.get_lines()[-2]
    xs, ys = guide.get_data()
    assert xs[0] == pytest.approx(1.0) and xs[-1] == pytest.approx(8.0)
    np.testing.assert_allclose(ys, 3 / np.sqrt(xs))
    plt.close(fig)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="plot the data"):
        loglog_axes(ax, "N", "error")
    plt.close(fig)
