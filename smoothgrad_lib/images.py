"""Images as float tensors (3, H, W) in [0, 1]: photos bundled with scikit-image, or your own files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

# Photos that ship inside scikit-image's wheel (no download), with what they show.
PHOTOS = {
    "chelsea": "a tabby cat (ImageNet: Egyptian cat / tiger cat / tabby)",
    "coffee": "a cup of espresso on a saucer (ImageNet: espresso)",
    "rocket": "a rocket on its launch pad (ImageNet: missile / projectile)",
    "camera": "a photographer with a camera on a tripod, greyscale (ImageNet: tripod)",
    "astronaut": "astronaut Eileen Collins in front of the US flag",
    "hubble_deep_field": "the Hubble Deep Field, galaxies",
    "immunohistochemistry": "a stained tissue section under a microscope",
    "moon": "the surface of the Moon, greyscale",
}


def load_image(name_or_path: str | Path, size: int | None = 224) -> torch.Tensor:
    """Load an RGB image as a float tensor (3, H, W) with values in [0, 1].

    Args:
        name_or_path: a name from ``PHOTOS`` (bundled with scikit-image, works
            offline) or the path of a JPEG/PNG file. Greyscale images are
            repeated over three channels; transparency is composited on white.
        size: resize the shorter side to ``size`` pixels (antialiased) and
            crop the centre to ``size x size``; None keeps the original size.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}.")
    if isinstance(name_or_path, str) and name_or_path in PHOTOS:
        import skimage.data

        pixels = np.asarray(getattr(skimage.data, name_or_path)())
        image = Image.fromarray(pixels)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(name_or_path)!r} is neither a bundled photo ({', '.join(PHOTOS)}) nor an existing file."
            )
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"could not read {str(path)!r} as an image (JPEG or PNG expected): {error}") from None
    tensor = TF.pil_to_tensor(_to_rgb(image)).float() / 255
    return tensor if size is None else center_square(tensor, size)


def center_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side of (3, H, W) to ``size`` (antialiased), crop the centre: (3, size, size) in [0, 1]."""
    return TF.center_crop(TF.resize(image, size, antialias=True), [size, size]).clamp(0, 1)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
