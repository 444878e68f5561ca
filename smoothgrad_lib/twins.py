"""The shapes twins: one small CNN architecture and its shipped weights (checked against their sha256).

Three twins share the architecture of :class:`ShapesCNN`:

- ``"relu"``: ReLU activations (piecewise linear, Hessian zero almost everywhere);
- ``"softplus"``: Softplus activations (smooth, with a non-zero Hessian);
- ``"relu-permuted"``: the ReLU network trained on permuted labels (the data-randomisation test of
  Adebayo et al. 2018): it cannot have learnt the shapes, so a map that still outlines them explains the image,
  not the model.

Their weights ship in ``smoothgrad_lib/weights`` and are located with ``importlib.resources``. Retrain them with
``python -m smoothgrad_lib train-shapes`` (see :mod:`smoothgrad_lib.train`).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import partial
from importlib import resources
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

from .shapes import CLASSES, ShapesBatch, make_shapes

# Softplus_beta(z) = log(1 + exp(beta z)) / beta: smooth everywhere, within log(2)/beta of ReLU.
ACTIVATIONS = {"relu": nn.ReLU, "softplus": partial(nn.Softplus, beta=5.0)}


@dataclass(frozen=True)
class Twin:
    """How a shipped twin was made: its activation and training recipe (see :func:`smoothgrad_lib.train.train`).

    Attributes:
        activation: a key of ``ACTIVATIONS``.
        permuted_labels: trained on a fixed random permutation of the training labels.
        n_train: training images (``make_shapes(n_train, seed)``).
        epochs: passes over them.
        min_accuracy: held-out accuracy on the true labels the training must reach for its weights to be saved;
            None: no such bar (the permuted twin is at chance by design).
    """

    activation: str
    permuted_labels: bool = False
    n_train: int = 20000
    epochs: int = 4
    min_accuracy: float | None = 0.95


TWINS = {
    "relu": Twin("relu"),
    "softplus": Twin("softplus"),
    # Fewer images, more passes, so that it memorises labels that carry no information (its accuracy on the
    # permuted and on the true labels: notebook 04 and tests/test_twins.py).
    "relu-permuted": Twin("relu", permuted_labels=True, n_train=1000, epochs=50, min_accuracy=None),
}
WEIGHTS = resources.files("smoothgrad_lib.weights")
CHECKSUMS = "sha256.json"


class ShapesCNN(nn.Sequential):
    """Four 3x3 conv blocks (16, 32, 64, 64 channels) with batch norm, 2x2 average pooling, global average pooling,
    linear.

    Input (B, 3, S, S) in [0, 1], output logits (B, 4); about 61k parameters.
    Every layer but the activation is linear (pooling is by averaging, not
    max), so with Softplus the whole network is infinitely differentiable and
    with ReLU it is piecewise linear.
    """

    def __init__(self, activation: str = "relu") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}.")
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        channels = [3, 16, 32, 64, 64]
        for index, (c_in, c_out) in enumerate(pairwise(channels)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act()]
            if index < 3:
                layers.append(nn.AvgPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], len(CLASSES))]
        super().__init__(*layers)
        self.activation = activation


def weights_name(twin: str) -> str:
    """The file name of a twin's weights, ``shapes-<twin>.pt``."""
    _check_twin(twin)
    return f"shapes-{twin}.pt"


def shipped_checksums() -> dict[str, str]:
    """File name -> sha256 hex digest of every shipped weights file."""
    return json.loads(WEIGHTS.joinpath(CHECKSUMS).read_text())


def sha256(data: bytes) -> str:
    """Hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def load_twin(twin: str = "relu", path: str | Path | None = None) -> ShapesCNN:
    """The trained twin in eval mode, on the CPU; its weights are checked against the shipped sha256 first.

    ``path`` reads the weights from another file (a retrained copy, say) instead of the package's.
    """
    source = WEIGHTS.joinpath(weights_name(twin)) if path is None else Path(path)
    data = source.read_bytes()
    expected, actual = shipped_checksums()[weights_name(twin)], sha256(data)
    if actual != expected:
        raise ValueError(
            f"checksum mismatch for {source}: sha256 {actual} but {expected} was shipped. "
            "The weights file is corrupt or was replaced: reinstall the package or retrain "
            "with `python -m smoothgrad_lib train-shapes`."
        )
    model = ShapesCNN(TWINS[twin].activation)
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.eval()


def training_set(twin: str) -> tuple[ShapesBatch, torch.Tensor]:
    """The images a shipped twin was trained on, ``make_shapes(n_train, seed=0)``, and the labels it was fitted to.

    The true labels, or for a ``permuted_labels`` twin the permutation that ``train.train(twin, seed=0)`` draws
    (the first ``randperm`` of a generator seeded with 0): how well the twin fits them is what it memorised.
    """
    _check_twin(twin)
    recipe = TWINS[twin]
    data = make_shapes(recipe.n_train, seed=0)
    if not recipe.permuted_labels:
        return data, data.labels
    return data, data.labels[torch.randperm(recipe.n_train, generator=torch.Generator().manual_seed(0))]


def _check_twin(twin: str) -> None:
    if twin not in TWINS:
        raise ValueError(f"unknown shapes twin {twin!r}; choose one of {', '.join(TWINS)}.")
