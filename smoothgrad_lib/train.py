"""Training the shapes twins, deterministically: the same seed gives bit-identical weights on the same machine.

``python -m smoothgrad_lib train-shapes`` (see :mod:`smoothgrad_lib.cli`) calls :func:`train_and_save`. Another CPU
may run different floating-point kernels and end with different, equally accurate weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from .classification import accuracy
from .shapes import ShapesBatch, make_shapes
from .twins import CHECKSUMS, TWINS, ShapesCNN, sha256, weights_name

log = logging.getLogger(__name__)
BATCH_SIZE = 100


def train(
    twin: str,
    *,
    n_train: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    n_held_out: int = 2000,
    data: ShapesBatch | None = None,
    held_out: ShapesBatch | None = None,
) -> tuple[ShapesCNN, float]:
    """Train one twin (Adam, one-cycle learning rate to 1e-2, batches of 100); returns it in eval mode and its
    held-out accuracy on the true labels of ``make_shapes(n_held_out, seed + 1)`` (2000 images: a binomial
    standard error of at most 1.1 percentage points on the accuracy bar).

    ``n_train`` and ``epochs`` default to the twin's recipe in ``TWINS``. The weights are initialised from the
    default CPU generator seeded with ``seed`` inside ``torch.random.fork_rng``, so the caller's global random
    state is left as it was; batches are shuffled by a local generator seeded with ``seed``, which first draws the
    label permutation of a ``permuted_labels`` twin.

    ``data`` and ``held_out`` replace the training and held-out images (e.g. degraded copies, see
    :mod:`smoothgrad_lib.roar`); ``n_train`` and ``n_held_out`` are then their sizes, and ``seed`` sets only the
    initialisation and the batch order.
    """
    if twin not in TWINS:
        raise ValueError(f"unknown shapes twin {twin!r}; choose one of {', '.join(TWINS)}.")
    recipe = TWINS[twin]
    n_train = len(data.labels) if data is not None else recipe.n_train if n_train is None else n_train
    n_held_out = len(held_out.labels) if held_out is not None else n_held_out
    epochs = recipe.epochs if epochs is None else epochs
    if n_train < 1 or epochs < 1 or n_held_out < 1:
        raise ValueError(
            "need n_train, epochs and n_held_out >= 1, "
            f"got n_train={n_train}, epochs={epochs}, n_held_out={n_held_out}."
        )
    data = make_shapes(n_train, seed=seed) if data is None else data
    held_out = make_shapes(n_held_out, seed=seed + 1) if held_out is None else held_out
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = ShapesCNN(recipe.activation)
    shuffle = torch.Generator().manual_seed(seed)
    labels = data.labels[torch.randperm(n_train, generator=shuffle)] if recipe.permuted_labels else data.labels
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps_per_epoch = math.ceil(n_train / BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 1e-2, total_steps=epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(n_train, generator=shuffle).split(BATCH_SIZE):
            loss = nn.functional.cross_entropy(model(data.images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        log.info(
            "%s: epoch %d/%d, last batch's loss %.3f, %.0f s",
            twin,
            epoch + 1,
            epochs,
            loss.item(),
            time.perf_counter() - start,
        )
    model.eval()
    score = accuracy(model, held_out.images, held_out.labels, batch_size=500)
    log.info("%s: held-out accuracy %.3f on the true labels", twin, score)
    if recipe.permuted_labels:
        fitted = accuracy(model, data.images, labels, batch_size=500)
        log.info("%s: accuracy %.3f on its own (permuted) training labels", twin, fitted)
    return model, score


def train_and_save(
    twins: list[str], out: Path, *, n_train: int | None = None, epochs: int | None = None, n_held_out: int = 2000
) -> dict[str, str]:
    """Train ``twins`` and save their weights in ``out`` as ``shapes-<twin>.pt``, with their sha256 merged into
    ``out/sha256.json``; returns file name -> sha256 of the new files.

    Nothing is saved unless every twin with a ``min_accuracy`` reaches it (raises ``SystemExit`` otherwise).
    """
    trained = {}
    for twin in twins:
        model, score = train(twin, n_train=n_train, epochs=epochs, n_held_out=n_held_out)
        bar = TWINS[twin].min_accuracy
        if bar is not None and score < bar:
            raise SystemExit(f"{twin} reached only {score:.3f} held-out accuracy (< {bar}); nothing saved.")
        trained[twin] = model
    out.mkdir(parents=True, exist_ok=True)
    sums = {}
    for twin, model in trained.items():
        path = out / weights_name(twin)
        torch.save(model.state_dict(), path)
        sums[path.name] = sha256(path.read_bytes())
        log.info("saved %s (%.0f KiB), sha256 %s", path, path.stat().st_size / 1024, sums[path.name])
    checksums = out / CHECKSUMS
    shipped = json.loads(checksums.read_text()) if checksums.exists() else {}
    checksums.write_text(json.dumps(dict(sorted({**shipped, **sums}.items())), indent=2) + "\n")
    return sums
