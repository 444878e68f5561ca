"""smoothgrad_lib: Vanilla Gradient and SmoothGrad saliency for PyTorch image classifiers.

from smoothgrad_lib import load_model, load_image, smoothgrad, saliency_map
loaded = load_model()                      # EfficientNet-Lite0, offline
x = load_image("chelsea")                  # (3, 224, 224) in [0, 1]
s = smoothgrad(loaded.model, x)            # (3, 224, 224), mean |G_i| over 50 noisy copies
m = saliency_map(s)                        # (224, 224) in [0, 1]
"""

from .images import PHOTOS, load_image
from .maps import saliency_map
from .models import LoadedModel, load_model
from .saliency import Estimate, TargetType, noisy_gradients, smoothgrad, smoothgrad_estimate, vanilla_gradient

__all__ = [
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
__version__ = "0.1.0"
