"""Model parameter randomisation (Adebayo et al., 2018, "Sanity checks for saliency maps"), and the cascade test.

``randomize_layers`` yields randomised copies of a network, top layer first;
``cascade_similarity`` re-explains a batch with each copy and scores how
much of the trained network's attributions survive.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .maps import saliency_map
from .metrics import rank_correlation, ssim

ORDERS = ("top_down", "independent")
Order = Literal["top_down", "independent"]
# The similarity scores of the cascade: Spearman of |attribution|, Spearman of the signed attribution, SSIM of the
# min-max scaled maps (Adebayo et al., 2018 report all three).
SIMILARITIES = ("Spearman |a|", "Spearman a", "SSIM")


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


@dataclass(frozen=True)
class Cascade:
    """What survives of the trained network's attributions as its layers are re-initialised from the top.

    ``steps``: "trained", then the name of each layer re-initialised (cumulatively, from the output);
    ``similarity[score][method]``: (B, len(steps)) float64, column 0 the trained network against itself;
    ``constant[score][method]`` (the two Spearman scores): how many (image, network) pairs had a constant map,
    whose rank correlation is undefined (NaN) and is counted as 0, unrelated; ``last``: the attributions of the network
    with every listed layer random.
    """

    steps: list[str]
    similarity: dict[str, dict[str, torch.Tensor]]
    constant: dict[str, dict[str, int]]
    last: dict[str, torch.Tensor]


def cascade_similarity(
    model: nn.Module,
    trained: Mapping[str, torch.Tensor],
    explain: Callable[[nn.Module], Mapping[str, torch.Tensor]],
    *,
    layers: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
) -> Cascade:
    """The cascading randomisation test (Adebayo et al., 2018): similarity of each method's attributions before and
    after the top layers of ``model`` are re-initialised, one more layer at a time (``randomize_layers``, top down).

    Args:
        model: the trained classifier; not modified.
        trained: method name -> the trained network's attributions (B, C, H, W) of the images ``explain`` explains.
        explain: network -> method name -> attributions of the same images (a subset of ``trained``'s methods).
        layers, generator: as for ``randomize_layers``.

    Scores (``SIMILARITIES``): Spearman of |a|, Spearman of the signed a (the same as of |a| when neither
    attribution has a negative value), SSIM of ``saliency_map`` (min-max) maps. A constant map has no ranking: its
    Spearman correlation is NaN, counted as 0 and reported in ``Cascade.constant``.
    """
    steps, last = ["trained"], dict(trained)
    columns: dict[str, dict[str, list[torch.Tensor]]] = {score: {} for score in SIMILARITIES}

    def score(attributions: Mapping[str, torch.Tensor]) -> None:
        for method, a in attributions.items():
            t = trained[method]
            absolute = rank_correlation(a, t, absolute=True)
            signed = rank_correlation(a, t) if bool((a < 0).any() or (t < 0).any()) else absolute
            values = (absolute, signed, ssim(saliency_map(a), saliency_map(t)))
            for name, value in zip(SIMILARITIES, values, strict=True):
                columns[name].setdefault(method, []).append(value)

    for name, network in randomize_layers(model, order="top_down", layers=layers, generator=generator):
        last = dict(explain(network))
        if len(steps) == 1:  # the trained column: the trained attributions against themselves
            score({method: trained[method] for method in trained if method in last})
        steps.append(name)
        score(last)
    similarity = {s: {m: torch.stack(v, 1) for m, v in per.items()} for s, per in columns.items()}
    constant = {s: {m: int(v.isnan().sum()) for m, v in per.items()} for s, per in similarity.items() if s != "SSIM"}
    for s in constant:
        similarity[s] = {m: v.nan_to_num(0.0) for m, v in similarity[s].items()}
    return Cascade(steps, similarity, constant, last)
