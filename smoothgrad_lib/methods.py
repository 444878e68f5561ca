"""The attribution methods that notebook 04 compares: a registry name -> method(model, x, target, generator), and
``all_attributions``, which runs them all on one batch with one seed.

Every method takes a classifier in eval mode, images x (B, C, H, W), a
target (None for each image's predicted class, an int, or one class per
image) and a ``torch.Generator`` (used by the random ones, ignored by the
others), and returns an attribution (B, C, H, W), or (B, 1, H, W) for the
methods that give one value per pixel (Grad-CAM, blurred vanilla, random).
``saliency_map(attribution, normalize=None)`` turns either into a map (B, H, W).

The comparators come from Captum, not from this package: Integrated
Gradients, Gradient x Input, Grad-CAM and Guided Backprop.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial

import torch
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam
from torch import nn

from .evaluation import blur
from .experiments import aggregate_samples
from .saliency import (
    AGGREGATES,
    TargetType,
    _check_model,
    _clean_forward,
    default_batch_size,
    noisy_gradients,
    resolve_target,
    smoothgrad,
    vanilla_gradient,
)

Method = Callable[[nn.Module, torch.Tensor, TargetType, "torch.Generator | None"], torch.Tensor]

BLUR_SIGMA = 1.5  # pixels: the Gaussian that blurs the vanilla map of the "blurred_vanilla" baseline
# What all_attributions can compute, in the order of its result ("smoothgrad" stands for every level and aggregate).
FAMILIES = (
    "vanilla",
    "smoothgrad",
    "integrated_gradients",
    "gradient_x_input",
    "grad_cam",
    "guided_backprop",
    "blurred_vanilla",
    "random",
)


def attribution_methods(
    *,
    gradcam_layer: str,
    n_samples: int = 25,
    levels: Sequence[float] = (0.15,),
    aggregates: Sequence[str] = AGGREGATES,
    ig_steps: int = 32,
    blur_sigma: float = BLUR_SIGMA,
) -> dict[str, Method]:
    """The methods to compare, by name, in a fixed order.

    - ``"vanilla"``: the gradient of the target logit, ``vanilla_gradient``.
    - ``"smoothgrad_<aggregate>_<level>"`` for each aggregate and noise level:
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
      Gaussian of ``blur_sigma`` pixels (1.5 by default): a trivial smoother
      that any SmoothGrad variant should beat.
    - ``"random"``: uniform noise in [0, 1) from the generator, the chance level of every metric.
    """
    methods: dict[str, Method] = {"vanilla": _vanilla}
    for aggregate in aggregates:
        for level in levels:
            methods[f"smoothgrad_{aggregate}_{level:g}"] = partial(
                _smoothgrad, n_samples=n_samples, noise_level=level, aggregate=aggregate
            )
    methods["integrated_gradients"] = partial(_integrated_gradients, n_steps=ig_steps)
    methods["gradient_x_input"] = _gradient_x_input
    methods["grad_cam"] = partial(_grad_cam, layer=gradcam_layer)
    methods["guided_backprop"] = _guided_backprop
    methods["blurred_vanilla"] = partial(_blurred_vanilla, sigma=blur_sigma)
    methods["random"] = _random
    return methods


def all_attributions(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType = None,
    *,
    gradcam_layer: str,
    seed: int = 0,
    levels: Mapping[float, Sequence[str]] | None = None,
    n_samples: int = 10,
    ig_steps: int = 8,
    blur_sigma: float = BLUR_SIGMA,
    methods: Collection[str] | None = None,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every method's attribution of one batch, by name, in the order of ``attribution_methods``.

    The methods and their definitions are those of ``attribution_methods``;
    this runs them on ``x`` (B, C, H, W) for one set of classes and one seed,
    and shares work between them:

    - the target is resolved once (None: each image's predicted class);
    - ``levels`` maps each SmoothGrad noise level to the aggregates wanted at
      it, e.g. ``{0.15: AGGREGATES, 0.05: ("abs",)}`` (None: all four at
      0.15; ``{}``: no SmoothGrad). The entries are named
      ``"smoothgrad_<aggregate>_<level:g>"``. The k-th level (k = 0, 1, ...)
      draws its noise from ``torch.Generator(device=x.device).manual_seed(seed + 1 + k)``,
      so an entry equals ``smoothgrad(model, x, target, n_samples=n_samples,
      noise_level=level, aggregate=aggregate, generator=<that generator>)``
      (to float rounding; a level with several aggregates gets them all from
      ``smoothgrad_aggregates``, which computes them from one set of N gradients per
      image at the cost of one aggregate, holding all B N gradients at once);
    - ``"blurred_vanilla"`` blurs the ``"vanilla"`` gradient instead of computing it again;
    - ``"random"`` draws from ``torch.Generator(device=x.device).manual_seed(seed)``.

    ``methods`` chooses among ``FAMILIES`` ("smoothgrad" stands for all the
    ``levels`` entries); None takes all of them, except Guided Backprop on a
    model whose activations it would not rewrite (anything but ``nn.ReLU``,
    e.g. the ReLU6 of EfficientNet-Lite0), which is then left out. Asking for
    it by name on such a model raises the registry's ValueError.

    Speed, not results: the non-SmoothGrad methods run ``batch_size`` images
    at a time (Integrated Gradients: ``batch_size`` path points at a time;
    SmoothGrad: ``batch_size`` noisy copies), None picking ``default_batch_size``;
    on the CPU a convolutional model gets its inputs in the channels_last
    layout, as ``smoothgrad`` does (oneDNN's faster kernels). Both change the
    results by float rounding only. On one CPU thread, 32 images at a time
    ran the shapes twins' gradients about twice as fast as one batch of 500.

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
        methods: which of ``FAMILIES`` to compute; None: all that apply to the model.
        batch_size: inputs per forward pass, see above.

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
    _check_model(model)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise ValueError("x must be a float tensor of shape (B, C, H, W); add a batch axis for one image: x[None].")
    levels = {0.15: AGGREGATES} if levels is None else dict(levels)
    for level, aggregates in levels.items():
        unknown = [a for a in aggregates if a not in AGGREGATES]
        if not aggregates or unknown or len(set(aggregates)) != len(aggregates):
            raise ValueError(f"levels[{level!r}] must be distinct aggregates from {AGGREGATES}, got {aggregates!r}.")
    wanted = _families(model, methods)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}.")
    step = batch_size or default_batch_size(x)
    x = x.detach()
    layout, logits = _clean_forward(model, x if target is None else x[:1], need_logits=True)
    classes = resolve_target(target, x.shape[0], logits.shape[1], predicted=logits if target is None else None)
    classes = classes.to(x.device)
    registry = attribution_methods(
        gradcam_layer=gradcam_layer, n_samples=n_samples, ig_steps=ig_steps, blur_sigma=blur_sigma
    )
    registry["integrated_gradients"] = partial(_integrated_gradients, n_steps=ig_steps, batch_size=step)

    out: dict[str, torch.Tensor] = {}
    if wanted & {"vanilla", "blurred_vanilla"}:
        out["vanilla"] = _in_chunks(registry["vanilla"], model, x, classes, step, layout)
    if "smoothgrad" in wanted:
        for k, (level, aggregates) in enumerate(levels.items()):
            generator = torch.Generator(device=x.device).manual_seed(seed + 1 + k)
            if len(aggregates) == 1:
                values = {
                    aggregates[0]: smoothgrad(
                        model,
                        x,
                        classes,
                        n_samples=n_samples,
                        noise_level=level,
                        aggregate=aggregates[0],
                        batch_size=step,
                        generator=generator,
                    )
                }
            else:
                values = smoothgrad_aggregates(
                    model, x, classes, generator, n_samples=n_samples, noise_level=level, batch_size=step
                )
            out |= {f"smoothgrad_{aggregate}_{level:g}": values[aggregate].contiguous() for aggregate in aggregates}
    for name in ("integrated_gradients", "gradient_x_input", "grad_cam", "guided_backprop"):
        if name in wanted:
            out[name] = _in_chunks(registry[name], model, x, classes, step, layout)
    if "blurred_vanilla" in wanted:
        out["blurred_vanilla"] = blur(out["vanilla"].abs().amax(1, keepdim=True), blur_sigma)
    if "random" in wanted:
        out["random"] = _random(model, x, classes, torch.Generator(device=x.device).manual_seed(seed))
    if "vanilla" not in wanted:
        out.pop("vanilla", None)  # computed for the blurred map only
    return out


def _in_chunks(
    method: Method, model: nn.Module, x: torch.Tensor, classes: torch.Tensor, step: int, layout: torch.memory_format
) -> torch.Tensor:
    """``method`` on ``step`` images of x at a time, each chunk in ``layout``; the results joined, default layout."""
    parts = [
        method(model, images.contiguous(memory_format=layout), labels, None)
        for images, labels in zip(x.split(step), classes.split(step), strict=True)
    ]
    return torch.cat(parts).contiguous()


def smoothgrad_aggregates(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType,
    generator: torch.Generator | None,
    *,
    n_samples: int,
    noise_level: float,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """All four SmoothGrad aggregates from one set of noisy gradients, {aggregate: (B, C, H, W)}.

    Equal (to float rounding) to the registry's ``smoothgrad_<aggregate>_<level>``
    entries called with identically seeded generators, which draw the same
    noise, at a quarter of their cost. It holds all B x N noisy gradients at
    once (``noisy_gradients``), 4 B N C H W bytes: 614 MB for 500 shapes
    images at N = 25, so pass a few hundred images at a time. ``batch_size``
    (noisy copies per forward pass) changes the speed, not the result.
    """
    grads = noisy_gradients(
        model, x, target, n_samples=n_samples, noise_level=noise_level, batch_size=batch_size, generator=generator
    )
    return {name: aggregate_samples(grads, name) for name in AGGREGATES}


def _vanilla(model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None) -> torch.Tensor:
    return vanilla_gradient(model, x, target)


def _smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType,
    generator: torch.Generator | None,
    *,
    n_samples: int,
    noise_level: float,
    aggregate: str,
) -> torch.Tensor:
    return smoothgrad(
        model, x, target, n_samples=n_samples, noise_level=noise_level, aggregate=aggregate, generator=generator
    )


def _integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType,
    generator: torch.Generator | None,
    *,
    n_steps: int,
    batch_size: int | None = None,
) -> torch.Tensor:
    inputs, classes = _prepare(model, x, target)
    ig = IntegratedGradients(model)
    attribution = ig.attribute(
        inputs,
        baselines=0.0,
        target=classes,
        n_steps=n_steps,
        internal_batch_size=batch_size or default_batch_size(inputs),
    )
    return attribution.detach()


def _gradient_x_input(
    model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None
) -> torch.Tensor:
    inputs, classes = _prepare(model, x, target)
    return InputXGradient(model).attribute(inputs, target=classes).detach()


def _grad_cam(
    model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None, *, layer: str
) -> torch.Tensor:
    inputs, classes = _prepare(model, x, target)
    cam = LayerGradCam(model, model.get_submodule(layer)).attribute(inputs, target=classes, relu_attributions=True)
    if cam.ndim != 4:
        raise ValueError(f"Grad-CAM needs a layer with (B, K, h, w) outputs; {layer!r} gives shape {tuple(cam.shape)}.")
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear").detach()


def _guided_backprop(
    model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None
) -> torch.Tensor:
    problem = _guided_backprop_problem(model)
    if problem:
        raise ValueError(problem)
    inputs, classes = _prepare(model, x, target)
    return GuidedBackprop(model).attribute(inputs, target=classes).detach()


def _guided_backprop_problem(model: nn.Module) -> str | None:
    """Why Captum's Guided Backprop would not do what it says on ``model``, or None when it would."""
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, (nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU))}
    if not any(isinstance(m, nn.ReLU) for m in model.modules()) or kinds:
        return (
            "Captum's GuidedBackprop changes the backward pass of nn.ReLU modules only; this model "
            f"has {sorted(kinds) or 'no nn.ReLU modules'}, so the result would be (partly) the plain gradient. "
            "Leave Guided Backprop out for this model (e.g. EfficientNet-Lite0, which uses ReLU6)."
        )
    return None


def _families(model: nn.Module, methods: Collection[str] | None) -> set[str]:
    """The ``FAMILIES`` that all_attributions computes for ``methods`` (None: every one that applies to model)."""
    if methods is None:
        return set(FAMILIES) - ({"guided_backprop"} if _guided_backprop_problem(model) else set())
    if isinstance(methods, str):
        raise TypeError(f"methods must be a collection of names, e.g. ({methods!r},), not a string.")
    unknown = set(methods) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {FAMILIES}.")
    return set(methods)


def _blurred_vanilla(
    model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None, *, sigma: float
) -> torch.Tensor:
    return blur(vanilla_gradient(model, x, target).abs().amax(1, keepdim=True), sigma)


def _random(model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=device, dtype=x.dtype).to(x.device)


def _prepare(model: nn.Module, x: torch.Tensor, target: TargetType) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked inputs (a detached copy of x that requires grad, as Captum expects) and one class per image (B,).

    The forward pass that finds the number of classes (and, for ``target=None``, the predicted ones) runs on the
    first image only when the target is given.
    """
    _check_model(model)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise ValueError("x must be a float tensor of shape (B, C, H, W); add a batch axis for one image: x[None].")
    with torch.no_grad():
        logits = model(x if target is None else x[:1])
    predicted = logits if target is None else None
    classes = resolve_target(target, x.shape[0], logits.shape[1], predicted=predicted).to(x.device)
    return x.detach().clone().requires_grad_(True), classes
