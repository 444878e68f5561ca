"""The attribution methods that are compared with SmoothGrad: ONE registry of method specs, and
``all_attributions``, which runs them all on one batch with one seed.

A method is a ``MethodSpec``: its name, a function ``function(model, x, classes, **options)``
that returns an attribution (B, C, H, W), or (B, 1, H, W) for the methods that
give one value per pixel (``per_pixel``), and the options it takes from
``all_attributions`` (``takes``: any of ``OPTIONS``), nothing more. ``classes``
is one class index per image (B,), already resolved. Adding a method is one
``register(MethodSpec(...))``; ``all_attributions`` and ``attribution_methods``
pick it up. ``saliency_map(attribution, normalize=None)`` turns either shape into a map (B, H, W).

The comparators come from Captum, not from this package: Integrated
Gradients, Gradient x Input, Grad-CAM and Guided Backprop.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from functools import partial

import torch
from captum.attr import LRP, GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam
from captum.attr._utils.lrp_rules import EpsilonRule  # Captum exports its LRP rules from here only
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
from .aggregates import AGGREGATES, aggregate_samples
from .faithfulness import blur
from .noise import DEFAULT_NOISE_LEVEL
from .saliency import default_batch_size, noisy_gradients, smoothgrad, vanilla_gradient

Method = Callable[[nn.Module, torch.Tensor, TargetType, "torch.Generator | None"], torch.Tensor]

VANILLA_BLUR_SIGMA = 1.5  # pixels: the Gaussian that blurs the vanilla map of the "blurred_vanilla" baseline
# What a method may take from all_attributions besides (model, x, classes).
OPTIONS = ("seed", "levels", "n_samples", "ig_steps", "gradcam_layer", "blur_sigma", "batch_size", "vanilla")


@dataclass(frozen=True)
class MethodSpec:
    """One attribution method of the registry.

    Attributes:
        name: the key of its result in ``all_attributions``.
        function: ``function(model, x, classes, **{option: value for option in takes})`` -> attribution
            (B, C, H, W), or (B, 1, H, W) when ``per_pixel``; or a dict {name: attribution} (``"smoothgrad"``).
        per_pixel: one value per pixel rather than per pixel and channel.
        needs_relu: only meaningful on a network of ``nn.ReLU`` modules (left out by default elsewhere).
        takes: the options of ``OPTIONS`` it needs (``"vanilla"``: the vanilla gradient, computed once).
        chunked: run on ``batch_size`` images at a time, in the layout of the clean forward pass.
        opt_in: left out unless asked for by name (``all_attributions(methods=...)``,
            ``attribution_methods(include=...)``), so that adding it changes no existing result.
    """

    name: str
    function: Callable[..., torch.Tensor | dict[str, torch.Tensor]]
    per_pixel: bool = False
    needs_relu: bool = False
    takes: tuple[str, ...] = ()
    chunked: bool = False
    opt_in: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.takes) - set(OPTIONS)
        if unknown:
            raise ValueError(f"method {self.name!r} takes unknown options {sorted(unknown)}; choose from {OPTIONS}.")


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to ``REGISTRY`` (after the others: ``all_attributions`` returns methods in registry order)."""
    if spec.name in REGISTRY:
        raise ValueError(f"a method named {spec.name!r} is already registered.")
    REGISTRY[spec.name] = spec
    return spec


def attribution_methods(
    *,
    gradcam_layer: str,
    n_samples: int = 25,
    levels: Sequence[float] = (DEFAULT_NOISE_LEVEL,),
    aggregates: Sequence[str] = AGGREGATES,
    ig_steps: int = 32,
    blur_sigma: float = VANILLA_BLUR_SIGMA,
    include: Collection[str] = (),
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
      Gaussian of ``blur_sigma`` pixels (``VANILLA_BLUR_SIGMA`` by default): a trivial smoother
      that any SmoothGrad variant should beat.
    - ``"random"``: uniform noise in [0, 1) from the generator, the chance level of every metric.

    Methods registered with ``opt_in=True`` (``"lrp"``) are added only when named in ``include``.
    """
    options = {
        "n_samples": n_samples,
        "ig_steps": ig_steps,
        "gradcam_layer": gradcam_layer,
        "blur_sigma": blur_sigma,
        "batch_size": None,
    }
    methods: dict[str, Method] = {}
    for spec in REGISTRY.values():
        if spec.opt_in and spec.name not in include:
            continue
        if spec.name == "smoothgrad":
            for aggregate in aggregates:
                for level in levels:
                    methods[f"smoothgrad_{aggregate}_{level:g}"] = partial(
                        _smoothgrad, n_samples=n_samples, noise_level=level, aggregate=aggregate
                    )
        else:
            methods[spec.name] = partial(_run_spec, spec, options)
    return methods


def _run_spec(
    spec: MethodSpec,
    options: dict[str, object],
    model: nn.Module,
    x: torch.Tensor,
    target: TargetType,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One registry method as a ``Method``: the checks and the target's clean forward pass, then ``spec.function``."""
    check_model(model, x)
    check_images(x)
    classes = clean_classes(model, x, target)
    given = dict(options)
    if "vanilla" in spec.takes:
        given["vanilla"] = vanilla_gradient(model, x, classes)
    if "seed" in spec.takes:
        given["seed"] = generator
    return spec.function(model, x, classes, **{name: given[name] for name in spec.takes})


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
    blur_sigma: float = VANILLA_BLUR_SIGMA,
    methods: Collection[str] | None = None,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every method's attribution of one batch, by name, in the order of ``attribution_methods``.

    The methods and their definitions are those of ``attribution_methods``;
    this runs them on ``x`` (B, C, H, W) for one set of classes and one seed,
    and shares work between them:

    - the target is resolved once (None: each image's predicted class), by one
      clean forward pass, and each method gets the classes (no method runs its own);
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

    ``methods`` chooses among the names of ``REGISTRY`` ("smoothgrad" stands for all the
    ``levels`` entries); None takes all of them but the opt-in ones (``"lrp"``), and except Guided Backprop on a
    model whose activations it would not rewrite (anything but ``nn.ReLU``,
    e.g. the ReLU6 of EfficientNet-Lite0), which is then left out. Asking for
    it by name on such a model raises the registry's ValueError.

    Speed, not results: the non-SmoothGrad methods run ``batch_size`` images
    at a time (Integrated Gradients: ``batch_size`` path points at a time;
    SmoothGrad: ``batch_size`` noisy copies), None picking ``default_batch_size``;
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
    options: dict[str, object] = {
        "seed": seed,
        "levels": levels,
        "n_samples": n_samples,
        "ig_steps": ig_steps,
        "gradcam_layer": gradcam_layer,
        "blur_sigma": blur_sigma,
        "batch_size": step,
    }
    if any("vanilla" in REGISTRY[name].takes for name in wanted) or "vanilla" in wanted:
        options["vanilla"] = _in_chunks(REGISTRY["vanilla"], {}, model, x, classes, step, layout)

    out: dict[str, torch.Tensor] = {}
    for name, spec in REGISTRY.items():
        if name not in wanted:
            continue
        given = {option: options[option] for option in spec.takes}
        if name == "vanilla":
            result = options["vanilla"]
        elif spec.chunked:
            result = _in_chunks(spec, given, model, x, classes, step, layout)
        else:
            result = spec.function(model, x, classes, **given)
        out |= result if isinstance(result, dict) else {name: result}
    return out


def _in_chunks(
    spec: MethodSpec,
    given: dict[str, object],
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    step: int,
    layout: torch.memory_format,
) -> torch.Tensor:
    """``spec.function`` on ``step`` images of x at a time, each chunk in ``layout``; joined, default layout."""
    parts = [
        spec.function(model, images.contiguous(memory_format=layout), labels, **given)
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


def _smoothgrad_levels(
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    *,
    seed: int,
    levels: Mapping[float, Sequence[str]],
    n_samples: int,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """``"smoothgrad_<aggregate>_<level:g>"`` for every level and its aggregates; level k seeded with seed + 1 + k."""
    out = {}
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
                    batch_size=batch_size,
                    generator=generator,
                )
            }
        else:
            values = smoothgrad_aggregates(
                model, x, classes, generator, n_samples=n_samples, noise_level=level, batch_size=batch_size
            )
        out |= {f"smoothgrad_{aggregate}_{level:g}": values[aggregate].contiguous() for aggregate in aggregates}
    return out


def _vanilla(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return vanilla_gradient(model, x, classes)


def _integrated_gradients(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, *, ig_steps: int, batch_size: int | None = None
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
    problem = _guided_backprop_problem(model)
    if problem:
        raise ValueError(problem)
    return GuidedBackprop(model).attribute(_captum_inputs(x), target=classes).detach()


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


def _wanted(model: nn.Module, methods: Collection[str] | None) -> set[str]:
    """The registry names that all_attributions computes for ``methods`` (None: every one that applies to model)."""
    if methods is None:
        skip = {name for name, spec in REGISTRY.items() if spec.needs_relu and _guided_backprop_problem(model)}
        skip |= {name for name, spec in REGISTRY.items() if spec.opt_in}
        return set(REGISTRY) - skip
    if isinstance(methods, str):
        raise TypeError(f"methods must be a collection of names, e.g. ({methods!r},), not a string.")
    unknown = set(methods) - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {tuple(REGISTRY)}.")
    return set(methods)


def _blurred_vanilla(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, *, vanilla: torch.Tensor, blur_sigma: float
) -> torch.Tensor:
    return blur(vanilla.abs().amax(1, keepdim=True), blur_sigma)


def _random(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, *, seed: int | torch.Generator) -> torch.Tensor:
    generator = torch.Generator(device=x.device).manual_seed(seed) if isinstance(seed, int) else seed
    device = generator.device if generator is not None else x.device
    return torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=device, dtype=x.dtype).to(x.device)


def _captum_inputs(x: torch.Tensor) -> torch.Tensor:
    """A detached copy of x that requires grad, as Captum expects."""
    return x.detach().clone().requires_grad_(True)


for _spec in (
    MethodSpec("vanilla", _vanilla, chunked=True),
    MethodSpec("smoothgrad", _smoothgrad_levels, takes=("seed", "levels", "n_samples", "batch_size")),
    MethodSpec("integrated_gradients", _integrated_gradients, takes=("ig_steps", "batch_size"), chunked=True),
    MethodSpec("gradient_x_input", _gradient_x_input, chunked=True),
    MethodSpec("grad_cam", _grad_cam, per_pixel=True, takes=("gradcam_layer",), chunked=True),
    MethodSpec("guided_backprop", _guided_backprop, needs_relu=True, chunked=True),
    MethodSpec("blurred_vanilla", _blurred_vanilla, per_pixel=True, takes=("vanilla", "blur_sigma")),
    MethodSpec("random", _random, per_pixel=True, takes=("seed",)),
):
    register(_spec)
# The built-in methods, in the order of all_attributions' result ("smoothgrad" stands for every level and aggregate).
FAMILIES = tuple(REGISTRY)


# --- Layer-wise relevance propagation (opt-in) -------------------------------------------------------------------

LRP_EPSILON = 0.25  # the stabiliser of the epsilon rule of the registry's "lrp"
# The leaf modules Captum's LRP has a rule for (its SUPPORTED_LAYERS_WITH_RULES, matched by exact type) and the
# activations it passes relevance through unchanged (SUPPORTED_NON_LINEAR_LAYERS); nn.Flatten gets Captum's default
# epsilon (1e-9), which passes relevance through the reshape unchanged (z = a, so a R / z = R).
LRP_RULE_LAYERS = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.MaxPool2d,
    nn.Flatten,
)
LRP_PASS_LAYERS = (nn.ReLU, nn.Dropout, nn.Tanh)


def lrp_problems(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Why Captum's ``LRP`` would fail on ``model`` or silently compute something else; [] when it applies.

    Checked: leaf modules of a type with no Captum rule (by exact type, as Captum matches them: a subclass of
    ``nn.Conv2d`` does not count); rule-type modules that have children (Captum descends into the children and
    leaves the module itself without a rule, e.g. a convolution that holds its padding module); in-place
    ``nn.ReLU``; and, given a sample input ``x``, modules called more than once in one forward pass (Captum's LRP
    stores one input per module). Not checked: functional operations in ``forward`` (``x + skip``, ``F.relu``),
    which LRP cannot see; a residual network needs Captum's ``Addition_Module`` in place of ``+``.
    """
    problems = []
    leaves = [m for m in model.modules() if not list(m.children())]
    unsupported = sorted({type(m).__name__ for m in leaves if type(m) not in LRP_RULE_LAYERS + LRP_PASS_LAYERS})
    if unsupported:
        problems.append(f"modules without an LRP rule in Captum: {', '.join(unsupported)}")
    hidden = sorted(
        {type(m).__name__ for m in model.modules() if list(m.children()) and isinstance(m, LRP_RULE_LAYERS)}
    )
    if hidden:
        problems.append(f"layers whose own rule Captum skips because they have submodules: {', '.join(hidden)}")
    if any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules()):
        problems.append("in-place nn.ReLU (inplace=True)")
    if x is not None:
        calls: dict[nn.Module, int] = {}
        handles = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls.get(m, 0) + 1)) for m in leaves]
        try:
            with torch.no_grad():
                model(x[:1])
        finally:
            for handle in handles:
                handle.remove()
        reused = sorted({type(m).__name__ for m, n in calls.items() if n > 1})
        if reused:
            problems.append(f"modules used more than once in a forward pass: {', '.join(reused)}")
    return problems


def lrp(model: nn.Module, x: torch.Tensor, target: TargetType = None, *, epsilon: float = LRP_EPSILON) -> torch.Tensor:
    """Layer-wise relevance propagation (Bach et al., 2015) by Captum's ``LRP``, the epsilon rule on every layer.

    The relevance of the target logit is propagated to the input (B, C, H, W) by the LRP-epsilon rule,
    ``R_i = sum_j a_i w_ij R_j / (z_j + epsilon sign(z_j))``, on every convolution, linear, batch-norm and
    pooling layer, and passed unchanged through ReLU. Why this rule: with epsilon -> 0 (LRP-0) on a ReLU network
    it is exactly Gradient x Input (Ancona et al., 2018; the proof holds with biases and batch norm), which the
    registry already has; a positive epsilon absorbs the relevance of weak, mutually cancelling contributions and
    gives sparser, less noisy maps (Montavon et al., 2019, "Layer-wise relevance propagation: an overview"), which
    is the property to compare with SmoothGrad. ``LRP_EPSILON`` = 0.25 is of the order of the unit scale that
    batch norm gives the activations. The alpha-beta and z+ rules (Captum's ``Alpha1_Beta0_Rule``) are not used:
    Captum warns that they are wrong for batch-norm layers, which every layer of the shapes twins has. The sum of
    the relevances equals the logit only for epsilon -> 0 and zero biases (conservation); the epsilon and the
    biases (including batch norm's shift) absorb the rest.

    Runs on a deep copy of ``model`` (Captum attaches rules and hooks to the modules), so the caller's model is
    left as it was. Raises a ValueError naming what is unsupported (``lrp_problems``) for any other model; for
    EfficientNet-Lite0 that is its ReLU6, ZeroPad2d and Identity modules, the ``Normalize`` in front, its
    ``Conv2dStaticSamePadding`` convolutions (which have a padding submodule), and one ReLU6 module called
    several times per block; its residual ``+`` is invisible to LRP besides.

    Args:
        model: classifier in eval mode made of the modules Captum's LRP supports (e.g. the shapes twins).
        x: float images (B, C, H, W); left unchanged.
        target: None (each image's predicted class), an int, or one class per image.
        epsilon: the stabiliser of the epsilon rule (> 0; 1e-9 is Captum's default, practically LRP-0).

    Returns:
        (B, C, H, W) relevance, detached.
    """
    check_model(model, x)
    check_images(x)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}.")
    problems = lrp_problems(model, x)
    if problems:
        raise ValueError(
            "Captum's LRP does not support this model: " + "; ".join(problems) + ". LRP is available for networks "
            "of plain Conv2d, Linear, BatchNorm2d, pooling, Flatten and ReLU modules (e.g. the shapes twins)."
        )
    classes = clean_classes(model, x, target)
    copy = deepcopy(model)
    for module in copy.modules():
        if isinstance(module, nn.Flatten):
            module.rule = EpsilonRule()  # a reshape: relevance passes unchanged (z = a)
        elif isinstance(module, LRP_RULE_LAYERS) and not list(module.children()):
            module.rule = EpsilonRule(epsilon)
    return LRP(copy).attribute(_captum_inputs(x), target=classes).detach()


def _lrp(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return lrp(model, x, classes)


register(MethodSpec("lrp", _lrp, chunked=True, opt_in=True))


# --- Any registry method as a function of the input (for the robustness metrics) ------------------------------------


def explanation_function(
    method: str,
    model: nn.Module,
    target: TargetType = None,
    *,
    seed: int = 0,
    common_noise: bool = True,
    gradcam_layer: str = "",
    **options: object,
) -> Callable[..., torch.Tensor]:
    """One method of ``attribution_methods`` as ``explain_fn(x, target=target)`` -> attribution, for
    ``metrics.max_sensitivity``, ``metrics.local_lipschitz``, ``metrics.class_sensitivity`` and
    ``faithfulness.infidelity``.

    ``method`` is a name of ``attribution_methods(gradcam_layer=gradcam_layer, include=(method,), **options)``
    (e.g. ``"vanilla"``, ``"smoothgrad_abs_0.15"``, ``"grad_cam"``, ``"lrp"``); ``options`` are that function's
    (``n_samples``, ``levels``, ``aggregates``, ``ig_steps``, ``blur_sigma``). The attribution has the shape of x
    (B, C, H, W), or (B, 1, H, W) for the one-value-per-pixel methods.

    Randomness (SmoothGrad, ``"random"``): with ``common_noise`` every call draws from a fresh
    ``torch.Generator(device=x.device).manual_seed(seed)``, so x and a perturbed x get the same noise (the map's
    own change is measured); without it, all calls draw in turn from one generator seeded with ``seed`` (each call
    gets new noise, as for a user who does not fix a seed). ``target`` None explains each image's predicted class
    at the image given, which may change under perturbation: pass the classes predicted at the clean images to
    compare maps of one class.
    """
    methods = attribution_methods(gradcam_layer=gradcam_layer, include=(method,), **options)
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose from {tuple(methods)} (or pass other levels/aggregates).")
    run = methods[method]
    shared: dict[str, torch.Generator] = {}

    def explain_fn(x: torch.Tensor, target: TargetType = target) -> torch.Tensor:
        if common_noise:
            generator = torch.Generator(device=x.device).manual_seed(seed)
        else:
            generator = shared.setdefault("generator", torch.Generator(device=x.device).manual_seed(seed))
        return run(model, x, target, generator)

    return explain_fn
