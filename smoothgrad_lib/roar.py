"""RemOve And Retrain (ROAR, Hooker et al., 2019, NeurIPS) on the shapes data, with the ROAD fill of Rong et al. (2022).

A map is faithful to what a model needs when removing the pixels it ranks first takes the information away: retrain
the network from scratch on images whose top-k% pixels (by the map) are removed, and its test accuracy falls. A
random ranking is the reference: a method is better than chance when accuracy falls faster with k than for it.
Retraining from scratch is what separates "the model relied on these pixels" from "the removal left the data
distribution" (a model that was not retrained is tested off its training distribution).

The procedure (``roar``):

1. the shipped twin (``load_twin(twin)``) explains each training image ``make_shapes(n_train, seed=0)`` and each
   test image ``make_shapes(n_test, seed=1)`` for its true class, by the registry's ``all_attributions`` (SmoothGrad
   with ``n_samples`` noisy copies at the level its name gives, 15% for ``"smoothgrad_abs_0.15"``; Integrated
   Gradients from black with ``ig_steps`` points; Grad-CAM on layer ``"14"``); a map is
   ``saliency_map(attribution, normalize=None)`` (max over channels of |a|);
2. for each fraction k, the ``round(k H W)`` pixels of highest map value (``faithfulness.pixel_ranking``; ties: the
   first in raster order after a seeded random shuffle) of every training and test image are replaced
   (``remove_top``) either by the image's own
   background from ``make_shapes`` (``fill="background"``: the shape's pixels there are gone, the rest unchanged) or
   by the image's per-channel mean (``fill="mean"``; ROAD warns that the shape of a constant-filled hole can itself
   leak the class);
3. a fresh twin is trained on the degraded training images with the twin's recipe (``train.train``; ``epochs`` may
   be lowered), initialised and shuffled by the retraining seed, and its accuracy on the degraded test images
   recorded. k = 0 (no removal) is the baseline, trained once per seed.

The maps are computed once; only the retraining depends on the seed. ``python -m smoothgrad_lib roar --out
smoothgrad_lib/results/roar-<fill>.json --fills <fill>`` runs the default grid for one fill and writes ``roar_report``'s
JSON; ``stored_grid(fill)`` reads the committed one (notebook 05).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .aggregates import Aggregate
from .maps import saliency_map
from .provenance import code_version
from .shapes import ShapesBatch, make_shapes
from .train import train
from .twins import TWINS, load_twin

if TYPE_CHECKING:
    from .faithfulness import Baseline

log = logging.getLogger(__name__)

Fill = Literal["background", "mean"]
FILLS: tuple[str, ...] = ("background", "mean")
# Names of all_attributions' results: the methods of the default grid.
ROAR_METHODS = (
    "vanilla",
    "smoothgrad_abs_0.15",
    "smoothgrad_square_0.15",
    "smoothgrad_vargrad_0.15",
    "grad_cam",
    "integrated_gradients",
    "random",
)
ROAR_FRACTIONS = (0.1, 0.3, 0.5)
ROAR_SEEDS = (0, 1, 2)
GRADCAM_LAYER = "14"  # the shapes twins' last ReLU
MAP_CHUNK = 500  # images explained per all_attributions call (memory)


def remove_top(
    images: torch.Tensor,
    maps: torch.Tensor,
    fraction: float,
    fill: Baseline,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Copies of ``images`` (B, C, H, W) whose ``n = round(fraction H W)`` highest-ranked pixels by ``maps``
    (B, H, W) are replaced by ``fill``.

    The pixels are those of place < n in ``faithfulness.pixel_ranking(maps, generator)`` (ties: a random order
    from ``generator``, None: raster order), all channels together; ``fill`` is any baseline of
    ``faithfulness.baseline_images``: a tensor like images (e.g. the backgrounds), ``"mean"`` (each image's
    per-channel mean), a number or ``"blur"``. ``fraction`` 0 returns a copy.

    Examples:
        >>> import torch
        >>> images = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> remove_top(images, images[:, 0], 0.5, -1.0).flatten().tolist()
        [0.0, 1.0, -1.0, -1.0]
    """
    from .faithfulness import baseline_images, pixel_ranking

    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}.")
    if maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"maps must be (B, H, W) like images {tuple(images.shape)}; got {tuple(maps.shape)}.")
    count = round(fraction * maps[0].numel())
    places = pixel_ranking(maps.to(images.device), generator).view_as(maps)[:, None]
    return torch.where(places < count, baseline_images(images, fill), images)


def roar_maps(
    data: ShapesBatch,
    methods: Sequence[str] = ROAR_METHODS,
    *,
    twin: str = "relu",
    n_samples: int = 10,
    ig_steps: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """The map (B, H, W) of every image of ``data`` by each of ``methods``, explaining its true label with the
    shipped twin.

    ``methods`` are entry names of the registry (``methods.parse_entry``): ``"vanilla"``, ``"grad_cam"``, or a
    smoothed method at a noise level with an aggregate, ``"smoothgrad_abs_0.3"``. One ``all_attributions`` call per
    chunk of ``MAP_CHUNK`` images computes them all; chunk i uses ``seed + i``, and the smoothed entries' levels go
    to it in the order they first appear in ``methods`` (level k is seeded ``seed + i + 1 + k``).
    """
    # the registry and faithfulness are imported where they run: Captum and torchvision take seconds to import
    from .methods import all_attributions, parse_entry

    model = load_twin(twin)
    levels = smoothing_levels(methods)
    families = {parse_entry(name)[0].name for name in methods}
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    chunks = list(zip(data.images.split(MAP_CHUNK), data.labels.split(MAP_CHUNK), strict=True))
    for i, (images, labels) in enumerate(tqdm(chunks, desc="maps", disable=not progress, leave=False)):
        out = all_attributions(
            model,
            images,
            labels,
            gradcam_layer=GRADCAM_LAYER,
            seed=seed + i,
            levels=levels,
            n_samples=n_samples,
            ig_steps=ig_steps,
            methods=families,
        )
        for name in methods:
            parts[name].append(saliency_map(out[name], normalize=None))
    return {name: torch.cat(values) for name, values in parts.items()}


def smoothing_levels(methods: Sequence[str]) -> dict[float, tuple[Aggregate, ...]]:
    """``all_attributions``' ``levels`` for the smoothed entries among ``methods``: {noise level: aggregates}, each
    in the order of first appearance.

    Examples:
        >>> smoothing_levels(["vanilla", "smoothgrad_abs_0.15", "smoothgrad_raw_0.3", "smoothgrad_vargrad_0.15"])
        {0.15: ('abs', 'vargrad'), 0.3: ('raw',)}
    """
    from .methods import parse_entry

    levels: dict[float, tuple[Aggregate, ...]] = {}
    for name in methods:
        own = parse_entry(name)[1]
        if own and own["aggregate"] not in levels.get(own["noise_level"], ()):
            levels[own["noise_level"]] = (*levels.get(own["noise_level"], ()), own["aggregate"])
    return levels


def roar(
    methods: Sequence[str] = ROAR_METHODS,
    fractions: Sequence[float] = ROAR_FRACTIONS,
    seeds: Sequence[int] = ROAR_SEEDS,
    fills: Sequence[str] = FILLS,
    *,
    twin: str = "relu",
    n_train: int | None = None,
    n_test: int = 2000,
    epochs: int | None = None,
    n_samples: int = 10,
    ig_steps: int = 8,
    baseline: bool = True,
    progress: bool = True,
) -> dict[str, object]:
    """Run the ROAR grid (module docstring) and return its report: settings, per-cell accuracies and timings.

    Every (method, fill, fraction, seed) cell retrains one twin; the baseline (fraction 0) is trained once per
    seed (``baseline=False``: not at all, e.g. to re-run one cell of a stored grid). ``n_train`` and ``epochs``
    default to the twin's recipe (``TWINS[twin]``); lower them for a quick run.

    Returns:
        a JSON-able dict: ``"settings"``; ``"baseline"`` {seed: accuracy}; ``"cells"`` a list of {method, fill,
        fraction, seed, accuracy, seconds}; ``"seconds"`` (maps, baseline, cells, total).
    """
    if twin not in TWINS:
        raise ValueError(f"unknown shapes twin {twin!r}; choose one of {', '.join(TWINS)}.")
    unknown = [f for f in fills if f not in FILLS]
    if unknown or not all(0 < k <= 1 for k in fractions):
        raise ValueError(f"fills must be among {FILLS} and fractions in (0, 1]; got {list(fills)}, {list(fractions)}.")
    recipe = TWINS[twin]
    n_train = recipe.n_train if n_train is None else n_train
    epochs = recipe.epochs if epochs is None else epochs
    started = time.perf_counter()
    train_data, test_data = make_shapes(n_train, seed=0), make_shapes(n_test, seed=1)
    maps = {
        split: roar_maps(
            data, methods, twin=twin, n_samples=n_samples, ig_steps=ig_steps, seed=offset, progress=progress
        )
        for split, data, offset in (("train", train_data, 0), ("test", test_data, 10_000))
    }
    seconds = {"maps": time.perf_counter() - started}

    def retrain(train_images: ShapesBatch, test_images: ShapesBatch, seed: int) -> float:
        return train(twin, epochs=epochs, seed=seed, data=train_images, held_out=test_images)[1]

    grid = [(m, f, k, s) for m in methods for f in fills for k in fractions for s in seeds]
    bar = tqdm(total=len(seeds) * baseline + len(grid), desc="ROAR retraining", disable=not progress)
    tic = time.perf_counter()
    baselines = {}
    for seed in seeds if baseline else ():
        baselines[seed] = retrain(train_data, test_data, seed)
        bar.update()
    seconds["baseline"] = time.perf_counter() - tic
    cells = []
    for method, fill, fraction, seed in grid:
        tic = time.perf_counter()
        degraded = [
            data._replace(
                images=remove_top(
                    data.images,
                    maps[split][method],
                    fraction,
                    data.backgrounds if fill == "background" else "mean",
                    generator=torch.Generator().manual_seed(seed),
                )
            )
            for split, data in (("train", train_data), ("test", test_data))
        ]
        accuracy = retrain(*degraded, seed)
        cells.append(
            {
                "method": method,
                "fill": fill,
                "fraction": fraction,
                "seed": seed,
                "accuracy": accuracy,
                "seconds": time.perf_counter() - tic,
            }
        )
        bar.set_postfix(method=method, fill=fill, k=fraction, accuracy=f"{accuracy:.3f}")
        bar.update()
    bar.close()
    seconds["cells"] = sum(cell["seconds"] for cell in cells)
    seconds["total"] = time.perf_counter() - started
    settings = {
        "twin": twin,
        "methods": list(methods),
        "fractions": list(fractions),
        "seeds": list(seeds),
        "fills": list(fills),
        "n_train": n_train,
        "n_test": n_test,
        "epochs": epochs,
        "n_samples": n_samples,
        "ig_steps": ig_steps,
        "noise_levels": list(smoothing_levels(methods)),
        "gradcam_layer": GRADCAM_LAYER,
        "train_images": "make_shapes(n_train, seed=0)",
        "test_images": "make_shapes(n_test, seed=1)",
    }
    return {"settings": settings, "baseline": baselines, "cells": cells, "seconds": seconds}


def roar_report(result: dict[str, object], command: Sequence[str] | None = None) -> dict[str, object]:
    """``result`` of ``roar`` with the code version and the command line that made it (default: ``sys.argv``)."""
    command = list(sys.argv if command is None else command)
    return {"code_version": code_version(), "command": " ".join(command), "python": sys.version.split()[0]} | result


def mean_accuracy(report: dict[str, object]) -> dict[tuple[str, str, float], float]:
    """Mean test accuracy over seeds of each (method, fill, fraction) cell of a report, with k = 0 the baseline."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for cell in report["cells"]:  # type: ignore[union-attr]
        groups.setdefault((cell["method"], cell["fill"], cell["fraction"]), []).append(cell["accuracy"])
    return {key: math.fsum(values) / len(values) for key, values in groups.items()}


def stored_grid(fill: str, grid: str = "") -> dict[str, object]:
    """A committed ROAR grid for ``fill`` (``"background"`` or ``"mean"``), shipped in ``smoothgrad_lib/results`` so
    that notebook 05 reads it wherever the package is installed (Colab included).

    ``grid=""``: the report ``roar-<fill>.json``. Another name: one grid run by several commands (more fractions or
    seeds, the same code and recipe), the reports ``roar-<fill>-<grid>-*.json`` merged by ``merge_grids``.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}.")
    results = resources.files("smoothgrad_lib.results")
    if not grid:
        return json.loads(results.joinpath(f"roar-{fill}.json").read_text())
    names = sorted(p.name for p in results.iterdir() if p.name.startswith(f"roar-{fill}-{grid}-"))
    if not names:
        raise ValueError(f"no committed grid roar-{fill}-{grid}-*.json.")
    return merge_grids([json.loads(results.joinpath(name).read_text()) for name in names])


def merge_grids(reports: Sequence[dict[str, object]]) -> dict[str, object]:
    """One grid from several ``roar_report`` reports of the same recipe (more fractions, methods or seeds).

    Every setting but ``methods``, ``fractions`` and ``seeds`` must agree; those become their unions (fractions and
    seeds sorted). The cells are pooled, and a (method, fill, fraction, seed) cell in two reports must have one
    accuracy; so must a seed's baseline (the same retraining, run by two commands: a check that it is reproducible).
    ``sources`` keeps each report's command, code version, seconds and numbers of cells and baselines; a single report
    is returned as it is.

    Examples:
        >>> one = {"settings": {"epochs": 2, "methods": ["m"], "fractions": [0.1], "seeds": [0]},
        ...        "baseline": {"0": 0.9}, "cells": [{"method": "m", "fill": "mean", "fraction": 0.1, "seed": 0,
        ...        "accuracy": 0.5}], "command": "a", "code_version": {}, "seconds": {}}
        >>> two = {**one, "settings": {**one["settings"], "fractions": [0.2]}, "command": "b",
        ...        "cells": [{**one["cells"][0], "fraction": 0.2, "accuracy": 0.4}]}
        >>> merged = merge_grids([one, two])
        >>> merged["settings"]["fractions"], [s["command"] for s in merged["sources"]]
        ([0.1, 0.2], ['a', 'b'])
    """
    if len(reports) == 1:
        return reports[0]
    pooled = ("methods", "fractions", "seeds")
    first = {k: v for k, v in reports[0]["settings"].items() if k not in pooled}  # type: ignore[union-attr]
    settings = dict(reports[0]["settings"])  # type: ignore[arg-type]
    cells: dict[tuple[object, ...], dict[str, object]] = {}
    baseline: dict[str, float] = {}
    for report in reports:
        own = {k: v for k, v in report["settings"].items() if k not in pooled}  # type: ignore[union-attr]
        if own != first:
            differ = sorted(k for k in own.keys() | first.keys() if own.get(k) != first.get(k))
            raise ValueError(f"the reports differ in {differ}: only methods, fractions and seeds may differ.")
        for key in pooled:  # methods in the order met; fractions and seeds sorted
            union = list(dict.fromkeys([*settings[key], *report["settings"][key]]))  # type: ignore[index, misc]
            settings[key] = union if key == "methods" else sorted(union)
        for cell in report["cells"]:  # type: ignore[union-attr]
            key = (cell["method"], cell["fill"], cell["fraction"], cell["seed"])
            if key in cells and cells[key]["accuracy"] != cell["accuracy"]:
                raise ValueError(f"cell {key} has two accuracies: {cells[key]['accuracy']} and {cell['accuracy']}.")
            cells[key] = cell
        for seed, accuracy in report["baseline"].items():  # type: ignore[union-attr]
            if baseline.setdefault(seed, accuracy) != accuracy:
                raise ValueError(f"seed {seed}'s baseline has two accuracies: {baseline[seed]} and {accuracy}.")
    sources = [
        {key: report[key] for key in ("command", "code_version", "seconds")}
        | {"cells": len(report["cells"]), "baselines": len(report["baseline"])}
        for report in reports
    ]
    return {"settings": settings, "baseline": baseline, "cells": list(cells.values()), "sources": sources}


def cell_accuracies(report: dict[str, object], method: str | None, fraction: float) -> np.ndarray:
    """Test accuracy of each retraining seed of one cell of a stored grid, in seed order; ``fraction`` 0: the
    baseline without removal, every seed (``method`` is then ignored). ``cell_seeds`` says which seeds.

    Examples:
        >>> report = {"settings": {"seeds": [0, 1]}, "baseline": {"0": 0.9, "1": 0.8},
        ...           "cells": [{"method": "m", "fraction": 0.1, "seed": 1, "accuracy": 0.5},
        ...                     {"method": "m", "fraction": 0.1, "seed": 0, "accuracy": 0.6}]}
        >>> cell_accuracies(report, "m", 0.1).tolist(), cell_accuracies(report, None, 0).tolist()
        ([0.6, 0.5], [0.9, 0.8])
    """
    if fraction == 0:
        return np.array([report["baseline"][str(seed)] for seed in cell_seeds(report, None, 0)])  # type: ignore[index]
    cells = sorted(_cells(report, method, fraction), key=lambda c: c["seed"])
    return np.array([c["accuracy"] for c in cells])


def cell_seeds(report: dict[str, object], method: str | None, fraction: float) -> list[int]:
    """The retraining seeds of one cell of a stored grid (``fraction`` 0: of the baseline), sorted."""
    if fraction == 0:
        return sorted(map(int, report["baseline"]))  # type: ignore[arg-type]
    return sorted(c["seed"] for c in _cells(report, method, fraction))


def _cells(report: dict[str, object], method: str | None, fraction: float) -> list[dict[str, object]]:
    cells = [c for c in report["cells"] if c["method"] == method and c["fraction"] == fraction]  # type: ignore[union-attr]
    if not cells:
        raise ValueError(f"the report has no cell ({method!r}, {fraction}).")
    if len({c["seed"] for c in cells}) != len(cells):
        raise ValueError(f"the report has a seed twice in the cell ({method!r}, {fraction}).")
    return cells


def accuracy_drop(report: dict[str, object], method: str, fraction: float) -> np.ndarray:
    """Accuracy lost by removing ``method``'s top ``fraction`` of pixels, per retraining seed of that cell: the
    baseline's accuracy at the seed minus the cell's (larger: the removed pixels were needed)."""
    baseline = report["baseline"]
    before = np.array([baseline[str(seed)] for seed in cell_seeds(report, method, fraction)])  # type: ignore[index]
    return before - cell_accuracies(report, method, fraction)


def shape_recall(maps: torch.Tensor, masks: torch.Tensor, fraction: float) -> torch.Tensor:
    """Share of each mask's pixels among the ``round(fraction H W)`` highest-ranked pixels of its map, (B,): what
    ``remove_top`` would remove of the shape (the same ranking, ties in raster order).

    Examples:
        >>> maps = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
        >>> shape_recall(maps, torch.tensor([[[True, False], [True, False]]]), 0.5).tolist()
        [0.5]
    """
    ones = torch.ones(maps.shape[0], 1, *maps.shape[1:], dtype=maps.dtype, device=maps.device)
    removed = remove_top(ones, maps, fraction, torch.zeros_like(ones))[:, 0] == 0
    return (removed & masks).flatten(1).sum(1) / masks.flatten(1).sum(1).clamp_min(1)
