"""The bars of ``smoothgrad evaluate``: its maps per second against the library called on the same images in a loop,
and the time of a whole run on 1,000 shapes images.

1. Throughput (``--throughput N``, default 100 images): ``smoothgrad evaluate --maps-only`` on N shapes PNGs with
   vanilla, SmoothGrad (N = 10), Grad-CAM and Integrated Gradients, against a loop that reads each image with
   ``images.read_image`` and calls ``methods.all_attributions`` on it with the same settings and seeds (no files
   written). Both run in this process, in interleaved rounds after two warm-ups; each round gives one ratio
   command / loop, and the bar is on the median of ``--repeats`` such ratios (with their quartiles: on a shared
   2-core machine a single round can move by 10-20%, and a round's two runs see the same machine). The command's
   time includes what the loop does not do: loading the model, trying each method, one forward pass per image for
   the class and its probability, writing each image's files atomically, the summary. Bar: median ratio <= 1.1.
2. A whole run (``--full N``, default 1000 images): the command with its default scores (deletion and insertion,
   AOPC, the randomisation check on 16 images) and the same four methods; its wall time and per-stage seconds.

    python benchmarks/bench_evaluate.py [--throughput 100] [--repeats 9] [--full 1000] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from smoothgrad_lib import cli
from smoothgrad_lib.evaluate import image_seed, list_images
from smoothgrad_lib.images import read_image
from smoothgrad_lib.maps import saliency_map
from smoothgrad_lib.methods import all_attributions
from smoothgrad_lib.models import load_model
from smoothgrad_lib.shapes import write_shapes

METHODS = ("vanilla", "smoothgrad", "grad_cam", "integrated_gradients")
SETTINGS = {"n_samples": 10, "ig_steps": 16, "noise_level": 0.15}


def command(images: Path, out: Path, *extra: str) -> float:
    """Seconds of one ``smoothgrad evaluate`` run, in this process, without its progress bar."""
    shutil.rmtree(out, ignore_errors=True)
    argv = ["evaluate", "--model", "shapes-relu", "--images", str(images), "--out", str(out), "--no-progress"]
    argv += ["--methods", *METHODS, "--n-samples", str(SETTINGS["n_samples"]), *extra]
    tic = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(argv)
    seconds = time.perf_counter() - tic
    if status != 0:
        raise RuntimeError(f"smoothgrad evaluate exited with {status}")
    return seconds


def library_loop(images: Path) -> float:
    """Seconds of reading each image and calling all_attributions on it, as the command does, writing nothing."""
    model = load_model("shapes-relu", device="cpu").model
    tic = time.perf_counter()
    for name in list_images(images):
        x = read_image(images / name, 64).tensor[None]
        attributions = all_attributions(
            model,
            x,
            None,
            gradcam_layer="14",
            seed=image_seed(0, name),
            levels={SETTINGS["noise_level"]: ("abs",)},
            n_samples=SETTINGS["n_samples"],
            ig_steps=SETTINGS["ig_steps"],
            methods=METHODS,
        )
        {method: saliency_map(a, normalize=None) for method, a in attributions.items()}
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--throughput", type=int, default=100, help="images for the throughput bar (0: skip)")
    parser.add_argument("--repeats", type=int, default=9, help="rounds of the throughput comparison")
    parser.add_argument("--full", type=int, default=1000, help="images of the whole run (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    record: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "methods": METHODS}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.throughput:
            write_shapes(work / "small", args.throughput, seed=21)
            for _ in range(2):  # warm-up: imports, first allocations, the thread pool
                command(work / "small", work / "warm", "--maps-only")
                library_loop(work / "small")
            timings: dict[str, list[float]] = {"command": [], "loop": []}
            for _ in range(args.repeats):
                timings["command"].append(command(work / "small", work / "out", "--maps-only"))
                timings["loop"].append(library_loop(work / "small"))
            ratios = [c / loop for c, loop in zip(timings["command"], timings["loop"], strict=True)]
            quartiles = statistics.quantiles(ratios, n=4)
            median = {name: statistics.median(values) for name, values in timings.items()}
            n_maps = args.throughput * len(METHODS)
            print(f"throughput, {args.throughput} images x {len(METHODS)} methods, {args.repeats} interleaved rounds:")
            for name, seconds in median.items():
                rounds = ", ".join(f"{value:.2f}" for value in timings[name])
                print(f"  {name:8s} median {seconds:6.2f} s  {n_maps / seconds:6.1f} maps/s  (rounds: {rounds})")
            print(f"  command / loop per round: {', '.join(f'{r:.3f}' for r in ratios)}")
            print(f"  median ratio {quartiles[1]:.3f}, quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f} (bar: <= 1.1)")
            record["throughput"] = {
                "images": args.throughput,
                "seconds": timings,
                "median_seconds": median,
                "ratios": ratios,
                "ratio_quartiles": quartiles,
            }
        if args.full:
            write_shapes(work / "full", args.full, seed=22)
            seconds = command(work / "full", work / "full-out")
            stages = json.loads((work / "full-out" / "run.json").read_text())["seconds"]["stages"]
            print(f"whole run, {args.full} images x {len(METHODS)} methods, default scores: {seconds:.0f} s")
            print("  stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items() if v is not None))
            record["full"] = {"images": args.full, "seconds": seconds, "stages": stages}
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
