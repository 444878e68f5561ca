"""The shipped shapes twins: architecture, weights read through importlib.resources and checked by sha256, accuracy."""

import dataclasses

import pytest
import torch

from smoothgrad_lib.classification import accuracy
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.twins import (
    TWINS,
    WEIGHTS,
    ShapesCNN,
    load_twin,
    sha256,
    shipped_checksums,
    training_set,
    weights_name,
)

CHANCE = 0.25
FRESH = make_shapes(2000, seed=2026)  # images no twin was trained or selected on


def test_architecture_has_61k_parameters_and_four_logits():
    model = ShapesCNN("softplus").eval()
    # conv weights 3*3*(3*16 + 16*32 + 32*64 + 64*64), batch norm 2*(16+32+64+64), linear 64*4 + 4
    assert sum(p.numel() for p in model.parameters()) == 9 * (48 + 512 + 2048 + 4096) + 2 * 176 + 260
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 4)


@pytest.mark.parametrize("twin", [name for name, recipe in TWINS.items() if recipe.min_accuracy is not None])
def test_twins_reach_their_accuracy_bar_on_fresh_images(twin):
    assert accuracy(load_twin(twin), FRESH.images, FRESH.labels) >= TWINS[twin].min_accuracy


def test_permuted_label_twin_is_at_chance_on_the_true_labels():
    predictions = load_twin("relu-permuted")(FRESH.images).argmax(1)
    score = float((predictions == FRESH.labels).float().mean())
    assert abs(score - CHANCE) < 4 * (CHANCE * (1 - CHANCE) / len(FRESH.labels)) ** 0.5, score


def test_permuted_label_twin_memorised_its_permuted_training_labels(monkeypatch):
    """Adebayo et al.'s randomised-label model has learnt something, just not the shapes: it fits its own labels
    (permuted by the first ``randperm`` of a generator seeded with 0) far above chance, the true ones at chance."""
    recipe = TWINS["relu-permuted"]
    data, permuted = training_set("relu-permuted")
    assert torch.equal(data.images, make_shapes(recipe.n_train, seed=0).images)
    assert torch.equal(permuted.sort().values, data.labels.sort().values) and not torch.equal(permuted, data.labels)
    # A twin of true labels gets its images' own labels (checked on 50 of its 20,000 images: the same code path).
    monkeypatch.setitem(TWINS, "relu", dataclasses.replace(TWINS["relu"], n_train=50))
    assert torch.equal(training_set("relu")[1], make_shapes(50, seed=0).labels)
    model = load_twin("relu-permuted")
    assert accuracy(model, data.images, permuted) > 0.6
    assert abs(accuracy(model, data.images, data.labels) - CHANCE) < 4 * (CHANCE * (1 - CHANCE) / recipe.n_train) ** 0.5


def test_every_twin_ships_small_weights_matching_their_checksums():
    sums = shipped_checksums()
    assert set(sums) == {weights_name(twin) for twin in TWINS}
    for name, expected in sums.items():
        data = WEIGHTS.joinpath(name).read_bytes()
        assert sha256(data) == expected, name
        assert len(data) < 2**20, name


def test_checksum_mismatch_is_caught(tmp_path):
    tampered = tmp_path / "shapes-relu.pt"
    data = bytearray(WEIGHTS.joinpath(weights_name("relu")).read_bytes())
    data[-100] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checksum mismatch for .*shapes-relu\.pt: sha256 [0-9a-f]{64} but"):
        load_twin("relu", path=tampered)


def test_bad_names():
    with pytest.raises(ValueError, match=r"unknown shapes twin 'tanh'; choose one of relu, softplus, relu-permuted"):
        load_twin("tanh")
    with pytest.raises(ValueError, match=r"activation must be one of \('relu', 'softplus'\), got 'tanh'"):
        ShapesCNN("tanh")
