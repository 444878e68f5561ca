"""Synthetic shapes: determinism, masks, and a background without label information that the batch exposes."""

import pytest
import torch

from smoothgrad_lib.shapes import CLASSES, make_shapes


def test_same_seed_same_images_other_seed_other_images():
    first, again, other = make_shapes(50, seed=3), make_shapes(50, seed=3), make_shapes(50, seed=4)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.images, other.images)


def test_shapes_and_masks_are_consistent():
    data = make_shapes(400, seed=1)
    assert data.images.shape == (400, 3, 64, 64) and data.masks.shape == (400, 64, 64)
    assert set(data.labels.tolist()) == set(range(len(CLASSES)))
    area = data.masks.sum((1, 2))
    assert (area >= 30).all()
    border = data.masks[:, [0, -1], :].any((1, 2)) | data.masks[:, :, [0, -1]].any((1, 2))
    assert not border.any(), "a shape touches the image border"
    for image, mask in zip(data.images, data.masks, strict=True):
        inside = image[:, mask]
        assert torch.equal(inside, inside[:, :1].expand_as(inside)), "the shape has one flat colour"
        outside = image[:, ~mask]
        contrast = (inside[:, 0].mean() - outside.mean(1).mean()).abs()
        assert contrast > 0.1


def test_backgrounds_are_the_images_without_their_shapes():
    data = make_shapes(200, seed=5)
    assert data.backgrounds.shape == data.images.shape and data.backgrounds.dtype == torch.float32
    differs = (data.images != data.backgrounds).any(1)
    assert torch.equal(differs, data.masks), "equal outside the mask, different at every pixel inside"
    assert 0.15 <= data.backgrounds.min() and data.backgrounds.max() <= 0.85


def _features(data, with_shape_feature: bool = False, whole_background: bool = False) -> torch.Tensor:
    """Background outside a class-independent disc around the shape (or the whole of ``data.backgrounds``), pooled to
    8x8; optionally the shape's fill ratio (area over squared largest distance from its centroid: pi for a circle,
    1.3 for a triangle)."""
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    area = data.masks.sum((1, 2)).float()
    centre_r = (data.masks * rows).sum((1, 2)) / area
    centre_c = (data.masks * cols).sum((1, 2)) / area
    disc = (rows - centre_r[:, None, None]) ** 2 + (cols - centre_c[:, None, None]) ** 2 <= 21**2
    background = data.backgrounds if whole_background else torch.where(disc[:, None], torch.tensor(0.5), data.images)
    pooled = torch.nn.functional.avg_pool2d(background, 8).flatten(1)
    reach = torch.where(data.masks, (rows - centre_r[:, None, None]) ** 2 + (cols - centre_c[:, None, None]) ** 2, 0)
    extra = [(area / reach.amax((1, 2)))[:, None]] if with_shape_feature else []
    return torch.cat([pooled, background.std((2, 3)), *extra], 1)


def _held_out_accuracy(**features) -> float:
    """A linear probe (L2-regularised logistic regression, a convex problem) trained on 3000 images, tested on 2000."""
    train, test = make_shapes(3000, seed=10), make_shapes(2000, seed=11)
    x_train, x_test = _features(train, **features), _features(test, **features)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    classifier = torch.nn.Linear(x_train.shape[1], len(CLASSES))
    torch.nn.init.zeros_(classifier.weight)
    torch.nn.init.zeros_(classifier.bias)
    optimiser = torch.optim.LBFGS(classifier.parameters(), max_iter=200)

    def closure():
        optimiser.zero_grad()
        loss = (
            torch.nn.functional.cross_entropy(classifier(x_train), train.labels)
            + 1e-3 * classifier.weight.square().sum()
        )
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return float((classifier(x_test).argmax(1) == test.labels).float().mean())


CHANCE, STANDARD_ERROR = 0.25, (0.25 * 0.75 / 2000) ** 0.5


def test_background_alone_predicts_the_label_at_chance():
    assert abs(_held_out_accuracy() - CHANCE) < 4 * STANDARD_ERROR


def test_whole_backgrounds_predict_the_label_at_chance():
    """The exposed backgrounds, shape region included, carry no label information: they depend on the seed only."""
    assert abs(_held_out_accuracy(whole_background=True) - CHANCE) < 4 * STANDARD_ERROR


def test_the_same_probe_finds_information_where_there_is_some():
    """Positive control: add one feature of the shape itself (its fill ratio) and the probe is far above chance."""
    assert _held_out_accuracy(with_shape_feature=True) > 0.5


@pytest.mark.parametrize(("n", "size"), [(0, 64), (4, 31)])
def test_bad_arguments(n, size):
    with pytest.raises(ValueError, match=f"need n >= 1 and size >= 32, got n={n}, size={size}"):
        make_shapes(n, size=size)
