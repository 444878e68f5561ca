"""Model parameter randomisation (Adebayo et al., 2018, "Sanity checks for saliency maps"), and the cascade test.

``randomize_layers`` yields randomised copies of a network, top layer first;
``cascading_similarity`` re-explains a batch with each copy and scores how
much of the trained network's attributions survive.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import nn

ORDERS = ("top_down", "independent")
Order = Literal["top_down", "independent"]


def randomize_layers(
    model: nn.Module,
    order: Order = "top_down",
    layers: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[str, nn.Module]]:
    """Model parameter randomisation (Adebayo et al., 2018, "Sanity checks for saliency maps").

    Yields ``(layer name, randomised copy of model)``, one per layer, starting
    at the output. ``order="top_down"`` is the cascading test: step j
    re-initialises the top j layers together (cumulatively), so the last copy
    has every layer random. ``order="independent"``: step j re-initialises
    only layer j, the others keep their trained weights. The caller's model is
    never changed, and each yielded copy is the caller's to keep or modify.

    A layer is a module with parameters of its own and a ``reset_parameters``
    method (Conv, Linear, BatchNorm, ...). Its parameters are set to fresh
    values from its own ``reset_parameters()`` (PyTorch's default
    initialisation, e.g. Kaiming-uniform for convolutions), drawn on the CPU
    under a forked RNG seeded from ``generator`` (one seed per layer, so the
    same layer gets the same values in both orders, on any device). A
    batch-norm layer gets its initial affine parameters (weight 1, bias 0)
    but keeps its running mean and variance: only parameters are randomised,
    never buffers.

    Quantus's ``MPRT`` differs, so its scores are not compared with ours: it
    calls ``reset_parameters()`` in place, which also resets batch-norm
    running statistics to mean 0 and variance 1; it re-seeds the global RNG
    with the same seed before every layer; and it yields one model that it
    keeps mutating. Its layer order is the same (tests check it).

    Args:
        model: the trained classifier; not modified.
        order: ``"top_down"`` (cumulative) or ``"independent"``.
        layers: names of submodules (``model.get_submodule(name)``) in forward
            order, input to output; each step re-initialises every layer
            inside the named module (e.g. a whole block). None: every layer in
            registration order (``model.named_modules()``), which is the
            forward order for ``nn.Sequential`` and most torchvision models.
        generator: CPU ``torch.Generator`` for the seeds; None uses the global one.

    Yields:
        (name, model copy) from the top layer down, in eval mode like ``model``.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
    names = [name for name, module in model.named_modules() if _is_layer(module)] if layers is None else list(layers)
    for name in names:
        if not any(_is_layer(module) for module in model.get_submodule(name).modules()):
            raise ValueError(f"module {name!r} holds no layer with parameters and reset_parameters() to randomise.")
    if not names:
        raise ValueError("model has no layer with parameters and reset_parameters() to randomise.")
    seeds = torch.randint(0, 2**62, (len(names),), generator=generator).tolist()
    state = model
    for name, seed in reversed(list(zip(names, seeds, strict=True))):
        state = copy.deepcopy(model if order == "independent" else state)
        _reinitialise(state.get_submodule(name), seed)
        yield name, copy.deepcopy(state)


def _is_layer(module: nn.Module) -> bool:
    return hasattr(module, "reset_parameters") and any(True for _ in module.parameters(recurse=False))


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Give every layer inside ``module`` the parameters of a fresh ``reset_parameters()``, CPU RNG seeded with seed."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for layer in filter(_is_layer, module.modules()):
            fresh = copy.deepcopy(layer).cpu()
            fresh.reset_parameters()
            for name, parameter in layer.named_parameters(recurse=False):
                parameter.copy_(fresh.get_parameter(name))
