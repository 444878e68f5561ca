"""smoothgrad_lib.roar: pixel removal, a tiny grid end to end (1 method, 1 k, 1 epoch), k = 0 = baseline, the CLI."""

import json
from pathlib import Path

import pytest
import torch

from smoothgrad_lib.cli import main
from smoothgrad_lib.faithfulness import baseline_images, pixel_ranking
from smoothgrad_lib.maps import saliency_map
from smoothgrad_lib.methods import all_attributions
from smoothgrad_lib.provenance import code_version
from smoothgrad_lib.roar import (
    ROAR_METHODS,
    accuracy_drop,
    cell_seeds,
    mean_accuracy,
    merge_grids,
    remove_top,
    roar,
    roar_maps,
    roar_report,
    smoothing_levels,
    stored_grid,
)
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.train import train
from smoothgrad_lib.twins import load_twin


def test_remove_top_replaces_exactly_the_top_pixels():
    images = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    maps = torch.arange(40.0).reshape(2, 4, 5)
    fill = torch.full_like(images, -1.0)
    out = remove_top(images, maps, 0.3, fill)  # 6 of 20 pixels: the last 6 in raster order (largest values)
    removed = (out == -1).all(1)
    assert removed.sum((1, 2)).tolist() == [6, 6] and removed.flatten(1)[:, -6:].all()
    assert torch.equal(out[~removed[:, None].expand_as(out)], images[~removed[:, None].expand_as(images)])
    mean = remove_top(images, maps, 1.0, "mean")
    torch.testing.assert_close(mean, images.mean((2, 3), keepdim=True).expand_as(images))
    assert torch.equal(remove_top(images, maps, 0.0, fill), images)


def test_a_random_ranking_removes_the_same_count_anywhere_and_ties_are_shuffled():
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    constant = torch.zeros(3, 8, 8)
    picks = [
        (remove_top(images, constant, 0.25, "mean", generator=torch.Generator().manual_seed(s)) != images).any(1)
        for s in (0, 1)
    ]
    assert all(p.sum((1, 2)).tolist() == [16, 16, 16] for p in picks)
    assert not torch.equal(picks[0], picks[1])  # a tie (constant map) is broken at random, by the seed
    with pytest.raises(ValueError, match="fraction"):
        remove_top(images, constant, 1.5, "mean")


def test_remove_top_removes_the_first_places_of_the_faithfulness_ranking_and_fills_as_its_baselines():
    images = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    maps = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(3)).round(decimals=1)  # many ties
    places = pixel_ranking(maps, torch.Generator().manual_seed(4)).view(2, 1, 6, 6)
    for fill in ("mean", "blur", 0.25):
        out = remove_top(images, maps, 0.4, fill, generator=torch.Generator().manual_seed(4))
        assert torch.equal(out, torch.where(places < 14, baseline_images(images, fill), images))


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_roar_maps_read_the_level_and_aggregate_from_each_name():
    data = make_shapes(3, seed=4)
    names = ("smoothgrad_abs_0.3", "grad_cam", "smoothgrad_square_0.05", "smoothgrad_raw_0.3")
    assert smoothing_levels(names) == {0.3: ("abs", "raw"), 0.05: ("square",)}
    maps = roar_maps(data, names, n_samples=4, seed=7, progress=False)
    out = all_attributions(
        load_twin("relu"),
        data.images,
        data.labels,
        gradcam_layer="14",
        seed=7,
        levels={0.3: ("abs", "raw"), 0.05: ("square",)},
        n_samples=4,
        ig_steps=8,
        methods={"smoothgrad", "grad_cam"},
    )
    for name in names:
        assert torch.equal(maps[name], saliency_map(out[name], normalize=None))
    with pytest.raises(ValueError, match="unknown method 'smoothgrad_abs'"):
        roar_maps(data, ("smoothgrad_abs",), progress=False)


def test_background_fill_removes_the_shape():
    data = make_shapes(4, seed=0)
    full = remove_top(data.images, data.masks.float(), 1.0, data.backgrounds)
    assert torch.equal(full, data.backgrounds)
    # Ranking by the mask: the shape's pixels go first, and with k = its area the image becomes its background.
    area = data.masks[0].float().mean().item()
    first = remove_top(data.images[:1], data.masks[:1].float(), area, data.backgrounds[:1])
    assert torch.equal(first, data.backgrounds[:1])


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_a_tiny_grid_and_k0_is_the_baseline():
    result = roar(("random",), (0.5,), (3,), ("background",), n_train=200, n_test=100, epochs=1, progress=False)
    assert result["settings"]["epochs"] == 1 and list(result["baseline"]) == [3]
    [cell] = result["cells"]
    assert cell["method"] == "random" and cell["fraction"] == 0.5 and 0 <= cell["accuracy"] <= 1
    # k = 0: the baseline is train() on the unmodified images with the same seed, bit for bit.
    _, accuracy = train("relu", epochs=1, seed=3, data=make_shapes(200, seed=0), held_out=make_shapes(100, seed=1))
    assert result["baseline"][3] == accuracy
    assert mean_accuracy(result) == {("random", "background", 0.5): cell["accuracy"]}
    report = roar_report(result, ["python", "-m", "smoothgrad_lib", "roar"])
    assert report["command"] == "python -m smoothgrad_lib roar" and report["code_version"] == code_version()
    json.dumps(report)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_one_cell_without_the_baseline_is_the_same_cell_of_the_grid():
    grid = dict(n_train=200, n_test=100, epochs=1, progress=False)
    full = roar(("vanilla",), (0.3,), (1,), ("mean",), **grid)
    alone = roar(("vanilla",), (0.3,), (1,), ("mean",), baseline=False, **grid)
    assert alone["baseline"] == {} and alone["seconds"]["baseline"] < 0.1
    assert [c["accuracy"] for c in alone["cells"]] == [c["accuracy"] for c in full["cells"]]


def test_the_roar_command_writes_its_json(tmp_path):
    out = tmp_path / "roar.json"
    argv = ["roar", "--out", str(out), "--methods", "vanilla", "--fractions", "0.1", "--seeds", "0"]
    argv += ["--fills", "mean", "--n-train", "100", "--n-test", "50", "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["code_version"]["package"] and report["command"].startswith("python -m smoothgrad_lib")
    assert [c["method"] for c in report["cells"]] == ["vanilla"] and set(report["seconds"]) >= {"maps", "cells"}


RESULTS = Path(__file__).resolve().parents[1] / "smoothgrad_lib" / "results"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("roar-*.json")), ids=lambda p: p.name)
def test_each_committed_grid_is_complete_and_says_how_it_was_made(path):
    """smoothgrad_lib/results/roar-<fill>[-<extension>].json, which notebook 05 reads (its live cell re-runs one cell
    under nbval)."""
    report = json.loads(path.read_text())
    settings = report["settings"]
    (fill,) = settings["fills"]
    assert path.name.startswith(f"roar-{fill}") and report["command"].startswith("python -m smoothgrad_lib roar")
    assert f"--fills {fill}" in report["command"] and f"--epochs {settings['epochs']}" in report["command"]
    assert report["code_version"]["package"] and report["code_version"]["git"]
    expected = {(m, k, s) for m in settings["methods"] for k in settings["fractions"] for s in settings["seeds"]}
    assert {(c["method"], c["fraction"], c["seed"]) for c in report["cells"]} == expected
    assert sorted(map(int, report["baseline"])) == sorted(settings["seeds"])
    assert all(0 <= c["accuracy"] <= 1 for c in report["cells"])


@pytest.mark.parametrize("fill", ["background", "mean"])
def test_the_stored_grid_measured_something(fill):
    # Removing the vanilla map's top half leaves the retrained twin worse off than removing a random half, and near
    # chance (four classes).
    accuracy = mean_accuracy(stored_grid(fill))
    assert accuracy[("vanilla", fill, 0.5)] < accuracy[("random", fill, 0.5)] and accuracy[("vanilla", fill, 0.5)] < 0.4
    with pytest.raises(ValueError, match="fill must be one of"):
        stored_grid("black")


def test_the_small_k_grid_has_five_seeds_from_one_code_version():
    """Issue 28: the background fill at k = 2, 5 and 10% with 5 retraining seeds, by three commands of one recipe
    (two of them trained the baselines of seeds 0-2 anew, and got the same accuracies: merge_grids checks)."""
    grid = stored_grid("background", "small-k")
    assert grid["settings"]["fractions"] == [0.02, 0.05, 0.1] and grid["settings"]["methods"] == list(ROAR_METHODS)
    for method in grid["settings"]["methods"]:
        for k in (0.02, 0.05, 0.1):
            assert cell_seeds(grid, method, k) == [0, 1, 2, 3, 4]
    assert cell_seeds(grid, None, 0) == [0, 1, 2, 3, 4]
    assert len(grid["sources"]) == 3 and accuracy_drop(grid, "vanilla", 0.1).shape == (5,)
    with pytest.raises(ValueError, match="no committed grid"):
        stored_grid("mean", "small-k")


def test_merged_grids_agree_where_they_overlap_and_share_one_recipe():
    cell = {"method": "m", "fill": "mean", "fraction": 0.1, "seed": 0, "accuracy": 0.5}
    one = {
        "settings": {"epochs": 2, "methods": ["m"], "fractions": [0.1], "seeds": [0]},
        "baseline": {"0": 0.9},
        "cells": [cell],
        "command": "a",
        "code_version": {},
        "seconds": {},
    }
    merged = merge_grids([one, one | {"command": "b"}])
    assert len(merged["cells"]) == 1 and merged["baseline"] == {"0": 0.9}
    with pytest.raises(ValueError, match=r"differ in \['epochs'\]"):
        merge_grids([one, one | {"settings": one["settings"] | {"epochs": 3}}])
    with pytest.raises(ValueError, match="two accuracies: 0.5 and 0.6"):
        merge_grids([one, one | {"cells": [cell | {"accuracy": 0.6}]}])
    with pytest.raises(ValueError, match="seed 0's baseline has two accuracies"):
        merge_grids([one, one | {"baseline": {"0": 0.8}}])
