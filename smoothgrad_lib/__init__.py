"""smoothgrad_lib: Vanilla Gradient and SmoothGrad saliency for PyTorch image classifiers.

from smoothgrad_lib import load_model, load_image, smoothgrad, saliency_map
loaded = load_model()                      # EfficientNet-Lite0, offline
x = load_image("chelsea")                  # (3, 224, 224) in [0, 1]
s = smoothgrad(loaded.model, x)            # (3, 224, 224), mean |G_i| over 50 noisy copies
m = saliency_map(s)                        # (224, 224) in [0, 1]

Layout, one concept per module (none imports from a module above it):

* kernel: ``_checks`` (validators, the target rule, the clean forward pass), ``precision``,
  ``noise`` (noise scale, ``NormalStream``, ``noisy_copies``), ``aggregates`` (the four aggregates,
  ``Estimate``, running moments, ``relative_error``);
* estimators: ``saliency`` (vanilla gradient, SmoothGrad), ``smoothing`` (Stein, Softplus), ``maps``;
* comparators: ``methods`` (one registry of attribution methods, ``smoothed``, ``all_attributions``), ``lrp``;
* measurements: ``metrics`` and ``faithfulness`` (scores of maps), ``robustness`` (scores of explanation
  functions), ``randomisation`` (sanity checks),
  ``probes`` (the network around an image), ``montecarlo`` (Monte-Carlo error), ``stats``;
* data and models: ``images``, ``shapes``, ``twins``, ``models``, ``train``, ``classification`` (accuracy);
  ``plotting``; ``explain``, ``evaluate`` (a folder of images on your model), ``cli``;
* teaching: ``exercises`` (the notebooks' self-checks).

Rules that keep it so:

* no module imports a ``_name`` from another (the kernel's names are public within the package);
* a metric goes in ``metrics``, ``robustness`` or ``faithfulness``, a Monte-Carlo quantity in ``montecarlo``, a
  network probe in ``probes``;
* a notebook cell holds narrative, library calls and printing, never a protocol;
* measured figures live in the notebooks and the README, never in docstrings or comments;
* the library speaks of itself, not of its origins;
* randomness comes from an explicit ``generator`` (``seed`` only in notebook-facing runners);
  choices are ``Literal`` strings.
"""

from importlib.metadata import PackageNotFoundError, version

from ._checks import TargetType
from .aggregates import Estimate
from .images import IMAGENET_PHOTOS, PHOTOS, load_image
from .maps import saliency_map
from .models import LoadedModel, load_model
from .saliency import noisy_gradients, smoothgrad, smoothgrad_estimate, vanilla_gradient

__all__ = [
    "IMAGENET_PHOTOS",
    "PHOTOS",
    "Estimate",
    "TargetType",
    "LoadedModel",
    "load_image",
    "load_model",
    "noisy_gradients",
    "saliency_map",
    "smoothgrad",
    "smoothgrad_estimate",
    "vanilla_gradient",
]
try:
    __version__ = version("smoothgrad-lib")  # pyproject.toml's, the one version number
except PackageNotFoundError:  # a source tree on sys.path that was never installed (tools/gpu_check.sh)
    __version__ = "not installed"
