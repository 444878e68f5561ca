"""The attribution methods that notebook 04 compares, in one registry: name -> method(model, x, target, generator).

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

from collections.abc import Callable, Sequence
from functools import partial

import torch
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam
from torch import nn

from .evaluation import blur
from .saliency import (
    AGGREGATES,
    TargetType,
    _check_model,
    default_batch_size,
    noisy_gradients,
    resolve_target,
    smoothgrad,
    vanilla_gradient,
)

Method = Callable[[nn.Module, torch.Tensor, TargetType, "torch.Generator | None"], torch.Tensor]

BLUR_SIGMA = 1.5  # pixels: the Gaussian that blurs the vanilla map of the "blurred_vanilla" baseline


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


def smoothgrad_aggregates(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType,
    generator: torch.Generator | None,
    *,
    n_samples: int,
    noise_level: float,
) -> dict[str, torch.Tensor]:
    """All four SmoothGrad aggregates from one set of noisy gradients, {aggregate: (B, C, H, W)}.

    Equal (to float rounding) to the registry's ``smoothgrad_<aggregate>_<level>``
    entries called with identically seeded generators, which draw the same
    noise, at a quarter of their cost. It holds all B x N noisy gradients at
    once (``noisy_gradients``), 4 B N C H W bytes: 614 MB for 500 shapes
    images at N = 25, so pass a few hundred images at a time.
    """
    grads = noisy_gradients(
        model, x, target, n_samples=n_samples, noise_level=noise_level, generator=generator
    ).double()
    aggregates = {
        "abs": grads.abs().mean(1),
        "square": grads.square().mean(1),
        "raw": grads.mean(1),
        "vargrad": grads.var(1, correction=0),
    }
    return {name: value.to(x.dtype) for name, value in aggregates.items()}


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
    model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None, *, n_steps: int
) -> torch.Tensor:
    inputs, classes = _prepare(model, x, target)
    ig = IntegratedGradients(model)
    attribution = ig.attribute(
        inputs, baselines=0.0, target=classes, n_steps=n_steps, internal_batch_size=default_batch_size(inputs)
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
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, (nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU))}
    if not any(isinstance(m, nn.ReLU) for m in model.modules()) or kinds:
        raise ValueError(
            "Captum's GuidedBackprop changes the backward pass of nn.ReLU modules only; this model "
            f"has {sorted(kinds) or 'no nn.ReLU modules'}, so the result would be (partly) the plain gradient. "
            "Leave Guided Backprop out for this model (e.g. EfficientNet-Lite0, which uses ReLU6)."
        )
    inputs, classes = _prepare(model, x, target)
    return GuidedBackprop(model).attribute(inputs, target=classes).detach()


def _blurred_vanilla(
    model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None, *, sigma: float
) -> torch.Tensor:
    return blur(vanilla_gradient(model, x, target).abs().amax(1, keepdim=True), sigma)


def _random(model: nn.Module, x: torch.Tensor, target: TargetType, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=device, dtype=x.dtype).to(x.device)


def _prepare(model: nn.Module, x: torch.Tensor, target: TargetType) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked inputs (a detached copy of x that requires grad, as Captum expects) and one class per image (B,)."""
    _check_model(model)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise ValueError("x must be a float tensor of shape (B, C, H, W); add a batch axis for one image: x[None].")
    with torch.no_grad():
        logits = model(x)
    classes = resolve_target(target, x.shape[0], logits.shape[1], predicted=logits).to(x.device)
    return x.detach().clone().requires_grad_(True), classes
