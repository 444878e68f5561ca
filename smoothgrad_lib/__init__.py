"""smoothgrad_lib: Vanilla Gradient and SmoothGrad saliency for PyTorch image classifiers."""

from .images import PHOTOS, load_image
from .maps import saliency_map
from .saliency import smoothgrad, vanilla_gradient

__all__ = ["PHOTOS", "load_image", "saliency_map", "smoothgrad", "vanilla_gradient"]
