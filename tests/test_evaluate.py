"""``smoothgrad evaluate``: maps and scores equal the library's, a killed run resumes to the same files, two torchrun
processes give what one gives, the TorchScript and factory forms, and each bad input stops with one line."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smoothgrad_lib import cli
from smoothgrad_lib.evaluate import image_seed, list_images, read_records
from smoothgrad_lib.faithfulness import aopc, curve_auc, deletion_curve
from smoothgrad_lib.images import read_image
from smoothgrad_lib.maps import saliency_map
from smoothgrad_lib.methods import all_attributions
from smoothgrad_lib.shapes import CLASSES, write_shapes
from smoothgrad_lib.stats import mean_ci
from smoothgrad_lib.twins import load_twin

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 6
METHODS = ["vanilla", "smoothgrad", "blurred_vanilla", "random"]
FAST = ["--methods", *METHODS, "--n-samples", "4", "--steps", "4", "--sanity", "2", "--no-progress"]


def evaluate(*argv: object) -> int:
    """The command in this process, on one thread (as each torchrun process runs), so that runs compare bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cli.main(["evaluate", *map(str, argv)])
    finally:
        torch.set_num_threads(threads)


def command(*argv: object, torchrun: int = 0) -> list[str]:
    runner = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else []
    return [sys.executable, *runner, "-m", "smoothgrad_lib", "evaluate", *map(str, argv)]


def environment() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def maps_of(out: Path) -> dict[str, dict[str, np.ndarray]]:
    return {
        path.relative_to(out / "maps").as_posix(): dict(np.load(path)) for path in sorted((out / "maps").rglob("*.npz"))
    }


def assert_same_results(a: Path, b: Path) -> None:
    maps_a, maps_b = maps_of(a), maps_of(b)
    assert maps_a.keys() == maps_b.keys()
    for name, arrays in maps_a.items():
        assert arrays.keys() == maps_b[name].keys()
        for method, values in arrays.items():
            assert np.array_equal(values, maps_b[name][method]), (name, method)
    for table in ("per_image.csv", "summary.csv", "contrasts.csv"):
        assert (a / table).read_text() == (b / table).read_text(), table


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    write_shapes(folder / "images", N_IMAGES, seed=3)
    return folder


@pytest.fixture(scope="module")
def two(data: Path) -> Path:
    """A folder with the first two images of ``data``: for the runs that need no more."""
    folder = data / "two"
    folder.mkdir()
    for name in list_images(data / "images")[:2]:
        (folder / name).write_bytes((data / "images" / name).read_bytes())
    return folder


@pytest.fixture(scope="module")
def reference(data: Path) -> Path:
    out = data / "reference"
    assert evaluate("--model", "shapes-relu", "--images", data / "images", "--out", out, *FAST) == 0
    return out


def test_maps_and_scores_are_the_librarys(data: Path, reference: Path):
    records = read_records(reference)
    assert [r["image"] for r in records] == list_images(data / "images") and len(records) == N_IMAGES
    model = load_twin("relu")
    name = records[1]["image"]
    x = read_image(data / "images" / name, 64).tensor[None]
    target = int(model(x).argmax())
    assert records[1]["target"] == target and records[1]["target_from"] == "prediction"
    expected = all_attributions(
        model,
        x,
        target,
        gradcam_layer="14",
        seed=image_seed(0, name),
        levels={0.15: ("abs",)},
        n_samples=4,
        ig_steps=16,
        methods=METHODS,
        noise_device="cpu",
    )
    stored = np.load(reference / "maps" / f"{name}.npz")  # numpy alone reads the maps
    assert sorted(stored.files) == sorted(METHODS)
    for method, attribution in expected.items():
        key = method.removesuffix("_abs_0.15")
        assert stored[key].dtype == np.float32 and stored[key].shape == (64, 64)
        torch.testing.assert_close(torch.from_numpy(stored[key]), saliency_map(attribution, normalize=None)[0])
    vanilla = torch.from_numpy(stored["vanilla"])[None]
    generator = torch.Generator().manual_seed(image_seed(0, name, "ties"))
    curve = deletion_curve(model, x, vanilla, target, baseline="blur", steps=4, generator=generator)
    scores = records[1]["scores"]["vanilla"]
    assert scores["deletion_auc"] == pytest.approx(float(curve_auc(curve)[0]), abs=1e-6)
    assert scores["aopc_morf"] == pytest.approx(float(aopc(curve)[0]), abs=1e-6)


def test_summary_tables_are_means_over_the_images_with_t_intervals(reference: Path):
    with (reference / "per_image.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == N_IMAGES * len(METHODS)
    with (reference / "summary.csv").open() as handle:
        summary = {(r["method"], r["score"]): r for r in csv.DictReader(handle)}
    insertion = [float(r["insertion_auc"]) for r in rows if r["method"] == "smoothgrad"]
    interval = mean_ci(insertion)
    row = summary[("smoothgrad", "insertion_auc")]
    assert float(row["mean"]) == pytest.approx(interval.estimate, rel=1e-5)
    assert float(row["low"]) == pytest.approx(interval.low, rel=1e-5) and int(row["n"]) == N_IMAGES
    assert int(summary[("smoothgrad", "randomised_rho")]["n"]) == 2  # --sanity 2: the first two images
    assert float(summary[("vanilla", "floor_rho")]["mean"]) == 1.0  # a deterministic map is its own floor
    # the random map is the null: its floor is no agreement at all, and it sits far from the trained maps' floors
    assert abs(float(summary[("random", "floor_rho")]["mean"])) < 0.1
    with (reference / "contrasts.csv").open() as handle:
        contrasts = list(csv.DictReader(handle))
    assert [(c["contrast"], c["score"]) for c in contrasts] == [
        ("smoothgrad vs vanilla", "deletion_auc"),
        ("smoothgrad vs blurred_vanilla", "deletion_auc"),
        ("smoothgrad vs vanilla", "insertion_auc"),
        ("smoothgrad vs blurred_vanilla", "insertion_auc"),
    ]
    assert all(float(c["p_holm"]) >= float(c["p"]) for c in contrasts)
    page = (reference / "summary.md").read_text()
    assert "## Declared contrasts" in page and "](figure.png)" in page
    run = json.loads((reference / "run.json").read_text())
    assert run["images"] == N_IMAGES and run["processes"] == 1 and run["command"].startswith("smoothgrad evaluate")
    assert (reference / "figure.png").stat().st_size > 1000


def test_a_killed_run_resumes_and_two_torchrun_processes_give_what_one_gives(data: Path, reference: Path):
    """One process is killed after its first image; two torchrun processes finish the rest (one subprocess start
    less than two tests): the files equal the uninterrupted single-process run's, bit for bit."""
    out = data / "killed"
    argv = ("--model", "shapes-relu", "--images", data / "images", "--out", out, *FAST)
    process = subprocess.Popen(command(*argv), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "maps").glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {path.name: path.stat().st_mtime_ns for path in (out / "maps").glob("*.json")}
    assert 1 <= len(done) < N_IMAGES  # killed after its first image
    subprocess.run(command(*argv, torchrun=2), check=True, env=environment(), capture_output=True, timeout=300)
    shares = [json.loads(p.read_text())["images"] for p in sorted((out / "ranks").glob("rank-*.json"))]
    left = N_IMAGES - len(done)
    assert shares == [(left + 1) // 2, left // 2]  # only the images not yet done, shared by the sampler
    assert {name: (out / "maps" / name).stat().st_mtime_ns for name in done} == done  # finished images kept
    assert json.loads((out / "run.json").read_text())["processes"] == 2
    assert_same_results(reference, out)


def test_torchscript_and_factory_models(data: Path, two: Path, reference: Path, tmp_path: Path):
    twin = load_twin("relu")
    scripted = tmp_path / "twin.pt"
    with pytest.warns(FutureWarning):  # TorchScript is deprecated in torch 2.9+, and still what many models ship as
        torch.jit.save(torch.jit.script(twin), scripted)
    torch.save(twin.state_dict(), tmp_path / "state.pt")
    labels = [f"{name},{name.split('_')[0]}" for name in list_images(two)]
    (tmp_path / "labels.csv").write_text("\n".join(["image,label", *labels]) + "\n")
    factory = ("--model", "smoothgrad_lib.twins:ShapesCNN", "--weights", tmp_path / "state.pt", "--size", 64, *FAST)
    assert evaluate(*factory, "--images", data / "images", "--out", tmp_path / "factory") == 0
    assert_same_results(reference, tmp_path / "factory")  # the same network as the registry's twin
    named = ("--labels", tmp_path / "labels.csv", "--classes", *CLASSES, "--methods", "vanilla", "grad_cam")
    assert evaluate(*factory, "--images", two, "--out", tmp_path / "labelled", *named) == 0
    records = read_records(tmp_path / "labelled")
    assert [CLASSES[r["target"]] for r in records] == [n.split("_")[0] for n in list_images(two)]
    assert {r["target_from"] for r in records} == {"label"}
    only = ("--methods", "vanilla", "grad_cam")
    assert evaluate("--model", scripted, "--images", two, "--size", 64, *FAST, *only, "--out", tmp_path / "script") == 0
    with (tmp_path / "script" / "unavailable.csv").open() as handle:
        reasons = dict(csv.reader(handle))
    assert "ScriptModules" in reasons["grad_cam"]  # Captum's hooks need an eager module: said, not dropped
    assert reasons["grad_cam"].startswith("a TorchScript model takes no forward or backward hooks")
    assert reasons["model randomisation check"].startswith("a TorchScript model takes no forward or backward hooks")
    scripted_maps, eager_maps = maps_of(tmp_path / "script"), maps_of(reference)
    for name, arrays in scripted_maps.items():
        assert list(arrays) == ["vanilla"]
        np.testing.assert_allclose(arrays["vanilla"], eager_maps[name]["vanilla"], rtol=1e-5, atol=1e-7)


def test_methods_that_cannot_run_on_the_model_are_listed_with_the_reason(two: Path, tmp_path: Path):
    """Guided Backprop and LRP on the Softplus twin (no nn.ReLU, no LRP rule for Softplus): listed, not dropped."""
    argv = ("--model", "shapes-softplus", "--images", two, "--steps", "4", "--sanity", "1", "--no-progress")
    assert evaluate(*argv, "--methods", "vanilla", "guided_backprop", "lrp", "--out", tmp_path / "out") == 0
    with (tmp_path / "out" / "unavailable.csv").open() as handle:
        reasons = dict(csv.reader(handle))
    assert "has no nn.ReLU modules" in reasons["guided_backprop"]
    assert "without an LRP rule in Captum: Softplus" in reasons["lrp"]
    assert {method for record in read_records(tmp_path / "out") for method in record["scores"]} == {"vanilla"}
    page = (tmp_path / "out" / "summary.md").read_text()
    assert "## What cannot run on this model" in page and "guided_backprop" in page and "lrp" in page


def test_a_factory_in_the_current_folder_and_an_out_inside_the_images(two, tmp_path, monkeypatch, capsys):
    """The console script does not put the current folder on sys.path as python -m does: the command does, so that
    mymodel:build is found beside the data; and an OUT inside the images' folder is not read as images."""
    images = tmp_path / "images"
    shutil.copytree(two, images)
    (tmp_path / "mymodel.py").write_text(
        "from smoothgrad_lib.twins import load_twin\n\ndef build():\n    return load_twin('relu')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    argv = ("--model", "mymodel:build", "--size", 64, "--images", images, "--out", images / "results", *FAST)
    assert evaluate(*argv) == 0 and evaluate(*argv) == 0  # the second run finds the first's figure.png: not an image
    assert [r["image"] for r in read_records(images / "results")] == list_images(two)
    assert "results/figure.png" not in (images / "results" / "skipped.csv").read_text()
    assert len(json.loads((images / "results" / "run.json").read_text())["sessions"]) == 2  # both runs' times
    assert "note: no --weights" in capsys.readouterr().err
    assert "**Note**: no --weights" in (images / "results" / "summary.md").read_text()
    # A changed model module is another model: the run is not resumed with it.
    (tmp_path / "mymodel.py").write_text((tmp_path / "mymodel.py").read_text() + "# changed\n")
    assert evaluate(*argv) == 2 and "(model_files: " in capsys.readouterr().err
    (tmp_path / "soft.py").write_text(
        "import torch\nfrom smoothgrad_lib.twins import load_twin\n\n"
        "def build():\n    return torch.nn.Sequential(load_twin('relu'), torch.nn.Softmax(1))\n"
    )
    soft = ("--model", "soft:build", "--size", 64, "--images", two, "--out", tmp_path / "soft", *FAST)
    assert evaluate(*soft, "--maps-only") == 0
    assert "note: the model's outputs look like probabilities" in capsys.readouterr().err


def test_an_unreadable_image_is_skipped_and_listed(two: Path, tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    for name in list_images(two):
        (images / name).write_bytes((two / name).read_bytes())
    (images / "a_broken.png").write_text("not a picture")  # first by name
    bright = np.linspace(0, 1000, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(bright, mode="F").save(images / "z_float.tif")  # read, with its values clipped to [0, 1]
    assert evaluate("--model", "shapes-relu", "--images", images, "--out", tmp_path / "out", *FAST) == 0
    with (tmp_path / "out" / "skipped.csv").open() as handle:
        skipped = list(csv.DictReader(handle))
    assert [row["image"] for row in skipped] == ["a_broken.png"] and "a_broken.png" in skipped[0]["reason"]
    assert len(read_records(tmp_path / "out")) == 3
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert settings["sanity_images"] == list_images(two)  # --sanity 2: the first two that can be read
    with (tmp_path / "out" / "read_warnings.csv").open() as handle:
        warned = list(csv.DictReader(handle))
    assert [row["image"] for row in warned] == ["z_float.tif"] and "clipped to [0, 1]" in warned[0]["warning"]
    assert "1 read with a warning" in (tmp_path / "out" / "summary.md").read_text()


def test_a_folder_with_no_readable_image_exits_2(tmp_path: Path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_text("not a picture")
    assert evaluate("--model", "shapes-relu", "--images", tmp_path / "images", "--out", tmp_path / "out", *FAST) == 2
    assert "could be read" in capsys.readouterr().err and "broken.png" in (tmp_path / "out" / "skipped.csv").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--model", "torch.nn:Identity", "--size", 64), r"is \(1, 3, 64, 64\), not logits \(batch, classes\)"),
        (("--model", "shapes-relu", "--labels", "{bad_name}"), r"names 1 image that are not in --images"),
        (("--model", "shapes-relu", "--labels", "{bad_class}"), r"1 unknown class \['hexagon'\] .*\(circle, square"),
        (("--model", "shapes-relu", "--labels", "{conflict}"), r"gives 1 image two different labels"),
        (("--model", "broken_mod:build"), r"importing 'broken_mod' failed: SyntaxError"),
        (("--model", "{state}"), r"holds weights \(a state dict\), not a model: .*--weights"),
        (("--model", "shapes-relu", "--steps", "1"), r"--steps must be an integer >= 2"),
        (
            ("--model", "shapes-relu", "--methods", "grad_cam", "--gradcam-layer", "17"),
            r"Grad-CAM fails on --gradcam-layer '17'",
        ),
        (("--model", "shapes-relu", "--methods", "vanila"), r"unknown methods \['vanila'\]"),
        (("--model", "no_such_module:net"), r"No module named 'no_such_module'"),
        (("--model", "shapes-relu", "--weights", "w.pt"), r"--weights is for a model given as package.module:factory"),
        (("--model", "shapes-relu", "--gradcam-layer", "conv9"), r"'conv9' is not a module.*layers: 0, 4, 8, 12\)"),
        (("--model", "smoothgrad_lib.twins:ShapesCNN", "--weights", "{bad_name}"), r"do not load into .*state_dict"),
    ],
)
def test_bad_input_stops_with_one_line_before_any_work(data, tmp_path, capsys, monkeypatch, argv, message):
    first = list_images(data / "images")[0]
    files = {name: tmp_path / f"{name}.csv" for name in ("bad_name", "bad_class", "conflict")}
    files["bad_name"].write_text(f"image,label\n{first},circle\nmissing.png,circle\n")
    files["bad_class"].write_text(f" Image , label\n{first},hexagon\n")  # the header's spaces and case are fine
    files["conflict"].write_text(f"image,label\n{first},circle\n{first},square\n{first},circle\n")
    files["state"] = tmp_path / "state.pt"
    torch.save(load_twin("relu").state_dict(), files["state"])
    (tmp_path / "broken_mod.py").write_text("def build(:\n")
    monkeypatch.chdir(tmp_path)
    argv = [str(a).format(**files) for a in argv]
    out = tmp_path / "out"
    assert evaluate(*FAST, "--images", data / "images", "--out", out, *argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("evaluate: error:") and len(error.splitlines()) == 1
    assert __import__("re").search(message, error), error
    assert not out.exists() or not list(out.rglob("*.npz"))


def test_out_with_another_runs_results_is_refused_unless_forced(data: Path, two: Path, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ("--model", "shapes-relu", "--images", two, "--out", out, *FAST)
    assert evaluate(*argv) == 0
    assert evaluate(*argv, "--n-samples", 8) == 2
    assert "holds another run's results (n_samples: 4 -> 8)" in capsys.readouterr().err
    assert evaluate(*argv, "--seed", 1, "--force") == 0
    assert json.loads((out / "settings.json").read_text())["seed"] == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert evaluate("--model", "shapes-relu", "--images", two, "--out", tmp_path / "other", *FAST) == 2
    assert "holds other files and no evaluate run" in capsys.readouterr().err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_out_of_memory_halves_the_batch_and_goes_on(two: Path, tmp_path: Path, monkeypatch):
    """A device that runs out of memory above 8 inputs per forward pass: the image is retried with half the batch
    (16 -> 8), the smaller batch is kept for the next image, and the maps are those of the default batch."""
    import smoothgrad_lib.evaluate as evaluate_module

    calls = []

    def tight(*args, batch_size=None, **kwargs):
        calls.append(batch_size)
        if batch_size is None or batch_size > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return all_attributions(*args, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(evaluate_module, "all_attributions", tight)
    monkeypatch.setattr(evaluate_module, "default_batch_size", lambda x: 16)
    argv = ("--model", "shapes-relu", "--images", two, *FAST, "--maps-only", "--methods", "vanilla", "smoothgrad")
    assert evaluate(*argv, "--out", tmp_path / "tight") == 0
    assert calls[:4] == [None, None, None, 8] and set(calls[4:]) == {8}  # 2 probes; 16 fails once, then 8
    monkeypatch.undo()
    assert evaluate(*argv, "--out", tmp_path / "roomy") == 0
    for name, arrays in maps_of(tmp_path / "tight").items():
        for method, values in arrays.items():  # another batch size changes the maps by float rounding only
            np.testing.assert_allclose(values, maps_of(tmp_path / "roomy")[name][method], rtol=1e-5, atol=1e-8)
