"""Images as float tensors (3, H, W) in [0, 1]: photos bundled with scikit-image, or your own files.

Every image goes through :func:`read_image`, which returns the tensor and a :class:`Picture` record of what was
done to the file to get it (EXIF orientation, how the values were scaled, the resize and the crop or padding);
:func:`load_image` is its tensor. ``explain`` prints that record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

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
# The bundled photos that show an ImageNet class (the others show none): EfficientNet-Lite0's top-1 is right on each.
IMAGENET_PHOTOS = ("chelsea", "coffee", "rocket", "camera")

# How an image of another shape becomes the model's square input (size x size).
FITS = {
    "crop": "resize the shorter side to the model's input and keep the centre square (what the models were trained on)",
    "pad": "resize the longer side to the model's input and pad the rest with mid-grey (the model sees all of it)",
    "resize": "stretch to the model's square input (the model sees all of it, the aspect ratio is lost)",
}
DEFAULT_FIT = "crop"
# What the error messages name as readable: the common formats Pillow decodes (it reads more).
FORMATS = "JPEG, PNG, TIFF, BMP, GIF, WebP"
PAD_VALUE = 0.5  # mid-grey: close to the mean pixel the models normalise away
# --fit crop warns when it keeps less than this fraction of the picture (a centre crop of a W:H photo keeps H/W).
CROP_WARNING = 0.6
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# EXIF orientation -> the transpose that makes the picture upright (as Pillow's ImageOps.exif_transpose does).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EIGHT_BIT = {"1": "black-and-white", "L": "greyscale", "LA": "greyscale with transparency", "P": "palette"}
_EIGHT_BIT |= {"RGB": "RGB", "RGBA": "RGB with transparency", "PA": "palette with transparency"}
_ORIENTATIONS = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "mirrored and rotated 90° anticlockwise",
    6: "rotated 90° clockwise",
    7: "mirrored and rotated 90° clockwise",
    8: "rotated 90° anticlockwise",
}


@dataclass(frozen=True)
class Picture:
    """An image as a float tensor, and what was done to the file to get it.

    Attributes:
        tensor: (3, H, W) float32 with values in [0, 1].
        source: the bundled photo's name or the file's path.
        size: (width, height) of the picture as its viewer shows it (after the EXIF orientation).
        kind: the file's pixel type, e.g. "8-bit RGB", "16-bit greyscale", "32-bit float greyscale".
        scaling: how values became [0, 1], e.g. "divided by 255, the 8-bit maximum".
        steps: what was done after decoding, in order (orientation, resize, crop or padding).
        warnings: what the user should know (a constant image, upsampling, a crop that drops most of it).
    """

    tensor: torch.Tensor
    source: str
    size: tuple[int, int]
    kind: str
    scaling: str
    steps: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """Lines: the source, its size, type and scaling; then each step, indented."""
        width, height = self.size
        head = f"image: {self.source} ({width}x{height} px, {self.kind}; {self.scaling})"
        return "\n".join([head, *(f"  {step}" for step in self.steps)])


def load_image(name_or_path: str | Path, size: int | None = 224, fit: str = DEFAULT_FIT) -> torch.Tensor:
    """Load an RGB image as a float tensor (3, H, W) with values in [0, 1]: ``read_image(...).tensor``.

    Args:
        name_or_path: a name from ``PHOTOS`` (bundled with scikit-image, works
            offline) or the path of an image file (JPEG, PNG, TIFF, ...).
            The EXIF orientation is applied; greyscale images are repeated
            over three channels; transparency is composited on white; 16-bit
            images (greyscale, RGB and RGBA) are divided by 65535 and float
            images taken as [0, 1].
        size: the side of the square result; None keeps the original size.
        fit: how a non-square image becomes ``size x size``: ``"crop"``
            (default: resize the shorter side to ``size``, antialiased, and
            crop the centre), ``"pad"`` (resize the longer side, pad with
            mid-grey) or ``"resize"`` (stretch). See ``FITS``.
    """
    return read_image(name_or_path, size, fit).tensor


def read_image(name_or_path: str | Path, size: int | None = 224, fit: str = DEFAULT_FIT) -> Picture:
    """Decode an image (see ``load_image``) and fit it to ``size``: the tensor and a record of what was done.

    Raises:
        FileNotFoundError: neither a bundled photo nor an existing file.
        ValueError: a directory; a file that cannot be decoded (or claims too many pixels), an unsupported pixel type,
            NaN or infinite values; a bad ``size`` or ``fit``.
    """
    _check_fit(size, fit)
    picture = _decode(name_or_path)
    return picture if size is None else fit_image(picture, size, fit)


def fit_image(picture: Picture, size: int, fit: str = DEFAULT_FIT) -> Picture:
    """``picture`` made ``size x size`` by ``fit`` (see ``FITS``), with the steps and warnings that says so."""
    _check_fit(size, fit)
    tensor, steps = _fit_tensor(picture.tensor, size, fit)
    width, height = picture.tensor.shape[2], picture.tensor.shape[1]
    warnings = list(picture.warnings)
    scale = {"crop": size / min(width, height), "pad": size / max(width, height)}.get(
        fit, max(size / width, size / height)
    )
    if scale > 1:
        warnings.append(
            f"the image ({width}x{height} px) is smaller than the model's {size}x{size} input: it was upsampled "
            f"{scale:.3g}x, so the model sees (and the map shows) interpolated pixels."
        )
    if fit == "crop" and width * height > 0:
        kept = min(width, height) ** 2 / (width * height)
        if kept < CROP_WARNING:
            warnings.append(
                f"--fit crop keeps only the centre {kept:.0%} of the {width}x{height} picture; "
                "--fit pad or --fit resize shows the model all of it."
            )
    return dataclasses.replace(picture, tensor=tensor, steps=(*picture.steps, *steps), warnings=tuple(warnings))


def center_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side of (3, H, W) to ``size`` (antialiased), crop the centre: (3, size, size) in [0, 1]."""
    return _fit_tensor(image, size, "crop")[0]


def _check_fit(size: int | None, fit: str) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}.")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}.")


def _fit_tensor(image: torch.Tensor, size: int, fit: str) -> tuple[torch.Tensor, list[str]]:
    """(3, H, W) -> (3, size, size) by ``fit``, and the steps taken, in words (pixel boxes are [start, end))."""
    from torchvision.transforms import functional as TF  # here, not at the top: importing torchvision takes seconds

    height, width = image.shape[1:]
    if (height, width) == (size, size):
        return image.clamp(0, 1), []
    if fit == "resize":
        resized = TF.resize(image, [size, size], antialias=True)
        return resized.clamp(0, 1), [f"--fit resize: stretched to {size}x{size} (aspect ratio {width}:{height} lost)"]
    if fit == "pad":
        scale = size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        resized = TF.resize(image, [new_h, new_w], antialias=True).clamp(0, 1)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        padded = torch.full((image.shape[0], size, size), PAD_VALUE, dtype=image.dtype, device=image.device)
        padded[:, top : top + new_h, left : left + new_w] = resized
        return padded, [
            f"--fit pad: resized to {new_w}x{new_h}, padded with mid-grey ({PAD_VALUE}) to {size}x{size}; "
            f"the picture is at x {left}..{left + new_w}, y {top}..{top + new_h}"
        ]
    resized = TF.resize(image, size, antialias=True)
    new_h, new_w = resized.shape[1:]
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)  # torchvision's center_crop
    cropped = TF.crop(resized, top, left, size, size).clamp(0, 1)
    steps = [f"--fit crop: resized to {new_w}x{new_h}"]
    if (new_h, new_w) != (size, size):
        x0, x1 = round(left * width / new_w), round((left + size) * width / new_w)
        y0, y1 = round(top * height / new_h), round((top + size) * height / new_h)
        steps[0] += (
            f", kept the centre {size}x{size}: box x {left}..{left + size}, y {top}..{top + size} "
            f"(x {x0}..{x1}, y {y0}..{y1} of the original)"
        )
    return cropped, steps


def _decode(name_or_path: str | Path) -> Picture:
    """The image as (3, H, W) in [0, 1] at its own size, upright, with its type and scaling."""
    steps: list[str] = []
    if isinstance(name_or_path, str) and name_or_path in PHOTOS:
        import skimage.data

        image = Image.fromarray(np.asarray(getattr(skimage.data, name_or_path)()))
        source = name_or_path
    else:
        path = Path(name_or_path)
        if path.is_dir():
            raise ValueError(
                f"{str(name_or_path)!r} is a directory: give one image file ({FORMATS}) in it, "
                f"or a bundled photo ({', '.join(PHOTOS)})."
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(name_or_path)!r} is neither a bundled photo ({', '.join(PHOTOS)}) nor an existing file."
            )
        source = str(name_or_path)
        try:
            with Image.open(path) as opened:
                opened.load()
                stored = opened.size
                orientation = opened.getexif().get(0x0112)
                image = ImageOps.exif_transpose(opened)
                deep = opened.format == "PNG" and _is_sixteen_bit_colour_png(path)
        except Image.DecompressionBombError as error:
            raise ValueError(f"could not read {str(path)!r}: its header claims too many pixels ({error})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
            raise ValueError(f"could not read {str(path)!r} as an image ({FORMATS} expected): {error}") from None
        if orientation in _ORIENTATIONS:
            steps.append(
                f"turned upright by its EXIF orientation tag ({orientation}: {_ORIENTATIONS[orientation]}; "
                f"stored as {stored[0]}x{stored[1]} px)"
            )
        if deep:  # Pillow decodes 16-bit colour PNGs to 8 bits: read the file again at full depth
            tensor, kind, scaling = _read_sixteen_bit_colour_png(path, orientation)
            return _picture(tensor, source, kind, scaling, steps, [])
    tensor, kind, scaling, warnings = _to_tensor(image, source)
    if source in PHOTOS and not isinstance(name_or_path, Path):
        kind += " photo bundled with scikit-image"
    return _picture(tensor, source, kind, scaling, steps, warnings)


def _picture(
    tensor: torch.Tensor, source: str, kind: str, scaling: str, steps: list[str], warnings: list[str]
) -> Picture:
    """The decoded image's record, with a warning when it is constant."""
    if tensor.numel() and bool(tensor.amax() == tensor.amin()):
        warnings.append(f"the image is constant (every value {float(tensor.flatten()[0]):.3g}): it has no contrast.")
    size = (tensor.shape[2], tensor.shape[1])
    return Picture(tensor, source, size, kind, scaling, tuple(steps), tuple(warnings))


def _is_sixteen_bit_colour_png(path: Path) -> bool:
    """Whether the PNG's header says 16 bits per sample of RGB or RGB with alpha (colour types 2 and 6)."""
    with open(path, "rb") as file:
        header = file.read(26)  # signature (8), IHDR length and name (8), width, height (8), bit depth, colour type
    return len(header) == 26 and header[12:16] == b"IHDR" and header[24] == 16 and header[25] in (2, 6)


def _read_sixteen_bit_colour_png(path: Path, orientation: int | None) -> tuple[torch.Tensor, str, str]:
    """A 16-bit RGB(A) PNG at full depth (pypng; Pillow keeps 8 bits of it): (3, H, W) in [0, 1], upright by
    ``orientation`` as Pillow's ``exif_transpose`` turns it, alpha composited on white; its kind and scaling."""
    import png  # pypng, a pure-Python PNG codec

    try:
        width, height, rows, info = png.Reader(filename=str(path)).read()
        values = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
    except (png.Error, ValueError) as error:
        raise ValueError(f"could not read {str(path)!r} as a 16-bit PNG: {error}") from None
    method = _EXIF_TRANSPOSE.get(orientation)
    if method is not None:  # the same turn as Pillow's, one channel at a time (Pillow has 16-bit greyscale only)
        values = np.stack([np.asarray(Image.fromarray(c).transpose(method)) for c in np.moveaxis(values, 2, 0)], 2)
    image = torch.from_numpy(values.astype(np.float32) / 65535).permute(2, 0, 1)
    kind = "16-bit RGB"
    if info["alpha"]:
        image, alpha = image[:3], image[3:]
        image = image * alpha + (1 - alpha)  # composited on white, as the 8-bit images are
        kind += " with transparency (composited on white)"
    return image.contiguous(), kind, "divided by 65535, the 16-bit maximum"


def _to_tensor(image: Image.Image, source: str) -> tuple[torch.Tensor, str, str, list[str]]:
    """(3, H, W) float32 in [0, 1] from any PIL mode, the pixel type, how it was scaled, and warnings."""
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        values = np.asarray(image)
        if image.mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"{source!r} is a 32-bit integer image with values {values.min()}..{values.max()}: only 0..65535 "
                "(16-bit) is supported; save it as an 8- or 16-bit image."
            )
        grey = torch.from_numpy(values.astype(np.float32) / 65535)
        kind = "16-bit greyscale" if image.mode != "I" else "32-bit integer greyscale"
        return grey.expand(3, *grey.shape).contiguous(), kind, "divided by 65535, the 16-bit maximum", []
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ValueError(f"{source!r} contains NaN or infinite values.")
        warnings = []
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            warnings.append(
                f"the float image's values span {low:.4g}..{high:.4g}, outside the [0, 1] range of float images: "
                "they were clipped to [0, 1]."
            )
        grey = torch.from_numpy(values.clip(0, 1))
        return (
            grey.expand(3, *grey.shape).contiguous(),
            "32-bit float greyscale",
            "taken as [0, 1], the float range",
            warnings,
        )
    kind = _EIGHT_BIT.get(image.mode, image.mode)
    if "transparency" in kind or (image.mode == "P" and "transparency" in image.info):
        kind = kind.replace(" with transparency", "") + " with transparency (composited on white)"
    rgb = torch.from_numpy(np.array(_to_rgb(image))).permute(2, 0, 1)
    return rgb.float() / 255, f"8-bit {kind}", "divided by 255, the 8-bit maximum", []


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
