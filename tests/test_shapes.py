"""Synthetic shapes: determinism, masks, a background without label information, and the shipped twins."""

import json

import pytest
import torch

from smoothgrad_lib.shapes import CHECKSUMS, CLASSES, accuracy, load_shapes_model, make_shapes, sha256, weights_path


def test_same_seed_same_images_other_seed_other_images():
    first, again, other = make_shapes(50, seed=3), make_shapes(50, seed=3), make_shapes(50, seed=4)
    for a, b in zip(first, again):
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
    for image, mask in zip(data.images, data.masks):
        inside = image[:, mask]
        assert torch.equal(inside, inside[:, :1].expand_as(inside)), "the shape has one flat colour"
        outside = image[:, ~mask]
        contrast = (inside[:, 0].mean() - outside.mean(1).mean()).abs()
        assert contrast > 0.1


def _features(data, with_shape_feature: bool) -> torch.Tensor:
    """Background outside a class-independent disc around the shape, pooled to 8x8; optionally the shape's
    fill ratio (area over squared largest distance from its centroid: pi for a circle, 1.3 for a triangle)."""
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    area = data.masks.sum((1, 2)).float()
    centre_r = (data.masks * rows).sum((1, 2)) / area
    centre_c = (data.masks * cols).sum((1, 2)) / area
    disc = (rows - centre_r[:, None, None]) ** 2 + (cols - centre_c[:, None, None]) ** 2 <= 21**2
    background = torch.where(disc[:, None], torch.tensor(0.5), data.images)
    pooled = torch.nn.functional.avg_pool2d(background, 8).flatten(1)
    reach = torch.where(data.masks, (rows - centre_r[:, None, None]) ** 2 + (cols - centre_c[:, None, None]) ** 2, 0)
    extra = [(area / reach.amax((1, 2)))[:, None]] if with_shape_feature else []
    return torch.cat([pooled, background.std((2, 3)), *extra], 1)


def _held_out_accuracy(with_shape_feature: bool) -> float:
    train, test = make_shapes(3000, seed=10), make_shapes(2000, seed=11)
    x_train, x_test = _features(train, with_shape_feature), _features(test, with_shape_feature)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    classifier = torch.nn.Linear(x_train.shape[1], len(CLASSES))
    optimiser = torch.optim.LBFGS(classifier.parameters(), max_iter=200)

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(classifier(x_train), train.labels) + 1e-3 * classifier.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return float((classifier(x_test).argmax(1) == test.labels).float().mean())


def test_background_alone_predicts_the_label_at_chance():
    chance, standard_error = 0.25, (0.25 * 0.75 / 2000) ** 0.5
    assert abs(_held_out_accuracy(with_shape_feature=False) - chance) < 4 * standard_error


def test_the_same_probe_finds_information_where_there_is_some():
    """Positive control: add one feature of the shape itself (its fill ratio) and the probe is far above chance."""
    assert _held_out_accuracy(with_shape_feature=True) > 0.5


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_shipped_twins_reach_95_percent_on_fresh_images(activation):
    model = load_shapes_model(activation)
    assert accuracy(model, make_shapes(2000, seed=2026)) >= 0.95


def test_weights_are_small_and_match_their_checksums():
    sums = json.loads(CHECKSUMS.read_text())
    total = 0
    for activation in ("relu", "softplus"):
        path = weights_path(activation)
        assert sums[path.name] == sha256(path)
        total += path.stat().st_size
    assert total < 2 * 2**20


def test_checksum_mismatch_is_caught(tmp_path):
    tampered = tmp_path / "shapes-relu.pt"
    data = bytearray(weights_path("relu").read_bytes())
    data[-100] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_shapes_model("relu", path=tampered)


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        load_shapes_model("tanh")
    with pytest.raises(ValueError):
        make_shapes(0)


def test_training_command_saves_nothing_when_a_twin_misses_the_bar(tmp_path, capsys):
    from smoothgrad_lib.__main__ import main

    with pytest.raises(SystemExit, match="nothing saved"):
        main(["train-shapes", "--epochs", "1", "--n-train", "200", "--out", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []
    assert "held-out accuracy" in capsys.readouterr().out
