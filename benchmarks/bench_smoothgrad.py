"""Speed and memory of smoothgrad() against fixed batch sizes, Captum's NoiseTunnel and the seed's loop.

N = 50 noisy copies of one 224x224 photo, noise level 0.15, on EfficientNet-Lite0
(the default model, ImageNet weights) and a random-initialised ResNet-18.
Methods are timed in interleaved rounds (every method once per round, in a
shuffled order) and the median over rounds is reported, with its ratio to our default. Peak memory is
the increase of resident memory (CPU, sampled every millisecond) or of
allocated memory (CUDA) over the loaded model during one call, each batch size
measured in a fresh process.

    python benchmarks/bench_smoothgrad.py [--repeats 7] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import psutil
import torch
from captum.attr import NoiseTunnel, Saliency

from smoothgrad_lib import load_image, smoothgrad
from smoothgrad_lib.models import load_model
from smoothgrad_lib.saliency import noise_std

N_SAMPLES = 50
NOISE_LEVEL = 0.15
BATCH_SIZES = (1, 5, 10, 25, 50)
MODELS = {"EfficientNet-Lite0": ("efficientnet-lite0", True), "ResNet-18 (random init)": ("resnet18", False)}


def setup(model_key: str, device: str) -> tuple[torch.nn.Module, torch.Tensor, int, float]:
    name, pretrained = MODELS[model_key]
    torch.manual_seed(0)
    model = load_model(name, device=device, pretrained=pretrained).model
    x = load_image("chelsea")[None].to(device)
    with torch.no_grad():
        target = int(model(x).argmax())
    sigma = float(noise_std(x, noise_level=NOISE_LEVEL))
    return model, x, target, sigma


def seed_loop(model: torch.nn.Module, x: torch.Tensor, target: int, sigma: float) -> np.ndarray:
    """The seed chapter's style: one noisy copy at a time, .backward(), numpy round trips."""
    image = x.detach().cpu().numpy()
    total = np.zeros_like(image)
    for _ in range(N_SAMPLES):
        noisy = torch.tensor(image + np.random.normal(0, sigma, image.shape).astype(np.float32), device=x.device)
        noisy.requires_grad_(True)
        model.zero_grad()
        model(noisy)[0, target].backward()
        total += np.abs(noisy.grad.detach().cpu().numpy())
    return total / N_SAMPLES


def methods(model: torch.nn.Module, x: torch.Tensor, target: int, sigma: float) -> dict[str, Callable[[], object]]:
    tunnel = NoiseTunnel(Saliency(model))

    def captum(batch: int | None, inputs: torch.Tensor = x) -> Callable[[], object]:
        return lambda: tunnel.attribute(
            inputs, nt_type="smoothgrad", nt_samples=N_SAMPLES, nt_samples_batch_size=batch, stdevs=sigma, target=target
        )

    table: dict[str, Callable[[], object]] = {"ours, default": lambda: smoothgrad(model, x, target, N_SAMPLES, NOISE_LEVEL)}
    for batch in BATCH_SIZES:
        table[f"ours, batch_size={batch}"] = lambda b=batch: smoothgrad(model, x, target, N_SAMPLES, NOISE_LEVEL, batch_size=b)
    table["Captum NoiseTunnel, default (all 50 at once)"] = captum(None)
    for batch in (1, 5, 10, 25):
        table[f"Captum NoiseTunnel, nt_samples_batch_size={batch}"] = captum(batch)
    # The layout our CPU path uses, handed to Captum by the caller: does Captum gain from it too?
    nhwc = x.contiguous(memory_format=torch.channels_last)
    for batch in (5, 10):
        table[f"Captum NoiseTunnel, nt_samples_batch_size={batch}, channels_last input"] = captum(batch, nhwc)
    table["seed loop (one at a time, .backward, numpy)"] = lambda: seed_loop(model, x, target, sigma)
    return table


def time_methods(model_key: str, device: str, repeats: int) -> dict[str, float]:
    model, x, target, sigma = setup(model_key, device)
    table = methods(model, x, target, sigma)
    times: dict[str, list[float]] = {name: [] for name in table}
    for name, run in table.items():  # warm-up round, not timed
        run()
    for round_index in range(repeats):
        order = list(table.items())
        random.Random(round_index).shuffle(order)  # no method always runs first or after the same one
        for name, run in order:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_mb(model_key: str, device: str, batch_size: int | None) -> float:
    """Peak memory increase over the loaded model during one smoothgrad call, in this (fresh) process.

    CUDA: peak allocated memory. CPU: resident set size sampled every millisecond by a thread.
    """
    model, x, target, _ = setup(model_key, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        smoothgrad(model, x, target, N_SAMPLES, NOISE_LEVEL, batch_size=batch_size)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
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
    smoothgrad(model, x, target, N_SAMPLES, NOISE_LEVEL, batch_size=batch_size)
    done.set()
    sampler.join()
    return (peak - before) / 2**20


def memory_in_subprocess(model_key: str, device: str, batch_size: int | None) -> float:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import bench_smoothgrad as b; "
        f"print(json.dumps(b.peak_memory_mb({model_key!r}, {device!r}, {batch_size!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    card = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device: {card}, N={N_SAMPLES}, 224x224, medians of {args.repeats} interleaved rounds\n")
    for model_key in MODELS:
        medians = time_methods(model_key, args.device, args.repeats)
        ours = medians["ours, default"]
        print(f"### {model_key}\n")
        print("| method | median s | ratio to our default |")
        print("|---|---:|---:|")
        for name, value in medians.items():
            print(f"| {name} | {value:.3f} | {value / ours:.2f} |")
        best_fixed = min(medians[f"ours, batch_size={b}"] for b in BATCH_SIZES)
        captum_best = min(v for k, v in medians.items() if k.startswith("Captum NoiseTunnel, nt_"))
        captum_default = medians["Captum NoiseTunnel, default (all 50 at once)"]
        print(
            f"\nour default vs best fixed batch size: {ours / best_fixed:.2f}x the time; "
            f"speed-up over Captum default: {captum_default / ours:.2f}x; over Captum's best setting: "
            f"{captum_best / ours:.2f}x\n"
        )
        print("| batch_size | peak memory increase, MiB |")
        print("|---|---:|")
        for batch in (None, *BATCH_SIZES):
            label = "None (default)" if batch is None else str(batch)
            print(f"| {label} | {memory_in_subprocess(model_key, args.device, batch):.0f} |")
        print(flush=True)


if __name__ == "__main__":
    main()
