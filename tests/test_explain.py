"""The explain command: its printed classes, N and relative error, the figure it writes, and its one-line errors."""

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
from PIL import Image

from smoothgrad_lib import explain, load_image, load_model, saliency_map, smoothgrad_estimate
from smoothgrad_lib.models import imagenet_categories
from smoothgrad_lib.noise import seeded_generator as generator
from smoothgrad_lib.shapes import CLASSES, make_shapes

ROOT = Path(__file__).resolve().parents[1]
TOP = re.compile(r"^ +(\d)\. (.+) \(class (\d+)\): p = ([0-9.]+)$", re.MULTILINE)
COUNT = re.compile(r"N = (\d+) gradients, relative error \|\|stderr\|\|/\|\|mean\|\| = (\S+)")
FIGURE_SIZE = (1700, 460)  # pixels: figsize (17, 4.6) inches at 100 dpi


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
    """The figures ``explain.figure`` builds during a test, kept for inspection."""
    figures = []
    build = explain.figure

    def keep(*args):
        figures.append(build(*args))
        return figures[-1]

    monkeypatch.setattr(explain, "figure", keep)
    return figures


def top_classes(stdout: str) -> list[tuple[str, int, float]]:
    rows = TOP.findall(stdout)
    assert [int(rank) for rank, *_ in rows] == [1, 2, 3, 4], stdout  # shapes twins have 4 classes
    return [(name, int(index), float(p)) for _, name, index, p in rows]


def check_figure_file(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == FIGURE_SIZE
    assert path.stat().st_size > 20_000  # four filled panels, not a blank canvas


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
    panels = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    assert [len(ax.images) for ax in panels] == [1, 1, 1, 1]
    assert [ax.get_title() for ax in panels] == [
        "image",
        "SmoothGrad (abs), max over channels",
        "overlay on the greyed image",
        "relative error of the map",
    ]
    assert all(ax.get_xlabel() == "x (pixels)" and ax.get_ylabel() == "y (pixels)" for ax in panels)
    assert [ax.get_ylabel() for ax in bars] == [
        "logit per unit of pixel intensity",
        "map, min-max normalised (1 = max)",
        "stderr / |mean| (clipped to [0, 1])",
    ]
    shown_map = panels[1].images[0].get_array()
    assert np.allclose(shown_map, saliency_map(estimate.mean, normalize=None).numpy(), rtol=1e-5, atol=1e-8)
    error_map = np.asarray(panels[3].images[0].get_array())
    assert error_map.min() >= 0 and error_map.max() <= 1 and 0 < np.median(error_map) < 1


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
    assert len(warnings) == 1 and warnings[0].startswith("explain: warning:") and "max_samples=6" in warnings[0]


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
    assert explain.main([*argv, "--target", other.upper()]) == 0
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


def test_relative_error_map_by_hand():
    # pixels: |mean| largest in channel 1 (4 -> 1/4); channel 0 (0/1 -> 0); error > value (clipped to 1);
    # zero mean with zero error (every gradient agreed -> 0); zero mean with an error (-> 1).
    mean = torch.tensor([[[2.0, -1.0, 1.0, 0.0, 0.0]], [[-4.0, 0.5, 0.2, 0.0, 0.0]]])
    stderr = torch.tensor([[[1.0, 0.0, 3.0, 0.0, 0.2]], [[1.0, 1.0, 0.0, 0.0, 0.2]]])
    expected = torch.tensor([[0.25, 0.0, 1.0, 0.0, 1.0]])
    assert torch.equal(explain.relative_error_map(mean, stderr), expected)


def offline(url, *args, **kwargs):
    raise URLError("[Errno -2] Name or service not known")


ERRORS = {
    "missing file": (
        ["no-such-image.png", "--model", "shapes-relu"],
        r"'no-such-image.png' is neither a bundled photo .* nor an existing file",
    ),
    "unreadable file": (["{text}", "--model", "shapes-relu"], r"could not read .* as an image"),
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
    "zero samples": (["{png}", "--n-samples", "0"], r"--n-samples must be at least 1, got 0"),
    "tolerance 0": (["{png}", "--tolerance", "0"], r"--tolerance must be a relative error in \(0, 1\)"),
    "tolerance 1.5": (["{png}", "--tolerance", "1.5"], r"--tolerance must be a relative error in \(0, 1\)"),
    "both N and tolerance": (["{png}", "--n-samples", "8", "--tolerance", "0.1"], r"either --n-samples .* not both"),
    "max without tolerance": (["{png}", "--max-samples", "8"], r"--max-samples only applies with --tolerance"),
    "max too small": (["{png}", "--tolerance", "0.1", "--max-samples", "1"], r"--max-samples must be at least 2"),
    "bad device": (["{png}", "--device", "gpu0"], r"--device 'gpu0' is not a device name"),
    "missing folder": (["{png}", "--out", "{tmp}/no/such/folder/f.png"], r"the folder .* does not exist"),
    "bad extension": (["{png}", "--out", "{tmp}/f.xyz"], r"the file name must end in one of .*\.png"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_is_one_line_on_stderr_with_exit_status_2(case, shapes_png, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    argv, pattern = ERRORS[case]
    argv = [a.format(png=shapes_png[0], text=text, tmp=tmp_path) for a in argv]
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
