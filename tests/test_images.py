"""Reading images as the user sees them: EXIF orientation, 16-bit and float files, the three fits, and what is said.

Every image is generated here (PIL / numpy, written to tmp_path); each test checks the tensor the model would get
and the record ``read_image`` keeps of what it did.
"""

import struct
import zlib

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from smoothgrad_lib import load_image
from smoothgrad_lib.images import FITS, PAD_VALUE, center_square, fit_image, read_image


def fake_png_header(path, width: int, height: int) -> None:
    """A PNG of a signature, an IHDR claiming ``width x height`` RGB pixels, and IEND: no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_exif_orientation_turns_a_phone_photo_upright(tmp_path):
    # Stored 60 wide x 40 high, red left half, blue right half; tag 6 says "rotate 90° clockwise to view".
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30, 0] = 255
    pixels[:, 30:, 2] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)

    picture = read_image(path, size=None)
    assert picture.tensor.shape == (3, 60, 40) and picture.size == (40, 60)  # upright: 40 wide, 60 high
    top, bottom = picture.tensor[:, :25], picture.tensor[:, 35:]
    assert top[0].mean() > 0.9 and top[2].mean() < 0.1  # the stored left (red) is now on top
    assert bottom[2].mean() > 0.9 and bottom[0].mean() < 0.1
    assert picture.steps == (
        "turned upright by its EXIF orientation tag (6: rotated 90° clockwise; stored as 60x40 px)",
    )


def test_sixteen_bit_png_is_scaled_by_65535_not_clipped_to_white(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 50).round().astype(np.uint16), (30, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"

    picture = read_image(path, size=None)
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535)
    assert torch.equal(picture.tensor, expected.expand(3, -1, -1))
    assert abs(float(picture.tensor.mean()) - 0.5) < 1e-3  # not 1.0 (white)
    assert picture.kind == "16-bit greyscale" and "65535" in picture.scaling
    assert "16-bit greyscale; divided by 65535" in picture.describe()


def test_float_tiff_is_taken_as_zero_to_one_not_black(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (20, 1))
    path = tmp_path / "float.tif"
    Image.fromarray(ramp, mode="F").save(path)
    assert Image.open(path).mode == "F"

    picture = read_image(path, size=None)
    assert torch.equal(picture.tensor, torch.from_numpy(ramp).expand(3, -1, -1))
    assert float(picture.tensor.max()) == 1.0  # not 1/255
    assert picture.kind == "32-bit float greyscale" and "[0, 1]" in picture.scaling and picture.warnings == ()


def test_float_values_outside_zero_to_one_are_clipped_with_a_warning(tmp_path):
    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([[-0.5, 0.25], [0.75, 255.0]], np.float32), mode="F").save(path)
    picture = read_image(path, size=None)
    assert torch.equal(picture.tensor[0], torch.tensor([[0.0, 0.25], [0.75, 1.0]]))
    (warning,) = picture.warnings
    assert "span -0.5..255" in warning and "clipped" in warning


def test_nan_float_and_wide_integer_images_are_refused(tmp_path):
    path = tmp_path / "nan.tif"
    Image.fromarray(np.array([[0.0, np.nan]], np.float32), mode="F").save(path)
    with pytest.raises(ValueError, match="NaN or infinite"):
        read_image(path)
    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 100_000]], np.int32), mode="I").save(path)
    with pytest.raises(ValueError, match=r"32-bit integer image with values 0\.\.100000"):
        read_image(path)


def test_a_header_claiming_thirty_thousand_squared_pixels_is_a_value_error(tmp_path):
    path = tmp_path / "bomb.png"
    fake_png_header(path, 30000, 30000)
    with pytest.raises(ValueError, match=r"could not read .*bomb.png'.*too many pixels"):
        read_image(path)


def test_crop_says_what_it_kept_and_warns_when_it_keeps_little(tmp_path):
    pixels = (np.random.default_rng(0).random((300, 1200, 3)) * 255).astype(np.uint8)
    path = tmp_path / "panorama.png"
    Image.fromarray(pixels).save(path)

    picture = read_image(path, size=64)
    assert picture.tensor.shape == (3, 64, 64) and picture.size == (1200, 300)
    assert torch.equal(picture.tensor, center_square(load_image(path, size=None), 64))
    assert picture.steps == (
        "--fit crop: resized to 256x64, kept the centre 64x64: box x 96..160, y 0..64 "
        "(x 450..750, y 0..300 of the original)",
    )
    (warning,) = picture.warnings
    assert "keeps only the centre 25% of the 1200x300 picture" in warning and "--fit pad" in warning
    assert "image: " in picture.describe() and "(1200x300 px, 8-bit RGB;" in picture.describe()


def test_pad_shows_the_model_the_whole_picture_on_mid_grey(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (200, 50), (0, 0, 0)).save(path)
    picture = read_image(path, size=64, fit="pad")
    assert picture.tensor.shape == (3, 64, 64)
    assert torch.equal(picture.tensor[:, 24:40], torch.zeros(3, 16, 64))  # the picture, resized to 64x16
    assert bool((picture.tensor[:, :24] == PAD_VALUE).all() and (picture.tensor[:, 40:] == PAD_VALUE).all())
    assert picture.steps[-1].startswith("--fit pad: resized to 64x16, padded with mid-grey (0.5) to 64x64")
    assert not any("keeps only" in warning for warning in picture.warnings)


def test_resize_stretches(tmp_path):
    path = tmp_path / "tall.png"
    pixels = (np.random.default_rng(1).random((90, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    picture = read_image(path, size=32, fit="resize")
    expected = TF.resize(load_image(path, size=None), [32, 32], antialias=True).clamp(0, 1)
    assert torch.equal(picture.tensor, expected)
    assert picture.steps == ("--fit resize: stretched to 32x32 (aspect ratio 30:90 lost)",)


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("side", [1, 10])
def test_images_smaller_than_the_input_are_upsampled_with_a_warning(tmp_path, fit, side):
    path = tmp_path / "tiny.png"
    pixels = (np.random.default_rng(side).random((side, side, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    picture = read_image(path, size=64, fit=fit)
    assert picture.tensor.shape == (3, 64, 64)
    assert any(f"({side}x{side} px) is smaller than the model's 64x64 input" in w for w in picture.warnings)
    at_its_own_size = read_image(path, size=side, fit=fit)
    assert not any("smaller" in warning for warning in at_its_own_size.warnings)


def test_constant_images_are_flagged(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("RGB", (8, 8), (128, 128, 128)).save(path)
    picture = read_image(path, size=None)
    assert picture.warnings == ("the image is constant (every value 0.502): it has no contrast.",)


def test_load_image_is_the_tensor_of_read_image_and_keeps_the_photos_as_they_were():
    for name in ("chelsea", "camera"):
        full = load_image(name, size=None)
        old_preprocessing = TF.center_crop(TF.resize(full, 224, antialias=True), [224, 224]).clamp(0, 1)
        assert torch.equal(load_image(name), old_preprocessing)
        assert torch.equal(read_image(name).tensor, old_preprocessing)
    picture = read_image("chelsea")
    assert picture.describe().splitlines()[0] == (
        "image: chelsea (451x300 px, 8-bit RGB photo bundled with scikit-image; divided by 255, the 8-bit maximum)"
    )


def test_fit_image_adds_to_what_read_image_did(tmp_path):
    picture = read_image("camera", size=None)
    fitted = fit_image(picture, 100, "pad")
    assert fitted.tensor.shape == (3, 100, 100) and fitted.size == picture.size == (512, 512)
    assert fitted.steps == (
        "--fit pad: resized to 100x100, padded with mid-grey (0.5) to 100x100; the picture is at x 0..100, y 0..100",
    )


def test_bad_fit_or_size():
    with pytest.raises(ValueError, match="fit must be one of crop, pad, resize, got 'zoom'"):
        load_image("chelsea", fit="zoom")
    with pytest.raises(ValueError, match="size must be a positive int or None, got 0"):
        read_image("chelsea", size=0)


def _sixteen_bit_png(path, values: np.ndarray, orientation: int | None = None) -> None:
    """Write (H, W, 3 or 4) uint16 as a 16-bit RGB(A) PNG (pypng: Pillow cannot write one), with an EXIF
    orientation tag in an eXIf chunk if given."""
    import png

    height, width, planes = values.shape
    writer = png.Writer(width, height, bitdepth=16, greyscale=False, alpha=planes == 4)
    with open(path, "wb") as file:
        writer.write(file, values.reshape(height, width * planes).tolist())
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        chunks = list(png.Reader(filename=str(path)).chunks())
        chunks.insert(1, (b"eXIf", exif.tobytes()[6:]))  # without Pillow's "Exif\0\0" prefix
        with open(path, "wb") as file:
            png.write_chunks(file, chunks)


def test_sixteen_bit_rgb_png_is_read_at_full_depth_and_said_to_be(tmp_path):
    """Pillow opens a 16-bit RGB PNG as 8-bit RGB: values that differ only in their low byte must stay apart."""
    rng = np.random.default_rng(0)
    high = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint16) << 8
    values = high | rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint16)
    path = tmp_path / "deep-rgb.png"
    _sixteen_bit_png(path, values)
    assert Image.open(path).mode == "RGB"  # what Pillow alone would give: 8 bits

    picture = read_image(path, size=None)
    assert torch.equal(picture.tensor, torch.from_numpy(values.astype(np.float32) / 65535).permute(2, 0, 1))
    assert not torch.equal(picture.tensor, torch.from_numpy(high.astype(np.float32) / 65535).permute(2, 0, 1))
    assert picture.size == (30, 20) and picture.kind == "16-bit RGB"
    assert "(30x20 px, 16-bit RGB; divided by 65535, the 16-bit maximum)" in picture.describe()
    assert read_image(path, size=8).tensor.shape == (3, 8, 8)


def test_sixteen_bit_rgba_png_is_composited_on_white_and_turned_upright(tmp_path):
    values = np.zeros((4, 6, 4), dtype=np.uint16)
    values[..., 0] = 65535  # red
    values[..., 3] = 65535  # opaque ...
    values[0, :, 3] = 0  # ... but the top row, transparent
    values[1, 0, :3], values[1, 0, 3] = 1, 65535  # one nearly black opaque pixel, distinguishable only at 16 bits
    path = tmp_path / "deep-rgba.png"
    _sixteen_bit_png(path, values, orientation=6)  # stored sideways: the viewer turns it 90° clockwise

    picture = read_image(path, size=None)
    assert picture.kind == "16-bit RGB with transparency (composited on white)"
    assert picture.size == (4, 6), "turned upright: 4 wide, 6 high"
    upright = np.rot90(values, k=-1)  # 90° clockwise, as the viewer shows it
    alpha = upright[..., 3:].astype(np.float64) / 65535
    expected = upright[..., :3] / 65535 * alpha + (1 - alpha)
    assert np.allclose(picture.tensor.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert torch.all(picture.tensor[:, :, -1] == 1), "the transparent row, now the right column, is white"
    assert float(picture.tensor[0, 0, -2]) == pytest.approx(1 / 65535, rel=1e-6)
    assert picture.steps == ("turned upright by its EXIF orientation tag (6: rotated 90° clockwise; stored as 6x4 px)",)
