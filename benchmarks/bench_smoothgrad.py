"""Speed and memory of smoothgrad() against fixed batch sizes, Captum's NoiseTunnel and the seed's loop.

N = 50 noisy copies of 224x224 photos, noise 0.15 of the image range, SmoothGrad
with mean |G_i| (our "abs", Captum's Saliency default). Methods are timed in
interleaved rounds (every method once per round, in a shuffled order, after one
untimed warm-up round) and the median over rounds is reported.

CPU (one image): EfficientNet-Lite0 (ImageNet weights) and a random ResNet-18;
ours at fixed batch sizes, Captum at several ``nt_samples_batch_size``, the
seed's one-at-a-time loop. Peak memory is the increase of resident memory
(sampled every millisecond) during one call, each batch size in a fresh process.

CUDA (1 and 16 images): EfficientNet-Lite0 and a random ResNet-50; ours at the
default and at fixed chunks of 64-1024 copies, Captum by default (all copies in
one batch) and at several ``nt_samples_batch_size`` (copies per batch = that x
images). Speed is compared at equal precision: our full-float32 default against
Captum with TF32 off, and our ``tf32=True`` against Captum with TF32 on
(PyTorch's default for cuDNN convolutions); the global flags are set around
Captum's calls with ``smoothgrad_lib.precision.float32_precision`` and restored.
Ours is also timed with its noise drawn by a CPU generator and moved to the GPU
(``noise_device="cpu"`` of ``all_attributions``): the price of the CPU run's noise.
Peak memory is ``torch.cuda.max_memory_allocated`` above the loaded model during
one call of each method; a method that runs out of memory is reported as OOM.

``--json PATH`` also writes the run as one JSON record (``record``): the device, the versions of torch, CUDA,
cuDNN, Captum and Python, the date, the settings, and per model, number of images and method the median,
quartiles, minimum and maximum seconds over the rounds and the peak memory.

    python benchmarks/bench_smoothgrad.py [--device cpu|cuda] [--repeats 7] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import psutil
import torch
from captum.attr import NoiseTunnel, Saliency

from smoothgrad_lib import IMAGENET_PHOTOS, load_image, smoothgrad
from smoothgrad_lib.models import load_model
from smoothgrad_lib.noise import noise_std, seeded_generator
from smoothgrad_lib.precision import float32_precision

N_SAMPLES = 50
NOISE_LEVEL = 0.15

CPU_MODELS = {"EfficientNet-Lite0": ("efficientnet-lite0", True), "ResNet-18 (random init)": ("resnet18", False)}
CPU_BATCH_SIZES = (1, 5, 10, 25, 50)
CPU_CAPTUM_BATCHES = (1, 5, 10, 25)
CPU_QUICK = {"batch_sizes": (5, 10), "captum": (10,)}

CUDA_MODELS = {"EfficientNet-Lite0": ("efficientnet-lite0", True), "ResNet-50 (random init)": ("resnet50", False)}
CUDA_IMAGES = (1, 16)
CUDA_CHUNKS = (64, 256, 512, 1024)
CUDA_CAPTUM_BATCHES = (2, 5, 10, 25)  # nt_samples_batch_size; None (the default) is all 50 at once
CUDA_QUICK = {"images": (1, 16), "chunks": (256,), "captum": (10,)}
CPU_NOISE = "noise drawn on the CPU"

Method = Callable[[], object]
Row = dict[str, object]  # one method's timing in one setting: model, images, method, seconds (spread), peak_mib


def setup(models: dict[str, tuple[str, bool]], model_key: str, device: str, n_images: int = 1):
    """The model in eval mode, ``n_images`` photos (B, 3, 224, 224), their predicted classes and the noise sigma.

    sigma = NOISE_LEVEL x the range of the whole batch, one absolute value for every method (Captum's
    ``stdevs`` is one number per input tensor); for one image it is our ``noise_level=0.15``.
    """
    name, pretrained = models[model_key]
    torch.manual_seed(0)  # the random-init weights
    model = load_model(name, device=device, pretrained=pretrained).model
    # the four photos, repeated to fill a batch of n_images
    x = torch.stack([load_image(IMAGENET_PHOTOS[i % len(IMAGENET_PHOTOS)]) for i in range(n_images)]).to(device)
    with torch.no_grad(), float32_precision():
        targets = model(x).argmax(1)
    sigma = float(noise_std(x.flatten(0, 1)[None], noise_level=NOISE_LEVEL))
    return model, x, targets, sigma


def seed_loop(model: torch.nn.Module, x: torch.Tensor, target: int, sigma: float) -> np.ndarray:
    """The seed chapter's style: one noisy copy at a time, .backward(), numpy round trips."""
    image = x.detach().cpu().numpy()
    total = np.zeros_like(image)
    for _ in range(N_SAMPLES):
        noisy = torch.tensor(image + np.random.normal(0, sigma, image.shape).astype(np.float32), device=x.device)  # noqa: NPY002 (the chapter's own call)
        noisy.requires_grad_(True)
        model.zero_grad()
        model(noisy)[0, target].backward()
        total += np.abs(noisy.grad.detach().cpu().numpy())
    return total / N_SAMPLES


def ours(
    model, x, targets, sigma, batch_size: int | None = None, tf32: bool = False, cpu_noise: bool = False
) -> Method:
    """Our smoothgrad; ``cpu_noise`` draws the noise from a fresh CPU generator (seed 0), moved to x's device."""

    def run() -> object:
        generator = seeded_generator(0) if cpu_noise else None
        return smoothgrad(
            model, x, targets, n_samples=N_SAMPLES, sigma=sigma, batch_size=batch_size, tf32=tf32, generator=generator
        )

    return run


def captum(tunnel: NoiseTunnel, x, targets, sigma, batch: int | None, tf32: bool | None = None) -> Method:
    """Captum's NoiseTunnel; ``tf32`` None leaves the global flags alone, True/False sets them for the call."""

    def attribute() -> object:
        return tunnel.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=N_SAMPLES,
            nt_samples_batch_size=batch,
            stdevs=sigma,
            target=targets.tolist(),
        )

    if tf32 is None:
        return attribute

    def scoped() -> object:
        with float32_precision(tf32):
            return attribute()

    return scoped


def cpu_methods(model, x, targets, sigma, quick: bool) -> dict[str, Method]:
    tunnel = NoiseTunnel(Saliency(model))
    sizes = CPU_QUICK["batch_sizes"] if quick else CPU_BATCH_SIZES
    table = {"ours, default": ours(model, x, targets, sigma)}
    for batch in sizes:
        table[f"ours, batch_size={batch}"] = ours(model, x, targets, sigma, batch)
    table["Captum NoiseTunnel, default (all 50 at once)"] = captum(tunnel, x, targets, sigma, None)
    for batch in CPU_QUICK["captum"] if quick else CPU_CAPTUM_BATCHES:
        table[f"Captum NoiseTunnel, nt_samples_batch_size={batch}"] = captum(tunnel, x, targets, sigma, batch)
    if not quick:
        # The layout our CPU path uses, handed to Captum by the caller: does Captum gain from it too?
        nhwc = x.contiguous(memory_format=torch.channels_last)
        for batch in (5, 10):
            name = f"Captum NoiseTunnel, nt_samples_batch_size={batch}, channels_last input"
            table[name] = captum(tunnel, nhwc, targets, sigma, batch)
        table["seed loop (one at a time, .backward, numpy)"] = lambda: seed_loop(model, x, int(targets[0]), sigma)
    return table


def cuda_methods(model, x, targets, sigma, quick: bool) -> dict[str, Method]:
    """Ours (also with the noise drawn on the CPU) and Captum's, each in full float32 ("fp32") and with TF32."""
    tunnel = NoiseTunnel(Saliency(model))
    table = {}
    for precision, tf32 in (("fp32", False), ("tf32", True)):
        table[f"ours {precision}, default"] = ours(model, x, targets, sigma, None, tf32)
        table[f"ours {precision}, default, {CPU_NOISE}"] = ours(model, x, targets, sigma, None, tf32, cpu_noise=True)
        for chunk in CUDA_QUICK["chunks"] if quick else CUDA_CHUNKS:
            table[f"ours {precision}, batch_size={chunk}"] = ours(model, x, targets, sigma, chunk, tf32)
        table[f"Captum {precision}, default"] = captum(tunnel, x, targets, sigma, None, tf32)
        for batch in CUDA_QUICK["captum"] if quick else CUDA_CAPTUM_BATCHES:
            table[f"Captum {precision}, nt_samples_batch_size={batch}"] = captum(tunnel, x, targets, sigma, batch, tf32)
    return table


def call(run: Method, device: str) -> float | None:
    """Seconds for one call (synchronised on CUDA), or None when CUDA runs out of memory."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        run()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_methods(table: dict[str, Method], device: str, repeats: int) -> dict[str, list[float]]:
    """Seconds per method in each of ``repeats`` interleaved rounds ([] for a method out of memory)."""
    alive = {name: run for name, run in table.items() if call(run, device) is not None}  # warm-up round
    times: dict[str, list[float]] = {name: [] for name in table}
    for round_index in range(repeats):
        order = list(alive.items())
        random.Random(round_index).shuffle(order)  # no method always runs first or after the same one
        for name, run in order:
            seconds = call(run, device)
            if seconds is not None:
                times[name].append(seconds)
    return times


def spread(times: list[float]) -> dict[str, float | int] | None:
    """Median, quartiles (inclusive method), minimum and maximum of one method's seconds; None when it never ran.

    >>> spread([3.0, 1.0, 2.0, 4.0, 5.0])
    {'median': 3.0, 'q1': 2.0, 'q3': 4.0, 'min': 1.0, 'max': 5.0, 'rounds': 5}
    """
    if not times:
        return None
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return {
        "median": statistics.median(times),
        "q1": q1,
        "q3": q3,
        "min": min(times),
        "max": max(times),
        "rounds": len(times),
    }


def medians(times: dict[str, list[float]]) -> dict[str, float | None]:
    """The median seconds of each method (None: out of memory)."""
    return {name: statistics.median(values) if values else None for name, values in times.items()}


def rows(model_key: str, n_images: int, times: dict[str, list[float]], peaks: dict[str, float | None]) -> list[Row]:
    """The record's rows of one model and number of images: every method's ``spread`` and peak memory (MiB)."""
    return [
        {"model": model_key, "images": n_images, "method": name, "seconds": spread(values), "peak_mib": peaks.get(name)}
        for name, values in times.items()
    ]


def environment(device: str) -> dict[str, object]:
    """Where and when the benchmark ran: device, versions, date (UTC)."""
    on_cuda = device == "cuda"
    return {
        "device": torch.cuda.get_device_name() if on_cuda else f"CPU, {torch.get_num_threads()} threads",
        "device_type": device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if on_cuda else None,
        "device_memory_mib": torch.cuda.get_device_properties(0).total_memory // 2**20 if on_cuda else None,
        "captum": version("captum"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def record(environment: dict[str, object], settings: dict[str, object], results: list[Row]) -> dict[str, object]:
    """The JSON record of one run: ``{"benchmark", **environment, "settings", "results"}``."""
    return {"benchmark": "bench_smoothgrad", **environment, "settings": settings, "results": results}


def results_name(run: dict[str, object]) -> str:
    """The file name of a record under benchmarks/results/: the device in lower case, runs of other characters as -.

    >>> results_name({"device": "NVIDIA H100 80GB HBM3"})
    'smoothgrad-nvidia-h100-80gb-hbm3.json'
    """
    return f"smoothgrad-{re.sub(r'[^a-z0-9]+', '-', str(run['device']).lower()).strip('-')}.json"


def write_record(path: Path, run: dict[str, object]) -> None:
    """``run`` as indented JSON at ``path`` (its folder created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=1) + "\n")


def cuda_peak_mib(run: Method) -> float | None:
    """Peak CUDA memory allocated during one call above what was allocated before it, MiB (None: out of memory)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    if call(run, "cuda") is None:
        return None
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def cpu_peak_mib(model_key: str, batch_size: int | None) -> float:
    """Peak resident memory increase over the loaded model during one smoothgrad call, in this (fresh) process."""
    model, x, targets, sigma = setup(CPU_MODELS, model_key, "cpu")
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    ours(model, x, targets, sigma, batch_size)()
    done.set()
    sampler.join()
    return (peak - before) / 2**20


def memory_in_subprocess(model_key: str, batch_size: int | None) -> float:
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_smoothgrad as b; "
        f"print(json.dumps(b.cpu_peak_mib({model_key!r}, {batch_size!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def report_cpu(repeats: int, quick: bool) -> list[Row]:
    """Print the CPU tables; return the record's rows (peak memory for ours at each batch size)."""
    results = []
    for model_key in CPU_MODELS:
        model, x, targets, sigma = setup(CPU_MODELS, model_key, "cpu")
        times = time_methods(cpu_methods(model, x, targets, sigma, quick), "cpu", repeats)
        median = medians(times)
        default = median["ours, default"]
        print(f"### {model_key}\n")
        print("| method | median s | ratio to our default |")
        print("|---|---:|---:|")
        for name, value in median.items():
            print(f"| {name} | {value:.3f} | {value / default:.2f} |")
        best_fixed = min(v for k, v in median.items() if k.startswith("ours, batch_size="))
        captum_best = min(v for k, v in median.items() if k.startswith("Captum NoiseTunnel, nt_"))
        captum_default = median["Captum NoiseTunnel, default (all 50 at once)"]
        print(
            f"\nour default vs best fixed batch size: {default / best_fixed:.2f}x the time; "
            f"speed-up over Captum default: {captum_default / default:.2f}x; over Captum's best setting: "
            f"{captum_best / default:.2f}x\n"
        )
        print("| batch_size | peak memory increase, MiB |")
        print("|---|---:|")
        peaks = {}
        for batch in (None, *(CPU_QUICK["batch_sizes"][-1:] if quick else CPU_BATCH_SIZES)):
            label = "None (default)" if batch is None else str(batch)
            peak = memory_in_subprocess(model_key, batch)
            peaks["ours, default" if batch is None else f"ours, batch_size={batch}"] = peak
            print(f"| {label} | {peak:.0f} |")
        print(flush=True)
        results += rows(model_key, 1, times, peaks)
    return results


def best(values: dict[str, float | None], prefix: str) -> tuple[float | None, str]:
    """The fastest of the methods whose name starts with ``prefix``, and its setting (the text after '=')."""
    found = [(v, k) for k, v in values.items() if k.startswith(prefix) and v is not None]
    if not found:
        return None, "OOM"
    value, name = min(found)
    return value, name.split("=")[-1] if "=" in name else "all"


def ms(value: float | None) -> str:
    return "OOM" if value is None else f"{1000 * value:.1f}"


def report_cuda(repeats: int, quick: bool) -> list[Row]:
    """Print the CUDA tables and summaries; return the record's rows."""
    images = CUDA_QUICK["images"] if quick else CUDA_IMAGES
    summary: dict[str, list[str]] = {"fp32": [], "tf32": []}
    noise_rows, results = [], []
    for model_key in CUDA_MODELS:
        for n_images in images:
            model, x, targets, sigma = setup(CUDA_MODELS, model_key, "cuda", n_images)
            table = cuda_methods(model, x, targets, sigma, quick)
            times = time_methods(table, "cuda", repeats)
            median = medians(times)
            peaks = {name: cuda_peak_mib(run) for name, run in table.items()}
            results += rows(model_key, n_images, times, peaks)
            print(f"### {model_key}, {n_images} image(s)\n")
            print("| method | median ms | peak memory MiB |")
            print("|---|---:|---:|")
            for name in table:
                peak = "OOM" if peaks[name] is None else f"{peaks[name]:.0f}"
                print(f"| {name} | {ms(median[name])} | {peak} |")
            print(flush=True)
            for precision, lines in summary.items():
                default = median[f"ours {precision}, default"]
                chunk, chunk_size = best(median, f"ours {precision}, batch_size=")
                captum_default = median[f"Captum {precision}, default"]
                captum_best, captum_setting = best(median, f"Captum {precision}, ")
                ok = None not in (default, chunk, captum_best)
                lines.append(
                    f"| {model_key}, {n_images} | {ms(default)} | {ms(chunk)} ({chunk_size}) | {ms(captum_default)} "
                    f"| {ms(captum_best)} ({captum_setting}) "
                    f"| {f'{captum_best / default:.2f}' if ok else '-'} | {f'{default / chunk:.2f}' if ok else '-'} |"
                )
                cpu_noise = median[f"ours {precision}, default, {CPU_NOISE}"]
                ratio = f"{cpu_noise / default:.2f}" if None not in (default, cpu_noise) else "-"
                noise_rows.append(
                    f"| {model_key}, {n_images} | {precision} | {ms(default)} | {ms(cpu_noise)} | {ratio} |"
                )
            del model, x
            torch.cuda.empty_cache()
    titles = {
        "fp32": "full float32 (ours default; Captum with TF32 off)",
        "tf32": "TF32 (ours tf32=True; Captum with TF32 on)",
    }
    for precision, lines in summary.items():
        print(f"### Summary, {titles[precision]}: N = {N_SAMPLES}, 224x224, median ms\n")
        print(
            "| model, images | ours default | ours best chunk (copies) | Captum default | Captum best "
            "(nt_samples_batch_size) | Captum best / ours default (bar >= 1.0) "
            "| ours default / ours best (bar <= 1.1) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        print("\n".join(lines) + "\n", flush=True)
    print(f"### The CPU run's noise on the GPU: ours default with the {CPU_NOISE} and moved, median ms\n")
    print("| model, images | precision | ours default | CPU noise | CPU noise / default |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(noise_rows) + "\n", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 7; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds, sizes and memory probes")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the run as a JSON record to PATH")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 7)
    where = environment(args.device)
    print(
        f"torch {torch.__version__}, device: {where['device']}, N={N_SAMPLES}, 224x224, "
        f"medians of {repeats} interleaved rounds\n"
    )
    results = report_cuda(repeats, args.quick) if args.device == "cuda" else report_cpu(repeats, args.quick)
    if args.json:
        settings = {
            "n_samples": N_SAMPLES,
            "noise_level": NOISE_LEVEL,
            "image_size": 224,
            "repeats": repeats,
            "quick": args.quick,
            "timing": "seconds per call, CUDA synchronised, over interleaved rounds after one warm-up round",
        }
        write_record(args.json, record(where, settings, results))


if __name__ == "__main__":
    main()
