"""The attribution methods compared with SmoothGrad: ONE registry of method specs, ``smoothed`` (the SmoothGrad of
any of them), ``attribute`` (one method, checked) and ``all_attributions`` (all of them on one batch, one seed).

A method is a ``MethodSpec``: its name and a function ``function(model, x, classes, **options)`` that returns an
attribution (B, C, H, W), or (B, 1, H, W) for the methods that give one value per pixel (``per_pixel``).
``classes`` is one class index per image (B,), already resolved; ``options`` are those of ``OPTIONS`` that the
method takes (``takes``), each with the function's default when not given. That is the one calling convention:
``attribute(spec, model, x, target, **options)`` checks the arguments, resolves the target and calls it, and
``all_attributions`` calls it for every method on one batch. Adding a method is one ``register(MethodSpec(...))``.

``smoothed(spec)`` is the method's SmoothGrad, ``S(x) = (1/N) sum_i h(A(x + eps_i))`` with ``A`` the method's
attribution, ``eps_i ~ N(0, sigma^2 I)`` drawn by ``noise``, and ``h`` one of ``aggregates``' four aggregates,
computed by ``saliency.smoothgrad(..., attribution=A)``: the registry's ``"smoothgrad"`` is ``smoothed`` of
``"vanilla"``, and so exactly ``saliency.smoothgrad``.

The comparators come from Captum, not from this package: Integrated Gradients, Gradient x Input, Grad-CAM,
Guided Backprop and (``lrp``) LRP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam
from torch import nn

from ._checks import (
    TargetType,
    check_batch_size,
    check_images,
    check_model,
    clean_classes,
    clean_forward,
    resolve_target,
)
from .aggregates import AGGREGATES, Aggregate, aggregate_samples
from .faithfulness import blur
from .lrp import lrp
from .noise import DEFAULT_NOISE_LEVEL, NoiseDevice, check_noise_device, noise_generator, noise_std, uniform_noise
from .saliency import Attribution, default_batch_size, noisy_gradients, smoothgrad, vanilla_gradient

VANILLA_BLUR_SIGMA = 1.5  # pixels: the Gaussian that blurs the vanilla map of the "blurred_vanilla" baseline
IG_STEPS = 32  # Integrated Gradients' Gauss-Legendre points unless given
# What a method may take besides (model, x, classes); a method takes those of them it names in ``takes``.
OPTIONS = (
    "generator",
    "n_samples",
    "noise_level",
    "sigma",
    "aggregate",
    "ig_steps",
    "gradcam_layer",
    "blur_sigma",
    "batch_size",
)
# The options that ``smoothed`` adds to a method's own.
SMOOTHING_OPTIONS = ("generator", "n_samples", "noise_level", "sigma", "aggregate", "batch_size")


@dataclass(frozen=True)
class MethodSpec:
    """One attribution method of the registry.

    Attributes:
        name: the key of its result in ``all_attributions`` (a smoothed method's results are
            ``"<name>_<aggregate>_<level:g>"``, one per noise level and aggregate).
        function: ``function(model, x, classes, **options)`` -> attribution (B, C, H, W), or (B, 1, H, W) when
            ``per_pixel``; ``options`` are any of ``takes``.
        per_pixel: one value per pixel rather than per pixel and channel.
        needs_relu: only meaningful on a network of ``nn.ReLU`` modules (left out by default elsewhere).
        takes: the options of ``OPTIONS`` it accepts (``"generator"``: it is random and draws from it).
        chunked: run on ``batch_size`` images at a time, in the layout of the clean forward pass.
        opt_in: left out unless asked for by name (``all_attributions(methods=...)``,
            ``attribution_methods(include=...)``), so that adding it changes no existing result.
        smooths: the method this one is the SmoothGrad of (``smoothed``), or None.
    """

    name: str
    function: Callable[..., torch.Tensor]
    per_pixel: bool = False
    needs_relu: bool = False
    takes: tuple[str, ...] = ()
    chunked: bool = False
    opt_in: bool = False
    smooths: MethodSpec | None = None

    def __post_init__(self) -> None:
        unknown = set(self.takes) - set(OPTIONS)
        if unknown:
            raise ValueError(f"method {self.name!r} takes unknown options {sorted(unknown)}; choose from {OPTIONS}.")


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to ``REGISTRY`` (after the others: ``all_attributions`` returns methods in registry order).

    Examples:
        >>> register(REGISTRY["vanilla"])
        Traceback (most recent call last):
        ...
        ValueError: a method named 'vanilla' is already registered.
    """
    if spec.name in REGISTRY:
        raise ValueError(f"a method named {spec.name!r} is already registered.")
    REGISTRY[spec.name] = spec
    return spec


def smoothed(method: MethodSpec, *, name: str | None = None, opt_in: bool = True) -> MethodSpec:
    """The SmoothGrad of ``method``: its attribution averaged over Gaussian-noised copies of the input.

    With ``A`` the method's attribution and ``eps_i ~ N(0, sigma_b^2 I)``, ``i = 1..N``, the smoothed method
    returns ``(1/N) sum_i h(A(x_b + eps_i))`` for ``aggregate`` ``"abs"`` (h = |.|), ``"square"`` (h = (.)^2)
    or ``"raw"`` (h = identity), and the population variance of the ``A(x_b + eps_i)`` for ``"vargrad"``:
    ``saliency.smoothgrad(model, x, classes, attribution=A, ...)``, so the noise (``noise.NormalStream``), the
    ``generator``, the aggregates and the independence of ``batch_size`` are ``smoothgrad``'s. It takes the
    method's options and ``SMOOTHING_OPTIONS`` (``noise_level``: sigma_b as a fraction of image b's range, default
    0.15, or ``sigma``: absolute, one number or one per image; ``n_samples``: N, default 50; ``aggregate``: default
    ``"abs"``), and ``sampling`` (``"iid"`` or
    ``"antithetic"``). Captum's ``NoiseTunnel`` computes the same average with its own noise.

    Args:
        method: a deterministic registry method (one that takes no ``generator``).
        name: the new method's name; default ``"smoothgrad_<method.name>"``.
        opt_in: whether ``all_attributions`` leaves it out unless asked for by name.

    Returns:
        A ``MethodSpec`` with ``smooths=method``; ``register`` it to make it a registry method.

    Examples:
        Gradient x Input of a linear model f(x) = w . x is x * w; antithetic pairs (eps, -eps) average the
        noise out exactly, so its ``raw`` SmoothGrad is x * w too:

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)).eval()
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> spec = smoothed(REGISTRY["gradient_x_input"])
        >>> spec.name, spec.takes
        ('smoothgrad_gradient_x_input', ('generator', 'n_samples', 'noise_level', 'sigma', 'aggregate', 'batch_size'))
        >>> s = attribute(spec, model, x, 0, n_samples=4, aggregate="raw", sampling="antithetic",
        ...               generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(s, x * model[1].weight.reshape(1, 1, 2, 2))
        True
    """
    if "generator" in method.takes:
        raise ValueError(
            f"method {method.name!r} is random already (it takes a generator): smooth a deterministic one."
        )
    own = tuple(option for option in method.takes if option not in SMOOTHING_OPTIONS)
    return MethodSpec(
        name or f"smoothgrad_{method.name}",
        partial(_smooth, method),
        per_pixel=method.per_pixel,
        needs_relu=method.needs_relu,
        takes=SMOOTHING_OPTIONS + own,
        opt_in=opt_in,
        smooths=method,
    )


def _smooth(
    method: MethodSpec,
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    n_samples: int = 50,
    noise_level: float | None = None,
    sigma: float | torch.Tensor | None = None,
    aggregate: Aggregate = "abs",
    sampling: str = "iid",
    batch_size: int | None = None,
    **options: object,
) -> torch.Tensor:
    """A ``smoothed`` method's function: ``smoothgrad`` of ``method``'s attribution."""
    return smoothgrad(
        model,
        x,
        classes,
        n_samples=n_samples,
        noise_level=noise_level,
        sigma=sigma,
        aggregate=aggregate,
        sampling=sampling,
        batch_size=batch_size,
        generator=generator,
        attribution=bound(method, options | {"batch_size": batch_size}),
    )


def bound(method: MethodSpec, options: Mapping[str, object]) -> Attribution:
    """``method.function`` with those of ``options`` that it takes: an ``Attribution``, ``f(model, x, classes)``.

    Examples:
        >>> f = bound(REGISTRY["integrated_gradients"], {"ig_steps": 4, "gradcam_layer": "ignored"})
        >>> f.keywords
        {'ig_steps': 4}
    """
    return partial(method.function, **{option: options[option] for option in method.takes if option in options})


def smoothed_aggregates(
    method: MethodSpec,
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    aggregates: Sequence[Aggregate] = AGGREGATES,
    generator: torch.Generator | None = None,
    n_samples: int = 50,
    noise_level: float | None = None,
    sigma: float | torch.Tensor | None = None,
    batch_size: int | None = None,
    **options: object,
) -> dict[str, torch.Tensor]:
    """Several aggregates of a ``smoothed`` method from one set of noisy attributions, {aggregate: (B, C, H, W)}.

    Each equals (to float rounding) ``attribute(method, ..., aggregate=aggregate)`` with an identically seeded
    generator, which draws the same noise, for the cost of one aggregate. It holds all B x N noisy attributions
    at once (``saliency.noisy_gradients``), 4 B N C H W bytes: 614 MB for 500 shapes images at N = 25, so pass
    a few hundred images at a time. ``batch_size`` (noisy copies per forward pass) changes the speed, not the
    result.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)).eval()
        >>> out = smoothed_aggregates(REGISTRY["smoothgrad"], model, torch.zeros(1, 1, 2, 2), 0, n_samples=3,
        ...                           noise_level=0.0, aggregates=("raw", "vargrad"))
        >>> torch.equal(out["raw"], model[1].weight.reshape(1, 1, 2, 2)), float(out["vargrad"].abs().max())
        (True, 0.0)
    """
    if method.smooths is None:
        raise ValueError(f"method {method.name!r} is not a smoothed method; pass smoothed({method.name!r}).")
    grads = noisy_gradients(
        model,
        x,
        target,
        n_samples=n_samples,
        noise_level=noise_level,
        sigma=sigma,
        batch_size=batch_size,
        generator=generator,
        attribution=bound(method.smooths, options | {"batch_size": batch_size}),
    )
    return {aggregate: aggregate_samples(grads, aggregate) for aggregate in aggregates}


def attribute(method: MethodSpec, model: nn.Module, x: torch.Tensor, target: TargetType = None, **options: object):
    """One registry method's attribution of ``x``: the checks and the target's clean forward pass, then its function.

    Args:
        method: a ``MethodSpec`` (``REGISTRY[name]``, or ``smoothed(...)``).
        model: classifier in eval mode, (B, C, H, W) -> logits (B, K); left unchanged.
        x: float images (B, C, H, W); left unchanged.
        target: None (each image's predicted class), an int, or one class per image.
        **options: any of ``OPTIONS`` (and ``sampling`` for a smoothed method); those the method does not take
            are ignored, those it takes and are not given get its defaults.

    Returns:
        (B, C, H, W), or (B, 1, H, W) for a ``per_pixel`` method; detached.

    Examples:
        The vanilla gradient of a linear model is its weight:

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> g = attribute(REGISTRY["vanilla"], model, torch.ones(1, 1, 2, 2), 1, ig_steps=8)
        >>> torch.equal(g, model[1].weight[1].reshape(1, 1, 2, 2))
        True
    """
    check_model(model, x)
    check_images(x)
    unknown = set(options) - {*OPTIONS, "sampling"}
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; choose from {OPTIONS} (and sampling).")
    classes = clean_classes(model, x, target)
    given = {option: value for option, value in options.items() if option in method.takes or option == "sampling"}
    if "sampling" in given and method.smooths is None:
        raise ValueError(f"sampling applies to smoothed methods only, not to {method.name!r}.")
    return method.function(model, x, classes, **given)


def entries(
    specs: Collection[MethodSpec], levels: Mapping[float, Sequence[Aggregate]]
) -> Iterator[tuple[str, MethodSpec, dict[str, object]]]:
    """(entry name, spec, its own options) of every result of ``specs``: a smoothed spec gives one entry
    ``"<name>_<aggregate>_<level:g>"`` per noise level and aggregate of ``levels`` (level -> aggregates).

    Examples:
        >>> [name for name, *_ in entries([REGISTRY["vanilla"], REGISTRY["smoothgrad"]], {0.1: ("abs", "raw")})]
        ['vanilla', 'smoothgrad_abs_0.1', 'smoothgrad_raw_0.1']
    """
    for spec in specs:
        if spec.smooths is None:
            yield spec.name, spec, {}
            continue
        for level, aggregates in levels.items():
            for aggregate in aggregates:
                yield f"{spec.name}_{aggregate}_{level:g}", spec, {"noise_level": level, "aggregate": aggregate}


def parse_entry(name: str) -> tuple[MethodSpec, dict[str, object]]:
    """The registry method and its own options of one entry name of ``entries``: the inverse of ``entries``.

    A plain method's entry is its name (no options); a smoothed method's is ``"<name>_<aggregate>_<level:g>"``,
    which gives ``{"noise_level": level, "aggregate": aggregate}``.

    Examples:
        >>> spec, own = parse_entry("smoothgrad_abs_0.3")
        >>> spec.name, own
        ('smoothgrad', {'noise_level': 0.3, 'aggregate': 'abs'})
        >>> parse_entry("smoothgrad_integrated_gradients_raw_0.15")[0].smooths.name
        'integrated_gradients'
        >>> parse_entry("grad_cam")[1]
        {}
    """
    if name in REGISTRY and REGISTRY[name].smooths is None:
        return REGISTRY[name], {}
    stem, _, level = name.rpartition("_")
    method, _, aggregate = stem.rpartition("_")
    spec = REGISTRY.get(method)
    try:
        value = float(level)
    except ValueError:
        value = math.nan
    if spec is None or spec.smooths is None or aggregate not in AGGREGATES or f"{value:g}" != level:
        raise ValueError(
            f"unknown method {name!r}: give a name of {tuple(n for n, s in REGISTRY.items() if s.smooths is None)} "
            f"or '<smoothed method>_<aggregate>_<level>' (e.g. 'smoothgrad_abs_0.15'), aggregate one of {AGGREGATES}."
        )
    return spec, {"noise_level": value, "aggregate": aggregate}


def attribution_methods(
    *,
    gradcam_layer: str,
    n_samples: int = 25,
    levels: Sequence[float] = (DEFAULT_NOISE_LEVEL,),
    aggregates: Sequence[Aggregate] = AGGREGATES,
    ig_steps: int = IG_STEPS,
    blur_sigma: float = VANILLA_BLUR_SIGMA,
    include: Collection[str] = (),
) -> dict[str, Callable[..., torch.Tensor]]:
    """The methods to compare, by name, in registry order: each is ``attribute`` with its options fixed, called as
    ``methods[name](model, x, target, generator=None)``.

    - ``"vanilla"``: the gradient of the target logit, ``vanilla_gradient``.
    - ``"smoothgrad_<aggregate>_<level:g>"`` for each noise level and aggregate: ``smoothed("vanilla")``, that is
      ``smoothgrad(..., n_samples=n_samples, noise_level=level, aggregate=aggregate)``
      (sigma = level x each image's range).
    - ``"integrated_gradients"``: Captum's ``IntegratedGradients`` from a black
      (all-zero) baseline, ``ig_steps`` Gauss-Legendre points; its sum over
      pixels approximates f(x) - f(0) for the target logit (completeness).
    - ``"gradient_x_input"``: Captum's ``InputXGradient``, x * df/dx.
    - ``"grad_cam"``: Captum's ``LayerGradCam`` on the output of the module
      named ``gradcam_layer`` (``model.get_submodule(gradcam_layer)``, so it
      also finds the layer in a randomised copy), with the ReLU of Selvaraju
      et al. (``relu_attributions=True``), upsampled bilinearly to H x W by
      ``LayerAttribution.interpolate``. Use ``"14"`` (the last ReLU, 8x8)
      for the shapes twins and ``"1._bn1"`` (the head's batch norm, 7x7, the
      input of a ReLU6 module that the network also uses elsewhere) for
      EfficientNet-Lite0.
    - ``"guided_backprop"``: Captum's ``GuidedBackprop``. It rewrites the
      backward pass of ``nn.ReLU`` modules only, so on a model without them
      (EfficientNet-Lite0 uses ``nn.ReLU6``) it would silently return the
      vanilla gradient; there it raises a ValueError instead.
    - ``"blurred_vanilla"``: the vanilla map ``max_c |df/dx_c|`` blurred by a
      Gaussian of ``blur_sigma`` pixels (``VANILLA_BLUR_SIGMA`` by default): a trivial smoother
      that any SmoothGrad variant should beat.
    - ``"random"``: uniform noise in [0, 1) from the generator, the chance level of every metric.

    Methods registered with ``opt_in=True`` (``"lrp"``, and the SmoothGrad of Integrated Gradients, Gradient x
    Input, Grad-CAM, Guided Backprop and LRP, ``"smoothgrad_<method>"``) are added only when named in ``include``.

    Examples:
        >>> list(attribution_methods(gradcam_layer="14", levels=(0.1,), aggregates=("raw",)))
        ... # doctest: +NORMALIZE_WHITESPACE
        ['vanilla', 'smoothgrad_raw_0.1', 'integrated_gradients', 'gradient_x_input', 'grad_cam', 'guided_backprop',
         'blurred_vanilla', 'random']
    """
    options = {"n_samples": n_samples, "ig_steps": ig_steps, "gradcam_layer": gradcam_layer, "blur_sigma": blur_sigma}
    specs = [spec for spec in REGISTRY.values() if not spec.opt_in or spec.name in include]
    return {
        name: partial(attribute, spec, **(options | own))
        for name, spec, own in entries(specs, dict.fromkeys(levels, tuple(aggregates)))
    }


def all_attributions(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    gradcam_layer: str,
    seed: int = 0,
    levels: Mapping[float, Sequence[Aggregate]] | None = None,
    n_samples: int = 10,
    ig_steps: int = 8,
    blur_sigma: float = VANILLA_BLUR_SIGMA,
    methods: Collection[str] | None = None,
    batch_size: int | None = None,
    noise_device: NoiseDevice = "input",
) -> dict[str, torch.Tensor]:
    """Every method's attribution of one batch, by name, in registry order.

    The methods and their definitions are those of ``attribution_methods``;
    this runs them on ``x`` (B, C, H, W) for one set of classes and one seed,
    and shares work between them:

    - the target is resolved once (None: each image's predicted class), by one
      clean forward pass, and each method gets the classes (no method runs its own);
    - ``levels`` maps each SmoothGrad noise level to the aggregates wanted at
      it, e.g. ``{0.15: AGGREGATES, 0.05: ("abs",)}`` (None: all four at
      0.15; ``{}``: no SmoothGrad). A smoothed method's entries are named
      ``"<name>_<aggregate>_<level:g>"``. The k-th level (k = 0, 1, ...)
      draws its noise from ``noise_generator(seed + 1 + k, x, noise_device)``
      (the same noise for every smoothed method), so an entry equals
      ``attribute(spec, model, x, target, n_samples=n_samples, noise_level=level,
      aggregate=aggregate, generator=<that generator>)`` (to float rounding; a level with several aggregates
      gets them all from ``smoothed_aggregates``, which computes them from one set of N attributions per
      image at the cost of one aggregate, holding all B N of them at once);
    - the random methods (``"random"``) draw from ``noise_generator(seed, x, noise_device)``;
    - those generators are on x's device (``noise_device="input"``) or on the CPU (``"cpu"``): then x on a GPU gets
      exactly the CPU run's noise, drawn on the CPU and moved, and its results match the CPU's to float rounding.

    ``methods`` chooses among the names of ``REGISTRY`` (a smoothed method, e.g. ``"smoothgrad"``, stands for
    all its ``levels`` entries); None takes all of them but the opt-in ones, and except Guided Backprop on a
    model whose activations it would not rewrite (anything but ``nn.ReLU``,
    e.g. the ReLU6 of EfficientNet-Lite0), which is then left out. Asking for
    it by name on such a model raises the registry's ValueError.

    Speed, not results: the ``chunked`` methods run ``batch_size`` images
    at a time (Integrated Gradients: ``batch_size`` path points at a time;
    smoothed methods: ``batch_size`` noisy copies), None picking ``default_batch_size``;
    on the CPU a convolutional model gets its inputs in the channels_last
    layout, as ``smoothgrad`` does (oneDNN's faster kernels). Both change the
    results by float rounding only.

    Args:
        model: classifier in eval mode, (B, C, H, W) -> logits (B, K); left unchanged.
        x: float images (B, C, H, W); left unchanged.
        target: None (each image's predicted class), an int, or one class per image.
        gradcam_layer: module name for Grad-CAM, as in ``attribution_methods``.
        seed: the seed of the random map and (plus 1 + k) of the k-th SmoothGrad level.
        levels: noise level (fraction of each image's range) -> aggregates at it.
        n_samples: SmoothGrad's N, noisy copies per image.
        ig_steps: Integrated Gradients' Gauss-Legendre points.
        blur_sigma: the Gaussian of ``"blurred_vanilla"``, pixels.
        methods: which of ``REGISTRY`` to compute; None: all that apply to the model.
        batch_size: inputs per forward pass, see above.
        noise_device: where the random methods draw their noise, ``"input"`` (x's device) or ``"cpu"``.

    Returns:
        {name: attribution}, each (B, C, H, W), or (B, 1, H, W) for ``grad_cam``,
        ``blurred_vanilla`` and ``random``; detached, in the default memory layout.

    Examples:
        >>> from smoothgrad_lib import load_model
        >>> from smoothgrad_lib.shapes import make_shapes
        >>> model = load_model("shapes-relu", device="cpu").model
        >>> out = all_attributions(model, make_shapes(2, seed=0).images, gradcam_layer="14",
        ...                        levels={0.15: ("abs", "square")}, n_samples=4, ig_steps=4)
        >>> list(out)  # doctest: +NORMALIZE_WHITESPACE
        ['vanilla', 'smoothgrad_abs_0.15', 'smoothgrad_square_0.15', 'integrated_gradients', 'gradient_x_input',
         'grad_cam', 'guided_backprop', 'blurred_vanilla', 'random']
    """
    check_model(model, x)
    check_images(x)
    check_noise_device(noise_device)
    levels = {DEFAULT_NOISE_LEVEL: AGGREGATES} if levels is None else dict(levels)
    for level, aggregates in levels.items():
        unknown = [a for a in aggregates if a not in AGGREGATES]
        if not aggregates or unknown or len(set(aggregates)) != len(aggregates):
            raise ValueError(f"levels[{level!r}] must be distinct aggregates from {AGGREGATES}, got {aggregates!r}.")
    wanted = _wanted(model, methods)
    check_batch_size(batch_size)
    step = batch_size or default_batch_size(x)
    x = x.detach()
    layout, logits = clean_forward(model, x if target is None else x[:1], need_logits=True)
    classes = resolve_target(target, x.shape[0], logits.shape[1], predicted=logits if target is None else None)
    classes = classes.to(x.device)
    options = {"n_samples": n_samples, "ig_steps": ig_steps, "gradcam_layer": gradcam_layer, "blur_sigma": blur_sigma}
    options |= {"batch_size": step, "generator": noise_generator(seed, x, noise_device)}
    out: dict[str, torch.Tensor] = {}
    for spec in REGISTRY.values():
        if spec.name not in wanted:
            continue
        if spec.smooths is not None:
            out |= _smoothed_levels(spec, model, x, classes, options, seed, levels, noise_device)
        elif spec.chunked:
            out[spec.name] = _in_chunks(bound(spec, options), model, x, classes, step, layout)
        else:
            out[spec.name] = bound(spec, options)(model, x, classes)
    return out


def _smoothed_levels(
    spec: MethodSpec,
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    options: dict[str, object],
    seed: int,
    levels: Mapping[float, Sequence[Aggregate]],
    noise_device: NoiseDevice,
) -> dict[str, torch.Tensor]:
    """``"<name>_<aggregate>_<level:g>"`` for every level and its aggregates; level k seeded with seed + 1 + k, its
    generator on ``noise_device``."""
    out = {}
    for k, (level, aggregates) in enumerate(levels.items()):
        given = options | {"noise_level": level, "generator": noise_generator(seed + 1 + k, x, noise_device)}
        if len(aggregates) == 1:
            values = {aggregates[0]: bound(spec, given | {"aggregate": aggregates[0]})(model, x, classes)}
        else:
            values = smoothed_aggregates(spec, model, x, classes, aggregates=aggregates, **given)
        out |= {f"{spec.name}_{aggregate}_{level:g}": values[aggregate].contiguous() for aggregate in aggregates}
    return out


def _in_chunks(
    attribution: Attribution,
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    step: int,
    layout: torch.memory_format,
) -> torch.Tensor:
    """``attribution`` of ``step`` images of x at a time, each chunk in ``layout``; joined, default layout."""
    parts = [
        attribution(model, images.contiguous(memory_format=layout), labels)
        for images, labels in zip(x.split(step), classes.split(step), strict=True)
    ]
    return torch.cat(parts).contiguous()


def _wanted(model: nn.Module, methods: Collection[str] | None) -> set[str]:
    """The registry names that all_attributions computes for ``methods`` (None: every one that applies to model)."""
    if methods is None:
        skip = {name for name, spec in REGISTRY.items() if spec.needs_relu and guided_backprop_problem(model)}
        skip |= {name for name, spec in REGISTRY.items() if spec.opt_in}
        return set(REGISTRY) - skip
    if isinstance(methods, str):
        raise TypeError(f"methods must be a collection of names, e.g. ({methods!r},), not a string.")
    unknown = set(methods) - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {tuple(REGISTRY)}.")
    return set(methods)


def _integrated_gradients(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, *, ig_steps: int = IG_STEPS, batch_size: int | None = None
) -> torch.Tensor:
    ig = IntegratedGradients(model)
    attribution = ig.attribute(
        _captum_inputs(x),
        baselines=0.0,
        target=classes,
        n_steps=ig_steps,
        internal_batch_size=batch_size or default_batch_size(x),
    )
    return attribution.detach()


def _gradient_x_input(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return InputXGradient(model).attribute(_captum_inputs(x), target=classes).detach()


def _grad_cam(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, *, gradcam_layer: str) -> torch.Tensor:
    layer = model.get_submodule(gradcam_layer)
    cam = LayerGradCam(model, layer).attribute(_captum_inputs(x), target=classes, relu_attributions=True)
    if cam.ndim != 4:
        raise ValueError(
            f"Grad-CAM needs a layer with (B, K, h, w) outputs; {gradcam_layer!r} gives shape {tuple(cam.shape)}."
        )
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear").detach()


def _guided_backprop(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    problem = guided_backprop_problem(model)
    if problem:
        raise ValueError(problem)
    return GuidedBackprop(model).attribute(_captum_inputs(x), target=classes).detach()


def guided_backprop_problem(model: nn.Module) -> str | None:
    """Why Captum's Guided Backprop would not do what it says on ``model``, or None when it would.

    Examples:
        >>> guided_backprop_problem(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) is None
        True
        >>> "ReLU6" in guided_backprop_problem(nn.Sequential(nn.Linear(2, 2), nn.ReLU6()))
        True
    """
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, (nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU))}
    if not any(isinstance(m, nn.ReLU) for m in model.modules()) or kinds:
        return (
            "Captum's GuidedBackprop changes the backward pass of nn.ReLU modules only; this model "
            f"has {sorted(kinds) or 'no nn.ReLU modules'}, so the result would be (partly) the plain gradient. "
            "Leave Guided Backprop out for this model (e.g. EfficientNet-Lite0, which uses ReLU6)."
        )
    return None


def _blurred_vanilla(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, *, blur_sigma: float = VANILLA_BLUR_SIGMA
) -> torch.Tensor:
    return blur(vanilla_gradient(model, x, classes).abs().amax(1, keepdim=True), blur_sigma)


def _random(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    return uniform_noise(x[:, :1], generator)


def _captum_inputs(x: torch.Tensor) -> torch.Tensor:
    """A detached copy of x that requires grad, as Captum expects."""
    return x.detach().clone().requires_grad_(True)


VANILLA = register(MethodSpec("vanilla", vanilla_gradient, chunked=True))
register(smoothed(VANILLA, name="smoothgrad", opt_in=False))  # SmoothGrad itself, right after "vanilla"
for _spec in (
    MethodSpec("integrated_gradients", _integrated_gradients, takes=("ig_steps", "batch_size"), chunked=True),
    MethodSpec("gradient_x_input", _gradient_x_input, chunked=True),
    MethodSpec("grad_cam", _grad_cam, per_pixel=True, takes=("gradcam_layer",), chunked=True),
    MethodSpec("guided_backprop", _guided_backprop, needs_relu=True, chunked=True),
    MethodSpec("blurred_vanilla", _blurred_vanilla, per_pixel=True, takes=("blur_sigma",), chunked=True),
    MethodSpec("random", _random, per_pixel=True, takes=("generator",)),
    MethodSpec("lrp", lrp, chunked=True, opt_in=True),
):
    register(_spec)
for _name in ("integrated_gradients", "gradient_x_input", "grad_cam", "guided_backprop", "lrp"):
    register(smoothed(REGISTRY[_name]))  # opt-in: "smoothgrad_integrated_gradients", ...
# The built-in methods that all_attributions computes by default, in its order.
FAMILIES = tuple(name for name, spec in REGISTRY.items() if not spec.opt_in)


def explanation_function(
    method: str,
    model: nn.Module,
    target: TargetType = None,
    *,
    seed: int = 0,
    common_noise: bool = True,
    gradcam_layer: str = "",
    sigma_from: torch.Tensor | None = None,
    representation: Literal["attribution", "map"] = "attribution",
    noise_device: NoiseDevice = "input",
    **options: object,
) -> Callable[..., torch.Tensor]:
    """One method of ``attribution_methods`` as ``explain_fn(x, target=target)`` -> attribution, for
    ``robustness.max_sensitivity``, ``robustness.local_lipschitz``, ``robustness.class_sensitivity`` and
    ``faithfulness.infidelity``.

    ``method`` is a name of ``attribution_methods(gradcam_layer=gradcam_layer, include=(method,), **options)``
    (e.g. ``"vanilla"``, ``"smoothgrad_abs_0.15"``, ``"grad_cam"``, ``"lrp"``,
    ``"smoothgrad_integrated_gradients_raw_0.15"``); ``options`` are that function's (``n_samples``, ``levels``,
    ``aggregates``, ``ig_steps``, ``blur_sigma``). The attribution has the shape of x (B, C, H, W), or
    (B, 1, H, W) for the one-value-per-pixel methods.

    Randomness (smoothed methods, ``"random"``): with ``common_noise`` every call draws from a fresh
    ``noise_generator(seed, x, noise_device)``, so x and a perturbed x get the same noise (the map's
    own change is measured); without it, all calls draw in turn from one generator seeded with ``seed`` (each call
    gets new noise, as for a user who does not fix a seed). The generator is on x's device
    (``noise_device="input"``) or on the CPU (``"cpu"``: x on a GPU gets exactly the CPU run's noise, moved).
    ``target`` None explains each image's predicted class at the image given, which may change under perturbation:
    pass the classes predicted at the clean images to compare maps of one class.

    ``sigma_from`` pins a smoothed method's noise: sigma_b is its level times the range of image b of
    ``sigma_from`` (the clean images), at every batch of the same B images it is called with, instead of the range
    of the image given. With ``common_noise`` the noise at x and at x + delta is then the same draw at both ends
    (a relative change at a perturbed image otherwise also measures the change of sigma with the image's range).

    ``representation``: ``"attribution"`` as the method returns it, or ``"map"``, the displayed one-channel map
    ``max_c |A_c|`` (B, 1, H, W), one representation for every method.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> explain = explanation_function("smoothgrad_raw_0.15", model, 0, n_samples=4)
        >>> weight = model[1].weight[0].reshape(1, 1, 2, 2)
        >>> torch.allclose(explain(torch.rand(3, 1, 2, 2)), weight.expand(3, -1, -1, -1))
        True
    """
    check_noise_device(noise_device)
    methods = attribution_methods(gradcam_layer=gradcam_layer, include=tuple(REGISTRY), **options)
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose from {tuple(methods)} (or pass other levels/aggregates).")
    if representation not in ("attribution", "map"):
        raise ValueError(f"representation must be 'attribution' or 'map', got {representation!r}.")
    run = methods[method]
    level = run.keywords.get("noise_level")
    if sigma_from is not None and level is not None:
        run = partial(run, noise_level=None, sigma=noise_std(sigma_from, noise_level=level).flatten())
    shared: dict[str, torch.Generator] = {}

    def explain_fn(x: torch.Tensor, target: TargetType = target) -> torch.Tensor:
        if common_noise:
            generator = noise_generator(seed, x, noise_device)
        else:
            generator = shared.setdefault("generator", noise_generator(seed, x, noise_device))
        attribution = run(model, x, target, generator=generator)
        return attribution.abs().amax(1, keepdim=True) if representation == "map" else attribution

    return explain_fn


def explanation_functions(
    maps: Mapping[str, tuple[str, Mapping[str, object], bool]],
    model: nn.Module,
    target: TargetType = None,
    *,
    seed: int = 0,
    gradcam_layer: str = "",
    sigma_from: torch.Tensor | None = None,
    representation: Literal["attribution", "map"] = "attribution",
    noise_device: NoiseDevice = "input",
) -> dict[str, Callable[..., torch.Tensor]]:
    """``explanation_function`` for each of several maps, by label: ``maps`` is label -> (method, its options,
    common noise), e.g. ``{"SG 15%, N=10": ("smoothgrad_abs_0.15", {"n_samples": 10, "aggregates": ("abs",)},
    True)}``; every map gets the same ``seed``, ``gradcam_layer``, ``sigma_from``, ``representation`` and
    ``noise_device``.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> explain = explanation_functions({"g": ("vanilla", {}, True)}, model, 0, representation="map")
        >>> explain["g"](torch.ones(3, 1, 2, 2)).shape
        torch.Size([3, 1, 2, 2])
    """
    return {
        label: explanation_function(
            method,
            model,
            target,
            seed=seed,
            common_noise=common,
            gradcam_layer=gradcam_layer,
            sigma_from=sigma_from,
            representation=representation,
            noise_device=noise_device,
            **options,
        )
        for label, (method, options, common) in maps.items()
    }
