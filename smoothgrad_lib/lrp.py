"""Layer-wise relevance propagation (LRP) by Captum, and the check of which models it applies to.

``lrp`` is the registry's opt-in method ``"lrp"`` (``methods.REGISTRY``); ``lrp_problems`` says why Captum's
``LRP`` would fail on a model, or silently compute something else.
"""

from __future__ import annotations

from copy import deepcopy

import torch
from captum.attr import LRP
from captum.attr._utils.lrp_rules import EpsilonRule  # Captum exports its LRP rules from here only
from torch import nn

from ._checks import TargetType, check_images, check_model, clean_classes

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
    return LRP(copy).attribute(x.detach().clone().requires_grad_(True), target=classes).detach()
