"""The explain command: its printed classes, N and relative error, the figure it writes, and its one-line errors."""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from PIL import Image

from smoothgrad_lib import cli, explain, load_image, load_model, saliency_map, smoothgrad_estimate
from smoothgrad_lib.aggregates import display_error_map, snr_map
from smoothgrad_lib.models import imagenet_categories
from smoothgrad_lib.noise import seeded_generator as generator
from smoothgrad_lib.plotting import ERROR_SCALE, overlay
from smoothgrad_lib.shapes import CLASSES, make_shapes

ROOT = Path(__file__).resolve().parents[1]
TOP = re.compile(r"^ +(\d)\. (.+) \(class (\d+)\): p = ([0-9.]+)$", re.MULTILINE)
COUNT = re.compile(r"N = (\d+) gradients, relative error \|\|stderr\|\|/\|\|mean\|\| = (\S+)")
FIGURE_SIZE = (1700, 520)  # pixels: figsize (17, 5.2) inches at 100 dpi


@pytest.fixture(scope="module")
def shapes_png(tmp_path_factory) -> tuple[Path, str]:
    """A shapes image saved as an 8-bit PNG, and the name of the shape it shows."""
    batch = make_shapes(1, seed=1)
    pixels = (batch.images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("images") / "shape.png"
    Image.fromarray(pixels).save(path)
    return path, CLASSES[int(batch.labels[0])]


@pytest.fixture
def captured_figures(monkeypatch) -> list:
    """The figures ``explain`` builds during a test, kept for inspection."""
    figures = []
    build = explain.explain_figure

    def keep(*args):
        figures.append(build(*args))
        return figures[-1]

    monkeypatch.setattr(explain, "explain_figure", keep)
    return figures


def figure_axes(fig) -> tuple[list, list]:
    """(the four panels, the three colour bars) of an explain figure."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")], [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


def assert_no_title_runs_into_a_colour_bar(fig) -> None:
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    panels, bars = figure_axes(fig)
    titles = [ax.title.get_window_extent(renderer) for ax in panels]
    for title, ax in zip(titles, panels, strict=True):
        assert title.y0 >= ax.get_window_extent(renderer).y1  # above its panel
        for bar in bars:
            assert not title.overlaps(bar.get_tightbbox(renderer)), ax.get_title()
    for left, right in itertools.pairwise(titles):
        assert not left.overlaps(right)


def top_classes(stdout: str) -> list[tuple[str, int, float]]:
    rows = TOP.findall(stdout)
    assert [int(rank) for rank, *_ in rows] == [1, 2, 3, 4], stdout  # shapes twins have 4 classes
    return [(name, int(index), float(p)) for _, name, index, p in rows]


def check_figure_file(path: Path) -> None:
    """The PNG has the figure's size and four filled panels side by side: in each quarter of its width at least a
    fifth of the pixels are not white (a filled panel covers about two fifths; an empty one only its frame and text)."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == FIGURE_SIZE
        pixels = np.asarray(image.convert("RGB"))
    for quarter in np.array_split(pixels, 4, axis=1):
        assert (quarter.min(2) < 240).mean() > 0.2


def explain_shapes(path: Path, tmp_path: Path, *options: str) -> int:
    """``explain.main`` on ``path`` with the ReLU shapes twin, N = 2, on the CPU; the figure in ``tmp_path``."""
    argv = [
        str(path),
        "--model",
        "shapes-relu",
        "--n-samples",
        "2",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "f.png"),
    ]
    return explain.main([*argv, *options])


def test_shapes_png_prints_classes_n_and_the_library_s_relative_error(shapes_png, tmp_path, capsys, captured_figures):
    path, shape = shapes_png
    out = tmp_path / "fig.png"
    argv = [
        str(path),
        "--model",
        "shapes-relu",
        "--n-samples",
        "8",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert explain.main(argv) == 0
    stdout = capsys.readouterr().out
    rows = top_classes(stdout)
    assert rows[0][0] == shape and rows[0][1] == CLASSES.index(shape)  # the twin recognises the PNG's shape
    assert sorted(name for name, *_ in rows) == sorted(CLASSES)
    probabilities = [p for *_, p in rows]
    assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 3e-3
    assert f"explaining class {CLASSES.index(shape)} '{shape}' (predicted)" in stdout

    loaded = load_model("shapes-relu", device="cpu")
    x = load_image(path, size=64)
    estimate = smoothgrad_estimate(loaded.model, x, CLASSES.index(shape), n_samples=8, generator=generator(3, "cpu"))
    n, error = COUNT.search(stdout).groups()
    assert int(n) == 8
    assert float(error) == pytest.approx(float(estimate.stderr.norm() / estimate.mean.norm()), rel=5e-3)
    check_figure_file(out)

    (fig,) = captured_figures
    panels, bars = figure_axes(fig)
    assert [len(ax.images) for ax in panels] == [1, 1, 1, 1]
    assert [ax.get_title().replace("\n", " ") for ax in panels] == [
        "the model's input (64x64 px)",
        "SmoothGrad (abs), max over channels, clipped at its 99th percentile",
        "the map over the greyed image (the same 99th-percentile clip)",
        "where the map can be trusted: error / the map's contrast (bright: not yet; grey: unknown)",
    ]
    assert all(ax.get_xlabel() == "x (pixels)" and ax.get_ylabel() == "y (pixels)" for ax in panels)
    clip = float(torch.quantile(saliency_map(estimate.mean, normalize=None).flatten(), 0.99))
    assert [ax.get_ylabel() for ax in bars] == [
        f"1 = 99th percentile = {clip:.3g}\nlogit per unit of pixel intensity",
        "map / 99th percentile",
        "stderr / contrast of the map shown\n(1: the error is as large as the contrast)",
    ]
    # The notebooks' normalisation, in the map and under the overlay.
    clipped = saliency_map(estimate.mean, normalize="percentile").numpy()
    assert np.allclose(panels[1].images[0].get_array(), clipped, rtol=1e-5, atol=1e-7)
    assert np.allclose(panels[2].images[0].get_array(), overlay(x, torch.from_numpy(clipped)), atol=1e-6)
    # The trust panel: each pixel's error relative to the map's contrast, on the fixed log scale.
    trust = panels[3].images[0]
    assert isinstance(trust.norm, LogNorm) and (trust.norm.vmin, trust.norm.vmax) == ERROR_SCALE
    expected = display_error_map(estimate.mean[None], estimate.stderr[None])[0].clamp(*ERROR_SCALE)
    assert np.allclose(np.asarray(trust.get_array()), expected.numpy(), rtol=1e-5)
    assert_no_title_runs_into_a_colour_bar(fig)


def test_bundled_photo_with_the_default_model(tmp_path, capsys, captured_figures):
    out = tmp_path / "chelsea.png"
    assert explain.main(["chelsea", "--n-samples", "4", "--device", "cpu", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    rows = TOP.findall(stdout)
    assert [int(rank) for rank, *_ in rows] == [1, 2, 3, 4, 5]
    assert {name for _, name, *_ in rows[:3]} == {"Egyptian cat", "tiger cat", "tabby"}
    assert "model: efficientnet-lite0 on cpu" in stdout
    n, error = COUNT.search(stdout).groups()
    assert int(n) == 4 and 0 < float(error) < 1
    check_figure_file(out)
    assert len(captured_figures[0].axes) == 4 + 3  # four panels, three colour bars


def test_tolerance_stops_once_the_relative_error_is_reached(shapes_png, tmp_path, capsys):
    path, _ = shapes_png
    argv = [
        str(path),
        "--model",
        "shapes-relu",
        "--tolerance",
        "0.1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "f.png"),
    ]
    assert explain.main(argv) == 0
    n, error = COUNT.search(capsys.readouterr().out).groups()
    assert int(n) > explain.PILOT_SAMPLES and float(error) <= 0.1


def test_max_samples_reached_is_a_one_line_warning(shapes_png, tmp_path, capsys):
    path, _ = shapes_png
    argv = [
        str(path),
        "--model",
        "shapes-relu",
        "--tolerance",
        "0.001",
        "--max-samples",
        "6",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "f.png"),
    ]
    assert explain.main(argv) == 0
    captured = capsys.readouterr()
    n, error = COUNT.search(captured.out).groups()
    assert int(n) == 6 and float(error) > 0.001
    warnings = [line for line in captured.err.splitlines() if "warning" in line.lower()]
    assert warnings == [
        f"explain: warning: did not reach --tolerance 0.001 within --max-samples 6 (relative error {error}): "
        "raise --max-samples or --tolerance."
    ]


def test_a_single_sample_has_no_error_estimate(shapes_png, tmp_path, capsys):
    path, _ = shapes_png
    argv = [
        str(path),
        "--model",
        "shapes-relu",
        "--n-samples",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "f.png"),
    ]
    assert explain.main(argv) == 0
    assert COUNT.search(capsys.readouterr().out).groups() == ("1", "n/a")


def test_target_by_name_is_case_insensitive(shapes_png, tmp_path, capsys):
    path, shape = shapes_png
    other = next(name for name in CLASSES if name != shape)
    assert explain_shapes(path, tmp_path, "--target", other.upper()) == 0
    assert f"explaining class {CLASSES.index(other)} '{other}' (p = " in capsys.readouterr().out


def test_class_by_index_or_imagenet_name():
    categories = imagenet_categories()
    assert explain.class_index("285", categories) == 285
    assert explain.class_index("egyptian CAT", categories) == 285
    assert explain.class_index(" Tabby ", categories) == 281
    with pytest.raises(explain.CommandError, match="ambiguous: classes 264, 474"):
        explain.class_index("Cardigan", categories)
    with pytest.raises(explain.CommandError, match="unknown class name 'tabyy'.*Did you mean 'tabby'"):
        explain.class_index("tabyy", categories)


def test_display_error_map_by_hand():
    # The shown channel is the one of largest |mean| (channel 1, then 0, 0, 1); the shown map [4, 1, 1, 0.2] has
    # standard deviation 1.5 over its pixels; each pixel's error in the shown channel over that.
    mean = torch.tensor([[[2.0, -1.0, 1.0, 0.0]], [[-4.0, 0.5, 0.2, 0.2]]])
    stderr = torch.tensor([[[1.0, 0.3, 3.0, 0.0]], [[1.5, 1.0, 0.0, 0.6]]])
    shown = torch.tensor([4.0, 1.0, 1.0, 0.2])
    expected = torch.tensor([[1.5, 0.3, 3.0, 0.6]]) / shown.std(correction=0)
    assert torch.allclose(display_error_map(mean[None], stderr[None])[0], expected)
    with pytest.raises(ValueError, match=r"must both be \(B, C, H, W\)"):
        display_error_map(mean, stderr)


def test_trust_panel_singles_out_the_unreliable_region_whatever_the_maps_floor():
    """A map on a floor (as abs's E|G|) with a known unreliable square: the panel is bright there and only there;
    raising the floor leaves it unchanged, while signal-to-noise calls every pixel trustworthy (|m| / s >= 10)."""
    generator = torch.Generator().manual_seed(0)
    structure = torch.rand(1, 3, 32, 32, generator=generator)
    mean = 10 + structure
    stderr = torch.full_like(mean, 0.01)
    unreliable = torch.zeros(32, 32, dtype=torch.bool)
    unreliable[8:16, 20:28] = True
    stderr[..., unreliable] = 0.5
    panel = display_error_map(mean, stderr)[0]
    assert bool((panel[unreliable] > 0.5).all()) and bool((panel[~unreliable] < 0.1).all())
    assert torch.allclose(display_error_map(mean + 100, stderr), display_error_map(mean, stderr))
    assert float(snr_map(mean, stderr).min()) >= 10


def offline(url, *args, **kwargs):
    raise URLError("[Errno -2] Name or service not known")


ERRORS = {
    "missing file": (
        ["no-such-image.png", "--model", "shapes-relu"],
        r"'no-such-image.png' is neither a bundled photo .* nor an existing file",
    ),
    "unreadable file": (
        ["{text}", "--model", "shapes-relu"],
        r"could not read .*notes.png' as an image \(JPEG, PNG, TIFF, BMP, GIF, WebP expected\)",
    ),
    "directory": (["{tmp}", "--model", "shapes-relu"], r"' is a directory: give one image file \(JPEG, PNG, TIFF"),
    "unknown model": (["{png}", "--model", "alexnet"], r"unknown model 'alexnet'; choose one of efficientnet-lite0"),
    "offline model": (["{png}", "--model", "resnet18"], r"could not download the pretrained weights of 'resnet18'"),
    "unknown class": (["{png}", "--model", "shapes-relu", "--target", "hexagon"], r"unknown class name 'hexagon'"),
    "index too large": (
        ["{png}", "--model", "shapes-relu", "--target", "4"],
        r"class index 4 is out of range: .*0\.\.3",
    ),
    "negative index": (["{png}", "--model", "shapes-relu", "--target", "-1"], r"class index -1 is out of range"),
    "negative noise": (["{png}", "--noise-level", "-0.1"], r"--noise-level must be a finite number >= 0"),
    "nan noise": (["{png}", "--noise-level", "nan"], r"--noise-level must be a finite number >= 0"),
    "zero samples": (["{png}", "--n-samples", "0"], r"--n-samples must be between 1 and 1000000, got 0"),
    "tolerance 0": (["{png}", "--tolerance", "0"], r"--tolerance must be a relative error in \(0, 1\)"),
    "tolerance 1.5": (["{png}", "--tolerance", "1.5"], r"--tolerance must be a relative error in \(0, 1\)"),
    "both N and tolerance": (["{png}", "--n-samples", "8", "--tolerance", "0.1"], r"either --n-samples .* not both"),
    "max without tolerance": (["{png}", "--max-samples", "8"], r"--max-samples only applies with --tolerance"),
    "max too small": (["{png}", "--tolerance", "0.1", "--max-samples", "1"], r"--max-samples must be at least 2"),
    "bad device": (["{png}", "--device", "gpu0"], r"--device 'gpu0' is not a device name"),
    "missing folder": (["{png}", "--out", "{tmp}/no/such/folder/f.png"], r"the folder .* does not exist"),
    "bad extension": (["{png}", "--out", "{tmp}/f.xyz"], r"the file name must end in one of .*\.png"),
    "decompression bomb": (["{png}", "--model", "shapes-relu"], r"could not read .*shape.png'.*too many pixels"),
    "vargrad max 2": (
        ["{png}", "--aggregate", "vargrad", "--tolerance", "0.05", "--max-samples", "2"],
        r"--max-samples must be at least 3 for an error estimate with --aggregate vargrad",
    ),
    "seed overflow": (
        ["{png}", "--seed", "1180591620717411303424"],
        r"--seed must be an integer in 0\.\.18446744073709551615",
    ),
    "negative seed": (["{png}", "--seed", "-1"], r"--seed must be an integer in 0\.\."),
    "huge N": (["{png}", "--n-samples", str(10**30)], r"--n-samples must be between 1 and 1000000"),
    "huge max": (["{png}", "--tolerance", "0.1", "--max-samples", str(10**30)], r"--max-samples must be at most"),
    "constant image": (["{constant}", "--model", "shapes-relu"], r"is constant \(every value 0\.502\).* sigma = 0"),
    "wide integers": (["{wide}", "--model", "shapes-relu"], r"32-bit integer image with values 0\.\.100000"),
}
IMAGE_ERRORS = ("missing file", "unreadable file", "directory", "decompression bomb", "constant image", "wide integers")


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_is_one_line_on_stderr_with_exit_status_2(case, shapes_png, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    if case == "decompression bomb":  # the 64x64 PNG is then over PIL's limit (tests/test_images.py: a real header)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "constant.png")
    Image.fromarray(np.array([[0, 100_000]], np.int32), mode="I").save(tmp_path / "wide.tif")
    if case in IMAGE_ERRORS:  # an image problem is found before the model loads
        monkeypatch.setattr(explain, "load_model", lambda *a, **k: pytest.fail("the model was loaded first"))
    argv, pattern = ERRORS[case]
    files = {"constant": tmp_path / "constant.png", "wide": tmp_path / "wide.tif"}
    argv = [a.format(png=shapes_png[0], text=text, tmp=tmp_path, **files) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "f.png")]
    assert explain.main([*argv, "--device", "cpu"] if "--device" not in argv else argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("explain: error: "), captured.err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "f.png").exists()


def run_module(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "smoothgrad_lib.explain", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_as_a_command_writes_the_default_figure_name_and_fails_without_a_traceback(shapes_png, tmp_path):
    path, shape = shapes_png
    done = run_module(str(path), "--model", "shapes-relu", "--n-samples", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert top_classes(done.stdout)[0][0] == shape
    assert COUNT.search(done.stdout).group(1) == "4"
    assert "4/4" in done.stderr  # the progress bar, on stderr
    check_figure_file(tmp_path / "shape-smoothgrad.png")

    failed = run_module("no-such-image.png", cwd=tmp_path)
    assert failed.returncode == 2 and failed.stdout == ""
    photos = ", ".join(explain.PHOTOS)
    message = f"explain: error: 'no-such-image.png' is neither a bundled photo ({photos}) nor an existing file."
    assert failed.stderr.splitlines() == [message]


def write_image(kind: str, folder: Path) -> Path:
    """Generated files for the cases a user meets: a phone JPEG with an EXIF orientation, 16-bit, float, odd sizes."""
    ramp = np.tile(np.linspace(0, 1, 96), (72, 1))
    if kind == "exif":  # stored 96x72, red left half; tag 6: view it turned 90° clockwise (red on top)
        pixels = np.zeros((72, 96, 3), np.uint8)
        pixels[:, :48, 0] = 255
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = 6
        image.save(folder / "phone.jpg", exif=exif, quality=95)
        return folder / "phone.jpg"
    if kind == "16-bit":
        Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(folder / "deep.png")
        return folder / "deep.png"
    if kind == "float":
        Image.fromarray(ramp.astype(np.float32), mode="F").save(folder / "float.tif")
        return folder / "float.tif"
    side = {"panorama": (1200, 300), "tiny": (10, 10)}[kind]
    pixels = (np.random.default_rng(0).random((side[1], side[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f"{kind}.png")
    return folder / f"{kind}.png"


PICTURES = {
    # kind: (options, lines the printout must hold, warnings, check of the model's input (H, W, 3))
    "exif": (
        (),
        [
            "image: {path} (72x96 px, 8-bit RGB; divided by 255, the 8-bit maximum)",
            "  turned upright by its EXIF orientation tag (6: rotated 90° clockwise; stored as 96x72 px)",
        ],
        [],
        lambda seen: seen[:20, :, 0].mean() > 0.9 and seen[-20:, :, 0].mean() < 0.1,  # red on top, as viewed
    ),
    "16-bit": (
        (),
        ["image: {path} (96x72 px, 16-bit greyscale; divided by 65535, the 16-bit maximum)"],
        [],
        lambda seen: 0.4 < seen.mean() < 0.6,  # a grey ramp, not white
    ),
    "float": (
        (),
        ["image: {path} (96x72 px, 32-bit float greyscale; taken as [0, 1], the float range)"],
        [],
        lambda seen: seen.max() > 0.8,  # not black (the centre crop of a 0..1 ramp)
    ),
    "panorama": (
        (),
        [
            "image: {path} (1200x300 px, 8-bit RGB; divided by 255, the 8-bit maximum)",
            "  --fit crop: resized to 256x64, kept the centre 64x64: box x 96..160, y 0..64 "
            "(x 450..750, y 0..300 of the original)",
        ],
        ["--fit crop keeps only the centre 25% of the 1200x300 picture"],
        lambda seen: seen.shape == (64, 64, 3),
    ),
    "tiny": (
        ("--fit", "pad"),
        ["  --fit pad: resized to 64x64, padded with mid-grey (0.5) to 64x64; the picture is at x 0..64, y 0..64"],
        ["the image (10x10 px) is smaller than the model's 64x64 input: it was upsampled 6.4x"],
        lambda seen: seen.shape == (64, 64, 3),
    ),
}


@pytest.mark.parametrize("kind", PICTURES)
def test_the_model_sees_the_picture_the_user_sees_and_the_printout_says_what_was_done(
    kind, tmp_path, capsys, captured_figures
):
    path = write_image(kind, tmp_path)
    options, lines, warnings, check = PICTURES[kind]
    assert explain_shapes(path, tmp_path, *options) == 0
    captured = capsys.readouterr()
    printed = captured.out.splitlines()
    for line in lines:
        assert line.format(path=path) in printed, captured.out
    assert "model: shapes-relu on cpu (input 64x64 px)" in printed
    said = [line for line in captured.err.splitlines() if line.startswith("explain: warning:")]
    assert len(said) == len(warnings) and all(w in line for w, line in zip(warnings, said, strict=True)), said
    seen = np.asarray(figure_axes(captured_figures[0])[0][0].images[0].get_array())
    assert check(seen)


def test_a_constant_image_without_noise_is_a_warning_and_sigma_is_printed(tmp_path, capsys):
    path = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(path)
    assert explain_shapes(path, tmp_path, "--noise-level", "0") == 0
    captured = capsys.readouterr()
    assert "explain: warning: the image is constant (every value 0.502): it has no contrast." in captured.err
    assert "SmoothGrad (abs, noise level 0.0, sigma 0): N = 2 gradients" in captured.out


def test_sigma_is_the_noise_level_times_the_image_s_range(shapes_png, tmp_path, capsys):
    assert explain_shapes(shapes_png[0], tmp_path, "--noise-level", "0.2") == 0
    x = load_image(shapes_png[0], size=64)
    assert f"noise level 0.2, sigma {0.2 * float(x.max() - x.min()):.3g}): N = 2" in capsys.readouterr().out


def help_text(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_one_full_help_from_both_entry_points(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    alone = help_text(explain.main, ["--help"], capsys)
    command = help_text(cli.main, ["explain", "--help"], capsys)
    flat = " ".join(command.split())  # the usage lines wrap where the two names' lengths put them
    assert flat == " ".join(alone.replace("python -m smoothgrad_lib.explain", "smoothgrad explain").split())
    for wanted in (
        "examples: smoothgrad explain chelsea",  # an example, with the console script
        "Exit status: 0 when the figure is written; 2 for a problem with the input",
        "efficientnet-lite0, shapes-relu, shapes-softplus, shapes-relu-permuted work offline",
        "resnet18, resnet50, vgg16 download their ImageNet weights on first use",
        "Non-square images: --fit crop (the default)",
        "(default: crop)",
        "16-bit ones (greyscale, RGB or RGBA, at their full depth) by 65535",
        "scaled so its 99th percentile is 1 and clipped above, as in the report's notebooks",
    ):
        assert wanted in flat, wanted


def test_top_level_help_has_no_rest_markup(capsys):
    text = help_text(cli.main, ["--help"], capsys)
    assert "`" not in text and "explain" in text
