"""The bars of smoothgrad_estimate: calibrated standard errors, the adaptive N, bitwise means, antithetic gains.

1. Bitwise: ``smoothgrad_estimate(...).mean`` equals ``smoothgrad(...)`` on the CPU (every aggregate and sampling).
2. Calibration: over R >= 20 seeds, the mean reported ``stderr^2`` against the empirical
   variance of ``mean`` across seeds, both summed over all elements (ratio; the bar is 1/1.25 .. 1.25),
   for every aggregate and both samplings, on the shapes ReLU twin (4 images, N=50) and on
   EfficientNet-Lite0 (chelsea, N=--lite-n, 16 by default). The same runs give the antithetic gain measured over seeds.
3. Adaptive: ``tolerance=0.1`` on 20 shapes images (ReLU twin, noise level 15%); the achieved relative
   error against a large-N reference (its own error removed, ``montecarlo.error_against_reference``)
   must be <= 0.125 for >= 80% of them.
4. Antithetic gain table (``montecarlo.antithetic_gain``): variance of the iid map over that of the
   antithetic map at equal N, mean over images with a 95% bootstrap interval.

    python benchmarks/bench_estimate.py [--seeds 20] [--quick] [--lite-n 16] [--lite-pairs 16] [--parts 1,2,3,4,5]

Prints tables only (no timings); about 4 minutes on an idle 2-core CPU, far longer on a loaded one.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from smoothgrad_lib import IMAGENET_PHOTOS, load_image, load_model, noisy_gradients, smoothgrad, smoothgrad_estimate
from smoothgrad_lib.aggregates import AGGREGATES, relative_error
from smoothgrad_lib.montecarlo import antithetic_gain, error_against_reference
from smoothgrad_lib.noise import SAMPLINGS
from smoothgrad_lib.noise import seeded_generator as generator
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.stats import bootstrap_ci


def bitwise(models: dict[str, tuple[torch.nn.Module, torch.Tensor]]) -> None:
    print("1. smoothgrad_estimate(...).mean == smoothgrad(...) bitwise (CPU)", flush=True)
    for name, (model, x) in models.items():
        for aggregate in AGGREGATES:
            for sampling in SAMPLINGS:
                kwargs = dict(n_samples=4, aggregate=aggregate, sampling=sampling, noise_level=0.15)
                same = torch.equal(
                    smoothgrad_estimate(model, x, **kwargs, generator=generator(7)).mean,
                    smoothgrad(model, x, **kwargs, generator=generator(7)),
                )
                print(f"   {name:18s} {aggregate:8s} {sampling:10s} {'equal' if same else 'DIFFERENT'}", flush=True)


def calibration(name: str, model: torch.nn.Module, x: torch.Tensor, n_samples: int, seeds: int) -> dict:
    """Ratio (mean stderr^2) / (variance over seeds), totals over elements, per aggregate x sampling."""
    print(f"2. calibration on {name}: {seeds} seeds, N={n_samples}, noise level 0.15, {len(x)} image(s)", flush=True)
    print(f"   {'aggregate':9s} {'sampling':10s} {'stderr²/var':>11s} {'per image min..max':>20s}  bar 0.8..1.25")
    variances = {}
    for aggregate in AGGREGATES:
        for sampling in SAMPLINGS:
            runs = [
                smoothgrad_estimate(
                    model,
                    x,
                    n_samples=n_samples,
                    aggregate=aggregate,
                    sampling=sampling,
                    noise_level=0.15,
                    generator=generator(1000 + seed),
                )
                for seed in range(seeds)
            ]
            means = torch.stack([r.mean for r in runs]).double().flatten(2)
            reported = torch.stack([r.stderr for r in runs]).double().square().flatten(2).mean(0).sum(-1)
            empirical = means.var(0).sum(-1)
            ratio = float(reported.sum() / empirical.sum())
            per_image = (reported / empirical).numpy()
            variances[aggregate, sampling] = float(empirical.sum())
            verdict = "pass" if 1 / 1.25 <= ratio <= 1.25 else "FAIL"
            spread = f"{per_image.min():9.3g} .. {per_image.max():<8.3g}"
            print(f"   {aggregate:9s} {sampling:10s} {ratio:11.3g} {spread}  {verdict}", flush=True)
    print(
        "   antithetic gain over seeds (variance iid / antithetic): "
        + ", ".join(f"{a} {variances[a, 'iid'] / variances[a, 'antithetic']:.3g}" for a in AGGREGATES),
        flush=True,
    )
    return variances


def adaptive(model: torch.nn.Module, n_images: int, quick: bool) -> None:
    x = make_shapes(n_images, seed=11).images
    print(f"3. adaptive N: tolerance=0.1 on {n_images} shapes images (ReLU twin, noise 0.15, start N=20)", flush=True)
    for aggregate, ref_n in (("abs", 1000), ("raw", 2000)):
        ref_n = ref_n // 4 if quick else ref_n
        reference = smoothgrad_estimate(
            model, x, n_samples=ref_n, aggregate=aggregate, noise_level=0.15, generator=generator(50)
        )
        run = smoothgrad_estimate(
            model, x, n_samples=20, tolerance=0.1, aggregate=aggregate, noise_level=0.15, generator=generator(51)
        )
        achieved = error_against_reference(run.mean, reference).numpy()
        share = float((achieved <= 0.125).mean())
        ref_error = relative_error(reference.mean, reference.stderr).numpy()
        print(
            f"   {aggregate}: N used median {int(run.n_samples.median())} (range {int(run.n_samples.min())}.."
            f"{int(run.n_samples.max())}); achieved error median {np.median(achieved):.3g}, "
            f"max {achieved.max():.3g}; "
            f"<= 0.125 for {share:.0%} of images (bar 80%: {'pass' if share >= 0.8 else 'FAIL'}); "
            f"reference N={ref_n}, its own error median {np.median(ref_error):.3g}",
            flush=True,
        )


def gain_table(twins: dict[str, torch.nn.Module], lite: torch.nn.Module, quick: bool, lite_pairs: int) -> None:
    n_images, pairs = (4, 32) if quick else (12, 128)
    print("4. antithetic gain (variance iid / antithetic at equal N; mean over images [95% bootstrap CI], min)")
    lite = f"Lite0: {len(IMAGENET_PHOTOS)} photos x {lite_pairs} pairs"
    print(f"   twins: {n_images} shapes images x {pairs} pairs; {lite}")
    print(f"   {'model':16s} {'noise':>5s}  " + "  ".join(f"{a:>24s}" for a in AGGREGATES), flush=True)
    shapes = make_shapes(n_images, seed=21).images
    photos = torch.stack([load_image(p) for p in IMAGENET_PHOTOS])
    rows = [(name, model, shapes, level, pairs) for name, model in twins.items() for level in (0.05, 0.15)]
    rows.append(("Lite0", lite, photos, 0.15, lite_pairs))
    for name, model, x, level, n_pairs in rows:
        grads = torch.cat(
            [
                noisy_gradients(
                    model,
                    image[None],
                    n_samples=2 * n_pairs,
                    noise_level=level,
                    sampling="antithetic",
                    generator=generator(60 + i),
                )
                for i, image in enumerate(x)
            ]
        )
        cells = []
        for aggregate in AGGREGATES:
            gains = antithetic_gain(grads, aggregate)
            mean, low, high = bootstrap_ci(gains)
            cells.append(f"{mean:.3g} [{low:.3g}, {high:.3g}] {float(gains.min()):.3g}")
        print(f"   {name:16s} {level:5.2f}  " + "  ".join(f"{c:>24s}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="smaller references and gain table (a smoke run)")
    parser.add_argument("--lite-n", type=int, default=16, help="gradients per Lite0 calibration run (even)")
    parser.add_argument("--lite-pairs", type=int, default=16, help="antithetic pairs per photo in Lite0's gain row")
    parser.add_argument(
        "--parts",
        default="1,2,3,4,5",
        help="which parts to run: 1 bitwise, 2 shapes calibration, "
        "3 adaptive, 4 gain table, 5 Lite0 calibration (comma-separated)",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    twins = {f"shapes-{a}": load_model(f"shapes-{a}", device="cpu").model for a in ("softplus", "relu")}
    lite = load_model(device="cpu").model
    shapes = make_shapes(4, seed=3).images
    cat = load_image("chelsea")[None]
    if "1" in parts:
        bitwise({"shapes-relu": (twins["shapes-relu"], shapes), "efficientnet-lite0": (lite, cat)})
    if "2" in parts:
        calibration("shapes-relu", twins["shapes-relu"], shapes, 50, args.seeds)
    if "3" in parts:
        adaptive(twins["shapes-relu"], 20, args.quick)
    if "4" in parts:
        gain_table(twins, lite, args.quick, args.lite_pairs)
    if "5" in parts:
        calibration("efficientnet-lite0", lite, cat, args.lite_n, args.seeds)


if __name__ == "__main__":
    main()
