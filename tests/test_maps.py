"""Channel reduction and normalisation."""

import numpy as np
import pytest
import torch

from smoothgrad_lib import saliency_map


def attribution() -> torch.Tensor:
    return torch.tensor([[[[1.0, -4.0]], [[-2.0, 0.0]], [[2.0, 3.0]]]])  # (1, 3, 1, 2)


@pytest.mark.parametrize(
    ("reduce", "expected"),
    [("max", [2.0, 4.0]), ("sum", [5.0, 7.0]), ("mean", [5 / 3, 7 / 3]), ("l2", [3.0, 5.0])],
)
def test_reductions_over_the_colour_channels(reduce, expected):
    result = saliency_map(attribution(), reduce=reduce, normalize=None)
    torch.testing.assert_close(result, torch.tensor([[expected]]))


def test_minmax_maps_each_image_to_the_unit_interval(seeded):
    attr = torch.randn(3, 3, 8, 8, generator=seeded(0)) * torch.tensor([1.0, 10.0, 100.0]).reshape(3, 1, 1, 1)
    maps = saliency_map(attr)
    assert maps.shape == (3, 8, 8)
    torch.testing.assert_close(maps.flatten(1).amin(1), torch.zeros(3))
    torch.testing.assert_close(maps.flatten(1).amax(1), torch.ones(3))
    # the same image gives the same map whatever else is in the batch
    torch.testing.assert_close(maps[1], saliency_map(attr[1]))


def test_percentile_matches_pair_visualize_image_grayscale(seeded):
    """PAIR: image_2d = sum |attr| over channels; clip((image_2d - min) / (p99 - min), 0, 1)."""
    attr = torch.randn(3, 16, 16, generator=seeded(1))
    image_2d = attr.abs().sum(0).numpy()
    vmax, vmin = np.percentile(image_2d, 99), image_2d.min()
    expected = np.clip((image_2d - vmin) / (vmax - vmin), 0, 1)
    result = saliency_map(attr, reduce="sum", normalize="percentile")
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (result == 1).sum() >= 3  # the top 1% is clipped
    lower = saliency_map(attr, reduce="sum", normalize="percentile", percentile=50)
    assert (lower == 1).float().mean() >= 0.5


@pytest.mark.parametrize("normalize", ["minmax", "percentile"])
def test_constant_map_gives_zeros_not_nan(normalize):
    for value in (0.0, 3.0):
        result = saliency_map(torch.full((2, 3, 4, 4), value), normalize=normalize)
        assert torch.equal(result, torch.zeros(2, 4, 4))


def test_input_is_not_modified():
    attr = attribution()
    before = attr.clone()
    saliency_map(attr, reduce="l2")
    assert torch.equal(attr, before)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attr": torch.zeros(4, 4)}, ValueError, r"attr must have shape \(B, C, H, W\) or \(C, H, W\), got \(4, 4\)"),
        ({"attr": torch.zeros(3, 4, 4, dtype=torch.int64)}, TypeError, "attr must be a floating-point torch.Tensor"),
        ({"attr": [[0.0]]}, TypeError, "attr must be a floating-point torch.Tensor"),
        ({"attr": torch.zeros(3, 4, 4), "reduce": "median"}, ValueError, "reduce must be one of .*, got 'median'"),
        (
            {"attr": torch.zeros(3, 4, 4), "normalize": "zscore"},
            ValueError,
            "normalize must be one of .*, got 'zscore'",
        ),
        (
            {"attr": torch.zeros(3, 4, 4), "normalize": "percentile", "percentile": 0},
            ValueError,
            r"percentile must be in \(0, 100\], got 0",
        ),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        saliency_map(**kwargs)
