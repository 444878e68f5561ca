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
Peak memory is ``torch.cuda.max_memory_allocated`` above the loaded model during
one call of each method; a method that runs out of memory is reported as OOM.

    python benchmarks/bench_smoothgrad.py [--device cpu|cuda] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from captum.attr import NoiseTunnel, Saliency

from smoothgrad_lib import IMAGENET_PHOTOS, load_image, smoothgrad
from smoothgrad_lib.models import load_model
from smoothgrad_lib.noise import noise_std
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

Method = Callable[[], object]


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


def ours(model, x, targets, sigma, batch_size: int | None = None, tf32: bool = False) -> Method:
    return lambda: smoothgrad(model, x, targets, n_samples=N_SAMPLES, sigma=sigma, batch_size=batch_size, tf32=tf32)


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
    """Ours and Captum's, each in full float32 ("fp32") and with TF32 ("tf32")."""
    tunnel = NoiseTunnel(Saliency(model))
    table = {}
    for precision, tf32 in (("fp32", False), ("tf32", True)):
        table[f"ours {precision}, default"] = ours(model, x, targets, sigma, None, tf32)
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


def time_methods(table: dict[str, Method], device: str, repeats: int) -> dict[str, float | None]:
    """Median seconds per method over ``repeats`` interleaved rounds (None: out of memory)."""
    alive = {name: run for name, run in table.items() if call(run, device) is not None}  # warm-up round
    times: dict[str, list[float]] = {name: [] for name in alive}
    for round_index in range(repeats):
        order = list(alive.items())
        random.Random(round_index).shuffle(order)  # no method always runs first or after the same one
        for name, run in order:
            seconds = call(run, device)
            if seconds is not None:
                times[name].append(seconds)
    return {name: statistics.median(times[name]) if times.get(name) else None for name in table}


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


def report_cpu(repeats: int, quick: bool) -> None:
    for model_key in CPU_MODELS:
        model, x, targets, sigma = setup(CPU_MODELS, model_key, "cpu")
        medians = time_methods(cpu_methods(model, x, targets, sigma, quick), "cpu", repeats)
        default = medians["ours, default"]
        print(f"### {model_key}\n")
        print("| method | median s | ratio to our default |")
        print("|---|---:|---:|")
        for name, value in medians.items():
            print(f"| {name} | {value:.3f} | {value / default:.2f} |")
        best_fixed = min(v for k, v in medians.items() if k.startswith("ours, batch_size="))
        captum_best = min(v for k, v in medians.items() if k.startswith("Captum NoiseTunnel, nt_"))
        captum_default = medians["Captum NoiseTunnel, default (all 50 at once)"]
        print(
            f"\nour default vs best fixed batch size: {default / best_fixed:.2f}x the time; "
            f"speed-up over Captum default: {captum_default / default:.2f}x; over Captum's best setting: "
            f"{captum_best / default:.2f}x\n"
        )
        print("| batch_size | peak memory increase, MiB |")
        print("|---|---:|")
        for batch in (None, *(CPU_QUICK["batch_sizes"][-1:] if quick else CPU_BATCH_SIZES)):
            label = "None (default)" if batch is None else str(batch)
            print(f"| {label} | {memory_in_subprocess(model_key, batch):.0f} |")
        print(flush=True)


def best(values: dict[str, float | None], prefix: str) -> tuple[float | None, str]:
    """The fastest of the methods whose name starts with ``prefix``, and its setting (the text after '=')."""
    found = [(v, k) for k, v in values.items() if k.startswith(prefix) and v is not None]
    if not found:
        return None, "OOM"
    value, name = min(found)
    return value, name.split("=")[-1] if "=" in name else "all"


def ms(value: float | None) -> str:
    return "OOM" if value is None else f"{1000 * value:.1f}"


def report_cuda(repeats: int, quick: bool) -> None:
    images = CUDA_QUICK["images"] if quick else CUDA_IMAGES
    summary: dict[str, list[str]] = {"fp32": [], "tf32": []}
    for model_key in CUDA_MODELS:
        for n_images in images:
            model, x, targets, sigma = setup(CUDA_MODELS, model_key, "cuda", n_images)
            table = cuda_methods(model, x, targets, sigma, quick)
            medians = time_methods(table, "cuda", repeats)
            peaks = {name: cuda_peak_mib(run) for name, run in table.items()}
            print(f"### {model_key}, {n_images} image(s)\n")
            print("| method | median ms | peak memory MiB |")
            print("|---|---:|---:|")
            for name in table:
                peak = "OOM" if peaks[name] is None else f"{peaks[name]:.0f}"
                print(f"| {name} | {ms(medians[name])} | {peak} |")
            print(flush=True)
            for precision, rows in summary.items():
                default = medians[f"ours {precision}, default"]
                chunk, chunk_size = best(medians, f"ours {precision}, batch_size=")
                captum_default = medians[f"Captum {precision}, default"]
                captum_best, captum_setting = best(medians, f"Captum {precision}, ")
                ok = None not in (default, chunk, captum_best)
                rows.append(
                    f"| {model_key}, {n_images} | {ms(default)} | {ms(chunk)} ({chunk_size}) | {ms(captum_default)} "
                    f"| {ms(captum_best)} ({captum_setting}) "
                    f"| {f'{captum_best / default:.2f}' if ok else '-'} | {f'{default / chunk:.2f}' if ok else '-'} |"
                )
            del model, x
            torch.cuda.empty_cache()
    titles = {
        "fp32": "full float32 (ours default; Captum with TF32 off)",
        "tf32": "TF32 (ours tf32=True; Captum with TF32 on)",
    }
    for precision, rows in summary.items():
        print(f"### Summary, {titles[precision]}: N = {N_SAMPLES}, 224x224, median ms\n")
        print(
            "| model, images | ours default | ours best chunk (copies) | Captum default | Captum best "
            "(nt_samples_batch_size) | Captum best / ours default (bar >= 1.0) "
            "| ours default / ours best (bar <= 1.1) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        print("\n".join(rows) + "\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 7; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds, sizes and memory probes")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 7)
    card = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, device: {card}, N={N_SAMPLES}, 224x224, medians of {repeats} interleaved rounds\n"
    )
    if args.device == "cuda":
        report_cuda(repeats, args.quick)
    else:
        report_cpu(repeats, args.quick)


if __name__ == "__main__":
    main()
